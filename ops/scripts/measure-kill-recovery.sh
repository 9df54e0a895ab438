#!/usr/bin/env bash
# How long a consumer group takes to catch up after members are killed -9, tried as an
# operator would, with the binaries only: `ordersctl up --headless` produces ORDERS orders
# at RATE/s; one extra `ordersd` member joins each group (fraud, payment, analytics); KILL_AT
# seconds after the first order they are all killed -9; the script then polls
# `ordersctl json lag` and prints, as one JSON line, the seconds from the kill until no
# group has lag left and the store holds every order.
#
# Environment: ORDERS (40000), RATE (2000), KILL_AT (8), TIMEOUT (300).
set -euo pipefail

ORDERS=${ORDERS:-40000}
RATE=${RATE:-2000}
KILL_AT=${KILL_AT:-8}
TIMEOUT=${TIMEOUT:-300}

cd "$(dirname "$0")/../.."
cargo build --release --quiet --bin ordersctl --bin ordersd
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
BIN="$TARGET_DIR/release"
DIR=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    [ -n "${KEEP:-}" ] && echo "kept $DIR" >&2 || rm -rf "$DIR"
}
trap cleanup EXIT

"$BIN/ordersctl" up --headless --port 0 --rate "$RATE" --orders "$ORDERS" \
    --payment-delay-ms 20 --data-dir "$DIR/data" >/dev/null 2>"$DIR/up.log" &
pids+=($!)
for _ in $(seq 100); do [ -s "$DIR/data/up.json" ] && break; sleep 0.1; done
API=$(sed -n 's/.*"api": *"\([^"]*\)".*/\1/p' "$DIR/data/up.json")
members=()
for role in fraud payment analytics; do
    RUST_LOG=warn "$BIN/ordersd" --data-dir "$DIR/data" "$role" >/dev/null 2>>"$DIR/members.log" &
    members+=($!)
    pids+=($!)
done

# The first "FIELD": N of the totals: the top-level one (by_country and by_status come later).
count() {
    "$BIN/ordersctl" json --api "$API" totals 2>/dev/null \
        | grep -o "\"$1\": *[0-9]*" | head -n 1 | sed 's/.*: *//'
}
for _ in $(seq 600); do
    [ "$(count order_count)" != "" ] && [ "$(count order_count)" -gt 0 ] && break
    sleep 0.1
done
sleep "$KILL_AT"
kill -9 "${members[@]}"
killed=$(date +%s.%N)
stored_at_kill=$(count order_count)

lag=unknown
while :; do
    now=$(date +%s.%N)
    if awk -v n="$now" -v k="$killed" -v t="$TIMEOUT" 'BEGIN { exit !(n - k > t) }'; then
        echo "{\"error\": \"not caught up in ${TIMEOUT} s\", \"lag\": \"$lag\", \"stored\": \"$(count order_count)\", \"paid\": \"$(count payment_count)\"}"
        exit 1
    fi
    lag=$("$BIN/ordersctl" json --api "$API" lag 2>/dev/null \
        | grep -o '"total_lag": *[0-9]*' | awk -F: '{ s += $2; n++ } END { print n ? s : "x" }')
    if [ "$lag" = "0" ] && [ "$(count order_count)" = "$ORDERS" ] && [ "$(count payment_count)" = "$ORDERS" ]; then
        break
    fi
    sleep 0.2
done
caught_up=$(awk -v n="$(date +%s.%N)" -v k="$killed" 'BEGIN { print n - k }')
produce_seconds=$(awk -v o="$ORDERS" -v r="$RATE" 'BEGIN { print o / r }')
printf '{"orders": %s, "rate": %s, "killed_members": 3, "kill_at_seconds": %s, "stored_at_kill": %s, "production_seconds": %s, "caught_up_seconds_after_kill": %.1f}\n' \
    "$ORDERS" "$RATE" "$KILL_AT" "$stored_at_kill" "$produce_seconds" "$caught_up"
