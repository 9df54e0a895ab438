#!/usr/bin/env bash
# OpenAPI-driven property test of the API (Schemathesis, from PyPI, in its own venv) against
# a real `ordersctl up --headless` on a temporary data dir. On loopback with no tokens the
# API is open, so no credentials are needed. Checks: every schema-valid request is
# accepted, nothing answers 5xx, every answer matches its declared schema (status, content
# type, body). A bounded number of examples per operation keeps it near a minute.
set -euo pipefail
cd "$(dirname "$0")/.."

target_dir=$(cargo metadata --locked --format-version 1 --no-deps |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
venv="$target_dir/schemathesis-venv"
if [ ! -x "$venv/bin/st" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'schemathesis==4.32.5'
fi
"$venv/bin/st" --version

cargo build --locked --quiet --bin ordersctl
data=$(mktemp -d)
"$target_dir/debug/ordersctl" up --headless --data-dir "$data" --port 0 --rate 20 \
  >"$data/up.log" 2>&1 &
up_pid=$!
stop() {
  kill -TERM "$up_pid" 2>/dev/null || true
  wait "$up_pid" 2>/dev/null || true
  rm -rf "$data"
}
trap stop EXIT

api=""
for _ in $(seq 1 120); do
  api=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["api"])' \
    "$data/up.json" 2>/dev/null || true)
  if [ -n "$api" ] && python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' \
    "$api/healthz" 2>/dev/null; then
    break
  fi
  api=""
  kill -0 "$up_pid" 2>/dev/null || { cat "$data/up.log"; echo "ordersctl up exited"; exit 1; }
  sleep 0.5
done
[ -n "$api" ] || { cat "$data/up.log"; echo "the API never answered /healthz"; exit 1; }
echo "API at $api"

"$venv/bin/st" run "$api/api/openapi.json" --url "$api" \
  --checks all --mode positive --max-examples 25 --generation-deterministic
