# Internet-facing ALB in the public subnets, forwarding to the api tasks (target type
# "ip": Fargate tasks register by their ENI address).
#
# Who gets through (docs/security.md): the api itself asks every request but /healthz and
# /readyz for a bearer token or a signed-in user. HTTPS is required: port 80 only
# redirects to it, and plain HTTP needs var.insecure_allow_plain_http (a trial only). With oidc_sign_in or cognito_sign_in, the HTTPS listener signs
# browsers in before forwarding, and the api verifies the identity header the ALB signs;
# requests that carry a bearer token go straight to the api, which checks the token.

locals {
  https = var.certificate_arn != ""
  # OIDC or Cognito sign-in on the HTTPS listener.
  sign_in = var.oidc_sign_in != null || var.cognito_sign_in != null
  # The issuer (iss) of the identities the ALB asserts; the api checks it.
  sign_in_issuer = (
    var.oidc_sign_in != null ? var.oidc_sign_in.issuer :
    var.cognito_sign_in != null ? "https://cognito-idp.${data.aws_region.current.name}.amazonaws.com/${element(split("/", var.cognito_sign_in.user_pool_arn), 1)}" :
    ""
  )
}

resource "aws_lb" "this" {
  name               = "${var.name}-alb"
  internal           = false
  load_balancer_type = "application"
  security_groups    = [aws_security_group.alb.id]
  subnets            = var.public_subnet_ids

  drop_invalid_header_fields = true
  # The client's address is appended to X-Forwarded-For (never replaced by what the client
  # sent): the api takes the last entry as the client for its per-client limit.
  xff_header_processing_mode = "append"

  dynamic "access_logs" {
    for_each = var.access_logs_bucket == "" ? [] : [var.access_logs_bucket]
    content {
      bucket  = access_logs.value
      prefix  = var.name
      enabled = true
    }
  }

  lifecycle {
    precondition {
      condition     = local.https || var.insecure_allow_plain_http
      error_message = "certificate_arn is required: without it bearer tokens would cross the internet in clear text. For a throwaway trial without TLS, set insecure_allow_plain_http = true."
    }
    precondition {
      condition     = !local.sign_in || local.https
      error_message = "oidc_sign_in and cognito_sign_in need certificate_arn: the ALB signs users in on HTTPS only."
    }
    precondition {
      condition     = var.oidc_sign_in == null || var.cognito_sign_in == null
      error_message = "Set oidc_sign_in or cognito_sign_in, not both."
    }
  }
}

resource "aws_lb_target_group" "api" {
  # A target group cannot be changed in place (port, protocol, VPC): Terraform replaces it,
  # and create_before_destroy (below) creates the new one first while the listeners still
  # point at the old, so its name must differ: a short hash of what forces the replacement.
  name        = "${var.name}-api-${substr(sha1(join(":", [var.vpc_id, local.api_port, "HTTP", "ip"])), 0, 6)}"
  port        = local.api_port
  protocol    = "HTTP"
  target_type = "ip"
  vpc_id      = var.vpc_id

  # The api stops cleanly on SIGTERM; 30 s is plenty to finish in-flight requests
  # (the default 300 s only slows deployments down).
  deregistration_delay = 30

  # Liveness only: /healthz answers {"status":"ok"} without touching Kafka or the store,
  # so a store outage does not take the web view and the JSON errors off the ALB. It needs
  # no credentials, and the ALB's health checks never go through a listener's sign-in.
  health_check {
    path                = "/healthz"
    matcher             = "200"
    protocol            = "HTTP"
    port                = "traffic-port"
    interval            = 15
    timeout             = 5
    healthy_threshold   = 2
    unhealthy_threshold = 3
  }

  lifecycle {
    create_before_destroy = true
  }
}

# With a certificate: redirects every request to HTTPS. Without one (only with
# var.insecure_allow_plain_http): forwards, and tokens travel in clear text.
resource "aws_lb_listener" "http" {
  load_balancer_arn = aws_lb.this.arn
  port              = 80
  protocol          = "HTTP"

  dynamic "default_action" {
    for_each = local.https ? [] : ["forward"]
    content {
      type             = "forward"
      target_group_arn = aws_lb_target_group.api.arn
    }
  }

  dynamic "default_action" {
    for_each = local.https ? ["redirect"] : []
    content {
      type = "redirect"
      redirect {
        port        = "443"
        protocol    = "HTTPS"
        status_code = "HTTP_301"
      }
    }
  }
}

resource "aws_lb_listener" "https" {
  count = var.certificate_arn == "" ? 0 : 1

  load_balancer_arn = aws_lb.this.arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-2021-06"
  certificate_arn   = var.certificate_arn

  # Sign-in first (when configured), then forward.
  dynamic "default_action" {
    for_each = var.oidc_sign_in == null ? [] : [var.oidc_sign_in]
    content {
      type  = "authenticate-oidc"
      order = 1
      authenticate_oidc {
        issuer                     = default_action.value.issuer
        authorization_endpoint     = default_action.value.authorization_endpoint
        token_endpoint             = default_action.value.token_endpoint
        user_info_endpoint         = default_action.value.user_info_endpoint
        client_id                  = default_action.value.client_id
        client_secret              = var.oidc_client_secret
        scope                      = default_action.value.scope
        session_timeout            = var.sign_in_session_timeout
        on_unauthenticated_request = "authenticate"
      }
    }
  }

  dynamic "default_action" {
    for_each = var.cognito_sign_in == null ? [] : [var.cognito_sign_in]
    content {
      type  = "authenticate-cognito"
      order = 1
      authenticate_cognito {
        user_pool_arn              = default_action.value.user_pool_arn
        user_pool_client_id        = default_action.value.user_pool_client_id
        user_pool_domain           = default_action.value.user_pool_domain
        session_timeout            = var.sign_in_session_timeout
        on_unauthenticated_request = "authenticate"
      }
    }
  }

  default_action {
    type             = "forward"
    order            = 2
    target_group_arn = aws_lb_target_group.api.arn
  }
}

# With sign-in: scripts and the console send a bearer token and cannot follow a browser
# sign-in, so requests with one skip it; the api checks the token (a wrong one is a 401).
resource "aws_lb_listener_rule" "bearer_token" {
  count = local.sign_in && local.https ? 1 : 0

  listener_arn = aws_lb_listener.https[0].arn
  priority     = 10

  condition {
    http_header {
      http_header_name = "Authorization"
      values           = ["Bearer *"]
    }
  }

  action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.api.arn
  }
}

# With sign-in: liveness stays reachable for outside uptime checks (it says nothing but ok).
resource "aws_lb_listener_rule" "healthz" {
  count = local.sign_in && local.https ? 1 : 0

  listener_arn = aws_lb_listener.https[0].arn
  priority     = 20

  condition {
    path_pattern {
      values = ["/healthz"]
    }
  }

  action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.api.arn
  }
}

# Loud while plain HTTP is allowed: a check block's failure is a warning on every plan.
check "plain_http" {
  assert {
    condition     = !var.insecure_allow_plain_http || local.https
    error_message = "INSECURE: the ALB serves the api on plain HTTP (insecure_allow_plain_http, no certificate_arn): bearer tokens and orders cross the network in clear text."
  }
}
