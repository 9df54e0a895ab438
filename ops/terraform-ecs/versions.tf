terraform {
  # Optional object attributes with defaults (variables.tf) need >= 1.3; import
  # blocks, handy for adopting the existing secrets (docs/deploy.md), need 1.5.
  required_version = ">= 1.5"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.0"
    }
  }

  # The state holds the secret values (they go through aws_secretsmanager_secret_version),
  # so keep it in an encrypted, access-controlled backend, e.g.:
  #
  # backend "s3" {
  #   bucket  = "acme-terraform-state"
  #   key     = "orders/ecs.tfstate"
  #   region  = "us-east-1"
  #   encrypt = true
  # }
}

provider "aws" {
  region = var.aws_region

  default_tags {
    tags = merge({ Project = var.name, ManagedBy = "terraform" }, var.tags)
  }
}

data "aws_partition" "current" {}
data "aws_caller_identity" "current" {}
data "aws_region" "current" {}
