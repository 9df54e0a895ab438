output "alb_dns_name" {
  description = "DNS name of the ALB (point a CNAME or alias record at it)."
  value       = aws_lb.this.dns_name
}

output "url" {
  description = "The web view and the API through the ALB."
  value       = local.https ? "https://${aws_lb.this.dns_name}/" : "http://${aws_lb.this.dns_name}/ (INSECURE: plain HTTP)"
}

output "cluster_name" {
  description = "Name of the ECS cluster."
  value       = aws_ecs_cluster.this.name
}

output "service_names" {
  description = "ECS service name of each role."
  value       = { for role, svc in aws_ecs_service.service : role => svc.name }
}

output "log_group_names" {
  description = "CloudWatch log group of each role."
  value       = { for role, group in aws_cloudwatch_log_group.service : role => group.name }
}

output "secret_arns" {
  description = "ARNs of the credentials secrets and of the api's tokens (the ARNs only, not the values)."
  value = {
    confluent  = aws_secretsmanager_secret.confluent.arn
    couchbase  = aws_secretsmanager_secret.couchbase.arn
    api_tokens = aws_secretsmanager_secret.api_tokens.arn
    postgres   = aws_secretsmanager_secret.postgres.arn
  }
}

output "exec_command" {
  description = "Opens the operator console inside a running api task (needs enable_execute_command, the AWS CLI and its Session Manager plugin)."
  value = !var.enable_execute_command ? "ECS exec is off: set enable_execute_command = true (sessions are logged to /ecs/${var.name}/exec)" : join(" ", [
    "aws ecs execute-command",
    "--region ${data.aws_region.current.name}",
    "--cluster ${aws_ecs_cluster.this.name}",
    "--task \"$(aws ecs list-tasks --region ${data.aws_region.current.name} --cluster ${aws_ecs_cluster.this.name} --service-name ${aws_ecs_service.service["api"].name} --desired-status RUNNING --query 'taskArns[0]' --output text)\"",
    "--container api",
    "--interactive",
    "--command \"ordersctl tui --api http://127.0.0.1:${local.api_port}\"",
  ])
}

output "metrics_targets" {
  description = "What a Prometheus scraper inside the VPC scrapes: every task's ops port, job orders-<service> (docs/deploy.md, Metrics on AWS)."
  value = {
    port = local.ops_port
    path = "/metrics"
    jobs = { for role in keys(local.services) : role => "orders-${role}" }
  }
}
