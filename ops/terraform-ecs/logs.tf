# One log group per service: /ecs/orders/producer, /ecs/orders/api, ... Every container
# logs JSON lines (ORDERS_LOG_FORMAT=json) through the awslogs driver (locals.tf).
resource "aws_cloudwatch_log_group" "service" {
  for_each = local.services

  name              = "/ecs/${var.name}/${each.key}"
  retention_in_days = var.log_retention_days
}

# ECS exec sessions (only with var.enable_execute_command): who typed what inside a task.
resource "aws_cloudwatch_log_group" "exec" {
  count = var.enable_execute_command ? 1 : 0

  name              = "/ecs/${var.name}/exec"
  retention_in_days = var.exec_log_retention_days
}
