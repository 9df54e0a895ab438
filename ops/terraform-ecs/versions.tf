terraform {
  # Write-only attributes (secret_string_wo in secrets.tf: the credentials never reach
  # the state) and ephemeral variables need Terraform 1.11.
  required_version = ">= 1.11"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # 5.100 has secret_string_wo; .terraform.lock.hcl pins the exact build.
      version = "~> 5.100"
    }
  }

  # The credentials go to Secrets Manager through write-only attributes and never reach
  # the state or a plan file (oidc_client_secret, if used, does: the listener has no
  # write-only form). Keep the state in an encrypted, access-controlled backend anyway, e.g.:
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
