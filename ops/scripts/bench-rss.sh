#!/usr/bin/env bash
# Peak memory (RSS) of each daemon run alone, as production runs them, under load. An
# embedded broker with nothing else in its process (core/examples/embedded_broker.rs: the
# pipeline's and the operators' topics, no consumer, no producer) stands in for Kafka;
# beside it, one `ordersd` per role, each pointed at the broker by KAFKA_BOOTSTRAP_SERVERS
# (the production client settings) with its ops server on a port of its own:
#   ordersd analytics (the only member of its group, owning the SQLite store in the data
#   dir), ordersd fraud and ordersd payment (each the only member of its group: every
#   partition), ordersd api (serving that store; the totals are polled through it), and
#   ordersd producer (its own data directory), producing ORDERS orders at RATE/s
#   (0: as fast as it can).
# Every SAMPLE seconds the script reads VmHWM (the kernel's peak RSS), VmRSS, RssAnon and
# RssFile from /proc/PID/status of each process, until the store holds every order and
# every payment; it then prints one JSON line per process:
#   {"daemon", "peak_rss_mb", "peak_anon_mb", "rss_end_mb", "anon_end_mb", "file_end_mb",
#    "rss_before_load_mb", "cpu_s"}
# peak_rss_mb is the kernel's peak (the producer's from GNU time's maxrss when it exits
# between two samples); peak_anon_mb the highest sampled RssAnon (the heap, stacks and
# librdkafka's buffers); file_end_mb the file-backed part, almost all the binary's own code:
# reclaimable under pressure and shared between processes of one image on one host, but
# counted in RSS (the target is on RSS). The broker is listed too, for reference: it is
# not a production daemon. Then a summary line. Exits 1 when a daemon's peak RSS exceeds
# LIMIT_MB, or when the store does not hold every order and payment in TIMEOUT s.
# cpu_s is the process's CPU time (user + system) since its start, read with the last
# sample (the producer's from GNU time when it has exited): what a memory setting costs
# shows there.
#
# Environment: ORDERS (200000), RATE (0), SAMPLE (0.1), LIMIT_MB (30), TIMEOUT (600),
# BIN_DIR (prebuilt ordersctl, ordersd and examples/embedded_broker, as in a cargo release
# directory; unset: `cargo build --release`), KEEP (keep the temporary directory with the
# logs), MIMALLOC_ALLOW_THP (0) and MIMALLOC_PURGE_DELAY (10), as the image sets them.
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
    # One command: `-p orders-core` alone resolves the dependencies' features apart and
    # rebuilds many of them.
    cargo build --release --quiet --bin ordersctl --bin ordersd --example embedded_broker
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

"$BIN/examples/embedded_broker" >"$DIR/broker.addr" 2>"$DIR/broker.log" &
broker_pid=$!
pids+=("$broker_pid")
for _ in $(seq 300); do [ -s "$DIR/broker.addr" ] && break; sleep 0.1; done
KAFKA=$(head -n 1 "$DIR/broker.addr")
if [ -z "$KAFKA" ]; then
    echo "bench-rss: the embedded broker did not start (see $DIR/broker.log)" >&2
    KEEP=1
    exit 1
fi
# As the image runs them (ops/Dockerfile): no transparent huge pages for mimalloc, and
# freed pages returned after 10 ms.
export KAFKA_BOOTSTRAP_SERVERS=$KAFKA RUST_LOG=${RUST_LOG:-info} \
    MIMALLOC_ALLOW_THP=${MIMALLOC_ALLOW_THP:-0} MIMALLOC_PURGE_DELAY=${MIMALLOC_PURGE_DELAY:-10}

# Starts `ordersd ROLE ARGS...` with its own ops port; its pid goes into daemon_pid[ROLE].
declare -A daemon_pid
start() {
    local role=$1
    shift
    "$BIN/ordersd" --ops-addr 127.0.0.1:0 "$@" >/dev/null 2>"$DIR/$role.log" &
    daemon_pid[$role]=$!
    pids+=($!)
}
# Waits until ROLE's log has a line matching PATTERN; fails the run after 60 s.
await_log() {
    for _ in $(seq 600); do grep -q "$2" "$DIR/$1.log" && return 0; sleep 0.1; done
    echo "bench-rss: ordersd $1 did not log \"$2\" (see $DIR/$1.log)" >&2
    KEEP=1
    exit 1
}
# Analytics first: it creates the store the api serves.
start analytics --data-dir "$DIR/data" analytics
await_log analytics "partitions assigned"
start fraud --data-dir "$DIR/data" fraud
start payment --data-dir "$DIR/data" payment
start api --data-dir "$DIR/data" api --addr 127.0.0.1:0
await_log api "api listening"
API=$(sed -n 's/.*api listening.*addr=\([0-9.:]*\).*/http:\/\/\1/p' "$DIR/api.log" | head -n 1)
# The load starts once every member has its partitions.
await_log fraud "partitions assigned"
await_log payment "partitions assigned"

declare -A peak_kb end_kb idle_kb anon_kb file_kb peak_anon_kb cpu_ticks
TICKS=$(getconf CLK_TCK)
roles=(fraud payment analytics api)
daemon_pid[embedded-broker]=$broker_pid
# Reads VmHWM, VmRSS, RssAnon and RssFile of every process still running.
sample() {
    local name hwm rss anon file
    for name in "${roles[@]}" embedded-broker; do
        hwm=""
        read -r hwm rss anon file < <(awk '/^VmHWM:/ { h = $2 } /^VmRSS:/ { r = $2 }
            /^RssAnon:/ { a = $2 } /^RssFile:/ { f = $2 } END { print h, r, a, f }' \
            "/proc/${daemon_pid[$name]}/status" 2>/dev/null || true) || true
        [ -n "$hwm" ] || continue
        # utime and stime, fields 14 and 15 (the name in field 2 has no spaces).
        cpu_ticks[$name]=$(awk '{ print $14 + $15 }' "/proc/${daemon_pid[$name]}/stat" 2>/dev/null ||
            echo "${cpu_ticks[$name]:-0}")
        peak_kb[$name]=$hwm
        end_kb[$name]=$rss
        anon_kb[$name]=$anon
        file_kb[$name]=$file
        [ "$anon" -gt "${peak_anon_kb[$name]:-0}" ] && peak_anon_kb[$name]=$anon
    done
    return 0
}
# "orders payments" the store holds, through the api.
# (the first "order_count" is the top level's: the per-country ones come after it).
stored() {
    local totals
    totals=$("$BIN/ordersctl" json --api "$API" totals 2>/dev/null || true)
    echo "$(grep -o '"order_count": *[0-9]*' <<<"$totals" | head -n 1 | sed 's/.*: *//')" \
        "$(grep -o '"payment_count": *[0-9]*' <<<"$totals" | head -n 1 | sed 's/.*: *//')"
}

# The members' RSS before the load (the producer's: its start, before its first order).
sample
for name in "${roles[@]}" embedded-broker; do idle_kb[$name]=${end_kb[$name]:-0}; done
# The producer exits once its orders are delivered, maybe between two samples: GNU time,
# when there is one, reports its peak (the kernel's maxrss) after it exits.
if [ -x /usr/bin/time ]; then
    /usr/bin/time -f "%M %U %S" -o "$DIR/producer.maxrss" "$BIN/ordersd" --ops-addr 127.0.0.1:0 \
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
orders=0
payments=0
next_poll=0
while :; do
    sample
    now=$(date +%s.%N)
    if awk -v n="$now" -v p="$next_poll" 'BEGIN { exit !(n >= p) }'; then
        read -r orders payments < <(stored) || true
        orders=${orders:-0}
        payments=${payments:-0}
        [ "$orders" -ge "$ORDERS" ] && [ "$payments" -ge "$ORDERS" ] && break
        next_poll=$(awk -v n="$now" 'BEGIN { printf "%.3f", n + 1 }')
    fi
    if awk -v n="$now" -v s="$started" -v t="$TIMEOUT" 'BEGIN { exit !(n - s > t) }'; then
        echo "{\"error\": \"the store holds $orders orders and $payments payments of $ORDERS after ${TIMEOUT} s\"}"
        KEEP=1
        exit 1
    fi
    sleep "$SAMPLE"
done
sample
if [ -s "$DIR/producer.maxrss" ]; then
    read -r maxrss user system <"$DIR/producer.maxrss"
    [ "$maxrss" -gt "${peak_kb[producer]:-0}" ] && peak_kb[producer]=$maxrss
    cpu_ticks[producer]=$(awk -v u="$user" -v s="$system" -v t="$TICKS" 'BEGIN { printf "%d", (u + s) * t }')
fi
seconds=$(awk -v n="$(date +%s.%N)" -v s="$started" 'BEGIN { printf "%.1f", n - s }')

mb() { awk -v k="$1" 'BEGIN { print k / 1024 }'; }
over=()
for name in "${roles[@]}" embedded-broker; do
    printf '{"daemon": "%s", "peak_rss_mb": %.1f, "peak_anon_mb": %.1f, "rss_end_mb": %.1f, "anon_end_mb": %.1f, "file_end_mb": %.1f, "rss_before_load_mb": %.1f, "cpu_s": %.2f}\n' \
        "$name" "$(mb "${peak_kb[$name]:-0}")" "$(mb "${peak_anon_kb[$name]:-0}")" \
        "$(mb "${end_kb[$name]:-0}")" "$(mb "${anon_kb[$name]:-0}")" "$(mb "${file_kb[$name]:-0}")" \
        "$(mb "${idle_kb[$name]}")" "$(awk -v c="${cpu_ticks[$name]:-0}" -v t="$TICKS" 'BEGIN { print c / t }')"
    if [ "$name" != embedded-broker ] && [ "${peak_kb[$name]:-0}" -gt $((LIMIT_MB * 1024)) ]; then
        over+=("\"$name\"")
    fi
done
printf '{"orders": %s, "rate": %s, "seconds_to_stored": %s, "limit_mb": %s, "over_limit": [%s], "note": "each daemon alone against an embedded broker with no other client; file_end_mb is mostly the binary'"'"'s code (reclaimable, shared by processes of one image), counted in RSS"}\n' \
    "$ORDERS" "$RATE" "$seconds" "$LIMIT_MB" "$(IFS=,; echo "${over[*]}")"
[ "${#over[@]}" -eq 0 ]
