locals {
  api_port = 8000
  # Every role's ops server: /healthz, /readyz, /metrics (ORDERS_OPS_ADDR).
  ops_port = 9100

  # The six services, all from var.image (ingest runs only when given a task and a
  # postgres_url). Each becomes one task definition, one ECS
  # service and one log group (for_each over this map).
  #   command:  the full command (the image sets no entrypoint).
  #   store:    whether the container gets the Couchbase secrets.
  #   env:      plain environment variables on top of local.common_env.
  #   port:     the container port behind the ALB, or null.
  #   min/max_healthy_percent: the rolling-deployment bounds.
  services = {
    producer = {
      command = ["ordersd", "producer"]
      # The producer reads the highest stored order id at start, so ids continue
      # across restarts instead of starting again at 1.
      store = true
      env   = { SLEEP_SECONDS = var.sleep_seconds }
      port  = null
      # Stop the old producer before starting the new one: two producers running side
      # by side during a deployment would emit the same order ids. ECS counts a stopping
      # task as gone, so the new task's start gate (local.producer_start_gate) also waits
      # out the old one's stop timeout before the producer reads where to continue.
      min_healthy_percent = 0
      max_percent         = 100
    }
    fraud = {
      command             = ["ordersd", "fraud"]
      store               = false
      env                 = { FRAUD_THRESHOLD = var.fraud_threshold }
      port                = null
      min_healthy_percent = 100
      max_percent         = 200
    }
    payment = {
      command             = ["ordersd", "payment"]
      store               = false
      env                 = { PAYMENT_DELAY_MS = var.payment_delay_ms }
      port                = null
      min_healthy_percent = 100
      max_percent         = 200
    }
    analytics = {
      command             = ["ordersd", "analytics"]
      store               = true
      env                 = {}
      port                = null
      min_healthy_percent = 100
      max_percent         = 200
    }
    # Orders from PostgreSQL by logical decoding (docs/ingest.md). One task: a replication
    # slot has one reader, so the old task stops before the new one starts.
    ingest = {
      command             = ["ordersd", "ingest"]
      store               = false
      env                 = {}
      port                = null
      min_healthy_percent = 0
      max_percent         = 100
    }
    api = {
      command = ["ordersd", "api"]
      store   = true
      # Behind the ALB, which appends the client's address to X-Forwarded-For, the api
      # limits each client by that address; tasks take traffic from the ALB only
      # (network.tf). With sign-in, the api verifies the identity the ALB signs.
      env = {
        ORDERS_API_ADDR                = "0.0.0.0:${local.api_port}"
        ORDERS_API_TRUST_FORWARDED_FOR = "true"
        ORDERS_API_ALB_ARN             = local.sign_in ? aws_lb.this.arn : ""
        ORDERS_API_OIDC_ISSUER         = local.sign_in_issuer
      }
      port                = local.api_port
      min_healthy_percent = 100
      max_percent         = 200
    }
  }

  common_env = {
    TOPIC_NAME        = var.topic_name
    ORDERS_LOG_FORMAT = "json"
    RUST_LOG          = var.rust_log
    # Every role, the api too, serves /healthz, /readyz and /metrics here (network.tf lets
    # var.metrics_scraper_* in; docs/deploy.md has the scrape config).
    ORDERS_OPS_ADDR = "0.0.0.0:${local.ops_port}"
  }

  # Environment variable name => Secrets Manager reference "<secret arn>:<json key>::"
  # (the two trailing fields, version stage and version id, are left empty: AWSCURRENT).
  # ECS resolves them when a task starts and hands them to the container as plain
  # environment variables, so the application reads them like any other; the values
  # never appear in the task definition. After changing a secret, start new tasks
  # (aws ecs update-service --force-new-deployment) for them to see it.
  kafka_secrets = {
    KAFKA_BOOTSTRAP_SERVERS = "${aws_secretsmanager_secret.confluent.arn}:bootstrap_servers::"
    CONFLUENT_API_KEY       = "${aws_secretsmanager_secret.confluent.arn}:api_key::"
    CONFLUENT_API_SECRET    = "${aws_secretsmanager_secret.confluent.arn}:api_secret::"
  }
  # The api only: the tokens it accepts, and the one ordersctl sends inside its container.
  api_secrets = {
    ORDERS_API_TOKENS = "${aws_secretsmanager_secret.api_tokens.arn}:tokens::"
    ORDERS_API_TOKEN  = "${aws_secretsmanager_secret.api_tokens.arn}:console_token::"
  }
  # The ingest only: its database URL.
  ingest_secrets = {
    POSTGRES_URL = "${aws_secretsmanager_secret.postgres.arn}:url::"
  }
  store_secrets = {
    COUCHBASE_HOST     = "${aws_secretsmanager_secret.couchbase.arn}:host::"
    COUCHBASE_BUCKET   = "${aws_secretsmanager_secret.couchbase.arn}:bucket::"
    COUCHBASE_USERNAME = "${aws_secretsmanager_secret.couchbase.arn}:username::"
    COUCHBASE_PASSWORD = "${aws_secretsmanager_secret.couchbase.arn}:password::"
  }

  # Every container's health check is liveness, the api's too: `ordersd healthcheck` (the
  # image's own binary; no curl in it) exits 1 when /healthz on the ops port
  # (ORDERS_OPS_ADDR) says a loop is wedged: a consumer loop that has not polled, or a
  # store write or a produce that has waited, for 120 s (docs/operations.md). The container
  # is essential, so ECS replaces a task that turns UNHEALTHY: a wedged daemon restarts.
  # Never readiness: a Kafka or Couchbase outage would make every task unhealthy and ECS
  # would replace them all, which cures nothing (readiness is /readyz, for a scraper).
  daemon_health_check = {
    command     = ["CMD", "ordersd", "healthcheck"]
    interval    = 30
    timeout     = 10
    retries     = 3
    startPeriod = 60
  }

  container_definitions = {
    for name, svc in local.services : name => concat([
      # Drop the null attributes (no port mappings, no health check, no registry
      # credentials) rather than sending nulls to ECS.
      { for k, v in {
        name      = name
        image     = var.image
        essential = true
        command   = svc.command

        # for over a map iterates in key order, which keeps the task definition stable
        # between plans.
        environment = [
          for env_name, value in merge(local.common_env, svc.env) : { name = env_name, value = value }
        ]
        secrets = [
          for env_name, value_from in merge(local.kafka_secrets, svc.store ? local.store_secrets : {}, name == "api" ? local.api_secrets : {}, name == "ingest" ? local.ingest_secrets : {}) :
          { name = env_name, valueFrom = value_from }
        ]

        portMappings = concat(
          svc.port == null ? [] : [{ name = "http", containerPort = svc.port, protocol = "tcp" }],
          [{ name = "ops", containerPort = local.ops_port, protocol = "tcp" }],
        )
        # For scrapers that discover ECS tasks by label (the CloudWatch agent's Prometheus
        # discovery, and relabelling rules in docs/deploy.md): job orders-<service>.
        dockerLabels = {
          PROMETHEUS_EXPORTER_PORT     = tostring(local.ops_port)
          PROMETHEUS_EXPORTER_PATH     = "/metrics"
          PROMETHEUS_EXPORTER_JOB_NAME = "orders-${name}"
        }
        healthCheck = local.daemon_health_check
        # The producer waits for its start gate (below) to finish.
        dependsOn = name == "producer" ? [{ containerName = "start-gate", condition = "SUCCESS" }] : null

        repositoryCredentials = var.registry_credentials_arn == "" ? null : {
          credentialsParameter = var.registry_credentials_arn
        }

        # The daemons make a final offset commit (and the producer flushes) on SIGTERM;
        # give them 30 s before SIGKILL.
        stopTimeout = 30

        # A small init as PID 1 forwards SIGTERM to ordersd and reaps the processes that
        # ECS exec sessions leave behind (AWS recommends it for ECS exec).
        linuxParameters = { initProcessEnabled = true }

        logConfiguration = {
          logDriver = "awslogs"
          options = {
            awslogs-group         = aws_cloudwatch_log_group.service[name].name
            awslogs-region        = data.aws_region.current.name
            awslogs-stream-prefix = "ecs"
          }
        }
      } : k => v if v != null }
    ], name == "producer" ? [local.producer_start_gate] : [])
  }

  # A non-essential container in the producer's task that sleeps past the stop timeout
  # (30 s) of the task it replaces: with minimum healthy 0 % and maximum 100 %, ECS has
  # sent the old producer SIGTERM before it starts the new task, but counts the old one
  # gone while it still flushes; after this gate the old one has exited (or been killed),
  # so the new producer reads the topic's highest order id only once nobody else writes.
  producer_start_gate = {
    name      = "start-gate"
    image     = var.image
    essential = false
    command   = ["sleep", "35"]
    user      = "10001:10001"
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.service["producer"].name
        awslogs-region        = data.aws_region.current.name
        awslogs-stream-prefix = "ecs"
      }
    }
  }
}
