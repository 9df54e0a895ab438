# ---------------------------------------------------------------------------
# Placement and naming
# ---------------------------------------------------------------------------

variable "aws_region" {
  type        = string
  description = "AWS region to deploy into."
  default     = "us-east-1"
}

variable "name" {
  type        = string
  description = "Name of the deployment: the cluster, the services (<name>-api, ...), the ALB, the IAM roles and the log groups (/ecs/<name>/<service>) are named after it."
  default     = "orders"

  validation {
    # The ALB and target group names ("<name>-alb", "<name>-api") may not exceed 32 characters.
    condition     = can(regex("^[a-z][a-z0-9-]{0,19}$", var.name))
    error_message = "name must be 1-20 characters of lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "tags" {
  type        = map(string)
  description = "Extra tags for every resource."
  default     = {}
}

# ---------------------------------------------------------------------------
# The image: one image, both binaries (ordersd runs a role, ordersctl is the console)
# ---------------------------------------------------------------------------

variable "image" {
  type        = string
  description = "Container image holding ordersd and ordersctl, by version tag or digest, e.g. \"ghcr.io/acme/orders:1.4.2\" or \"ghcr.io/acme/orders@sha256:...\". Its entrypoint is not set: the task definitions give the full command."

  validation {
    # A moving tag makes every task start whatever was pushed last, and a rollback by the
    # circuit breaker or the alarms roll "back" to the same moving tag.
    condition     = can(regex("(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}|@sha256:[0-9a-f]{64})$", var.image)) && !endswith(var.image, ":latest")
    error_message = "image needs a version tag or a digest (e.g. ghcr.io/acme/orders:1.4.2), not :latest or no tag."
  }
}

variable "registry_credentials_arn" {
  type        = string
  description = "ARN of an existing Secrets Manager secret with {\"username\", \"password\"} for a private registry (e.g. a GitHub token with read:packages for ghcr.io). Empty: the image is pulled anonymously (public image, or ECR through the execution role)."
  default     = ""
}

variable "cpu_architecture" {
  type        = string
  description = "CPU architecture of the tasks; the image must be built for it."
  default     = "X86_64"

  validation {
    condition     = contains(["X86_64", "ARM64"], var.cpu_architecture)
    error_message = "cpu_architecture must be X86_64 or ARM64."
  }
}

# ---------------------------------------------------------------------------
# Networking: an existing VPC. Tasks reach Confluent Cloud and Couchbase Capella on the
# internet, so the private subnets need a NAT gateway (or see assign_public_ip).
# ---------------------------------------------------------------------------

variable "vpc_id" {
  type        = string
  description = "ID of the existing VPC."
}

variable "public_subnet_ids" {
  type        = list(string)
  description = "Public subnets (route to an internet gateway) for the internet-facing ALB; at least two, in different availability zones."

  validation {
    condition     = length(var.public_subnet_ids) >= 2
    error_message = "An ALB needs at least two subnets in different availability zones."
  }
}

variable "private_subnet_ids" {
  type        = list(string)
  description = "Subnets for the tasks. They need outbound internet access (NAT gateway) for Kafka, Couchbase, the image registry, Secrets Manager, CloudWatch Logs and ECS exec."

  validation {
    condition     = length(var.private_subnet_ids) >= 1
    error_message = "Give at least one subnet for the tasks."
  }
}

variable "assign_public_ip" {
  type        = bool
  description = "Give each task a public IP. Only needed when the task subnets route to an internet gateway instead of a NAT gateway (e.g. public subnets passed as private_subnet_ids); task ingress stays limited to the ALB either way."
  default     = false
}

variable "certificate_arn" {
  type        = string
  description = "ACM certificate ARN for the ALB's HTTPS listener on 443; port 80 then only redirects there (301). Required: without one, plan fails unless insecure_allow_plain_http is set."
  default     = ""
}

variable "insecure_allow_plain_http" {
  type        = bool
  description = "DANGER. Serve the api on plain HTTP (port 80 forwards) when no certificate_arn is given: every bearer token and every order then crosses the internet in clear text. For a throwaway trial only; plan prints a warning while it is set."
  default     = false
}

# ---------------------------------------------------------------------------
# Who reaches the ALB and who gets through it (docs/security.md)
# ---------------------------------------------------------------------------

variable "ingress_cidrs" {
  type        = list(string)
  description = "IPv4 CIDR blocks allowed to reach the ALB on 80 and 443. The default, anywhere, is safe only because the api asks every caller for a token or a sign-in; narrow it to your office and VPN ranges where you can."
  default     = ["0.0.0.0/0"]

  validation {
    condition     = length(var.ingress_cidrs) > 0 && alltrue([for c in var.ingress_cidrs : can(cidrhost(c, 0))])
    error_message = "ingress_cidrs needs at least one valid IPv4 CIDR block, e.g. \"203.0.113.0/24\"."
  }
}

variable "metrics_scraper_security_group_ids" {
  type        = list(string)
  description = "Security groups of what scrapes the tasks' ops port 9100 (/metrics, /healthz, /readyz): an Amazon Managed Prometheus scraper's, or a Prometheus task's. Empty: nothing can reach the port (see docs/deploy.md)."
  default     = []
}

variable "metrics_scraper_cidrs" {
  type        = list(string)
  description = "IPv4 CIDR blocks (inside the VPC) allowed to scrape the tasks' ops port 9100, for a scraper without a security group of its own."
  default     = []

  validation {
    condition     = alltrue([for c in var.metrics_scraper_cidrs : can(cidrhost(c, 0))])
    error_message = "metrics_scraper_cidrs takes IPv4 CIDR blocks, e.g. \"10.0.0.0/16\"."
  }
}

variable "oidc_sign_in" {
  type = object({
    issuer                 = string
    authorization_endpoint = string
    token_endpoint         = string
    user_info_endpoint     = string
    client_id              = string
    scope                  = optional(string, "openid email")
  })
  description = "Sign browsers in with an OpenID Connect identity provider on the HTTPS listener (needs certificate_arn; the client secret is oidc_client_secret). Null (the default): no sign-in, token holders only."
  default     = null
}

variable "oidc_client_secret" {
  type        = string
  description = "Client secret of oidc_sign_in's client at the identity provider."
  sensitive   = true
  default     = ""
}

variable "cognito_sign_in" {
  type = object({
    user_pool_arn       = string
    user_pool_client_id = string
    user_pool_domain    = string
  })
  description = "Sign browsers in with an Amazon Cognito user pool on the HTTPS listener (needs certificate_arn; not with oidc_sign_in). Null (the default): no sign-in."
  default     = null
}

variable "sign_in_session_timeout" {
  type        = number
  description = "With oidc_sign_in or cognito_sign_in: seconds a browser's sign-in session at the ALB lasts before the user signs in again (the ALB's default is 7 days)."
  default     = 28800

  validation {
    condition     = var.sign_in_session_timeout >= 60 && var.sign_in_session_timeout <= 604800
    error_message = "sign_in_session_timeout must be between 60 s and 604800 s (7 days)."
  }
}

variable "sign_in_egress_cidrs" {
  type        = list(string)
  description = "With sign-in: where the ALB may open HTTPS (443) connections, to reach the identity provider's token and user-info endpoints. Default anywhere, since providers publish no fixed ranges; narrow it when yours does."
  default     = ["0.0.0.0/0"]

  validation {
    condition     = alltrue([for c in var.sign_in_egress_cidrs : can(cidrhost(c, 0))])
    error_message = "sign_in_egress_cidrs takes IPv4 CIDR blocks."
  }
}

variable "enable_waf" {
  type        = bool
  description = "Put an AWS WAF web ACL in front of the ALB: a rate-based rule per client IP and the AWS managed common rule set (billed per ACL, rule and request). On by default; turn it off only when another WAF or a CDN already stands in front."
  default     = true
}

variable "waf_rate_limit" {
  type        = number
  description = "With enable_waf: requests one IP may make in any 5 minutes before the WAF blocks it."
  default     = 2000

  validation {
    condition     = var.waf_rate_limit >= 100 && var.waf_rate_limit <= 2000000000
    error_message = "waf_rate_limit must be between 100 and 2,000,000,000 requests per 5 minutes."
  }
}

variable "access_logs_bucket" {
  type        = string
  description = "Name of an existing S3 bucket for the ALB's access logs, under the prefix <name>/ (the bucket policy must let the region's load balancers write: docs/deploy.md). Empty (the default): no access logs."
  default     = ""
}

# ---------------------------------------------------------------------------
# The cluster and the services
# ---------------------------------------------------------------------------

variable "enable_execute_command" {
  type        = bool
  description = "Allow `aws ecs execute-command` into the tasks (the operator console, outputs.exec_command). Off by default; when on, every session's input and output is logged to the /ecs/<name>/exec log group (exec_log_retention_days) and CloudTrail records who opened it."
  default     = false
}

variable "exec_log_retention_days" {
  type        = number
  description = "With enable_execute_command: retention of the /ecs/<name>/exec log group, in days."
  default     = 90

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.exec_log_retention_days)
    error_message = "exec_log_retention_days must be one of the values CloudWatch Logs accepts (1, 3, 5, 7, 14, 30, 60, 90, ...)."
  }
}

variable "wait_for_steady_state" {
  type        = bool
  description = "Make terraform apply wait until every service's deployment has finished (its tasks running and healthy, no rollback) and fail otherwise."
  default     = true
}

variable "deployment_alarms" {
  type        = bool
  description = "Roll a deployment back when its service's CloudWatch alarms fire: ERROR log lines over error_alarm_threshold in 5 minutes (every service), and no order produced for producer_stalled_minutes (the producer). See docs/deploy.md."
  default     = true
}

variable "error_alarm_threshold" {
  type        = number
  description = "With deployment_alarms: ERROR log lines of one service in 5 minutes that set off its alarm."
  default     = 20
}

variable "producer_stalled_minutes" {
  type        = number
  description = "With deployment_alarms: minutes without an \"order produced\" log line after which the producer's alarm fires (keep it well above SLEEP_SECONDS)."
  default     = 5

  validation {
    condition     = var.producer_stalled_minutes >= 2 && var.producer_stalled_minutes <= 60
    error_message = "producer_stalled_minutes must be between 2 and 60."
  }
}

variable "enable_container_insights" {
  type        = bool
  description = "Turn on CloudWatch Container Insights for the cluster (billed per metric)."
  default     = false
}

variable "desired_count" {
  type = object({
    producer  = optional(number, 1)
    fraud     = optional(number, 1)
    payment   = optional(number, 1)
    analytics = optional(number, 1)
    api       = optional(number, 2)
    ingest    = optional(number, 0)
  })
  description = "Number of tasks per service. ingest (orders from PostgreSQL, docs/ingest.md) is off (0) unless postgres_url is set and it is given 1. Consumer tasks of one service share the 6 partitions of the orders topic through their consumer group, so more than 6 leaves the extra ones idle. Give only the ones to change, e.g. { fraud = 3 }."
  default     = {}

  validation {
    # Two producers would both continue from the same highest stored order id and
    # write the same ids: the SPEC requires unique order ids.
    condition     = var.desired_count.producer <= 1
    error_message = "The producer runs as one task (0 to pause it): two producers would emit the same order ids."
  }

  validation {
    # A replication slot has one reader.
    condition     = var.desired_count.ingest <= 1
    error_message = "The ingest runs as one task (0 = off): its replication slot has one reader."
  }

  validation {
    condition     = alltrue([for n in values(var.desired_count) : n >= 0 && floor(n) == n])
    error_message = "Desired counts are whole numbers >= 0."
  }
}

variable "task_cpu" {
  type = object({
    producer  = optional(number, 256)
    fraud     = optional(number, 256)
    payment   = optional(number, 256)
    analytics = optional(number, 256)
    api       = optional(number, 256)
    ingest    = optional(number, 256)
  })
  description = "Fargate CPU units per task (256 = 0.25 vCPU). Must be a valid Fargate CPU/memory pair with task_memory."
  default     = {}
}

variable "task_memory" {
  type = object({
    producer  = optional(number, 512)
    fraud     = optional(number, 512)
    payment   = optional(number, 512)
    analytics = optional(number, 512)
    api       = optional(number, 512)
    ingest    = optional(number, 512)
  })
  description = "Fargate memory per task, in MiB."
  default     = {}
}

variable "log_retention_days" {
  type        = number
  description = "Retention of the /ecs/<name>/<service> log groups, in days."
  default     = 30

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be one of the values CloudWatch Logs accepts (1, 3, 5, 7, 14, 30, 60, 90, ...)."
  }
}

# ---------------------------------------------------------------------------
# Application settings (plain environment variables, SPEC names)
# ---------------------------------------------------------------------------

variable "topic_name" {
  type        = string
  description = "TOPIC_NAME: the orders topic (6 partitions). The other topics have fixed names."
  default     = "orders"
}

variable "sleep_seconds" {
  type        = string
  description = "SLEEP_SECONDS: the producer's pause between orders."
  default     = "2"

  validation {
    condition     = can(tonumber(var.sleep_seconds)) && try(tonumber(var.sleep_seconds) >= 0, false)
    error_message = "sleep_seconds must be a number >= 0, given as a string (e.g. \"0.5\")."
  }
}

variable "payment_delay_ms" {
  type        = string
  description = "PAYMENT_DELAY_MS: simulated payment processing time per order (payments run concurrently)."
  default     = "100"

  validation {
    condition     = can(regex("^[0-9]+$", var.payment_delay_ms))
    error_message = "payment_delay_ms must be a whole number of milliseconds, given as a string."
  }
}

variable "fraud_threshold" {
  type        = string
  description = "FRAUD_THRESHOLD: the default rule flags amount > threshold outside US and CA."
  default     = "300"

  validation {
    condition     = can(tonumber(var.fraud_threshold))
    error_message = "fraud_threshold must be a number, given as a string."
  }
}

variable "rust_log" {
  type        = string
  description = "RUST_LOG filter for every container."
  default     = "info"
}

# ---------------------------------------------------------------------------
# Credentials. They land in Secrets Manager secrets (secrets.tf, write-only: never in the
# plan or the state; the variables are ephemeral) and reach the containers only through
# the task definitions' `secrets` blocks. No defaults on purpose: pass them with
# TF_VAR_... environment variables, never in a committed file.
# ---------------------------------------------------------------------------

variable "credentials_version" {
  type        = number
  description = "Version of the credentials written to Secrets Manager. Their values are write-only (Terraform keeps no copy to compare), so raise this by one whenever a credential changes: every secret then gets a new version with the values given now."
  default     = 1

  validation {
    condition     = var.credentials_version >= 1 && floor(var.credentials_version) == var.credentials_version
    error_message = "credentials_version is a whole number >= 1."
  }
}

variable "credentials_name_prefix" {
  type        = string
  description = "Prefix for the secret names. Empty (the default) keeps the names operators already use: confluent-credentials and couchbase-credentials (and orders-api-tokens)."
  default     = ""
}

variable "credentials_recovery_window_days" {
  type        = number
  description = "Days Secrets Manager keeps a deleted secret recoverable (7-30, or 0 to delete at once). While a deleted secret waits, a new one of the same name cannot be created."
  default     = 7

  validation {
    condition     = var.credentials_recovery_window_days == 0 || (var.credentials_recovery_window_days >= 7 && var.credentials_recovery_window_days <= 30)
    error_message = "credentials_recovery_window_days must be 0 or between 7 and 30."
  }
}

variable "confluent_bootstrap_servers" {
  type        = string
  description = "Confluent Cloud bootstrap servers, e.g. pkc-xxxxx.us-east-1.aws.confluent.cloud:9092."
  sensitive   = true
  ephemeral   = true
}

variable "confluent_api_key" {
  type        = string
  description = "Confluent Cloud API key (SASL PLAIN username)."
  sensitive   = true
  ephemeral   = true
}

variable "confluent_api_secret" {
  type        = string
  description = "Confluent Cloud API secret (SASL PLAIN password)."
  sensitive   = true
  ephemeral   = true
}

variable "couchbase_host" {
  type        = string
  description = "Couchbase Capella host (cb.xxxx.cloud.couchbase.com gets couchbases://) or a full connection string."
  sensitive   = true
  ephemeral   = true
}

variable "couchbase_bucket" {
  type        = string
  description = "Couchbase bucket."
  default     = "order_analytics"
}

variable "couchbase_username" {
  type        = string
  description = "Couchbase database user."
  sensitive   = true
  ephemeral   = true
}

variable "couchbase_password" {
  type        = string
  description = "Couchbase database user's password."
  sensitive   = true
  ephemeral   = true
}

variable "postgres_url" {
  type        = string
  description = "POSTGRES_URL of the ingest service (libpq URL with its password, e.g. postgresql://orders_ingest:...@<rds endpoint>:5432/shop?sslmode=verify-full; docs/deploy.md). Empty: no ingest (desired_count.ingest must stay 0)."
  sensitive   = true
  ephemeral   = true
  default     = ""
}

variable "api_tokens" {
  type        = string
  description = "ORDERS_API_TOKENS: the bearer tokens the api accepts, comma-separated (several while one is rotated out; docs/security.md). Make each long and random, e.g. openssl rand -hex 32."
  sensitive   = true
  ephemeral   = true

  validation {
    condition     = alltrue([for t in split(",", var.api_tokens) : length(trimspace(t)) >= 32])
    error_message = "api_tokens: every comma-separated token must be at least 32 characters (openssl rand -hex 32)."
  }
}

variable "api_console_token" {
  type        = string
  description = "ORDERS_API_TOKEN in the api container: the token ordersctl sends there (the console over ECS exec); one of api_tokens."
  sensitive   = true
  ephemeral   = true
}
