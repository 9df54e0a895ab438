#!/usr/bin/env bash
# Measures `ordersctl audit` (release build) on ORDERS orders (1,000,000 by default): builds
# a finished pipeline directly (tui/examples/audit_world.rs: an embedded broker whose
# topics, with PARTITIONS partitions each, hold every order, alert and payment; a SQLite
# store holding the same; every group committed), then runs the audit against it under
# /usr/bin/time -v and prints its exit code, wall time, peak RSS (maximum resident set
# size) and the report's counts. The broker lives in the world's process, so the figure
# is the audit's own.
#
# Environment: ORDERS (1000000), PARTITIONS (48; the embedded broker keeps ~5 MiB per
# partition, and fewer partitions drop the oldest records, which the audit then counts as
# no longer on the topic), PAGE_SIZE (the audit's --page-size, 5000).
set -euo pipefail

ORDERS=${ORDERS:-1000000}
PARTITIONS=${PARTITIONS:-48}
PAGE_SIZE=${PAGE_SIZE:-5000}

cd "$(dirname "$0")/../.."

if [ ! -x /usr/bin/time ]; then
    echo "bench-audit: /usr/bin/time is missing; install it with: apt-get install -y time" >&2
    exit 1
fi

cargo build --release --quiet -p ordersctl --bin ordersctl --example audit_world
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')

WORK=$(mktemp -d)
WORLD_PID=""
cleanup() {
    if [ -n "$WORLD_PID" ]; then
        kill "$WORLD_PID" 2>/dev/null || true
        wait "$WORLD_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

echo "bench-audit: building a finished pipeline of $ORDERS orders ($PARTITIONS partitions)" >&2
(exec env RUST_LOG=warn "$TARGET_DIR/release/examples/audit_world" --data-dir "$WORK" \
    --orders "$ORDERS" --partitions "$PARTITIONS" 2>"$WORK/world.log") &
WORLD_PID=$!
for _ in $(seq 1 1200); do
    [ -e "$WORK/up.json" ] && break
    if ! kill -0 "$WORLD_PID" 2>/dev/null; then
        cat "$WORK/world.log" >&2
        echo "bench-audit: the world ended before it was ready" >&2
        exit 1
    fi
    sleep 0.5
done
[ -e "$WORK/up.json" ] || { echo "bench-audit: world not ready" >&2; exit 1; }
tail -n 1 "$WORK/world.log" >&2

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
RC=0
/usr/bin/time -v -o "$WORK/time.txt" env RUST_LOG=warn "$TARGET_DIR/release/ordersctl" audit \
    --data-dir "$WORK" --page-size "$PAGE_SIZE" >"$WORK/report.json" 2>"$WORK/audit.err" || RC=$?
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

cat "$WORK/audit.err" >&2
RSS_KB=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$WORK/time.txt")
WALL=$(awk -F': ' '/Elapsed \(wall clock\) time/ { print $2 }' "$WORK/time.txt")
CPU_USER=$(awk -F': ' '/User time \(seconds\)/ { print $2 }' "$WORK/time.txt")
CPU_SYS=$(awk -F': ' '/System time \(seconds\)/ { print $2 }' "$WORK/time.txt")
echo
echo "load average before: $LOAD_BEFORE; after: $LOAD_AFTER"
echo "orders: $ORDERS; partitions per topic: $PARTITIONS; page size: $PAGE_SIZE"
echo "exit code: $RC (0 = consistent)"
echo "wall: $WALL; cpu: user ${CPU_USER} s, system ${CPU_SYS} s"
awk -v kb="$RSS_KB" 'BEGIN { printf "peak RSS: %d KiB (%.1f MiB)\n", kb, kb / 1024 }'
# The report's headline counts, without jq.
for field in '"on_topic"' '"stored"' '"no_longer_on_topic"' '"alerts_expected"' '"discrepancy_count"'; do
    printf '%s ' "$(grep -o "$field:[0-9][0-9]*" "$WORK/report.json" | tr '\n' ' ')"
done
echo
