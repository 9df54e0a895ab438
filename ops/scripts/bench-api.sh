#!/usr/bin/env bash
# Benchmarks the API's read path: fills a SQLite store with ORDERS orders (1,000,000 by
# default) through OrderStore::apply, serves it on 127.0.0.1 (release build, with an
# embedded broker so /api/lag has groups to report), and runs wrk against /healthz,
# /api/orders?limit=10, /api/totals and /api/lag in one run, printing requests/s and p99
# for each and the ratio orders/healthz; then /api/orders and /api/totals again with the
# response cache off, so every request reads the store.
#
# Loopback only; every wrk run is bounded (DURATION). With two or more cores the server is
# pinned to CPU 0 and wrk to CPU 1 (taskset), so both get a core of their own.
#
# Environment: ORDERS (1000000), DURATION (10s), CONNECTIONS (16), PORT (18080),
# KEEP_DB (a path: reuse/keep the filled store there instead of a temporary one).
set -euo pipefail

ORDERS=${ORDERS:-1000000}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-16}
PORT=${PORT:-18080}
HOST=127.0.0.1

cd "$(dirname "$0")/../.."

if ! command -v wrk >/dev/null; then
    echo "bench-api: wrk is missing; install it with: apt-get install -y wrk" >&2
    exit 1
fi

cargo build --release --quiet -p orders-api --example fill_store --example serve_store
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
BIN="$TARGET_DIR/release/examples"

WORK=$(mktemp -d)
SERVER_PID=""
cleanup() {
    if [ -n "$SERVER_PID" ]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

DB=${KEEP_DB:-$WORK/orders.db}
if [ -n "${KEEP_DB:-}" ] && [ -e "$DB" ]; then
    echo "bench-api: reusing $DB" >&2
else
    echo "bench-api: filling $DB with $ORDERS orders" >&2
    "$BIN/fill_store" --db "$DB" --orders "$ORDERS" --batch 50000
fi

SERVER_CPU=()
WRK_CPU=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
    SERVER_CPU=(taskset -c 0)
    WRK_CPU=(taskset -c 1)
fi

start_server() { # $1: response cache time to live in ms
    if (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null; then
        echo "bench-api: something already listens on $HOST:$PORT" >&2
        exit 1
    fi
    # exec: $! is then the server itself, which `kill` reaches.
    (exec env RUST_LOG=warn "${SERVER_CPU[@]}" "$BIN/serve_store" --db "$DB" \
        --listen "$HOST:$PORT" --embedded-kafka --cache-ms "$1") &
    SERVER_PID=$!
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null; then break; fi
        sleep 0.1
    done
    # Let the lag sampler take its first samples.
    sleep 2
}
stop_server() {
    kill "$SERVER_PID"
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}

# wrk prints p99 as e.g. 812.00us, 1.52ms or 1.01s; this converts it to milliseconds.
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) n = n / 1000; else if (v ~ /ms$/) n = n; else if (v ~ /s$/) n = n * 1000
        printf "%.3f", n }'
}

declare -A RPS P99
measure() { # $1: label prefix, then paths
    local label=$1 path url out
    shift
    for path in "$@"; do
        url="http://$HOST:$PORT$path"
        # A short warm-up, then the measured run.
        "${WRK_CPU[@]}" wrk -t1 -c"$CONNECTIONS" -d2s "$url" >/dev/null
        out=$("${WRK_CPU[@]}" wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency "$url")
        if echo "$out" | grep -q "Non-2xx"; then
            echo "$out" >&2
            echo "bench-api: $path answered errors" >&2
            exit 1
        fi
        RPS[$label$path]=$(echo "$out" | awk '/^Requests\/sec:/ { print $2 }')
        P99[$label$path]=$(to_ms "$(echo "$out" | awk '$1 == "99%" { print $2 }')")
    done
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
PATHS=("/healthz" "/api/orders?limit=10" "/api/totals" "/api/lag")
# As served by default (list answers reused for 250 ms).
start_server 250
measure "" "${PATHS[@]}"
stop_server
# Every request reading the store (response cache off).
STORE_PATHS=("/api/orders?limit=10" "/api/totals")
start_server 0
measure "store:" "${STORE_PATHS[@]}"
stop_server

LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

echo
echo "load average before: $LOAD_BEFORE; after: $LOAD_AFTER (other work on the machine skews p99)"
echo "orders in store: $ORDERS; wrk -t1 -c$CONNECTIONS -d$DURATION --latency; $(nproc) cores${SERVER_CPU:+; server on CPU 0, wrk on CPU 1}"
printf "%-40s %14s %10s\n" "endpoint" "requests/s" "p99 ms"
for path in "${PATHS[@]}"; do
    printf "%-40s %14s %10s\n" "$path" "${RPS[$path]}" "${P99[$path]}"
done
for path in "${STORE_PATHS[@]}"; do
    printf "%-40s %14s %10s\n" "$path (cache off)" "${RPS[store:$path]}" "${P99[store:$path]}"
done
awk -v o="${RPS[/api/orders?limit=10]}" -v h="${RPS[/healthz]}" \
    -v s="${RPS[store:/api/orders?limit=10]}" \
    'BEGIN { printf "ratio orders/healthz: %.2f (cache off: %.2f)\n", o / h, s / h }'
