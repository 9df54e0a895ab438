# Security groups in the existing VPC (var.vpc_id). No VPC, subnets or NAT are built here.
#
#   alb:   80 (and 443 with a certificate) from var.ingress_cidrs; out to the api tasks, and
#          with sign-in to the identity provider on 443 (var.sign_in_egress_cidrs).
#   api:   8000 from the ALB's group only.
#   tasks: every task (daemons and api); ingress only to the ops port 9100 (/metrics,
#          /healthz, /readyz) from var.metrics_scraper_security_group_ids and
#          var.metrics_scraper_cidrs, none by default; all egress, since the tasks reach
#          Confluent Cloud and Couchbase Capella on the internet (plus the registry,
#          Secrets Manager, CloudWatch Logs and the SSM endpoints for ECS exec).
#
# name_prefix + create_before_destroy: a replaced group is created before the old one
# is detached, and two groups cannot share a name in one VPC.

resource "aws_security_group" "alb" {
  name_prefix = "${var.name}-alb-"
  description = "ALB of ${var.name}: HTTP(S) from the internet"
  vpc_id      = var.vpc_id

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "alb_http" {
  for_each = toset(var.ingress_cidrs)

  security_group_id = aws_security_group.alb.id
  description       = "HTTP from ${each.value}"
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = 80
  to_port           = 80
}

resource "aws_vpc_security_group_ingress_rule" "alb_https" {
  for_each = var.certificate_arn == "" ? toset([]) : toset(var.ingress_cidrs)

  security_group_id = aws_security_group.alb.id
  description       = "HTTPS from ${each.value}"
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
}

resource "aws_vpc_security_group_egress_rule" "alb_to_api" {
  security_group_id            = aws_security_group.alb.id
  description                  = "To the api tasks (traffic and health checks)"
  referenced_security_group_id = aws_security_group.api.id
  ip_protocol                  = "tcp"
  from_port                    = local.api_port
  to_port                      = local.api_port
}

# With OIDC or Cognito sign-in the ALB itself calls the identity provider's token and
# user-info endpoints (HTTPS) at /oauth2/idpresponse; without this, every login ends in a 500.
resource "aws_vpc_security_group_egress_rule" "alb_to_identity_provider" {
  for_each = local.sign_in ? toset(var.sign_in_egress_cidrs) : toset([])

  security_group_id = aws_security_group.alb.id
  description       = "To the identity provider's endpoints (sign-in)"
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
}

resource "aws_security_group" "api" {
  name_prefix = "${var.name}-api-"
  description = "api tasks of ${var.name}: port ${local.api_port} from the ALB only"
  vpc_id      = var.vpc_id

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "api_from_alb" {
  security_group_id            = aws_security_group.api.id
  description                  = "From the ALB"
  referenced_security_group_id = aws_security_group.alb.id
  ip_protocol                  = "tcp"
  from_port                    = local.api_port
  to_port                      = local.api_port
}

resource "aws_security_group" "tasks" {
  name_prefix = "${var.name}-tasks-"
  description = "All tasks of ${var.name}: outbound to Kafka, Couchbase and AWS APIs"
  vpc_id      = var.vpc_id

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "ops_from_scraper_groups" {
  for_each                     = toset(var.metrics_scraper_security_group_ids)
  security_group_id            = aws_security_group.tasks.id
  description                  = "Ops port (metrics, health) from a scraper"
  referenced_security_group_id = each.value
  ip_protocol                  = "tcp"
  from_port                    = local.ops_port
  to_port                      = local.ops_port
}

resource "aws_vpc_security_group_ingress_rule" "ops_from_scraper_cidrs" {
  for_each          = toset(var.metrics_scraper_cidrs)
  security_group_id = aws_security_group.tasks.id
  description       = "Ops port (metrics, health) from a scraper range"
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = local.ops_port
  to_port           = local.ops_port
}

resource "aws_vpc_security_group_egress_rule" "tasks_all" {
  security_group_id = aws_security_group.tasks.id
  description       = "Everything out (Confluent Cloud, Couchbase Capella, AWS endpoints)"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "-1"
}
