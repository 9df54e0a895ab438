#!/usr/bin/env bash
# Peak memory (RSS) of each daemon run as its own process, as production runs them, under
# load. `ordersctl up --headless` provides the embedded broker and the store (it also runs
# its own in-process members of each group: each separate member below takes its share of
# the partitions, not all of them). Beside it, one process per role, each pointed at the
# broker by KAFKA_BOOTSTRAP_SERVERS, with its ops server on a port of its own:
#   ordersd fraud, ordersd payment, ordersd analytics (writing the same SQLite store as
#   `up`), ordersd api (serving that store; the totals are polled through it), and
#   ordersd producer (its own data directory), producing ORDERS orders at RATE/s
#   (0: as fast as it can). `up` produces none: two producers would publish the same ids.
# Every SAMPLE seconds the script reads VmHWM (the kernel's peak RSS) and VmRSS from
# /proc/PID/status of each process, until the store holds every order; it then prints one
# JSON line per process, {"daemon", "peak_rss_mb", "rss_end_mb", "rss_before_load_mb",
# "anon_end_mb", "file_end_mb"} (rss_end_mb: the last sample, the producer's just before
# it exits; file_end_mb is mostly the binary's code), and a summary line. The `up` process
# is listed too, for reference: it is not a production daemon. Exits 1 when a daemon's
# peak exceeds LIMIT_MB, or when the store does not hold every order in TIMEOUT s.
#
# Environment: ORDERS (200000), RATE (0), SAMPLE (0.1), LIMIT_MB (30), TIMEOUT (600),
# BIN_DIR (prebuilt ordersctl and ordersd; unset: `cargo build --release`), KEEP (keep the
# temporary directory with the logs).
set -euo pipefail

ORDERS=${ORDERS:-200000}
RATE=${RATE:-0}
SAMPLE=${SAMPLE:-0.1}
LIMIT_MB=${LIMIT_MB:-30}
TIMEOUT=${TIMEOUT:-600}

cd "$(dirname "$0")/../.."
if [ -n "${BIN_DIR:-}" ]; then
    BIN=$BIN_DIR
else
    cargo build --release --quiet --bin ordersctl --bin ordersd
    TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
    BIN="$TARGET_DIR/release"
fi
DIR=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    # Reaped here, so bash's "Killed" notices go nowhere.
    wait 2>/dev/null || true
    if [ -n "${KEEP:-}" ]; then echo "kept $DIR" >&2; else rm -rf "$DIR"; fi
}
trap cleanup EXIT

"$BIN/ordersctl" up --headless --port 0 --orders 0 --canary-interval-seconds 0 \
    --data-dir "$DIR/data" >/dev/null 2>"$DIR/up.log" &
up_pid=$!
pids+=("$up_pid")
for _ in $(seq 300); do [ -s "$DIR/data/up.json" ] && break; sleep 0.1; done
KAFKA=$(sed -n 's/.*"kafka": *"\([^"]*\)".*/\1/p' "$DIR/data/up.json")
if [ -z "$KAFKA" ]; then
    echo "bench-rss: ordersctl up did not start (see $DIR/up.log)" >&2
    KEEP=1
    exit 1
fi
# As the image runs them (ops/Dockerfile): no transparent huge pages for mimalloc.
export KAFKA_BOOTSTRAP_SERVERS=$KAFKA RUST_LOG=${RUST_LOG:-info} MIMALLOC_ALLOW_THP=${MIMALLOC_ALLOW_THP:-0}

# Starts `ordersd ROLE ARGS...` with its own ops port; its pid goes into daemon_pid[ROLE].
declare -A daemon_pid
start() {
    local role=$1
    shift
    "$BIN/ordersd" --ops-addr 127.0.0.1:0 "$@" >/dev/null 2>"$DIR/$role.log" &
    daemon_pid[$role]=$!
    pids+=($!)
}
start fraud --data-dir "$DIR/data" fraud
start payment --data-dir "$DIR/data" payment
start analytics --data-dir "$DIR/data" analytics
start api --data-dir "$DIR/data" api --addr 127.0.0.1:0
API=""
for _ in $(seq 300); do
    API=$(sed -n 's/.*api listening.*addr=\([0-9.:]*\).*/http:\/\/\1/p' "$DIR/api.log" | head -n 1)
    [ -n "$API" ] && break
    sleep 0.1
done
if [ -z "$API" ]; then
    echo "bench-rss: ordersd api did not start (see $DIR/api.log)" >&2
    KEEP=1
    exit 1
fi
# The load starts once every member has its share of the partitions.
for role in fraud payment analytics; do
    for _ in $(seq 600); do grep -q "partitions assigned" "$DIR/$role.log" && break; sleep 0.1; done
done

declare -A peak_kb end_kb idle_kb anon_kb file_kb
roles=(fraud payment analytics api)
daemon_pid[ordersctl-up]=$up_pid
# Reads VmHWM and VmRSS of every process still running into peak_kb and end_kb.
sample() {
    local name hwm rss anon file
    for name in "${roles[@]}" ordersctl-up; do
        hwm=""
        read -r hwm rss anon file < <(awk '/^VmHWM:/ { h = $2 } /^VmRSS:/ { r = $2 }
            /^RssAnon:/ { a = $2 } /^RssFile:/ { f = $2 } END { print h, r, a, f }' \
            "/proc/${daemon_pid[$name]}/status" 2>/dev/null || true) || true
        [ -n "$hwm" ] || continue
        peak_kb[$name]=$hwm
        end_kb[$name]=$rss
        anon_kb[$name]=$anon
        file_kb[$name]=$file
    done
}
stored() {
    "$BIN/ordersctl" json --api "$API" totals 2>/dev/null \
        | grep -o '"order_count": *[0-9]*' | head -n 1 | sed 's/.*: *//' || true
}

# The members' RSS before the load (the producer's: its start, before its first order).
sample
for name in "${roles[@]}" ordersctl-up; do idle_kb[$name]=${end_kb[$name]:-0}; done
# The producer exits once its orders are delivered, maybe between two samples: GNU time,
# when there is one, reports its peak (the kernel's maxrss) after it exits.
if [ -x /usr/bin/time ]; then
    /usr/bin/time -f %M -o "$DIR/producer.maxrss" "$BIN/ordersd" --ops-addr 127.0.0.1:0 \
        --data-dir "$DIR/producer" producer --rate "$RATE" --orders "$ORDERS" \
        >/dev/null 2>"$DIR/producer.log" &
    pids+=($!)
    for _ in $(seq 100); do
        daemon_pid[producer]=$(pgrep -P $! || true)
        [ -n "${daemon_pid[producer]}" ] && break
        sleep 0.01
    done
    pids+=("${daemon_pid[producer]}")
else
    start producer --data-dir "$DIR/producer" producer --rate "$RATE" --orders "$ORDERS"
fi
roles=(producer "${roles[@]}")
idle_kb[producer]=0
started=$(date +%s.%N)
count=0
next_poll=0
while :; do
    sample
    now=$(date +%s.%N)
    if awk -v n="$now" -v p="$next_poll" 'BEGIN { exit !(n >= p) }'; then
        count=$(stored)
        count=${count:-0}
        [ "$count" -ge "$ORDERS" ] && break
        next_poll=$(awk -v n="$now" 'BEGIN { print n + 1 }')
    fi
    if awk -v n="$now" -v s="$started" -v t="$TIMEOUT" 'BEGIN { exit !(n - s > t) }'; then
        echo "{\"error\": \"the store holds $count of $ORDERS orders after ${TIMEOUT} s\"}"
        KEEP=1
        exit 1
    fi
    sleep "$SAMPLE"
done
sample
if [ -s "$DIR/producer.maxrss" ] && [ "$(cat "$DIR/producer.maxrss")" -gt "${peak_kb[producer]:-0}" ]; then
    peak_kb[producer]=$(cat "$DIR/producer.maxrss")
fi
seconds=$(awk -v n="$(date +%s.%N)" -v s="$started" 'BEGIN { printf "%.1f", n - s }')

mb() { awk -v k="$1" 'BEGIN { print k / 1024 }'; }
over=()
for name in "${roles[@]}" ordersctl-up; do
    printf '{"daemon": "%s", "peak_rss_mb": %.1f, "rss_end_mb": %.1f, "rss_before_load_mb": %.1f, "anon_end_mb": %.1f, "file_end_mb": %.1f}\n' \
        "$name" "$(mb "${peak_kb[$name]:-0}")" "$(mb "${end_kb[$name]:-0}")" "$(mb "${idle_kb[$name]}")" \
        "$(mb "${anon_kb[$name]:-0}")" "$(mb "${file_kb[$name]:-0}")"
    if [ "$name" != ordersctl-up ] && [ "${peak_kb[$name]:-0}" -gt $((LIMIT_MB * 1024)) ]; then
        over+=("\"$name\"")
    fi
done
printf '{"orders": %s, "rate": %s, "seconds_to_stored": %s, "limit_mb": %s, "over_limit": [%s], "note": "fraud, payment and analytics share their partitions with the in-process members of ordersctl up"}\n' \
    "$ORDERS" "$RATE" "$seconds" "$LIMIT_MB" "$(IFS=,; echo "${over[*]}")"
[ "${#over[@]}" -eq 0 ]
