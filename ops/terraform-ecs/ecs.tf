resource "aws_ecs_cluster" "this" {
  name = var.name

  setting {
    name  = "containerInsights"
    value = var.enable_container_insights ? "enabled" : "disabled"
  }

  # ECS exec (var.enable_execute_command, off by default): when on, every session's input
  # and output goes to its own log group /ecs/<name>/exec (logs.tf), apart from the
  # services' logs (the console redraws its screen every second); CloudTrail records
  # every ExecuteCommand call (who, which task, which container).
  dynamic "configuration" {
    for_each = var.enable_execute_command ? [aws_cloudwatch_log_group.exec[0].name] : []
    content {
      execute_command_configuration {
        logging = "OVERRIDE"
        log_configuration {
          cloud_watch_log_group_name = configuration.value
        }
      }
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

  enable_execute_command = var.enable_execute_command
  propagate_tags         = "SERVICE"
  # terraform apply waits for each deployment to finish and fails when it does not
  # (circuit breaker or alarm rollback): a broken release is an error, not a green apply.
  wait_for_steady_state = var.wait_for_steady_state

  deployment_minimum_healthy_percent = each.value.min_healthy_percent
  deployment_maximum_percent         = each.value.max_percent

  # A deployment whose tasks keep failing (bad image, missing topic, wrong credentials)
  # stops and rolls back to the last working task definition.
  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  # The circuit breaker only sees tasks that fail to start or turn unhealthy; a producer
  # that starts but never produces, or a daemon that logs errors on every record, passes
  # it. These CloudWatch alarms (alarms.tf) roll such a deployment back too.
  dynamic "alarms" {
    for_each = var.deployment_alarms ? [local.deployment_alarm_names[each.key]] : []
    content {
      alarm_names = alarms.value
      enable      = true
      rollback    = true
    }
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

  # The first tasks need the listeners (to register in the target group), every secret's
  # value, the roles' policies (the execution role's to pull and read the secrets, the
  # task role's for ECS exec) and the log groups; the task definition names only ARNs,
  # so say so explicitly. On destroy, the services go first, then what they used.
  depends_on = [
    aws_lb_listener.http,
    aws_lb_listener.https,
    aws_iam_role_policy_attachment.execution,
    aws_iam_role_policy.execution_secrets,
    aws_iam_role_policy.execution_registry,
    aws_iam_role_policy.task_exec,
    aws_secretsmanager_secret_version.confluent,
    aws_secretsmanager_secret_version.couchbase,
    aws_secretsmanager_secret_version.api_tokens,
    aws_secretsmanager_secret_version.postgres,
  ]
}
