# The secrets the task definitions read (locals.tf: kafka_secrets, store_secrets,
# api_secrets). The first two names and JSON keys are the ones operators already use; with
# the default empty prefix they are exactly "confluent-credentials" and
# "couchbase-credentials". "orders-api-tokens" holds the api's bearer tokens.
#
# If they already exist in the account, adopt them instead of creating them
# (terraform import, see docs/deploy.md): creating a secret whose name is taken fails.
#
# The values go through secret_string_wo, a write-only attribute: Terraform sends them to
# Secrets Manager and keeps them in neither the plan nor the state (the credential
# variables are ephemeral). Terraform cannot see a change of a write-only value, so after
# changing credentials raise var.credentials_version: every secret gets a new version.

resource "aws_secretsmanager_secret" "confluent" {
  name                    = "${var.credentials_name_prefix}confluent-credentials"
  description             = "Confluent Cloud (Kafka) bootstrap servers and API key for ${var.name}"
  recovery_window_in_days = var.credentials_recovery_window_days
}

resource "aws_secretsmanager_secret_version" "confluent" {
  secret_id                = aws_secretsmanager_secret.confluent.id
  secret_string_wo_version = var.credentials_version
  secret_string_wo = jsonencode({
    bootstrap_servers = var.confluent_bootstrap_servers
    api_key           = var.confluent_api_key
    api_secret        = var.confluent_api_secret
  })
}

resource "aws_secretsmanager_secret" "couchbase" {
  name                    = "${var.credentials_name_prefix}couchbase-credentials"
  description             = "Couchbase Capella host, bucket and database user for ${var.name}"
  recovery_window_in_days = var.credentials_recovery_window_days
}

resource "aws_secretsmanager_secret_version" "couchbase" {
  secret_id                = aws_secretsmanager_secret.couchbase.id
  secret_string_wo_version = var.credentials_version
  secret_string_wo = jsonencode({
    host     = var.couchbase_host
    bucket   = var.couchbase_bucket
    username = var.couchbase_username
    password = var.couchbase_password
  })
}

# The ingest service's database URL (with its password). Created empty when there is no
# ingest, so the task definitions stay the same whether it runs or not.
resource "aws_secretsmanager_secret" "postgres" {
  name                    = "${var.credentials_name_prefix}postgres-credentials"
  description             = "PostgreSQL URL the ${var.name} ingest service reads orders from"
  recovery_window_in_days = var.credentials_recovery_window_days
}

resource "aws_secretsmanager_secret_version" "postgres" {
  secret_id                = aws_secretsmanager_secret.postgres.id
  secret_string_wo_version = var.credentials_version
  secret_string_wo = jsonencode({
    url = var.postgres_url
  })

  lifecycle {
    precondition {
      condition     = var.desired_count.ingest == 0 || var.postgres_url != ""
      error_message = "desired_count.ingest > 0 needs postgres_url."
    }
  }
}

resource "aws_secretsmanager_secret" "api_tokens" {
  name                    = "${var.credentials_name_prefix}orders-api-tokens"
  description             = "Bearer tokens the ${var.name} api accepts, and the one its console sends"
  recovery_window_in_days = var.credentials_recovery_window_days
}

resource "aws_secretsmanager_secret_version" "api_tokens" {
  secret_id                = aws_secretsmanager_secret.api_tokens.id
  secret_string_wo_version = var.credentials_version
  secret_string_wo = jsonencode({
    tokens        = var.api_tokens
    console_token = var.api_console_token
  })

  lifecycle {
    precondition {
      condition     = contains([for t in split(",", var.api_tokens) : trimspace(t)], var.api_console_token)
      error_message = "api_console_token must be one of api_tokens."
    }
  }
}
