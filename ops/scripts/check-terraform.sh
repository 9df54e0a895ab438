#!/usr/bin/env bash
# Offline check of the ECS Terraform in ops/terraform-ecs (see docs/deploy.md).
#
# `terraform validate` needs the AWS provider from the Terraform registry, which CI cannot
# reach. So this parses every .tf file with python-hcl2 and asserts the product contract
# (secret names and keys, the task definitions' secrets and environment, five Fargate
# services with ECS exec, the ALB's /healthz check, ingress CIDRs, the HTTPS redirect,
# optional OIDC/Cognito sign-in, WAF and access logs, security groups, IAM, logs, sensitive
# variables, no literal credentials): ops/scripts/check_terraform.py. With a terraform
# binary on PATH it also runs `terraform fmt -check`.
#
# python-hcl2 is installed from PyPI, pinned, into a cache directory (a virtualenv, or
# `pip install --target` where python3-venv is missing); later runs reuse it.
#
# Usage: ops/scripts/check-terraform.sh [TERRAFORM_DIR]   (from any directory)
# Environment: ORDERS_HCL2_DIR (the cache, default: $TMPDIR or /tmp, orders-hcl2-<version>).
# Exits non-zero when a check fails; the last line reads "terraform check: N passed, N failed".
set -euo pipefail

HCL2_VERSION=8.1.4

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
tf_dir=${1:-"$here/../terraform-ecs"}
cache=${ORDERS_HCL2_DIR:-"${TMPDIR:-/tmp}/orders-hcl2-$HCL2_VERSION"}

say() { echo "check-terraform: $*" >&2; }

if ! command -v python3 >/dev/null 2>&1; then
    say "python3 is missing (apt-get install -y python3 python3-venv)"
    exit 1
fi

# The interpreter that has python-hcl2 $HCL2_VERSION, plus any PYTHONPATH it needs.
have_hcl2() {
    PYTHONPATH=${2:-} "$1" -c "import sys, importlib.metadata as m; sys.exit(m.version('python-hcl2') != '$HCL2_VERSION')" 2>/dev/null
}

pip_quiet=(--quiet --disable-pip-version-check --no-input)
export PIP_ROOT_USER_ACTION=ignore # CI runs as root; the install goes to our own directory
python=""
pythonpath=""
if [ -x "$cache/venv/bin/python" ] && have_hcl2 "$cache/venv/bin/python"; then
    python="$cache/venv/bin/python"
elif [ -d "$cache/site" ] && have_hcl2 python3 "$cache/site"; then
    python=python3
    pythonpath="$cache/site"
else
    mkdir -p "$cache"
    say "installing python-hcl2==$HCL2_VERSION into $cache"
    rm -rf "$cache/venv" "$cache/site"
    if python3 -m venv "$cache/venv" >/dev/null 2>&1 &&
        "$cache/venv/bin/python" -m pip install "${pip_quiet[@]}" "python-hcl2==$HCL2_VERSION" &&
        have_hcl2 "$cache/venv/bin/python"; then
        python="$cache/venv/bin/python"
    else
        # No python3-venv (ensurepip) on this machine: install beside it with the
        # system pip. --target also keeps Debian's externally-managed guard out of it.
        rm -rf "$cache/venv"
        say "no usable venv; falling back to pip install --target"
        if ! python3 -m pip --version >/dev/null 2>&1; then
            if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
                say "python3 has no pip; installing Debian's python3-pip"
                DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-pip >/dev/null ||
                    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-pip >/dev/null; }
            else
                say "python3 has no pip (on Debian: apt-get install -y python3-pip, or python3-venv)"
                exit 1
            fi
        fi
        python3 -m pip install "${pip_quiet[@]}" --target "$cache/site" "python-hcl2==$HCL2_VERSION"
        have_hcl2 python3 "$cache/site" || { say "python-hcl2 did not install"; exit 1; }
        python=python3
        pythonpath="$cache/site"
    fi
fi

PYTHONPATH="$pythonpath" "$python" "$here/check_terraform.py" "$tf_dir"
