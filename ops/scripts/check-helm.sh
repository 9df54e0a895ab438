#!/usr/bin/env bash
# Offline check of the Helm chart ops/helm/orders and the ArgoCD Application in ops/argocd
# (docs/deploy.md, "Kubernetes (EKS) with Helm"): ops/scripts/check_chart.py lints and
# installs the chart for its defaults and every ops/helm/orders/ci/*-values.yaml with
# Helm's own library (helm-sdkpy; the install goes to a stand-in API server on loopback,
# render_chart.py), validates every object with kubernetes-validate --strict, checks what
# the chart promises, and runs checkov over the result.
#
# The tools come from PyPI, pinned, into a virtualenv in a cache directory that later runs
# reuse (first run about a minute, later ones about 15 s).
#
# Usage: ops/scripts/check-helm.sh            (from any directory)
# Environment: ORDERS_HELM_TOOLS_DIR (the cache, default: $TMPDIR or /tmp, orders-helm-tools-<pins>).
# Exits non-zero when a check fails; the last line reads "helm check: N passed, N failed".
set -euo pipefail

PINS=(kubernetes-validate==1.37.0 checkov==3.3.30 PyYAML==6.0.3)
# Installed on its own with --ignore-requires-python (it declares Python >= 3.12 and runs
# on 3.11): in one resolution with checkov that flag would also let pip pick a numpy for
# a newer Python and build it from source.
HELM_PIN=helm-sdkpy==0.1.32

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
pins_id=$(printf '%s\n' "${PINS[@]}" "$HELM_PIN" | cksum | cut -d' ' -f1)
cache=${ORDERS_HELM_TOOLS_DIR:-"${TMPDIR:-/tmp}/orders-helm-tools-$pins_id"}

say() { echo "check-helm: $*" >&2; }

venv="$cache/venv"
if [ ! -x "$venv/bin/python" ] || [ ! -e "$venv/.complete" ]; then
    command -v python3 >/dev/null 2>&1 || { say "python3 is missing"; exit 1; }
    rm -rf "$venv"
    mkdir -p "$cache"
    if ! python3 -m venv "$venv" >/dev/null 2>&1; then
        say "python3 -m venv failed: apt-get install -y python3-venv"
        exit 1
    fi
    say "installing ${PINS[*]} $HELM_PIN into $venv"
    pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input)
    PIP_ROOT_USER_ACTION=ignore "${pip[@]}" "${PINS[@]}"
    PIP_ROOT_USER_ACTION=ignore "${pip[@]}" --ignore-requires-python "$HELM_PIN"
    touch "$venv/.complete"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# kubernetes-validate and checkov are the virtualenv's commands.
PATH="$venv/bin:$PATH" "$venv/bin/python" "$here/check_chart.py" "$root" "$work"
