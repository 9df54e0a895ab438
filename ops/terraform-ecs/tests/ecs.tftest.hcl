# terraform test (ops/scripts/check-terraform.sh): plans against a mocked AWS provider, so
# no account or network is needed, and asserts what the plan would create.

mock_provider "aws" {
  # Data sources answer with plausible values instead of random strings.
  mock_data "aws_region" {
    defaults = { name = "us-east-1" }
  }
  mock_data "aws_partition" {
    defaults = { partition = "aws" }
  }
  mock_data "aws_caller_identity" {
    defaults = { account_id = "123456789012" }
  }
  mock_data "aws_iam_policy_document" {
    defaults = { json = "{\"Version\":\"2012-10-17\",\"Statement\":[]}" }
  }
  # The provider still validates every argument, ARNs included: applied resources get
  # well-formed ones.
  mock_resource "aws_iam_role" {
    defaults = { arn = "arn:aws:iam::123456789012:role/mock" }
  }
  mock_resource "aws_lb" {
    defaults = { arn = "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/mock/0123456789abcdef" }
  }
  mock_resource "aws_lb_target_group" {
    defaults = { arn = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/mock/0123456789abcdef" }
  }
  mock_resource "aws_lb_listener" {
    defaults = { arn = "arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/mock/0123456789abcdef/0123456789abcdef" }
  }
  mock_resource "aws_wafv2_web_acl" {
    defaults = { arn = "arn:aws:wafv2:us-east-1:123456789012:regional/webacl/mock/00000000-0000-0000-0000-000000000000" }
  }
  mock_resource "aws_secretsmanager_secret" {
    defaults = { arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:mock-AbCdEf" }
  }
  mock_resource "aws_cloudwatch_log_group" {
    defaults = { arn = "arn:aws:logs:us-east-1:123456789012:log-group:mock" }
  }
  mock_resource "aws_ecs_cluster" {
    defaults = { arn = "arn:aws:ecs:us-east-1:123456789012:cluster/mock", id = "arn:aws:ecs:us-east-1:123456789012:cluster/mock" }
  }
  mock_resource "aws_ecs_task_definition" {
    defaults = { arn = "arn:aws:ecs:us-east-1:123456789012:task-definition/mock:1" }
  }
}

variables {
  image                       = "ghcr.io/acme/orders:1.0.0"
  vpc_id                      = "vpc-0123456789abcdef0"
  public_subnet_ids           = ["subnet-0aaaaaaaaaaaaaaa1", "subnet-0aaaaaaaaaaaaaaa2"]
  private_subnet_ids          = ["subnet-0bbbbbbbbbbbbbbb1"]
  certificate_arn             = "arn:aws:acm:us-east-1:123456789012:certificate/00000000-0000-0000-0000-000000000000"
  confluent_bootstrap_servers = "pkc-test.us-east-1.aws.confluent.cloud:9092"
  confluent_api_key           = "test-key"
  confluent_api_secret        = "test-secret"
  couchbase_host              = "cb.test.cloud.couchbase.com"
  couchbase_username          = "test-user"
  couchbase_password          = "test-password"
  api_tokens                  = "0123456789abcdef0123456789abcdef"
  api_console_token           = "0123456789abcdef0123456789abcdef"
  # Ephemeral: set here, else an applied run asks for it again.
  postgres_url = ""
}

run "defaults_are_https_waf_no_exec_alarms" {
  command = plan

  assert {
    condition     = one(aws_lb_listener.http.default_action).type == "redirect"
    error_message = "with a certificate, port 80 only redirects to HTTPS"
  }
  assert {
    condition     = length(aws_lb_listener.https) == 1
    error_message = "an HTTPS listener"
  }
  assert {
    condition     = length(aws_wafv2_web_acl.alb) == 1 && length(aws_wafv2_web_acl_association.alb) == 1
    error_message = "WAF is on by default"
  }
  assert {
    condition     = alltrue([for s in aws_ecs_service.service : s.enable_execute_command == false])
    error_message = "ECS exec is off by default"
  }
  assert {
    condition     = length(aws_iam_role_policy.task_exec) == 0 && length(aws_cloudwatch_log_group.exec) == 0
    error_message = "no exec permissions or exec log group while exec is off"
  }
  assert {
    condition     = length(aws_vpc_security_group_egress_rule.alb_to_identity_provider) == 0
    error_message = "no ALB egress to the internet without sign-in"
  }
  assert {
    condition     = alltrue([for s in aws_ecs_service.service : s.wait_for_steady_state])
    error_message = "apply waits for every deployment"
  }
  assert {
    condition     = alltrue([for s in aws_ecs_service.service : one(s.alarms).enable && one(s.alarms).rollback])
    error_message = "every service rolls back on its alarms"
  }
  assert {
    condition     = contains(one(aws_ecs_service.service["producer"].alarms).alarm_names, "orders-producer-stalled")
    error_message = "the producer rolls back when it produces nothing"
  }
  assert {
    condition     = aws_cloudwatch_log_metric_filter.orders_produced[0].pattern == "{ $.fields.message = \"order produced\" }"
    error_message = "the producer's alarm counts its \"order produced\" lines"
  }
  assert {
    condition     = aws_secretsmanager_secret_version.confluent.secret_string == null && aws_secretsmanager_secret_version.confluent.secret_string_wo_version == 1
    error_message = "credentials go through the write-only attribute, not secret_string"
  }
}

run "producer_never_overlaps_and_health_is_liveness" {
  # Applied against the mock: the task definitions' JSON holds the secrets' ARNs, known
  # only after apply (the mock makes them up).
  command = apply

  assert {
    condition     = aws_ecs_service.service["producer"].deployment_minimum_healthy_percent == 0 && aws_ecs_service.service["producer"].deployment_maximum_percent == 100
    error_message = "the old producer stops before the new one starts"
  }
  assert {
    condition = (
      [for c in jsondecode(aws_ecs_task_definition.service["producer"].container_definitions) : c.name] == ["producer", "start-gate"]
      && jsondecode(aws_ecs_task_definition.service["producer"].container_definitions)[0].dependsOn == [{ containerName = "start-gate", condition = "SUCCESS" }]
      && jsondecode(aws_ecs_task_definition.service["producer"].container_definitions)[1].command == ["sleep", "35"]
      && jsondecode(aws_ecs_task_definition.service["producer"].container_definitions)[1].essential == false
    )
    error_message = "the producer waits for a start gate longer than the old task's 30 s stop timeout"
  }
  assert {
    condition = alltrue([
      for role, td in aws_ecs_task_definition.service :
      jsondecode(td.container_definitions)[0].healthCheck.command == ["CMD", "ordersd", "healthcheck"]
    ])
    error_message = "every container's health check is liveness (the api's too), never readiness"
  }
  assert {
    condition = alltrue([
      for role, td in aws_ecs_task_definition.service :
      contains([for p in jsondecode(td.container_definitions)[0].portMappings : p.containerPort], 9100)
      && contains(jsondecode(td.container_definitions)[0].environment, { name = "ORDERS_OPS_ADDR", value = "0.0.0.0:9100" })
    ])
    error_message = "every role, the api too, serves the ops port 9100"
  }
}

run "scrapers_reach_the_ops_port" {
  command = plan

  variables {
    metrics_scraper_security_group_ids = ["sg-0123456789abcdef0"]
  }

  assert {
    condition = (
      aws_vpc_security_group_ingress_rule.ops_from_scraper_groups["sg-0123456789abcdef0"].from_port == 9100
      && aws_vpc_security_group_ingress_rule.ops_from_scraper_groups["sg-0123456789abcdef0"].referenced_security_group_id == "sg-0123456789abcdef0"
    )
    error_message = "the scraper's group may reach 9100"
  }
  assert {
    condition     = length(aws_vpc_security_group_ingress_rule.ops_from_scraper_cidrs) == 0
    error_message = "no CIDR rule unless asked"
  }
}

run "no_certificate_is_refused" {
  command = plan

  variables {
    certificate_arn = ""
  }

  expect_failures = [aws_lb.this]
}

run "plain_http_only_with_the_loud_switch" {
  command = plan

  variables {
    certificate_arn           = ""
    insecure_allow_plain_http = true
  }

  # The check block warns on every plan while plain HTTP is on.
  expect_failures = [check.plain_http]

  assert {
    condition     = one(aws_lb_listener.http.default_action).type == "forward" && length(aws_lb_listener.https) == 0
    error_message = "with the switch, port 80 forwards"
  }
}

run "sign_in_opens_443_egress_and_times_out" {
  command = plan

  variables {
    oidc_sign_in = {
      issuer                 = "https://login.example.com"
      authorization_endpoint = "https://login.example.com/authorize"
      token_endpoint         = "https://login.example.com/token"
      user_info_endpoint     = "https://login.example.com/userinfo"
      client_id              = "client"
    }
    oidc_client_secret      = "client-secret"
    sign_in_session_timeout = 3600
  }

  assert {
    condition = (
      aws_vpc_security_group_egress_rule.alb_to_identity_provider["0.0.0.0/0"].from_port == 443
      && aws_vpc_security_group_egress_rule.alb_to_identity_provider["0.0.0.0/0"].to_port == 443
    )
    error_message = "the ALB may reach the identity provider on 443"
  }
  assert {
    condition     = [for a in aws_lb_listener.https[0].default_action : a.authenticate_oidc[0].session_timeout if a.type == "authenticate-oidc"] == [3600]
    error_message = "the sign-in session lasts sign_in_session_timeout"
  }
}

run "exec_when_enabled_is_logged" {
  command = plan

  variables {
    enable_execute_command = true
  }

  assert {
    condition     = alltrue([for s in aws_ecs_service.service : s.enable_execute_command])
    error_message = "exec on every service"
  }
  assert {
    condition = (
      one(one(one(aws_ecs_cluster.this.configuration).execute_command_configuration).log_configuration).cloud_watch_log_group_name == "/ecs/orders/exec"
      && one(one(aws_ecs_cluster.this.configuration).execute_command_configuration).logging == "OVERRIDE"
    )
    error_message = "exec sessions are logged to /ecs/orders/exec"
  }
  assert {
    condition     = length(aws_iam_role_policy.task_exec) == 1
    error_message = "the task role may open exec channels and write the session log"
  }
}

run "moving_image_tag_is_refused" {
  command = plan

  variables {
    image = "ghcr.io/acme/orders:latest"
  }

  expect_failures = [var.image]
}

run "short_api_token_is_refused" {
  command = plan

  variables {
    api_tokens        = "short"
    api_console_token = "short"
  }

  expect_failures = [var.api_tokens]
}

run "alarms_can_be_turned_off" {
  command = plan

  variables {
    deployment_alarms = false
  }

  assert {
    condition     = alltrue([for s in aws_ecs_service.service : length(s.alarms) == 0]) && length(aws_cloudwatch_metric_alarm.errors) == 0
    error_message = "no alarms without deployment_alarms"
  }
}
