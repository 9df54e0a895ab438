#!/usr/bin/env bash
# Offline check of the ECS Terraform in ops/terraform-ecs (see docs/deploy.md), in two parts:
#
# 1. The product contract, without Terraform: every .tf file parsed with python-hcl2 and
#    asserted by ops/scripts/check_terraform.py (secret names and keys, the task
#    definitions' secrets and environment, the Fargate services, the ALB's /healthz check,
#    HTTPS, sign-in, WAF, security groups, IAM, logs, sensitive variables, no literal
#    credentials; with a terraform binary on PATH also `terraform fmt -check`).
# 2. Terraform itself, against the AWS provider of .terraform.lock.hcl taken from a local
#    plugin directory (no registry is reachable here): `terraform init -backend=false
#    -plugin-dir=DIR -lockfile=readonly` (the provider must match the lock file's
#    checksums), `terraform validate`, and `terraform test` (tests/*.tftest.hcl: plans and
#    applies against mock_provider "aws", no account needed). The plugin directory is
#    $ORDERS_TF_PLUGIN_DIR, else the first of Terraform's own local mirror directories
#    ($XDG_DATA_HOME/terraform/plugins, ~/.terraform.d/plugins, /usr/local/share/terraform/
#    plugins, /usr/share/terraform/plugins) or of /opt, /usr/local, /srv and $HOME (searched
#    a few levels deep) holding registry.terraform.io/hashicorp/aws/<locked version>/<platform>.
#    With no terraform binary or no such provider, part 2 is skipped with a loud message
#    (ORDERS_REQUIRE_TERRAFORM=1 makes that a failure).
#
# python-hcl2 is installed from PyPI, pinned, into a cache directory (a virtualenv, or
# `pip install --target` where python3-venv is missing); later runs reuse it.
#
# Usage: ops/scripts/check-terraform.sh [TERRAFORM_DIR]   (from any directory)
# Environment: ORDERS_HCL2_DIR (the cache, default: $TMPDIR or /tmp, orders-hcl2-<version>),
#   ORDERS_TF_PLUGIN_DIR, ORDERS_REQUIRE_TERRAFORM.
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

contract_status=0
PYTHONPATH="$pythonpath" "$python" "$here/check_terraform.py" "$tf_dir" | tee "${TMPDIR:-/tmp}/orders-tf-contract.$$" || contract_status=$?
contract_summary=$(tail -n 1 "${TMPDIR:-/tmp}/orders-tf-contract.$$")
rm -f "${TMPDIR:-/tmp}/orders-tf-contract.$$"
passed=$(sed -n 's/.*: \([0-9]*\) passed.*/\1/p' <<<"$contract_summary")
failed=$(sed -n 's/.*, \([0-9]*\) failed.*/\1/p' <<<"$contract_summary")
passed=${passed:-0}
failed=${failed:-1}
[ "$contract_status" = 0 ] || [ "$failed" != 0 ] || failed=1

# --- part 2: terraform init / validate / test against the local provider ---------------

# The provider version the lock file pins.
locked_version=$(sed -n '/hashicorp\/aws"/,/}/s/^ *version *= *"\([^"]*\)".*/\1/p' "$tf_dir/.terraform.lock.hcl" 2>/dev/null | head -n 1)

# A directory DIR with DIR/registry.terraform.io/hashicorp/aws/$locked_version/$platform/.
find_plugin_dir() {
    local platform=$1 dir hit
    local rel="registry.terraform.io/hashicorp/aws/$locked_version/$platform"
    for dir in "${ORDERS_TF_PLUGIN_DIR:-}" "${XDG_DATA_HOME:-$HOME/.local/share}/terraform/plugins" \
        "$HOME/.terraform.d/plugins" /usr/local/share/terraform/plugins /usr/share/terraform/plugins; do
        if [ -n "$dir" ] && compgen -G "$dir/$rel/terraform-provider-aws*" >/dev/null; then
            echo "$dir"
            return 0
        fi
    done
    for dir in /opt /usr/local /srv "$HOME"; do
        [ -d "$dir" ] || continue
        hit=$(find "$dir" -maxdepth 8 -type f -name 'terraform-provider-aws*' -path "*/$rel/*" -print -quit 2>/dev/null)
        if [ -n "$hit" ]; then
            echo "${hit%/"$rel"/*}"
            return 0
        fi
    done
    return 1
}

tf_skip() {
    echo "skip - terraform init/validate/test: $*"
    echo "check-terraform: ############################################################" >&2
    echo "check-terraform: SKIPPED terraform validate and terraform test: $*" >&2
    echo "check-terraform: ############################################################" >&2
    if [ "${ORDERS_REQUIRE_TERRAFORM:-}" = 1 ]; then
        failed=$((failed + 1))
    fi
}

tf_step() { # what, command...: runs a Terraform step, counts it
    local what=$1 log
    shift
    log=$(mktemp)
    if (cd "$work" && "$@") >"$log" 2>&1; then
        passed=$((passed + 1))
        echo "ok   - $what"
        cat "$log" >&2
    else
        failed=$((failed + 1))
        echo "FAIL - $what"
        cat "$log"
    fi
    rm -f "$log"
}

if ! command -v terraform >/dev/null 2>&1; then
    tf_skip "no terraform binary on PATH"
elif [ -z "$locked_version" ]; then
    failed=$((failed + 1))
    echo "FAIL - $tf_dir/.terraform.lock.hcl pins a hashicorp/aws version"
else
    platform=$(terraform version -json 2>/dev/null | sed -n 's/.*"platform": *"\([^"]*\)".*/\1/p')
    if ! plugin_dir=$(find_plugin_dir "${platform:-linux_amd64}"); then
        tf_skip "no local copy of hashicorp/aws $locked_version for ${platform:-?} (set ORDERS_TF_PLUGIN_DIR to a directory holding registry.terraform.io/hashicorp/aws/$locked_version/${platform:-<platform>}/)"
    else
        say "terraform $(terraform version -json | sed -n 's/.*"terraform_version": *"\([^"]*\)".*/\1/p'), provider hashicorp/aws $locked_version from $plugin_dir"
        # A scratch copy: .terraform/ and the test's state stay out of the repository.
        work=$(mktemp -d)
        trap 'rm -rf "$work"' EXIT
        cp -R "$tf_dir/." "$work/"
        rm -rf "$work/.terraform"
        export TF_IN_AUTOMATION=1 TF_INPUT=0
        # A configured but missing CLI config file only adds a warning.
        if [ -n "${TF_CLI_CONFIG_FILE:-}" ] && [ ! -e "$TF_CLI_CONFIG_FILE" ]; then
            unset TF_CLI_CONFIG_FILE
        fi
        tf_step "terraform init -backend=false -plugin-dir -lockfile=readonly (the provider matches .terraform.lock.hcl)" \
            terraform init -backend=false -input=false -no-color -plugin-dir="$plugin_dir" -lockfile=readonly
        tf_step "terraform validate" terraform validate -no-color
        tf_step "terraform test (tests/*.tftest.hcl, mocked AWS provider)" terraform test -no-color
    fi
fi

echo "terraform check: $passed passed, $failed failed"
[ "$failed" = 0 ]
