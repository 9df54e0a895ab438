resource "aws_ecs_cluster" "this" {
  name = var.name

  setting {
    name  = "containerInsights"
    value = var.enable_container_insights ? "enabled" : "disabled"
  }

  # ECS exec is on for every service (enable_execute_command below). Its sessions are
  # not logged: the console redraws the screen every second and would flood the
  # service log groups with terminal escapes. CloudTrail still records every
  # ExecuteCommand call (who, which task, which container).
  configuration {
    execute_command_configuration {
      logging = "NONE"
    }
  }
}

resource "aws_ecs_task_definition" "service" {
  for_each = local.services

  family                   = "${var.name}-${each.key}"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.task_cpu[each.key]
  memory                   = var.task_memory[each.key]
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task.arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = var.cpu_architecture
  }

  container_definitions = jsonencode(local.container_definitions[each.key])
}

resource "aws_ecs_service" "service" {
  for_each = local.services

  name             = "${var.name}-${each.key}"
  cluster          = aws_ecs_cluster.this.id
  task_definition  = aws_ecs_task_definition.service[each.key].arn
  desired_count    = var.desired_count[each.key]
  launch_type      = "FARGATE"
  platform_version = "LATEST" # ECS exec needs platform 1.4.0 or later

  enable_execute_command = true
  propagate_tags         = "SERVICE"

  deployment_minimum_healthy_percent = each.value.min_healthy_percent
  deployment_maximum_percent         = each.value.max_percent

  # A deployment whose tasks keep failing (bad image, missing topic, wrong credentials)
  # stops and rolls back to the last working task definition.
  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  network_configuration {
    subnets          = var.private_subnet_ids
    security_groups  = each.value.port == null ? [aws_security_group.tasks.id] : [aws_security_group.tasks.id, aws_security_group.api.id]
    assign_public_ip = var.assign_public_ip
  }

  # Only the api sits behind the ALB.
  dynamic "load_balancer" {
    for_each = each.value.port == null ? [] : [each.value.port]
    content {
      target_group_arn = aws_lb_target_group.api.arn
      container_name   = each.key
      container_port   = load_balancer.value
    }
  }

  # Time for a fresh api task to connect before ALB health checks count against it.
  health_check_grace_period_seconds = each.value.port == null ? null : 60

  # The first tasks need the listener (to register in the target group), the secrets'
  # values and the execution role's right to read them; the task definition names only
  # the secret ARNs, so say so explicitly.
  depends_on = [
    aws_lb_listener.http,
    aws_iam_role_policy.execution_secrets,
    aws_iam_role_policy.execution_registry,
    aws_secretsmanager_secret_version.confluent,
    aws_secretsmanager_secret_version.couchbase,
  ]
}
