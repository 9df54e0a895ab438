#!/usr/bin/env bash
# CI's throughput guard: a short `ordersctl bench` (release build) against the baseline
# committed in tui/src/bench/baseline.json. It warns and never fails (the machine is shared
# and noisy), but a fall beyond the margin prints a banner no reader of the log can miss.
#
# `--build-only` only builds, at the lowest priority (CI runs it beside the tests). The
# release build lives in a target directory of its own, `<target>/ci-bench`, so it never
# waits on (or holds) the lock of the debug builds.
set -euo pipefail
cd "$(dirname "$0")/.."

target_dir=$(cargo metadata --locked --format-version 1 --no-deps |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')/ci-bench
if [ "${1:-}" = --build-only ]; then
    exec nice -n 19 cargo build --release --locked --quiet --target-dir "$target_dir" --bin ordersctl
fi
cargo build --release --locked --quiet --target-dir "$target_dir" --bin ordersctl
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
if ! "$target_dir/release/ordersctl" bench --orders 100000 --latency-seconds 3 \
    >"$out/bench.json" 2>"$out/bench.err"; then
    cat "$out/bench.err"
    echo "::warning title=bench::ordersctl bench did not finish (see above)"
    exit 0
fi
sed -n '/"end_to_end"/,/"where_the_time_went"/p' "$out/bench.json"
cat "$out/bench.err"
if grep -q '^REGRESSION' "$out/bench.err"; then
    cat <<'BANNER'

########################################################################################
##  THROUGHPUT REGRESSION: the bench fell below the committed baseline by more than   ##
##  the margin (lines starting with REGRESSION above). Re-run it on a quiet machine   ##
##  (cargo run --release --bin ordersctl -- bench) and see BENCHMARKS.md for how to   ##
##  find where the time goes before landing more changes.                              ##
########################################################################################

BANNER
    grep '^REGRESSION' "$out/bench.err" | sed 's/^/::warning title=bench regression::/'
fi
