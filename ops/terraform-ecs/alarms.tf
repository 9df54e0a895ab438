# CloudWatch alarms that roll a deployment back (aws_ecs_service.alarms, var.deployment_alarms).
# They read the services' JSON log lines (ORDERS_LOG_FORMAT=json, one object per line with
# "level" and "fields.message"), so they need neither Container Insights nor a scraper:
#
#   <name>-<service>-errors:     more than var.error_alarm_threshold ERROR lines in 5 minutes.
#   <name>-producer-stalled:     no "order produced" line for var.producer_stalled_minutes
#                                (a producer stuck before its loop passes its liveness check).
#
# ECS watches a deployment's alarms while it rolls out and for a bake time after; an alarm
# in ALARM then rolls the service back to its last completed deployment.

locals {
  alarm_namespace = "Orders/${var.name}"
  # Service => the names of its alarms; empty without var.deployment_alarms.
  deployment_alarm_names = {
    for role, alarm in aws_cloudwatch_metric_alarm.errors : role => concat(
      [alarm.alarm_name],
      [for stalled in aws_cloudwatch_metric_alarm.producer_stalled : stalled.alarm_name if role == "producer"],
    )
  }
}

resource "aws_cloudwatch_log_metric_filter" "errors" {
  for_each = var.deployment_alarms ? local.services : {}

  name           = "${var.name}-${each.key}-errors"
  log_group_name = aws_cloudwatch_log_group.service[each.key].name
  pattern        = "{ $.level = \"ERROR\" }"

  metric_transformation {
    name          = "${each.key}-error-log-lines"
    namespace     = local.alarm_namespace
    value         = "1"
    default_value = "0"
  }
}

resource "aws_cloudwatch_metric_alarm" "errors" {
  for_each = aws_cloudwatch_log_metric_filter.errors

  alarm_name          = "${var.name}-${each.key}-errors"
  alarm_description   = "The ${each.key} service logs more than ${var.error_alarm_threshold} ERROR lines in 5 minutes (rolls a deployment back)."
  namespace           = local.alarm_namespace
  metric_name         = each.value.metric_transformation[0].name
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  threshold           = var.error_alarm_threshold
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
}

resource "aws_cloudwatch_log_metric_filter" "orders_produced" {
  count = var.deployment_alarms && var.desired_count.producer > 0 ? 1 : 0

  name           = "${var.name}-producer-orders-produced"
  log_group_name = aws_cloudwatch_log_group.service["producer"].name
  pattern        = "{ $.fields.message = \"order produced\" }"

  metric_transformation {
    name          = "orders-produced"
    namespace     = local.alarm_namespace
    value         = "1"
    default_value = "0"
  }
}

resource "aws_cloudwatch_metric_alarm" "producer_stalled" {
  count = length(aws_cloudwatch_log_metric_filter.orders_produced)

  alarm_name          = "${var.name}-producer-stalled"
  alarm_description   = "No order produced for ${var.producer_stalled_minutes} minutes (rolls a producer deployment back)."
  namespace           = local.alarm_namespace
  metric_name         = aws_cloudwatch_log_metric_filter.orders_produced[0].metric_transformation[0].name
  statistic           = "Sum"
  period              = 60
  evaluation_periods  = var.producer_stalled_minutes
  datapoints_to_alarm = var.producer_stalled_minutes
  threshold           = 1
  comparison_operator = "LessThanThreshold"
  # No log line at all (a producer that never got going) counts as no order.
  treat_missing_data = "breaching"
}
