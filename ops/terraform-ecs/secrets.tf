# The two secrets the task definitions read (locals.tf: kafka_secrets, store_secrets).
# Their names and JSON keys are the ones operators already use; with the default empty
# prefix they are exactly "confluent-credentials" and "couchbase-credentials".
#
# If they already exist in the account, adopt them instead of creating them
# (terraform import, see docs/deploy.md): creating a secret whose name is taken fails.

resource "aws_secretsmanager_secret" "confluent" {
  name                    = "${var.credentials_name_prefix}confluent-credentials"
  description             = "Confluent Cloud (Kafka) bootstrap servers and API key for ${var.name}"
  recovery_window_in_days = var.credentials_recovery_window_days
}

resource "aws_secretsmanager_secret_version" "confluent" {
  secret_id = aws_secretsmanager_secret.confluent.id
  secret_string = jsonencode({
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
  secret_id = aws_secretsmanager_secret.couchbase.id
  secret_string = jsonencode({
    host     = var.couchbase_host
    bucket   = var.couchbase_bucket
    username = var.couchbase_username
    password = var.couchbase_password
  })
}
