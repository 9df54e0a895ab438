# Two roles, as ECS separates them:
#   execution role: used by ECS itself to pull the image, write logs and resolve the
#                   task definition's `secrets` from Secrets Manager at task start.
#   task role:      used by the running containers; ordersd needs no AWS API, so it holds
#                   only what ECS exec's agent needs, and only when exec is on.

data "aws_iam_policy_document" "ecs_tasks_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }

    # Only ECS tasks of this account may assume the roles (confused-deputy guard).
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [data.aws_caller_identity.current.account_id]
    }
  }
}

# --- execution role -------------------------------------------------------------------

resource "aws_iam_role" "execution" {
  name               = "${var.name}-ecs-execution"
  description        = "ECS task execution role for ${var.name}: image pull, logs, secrets"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

resource "aws_iam_role_policy_attachment" "execution" {
  role       = aws_iam_role.execution.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
}

# Exactly the four secrets, nothing else. They use the account's default
# aws/secretsmanager KMS key, which needs no extra kms:Decrypt grant.
resource "aws_iam_role_policy" "execution_secrets" {
  name = "read-orders-credentials"
  role = aws_iam_role.execution.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid    = "ReadOrdersCredentials"
      Effect = "Allow"
      Action = ["secretsmanager:GetSecretValue"]
      Resource = [
        aws_secretsmanager_secret.confluent.arn,
        aws_secretsmanager_secret.couchbase.arn,
        aws_secretsmanager_secret.api_tokens.arn,
        aws_secretsmanager_secret.postgres.arn,
      ]
    }]
  })
}

# Only with a private registry (var.registry_credentials_arn): read its login secret.
resource "aws_iam_role_policy" "execution_registry" {
  count = var.registry_credentials_arn == "" ? 0 : 1

  name = "read-registry-credentials"
  role = aws_iam_role.execution.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid      = "ReadRegistryCredentials"
      Effect   = "Allow"
      Action   = ["secretsmanager:GetSecretValue"]
      Resource = [var.registry_credentials_arn]
    }]
  })
}

# --- task role ------------------------------------------------------------------------

resource "aws_iam_role" "task" {
  name               = "${var.name}-ecs-task"
  description        = "ECS task role for ${var.name}: ECS exec (SSM session channels, session log) only"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

# Only with var.enable_execute_command: `aws ecs execute-command` opens an SSM session to
# the agent inside the task; the agent needs the four ssmmessages calls (they take no
# resource ARN, hence "*") and writes the session's log to the exec log group.
resource "aws_iam_role_policy" "task_exec" {
  count = var.enable_execute_command ? 1 : 0

  name = "ecs-exec"
  role = aws_iam_role.task.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid    = "EcsExec"
        Effect = "Allow"
        Action = [
          "ssmmessages:CreateControlChannel",
          "ssmmessages:CreateDataChannel",
          "ssmmessages:OpenControlChannel",
          "ssmmessages:OpenDataChannel",
        ]
        Resource = "*"
      },
      {
        Sid      = "EcsExecSessionLogGroups"
        Effect   = "Allow"
        Action   = ["logs:DescribeLogGroups"]
        Resource = "*"
      },
      {
        Sid      = "EcsExecSessionLog"
        Effect   = "Allow"
        Action   = ["logs:CreateLogStream", "logs:DescribeLogStreams", "logs:PutLogEvents"]
        Resource = "${aws_cloudwatch_log_group.exec[0].arn}:*"
      },
    ]
  })
}
