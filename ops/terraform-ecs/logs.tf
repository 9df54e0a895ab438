# One log group per service: /ecs/orders/producer, /ecs/orders/api, ... Every container
# logs JSON lines (ORDERS_LOG_FORMAT=json) through the awslogs driver (locals.tf).
resource "aws_cloudwatch_log_group" "service" {
  for_each = local.services

  name              = "/ecs/${var.name}/${each.key}"
  retention_in_days = var.log_retention_days
}
