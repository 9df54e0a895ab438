#!/usr/bin/env bash
# Benchmarks the ingest path next to the producer path, the same way for both: rows/s from
# the first insert (or the first produced order) to the last order stored, on the embedded
# pipeline of `ordersctl up --headless` (release build), with the payment delay at 0.
#
#   1. producer: `ordersctl up --orders ROWS --rate 0`, timed until /api/totals counts ROWS;
#   2. ingest:   `ordersctl up --orders 0 --postgres URL` on a throwaway PostgreSQL cluster
#      (initdb in a temporary directory, wal_level=logical, a free port, run as `nobody`
#      when this is root) with ops/postgres/orders.sql applied; ROWS rows are inserted by
#      WRITERS concurrent psql sessions in transactions of BATCH rows, timed from the first
#      insert until /api/totals counts ROWS.
#
# Prints one JSON object. Needs the Debian package postgresql (initdb, pg_ctl, psql), curl
# and python3. Environment: ROWS (100000), WRITERS (4), BATCH (500), PORT (18090).
set -euo pipefail

ROWS=${ROWS:-100000}
WRITERS=${WRITERS:-4}
BATCH=${BATCH:-500}
PORT=${PORT:-18090}

cd "$(dirname "$0")/../.."
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
if [ -z "$PGBIN" ] || [ ! -x "$PGBIN/initdb" ]; then
    echo "bench-ingest: PostgreSQL is missing; install it with: apt-get install -y postgresql" >&2
    exit 1
fi
cargo build --release --quiet --bin ordersctl
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
ORDERSCTL="$TARGET_DIR/release/ordersctl"

WORK=$(mktemp -d)
UP_PID=""
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u nobody -- "$@"; else "$@"; fi; }
cleanup() {
    if [ -n "$UP_PID" ]; then kill "$UP_PID" 2>/dev/null || true; wait "$UP_PID" 2>/dev/null || true; fi
    as_pg "$PGBIN/pg_ctl" -D "$WORK/pg" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT
[ "$(id -u)" = 0 ] && chown nobody "$WORK"

stored() { curl -fsS "http://127.0.0.1:$PORT/api/totals" 2>/dev/null \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["order_count"])' 2>/dev/null || echo 0; }
wait_up() { for _ in $(seq 600); do curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && return 0; sleep 0.1; done; return 1; }
wait_stored() {
    local n=$1
    for _ in $(seq 36000); do [ "$(stored)" -ge "$n" ] && return 0; sleep 0.05; done
    echo "bench-ingest: timed out waiting for $n stored orders" >&2; return 1
}
now() { date +%s.%N; }
stop_up() { kill -INT "$UP_PID"; wait "$UP_PID" 2>/dev/null || true; UP_PID=""; }

# 1. The producer path.
mkdir "$WORK/producer"
"$ORDERSCTL" up --headless --data-dir "$WORK/producer" --port "$PORT" --payment-delay-ms 0 \
    --orders "$ROWS" --rate 0 --drain-seconds 5 >"$WORK/producer.log" 2>&1 &
UP_PID=$!
start=$(now)
wait_up
wait_stored "$ROWS"
producer_seconds=$(python3 -c "print($(now) - $start)")
stop_up

# 2. The ingest path.
PGPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
as_pg "$PGBIN/initdb" -D "$WORK/pg" -U postgres -A trust --no-sync >/dev/null
cat >>"$WORK/pg/postgresql.conf" <<EOF
wal_level = logical
max_replication_slots = 4
listen_addresses = '127.0.0.1'
port = $PGPORT
unix_socket_directories = '$WORK'
fsync = off
EOF
as_pg "$PGBIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pg.log" -w start >/dev/null
URL="postgresql://postgres@127.0.0.1:$PGPORT/postgres"
"$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -f ops/postgres/orders.sql "$URL" >/dev/null
mkdir "$WORK/ingest"
"$ORDERSCTL" up --headless --data-dir "$WORK/ingest" --port "$PORT" --payment-delay-ms 0 \
    --orders 0 --drain-seconds 5 --postgres "$URL" >"$WORK/ingest.log" 2>&1 &
UP_PID=$!
wait_up
per_writer=$((ROWS / WRITERS))
start=$(now)
for w in $(seq "$WRITERS"); do
    (
        done_rows=0
        while [ "$done_rows" -lt "$per_writer" ]; do
            n=$BATCH; [ $((per_writer - done_rows)) -lt "$n" ] && n=$((per_writer - done_rows))
            echo "INSERT INTO orders (customer_id, amount, country)
                  SELECT 1000 + (g * 7919) % 9000, 10 + (g % 49000) / 100.0,
                         (ARRAY['US','CA','DE','IN','GB','FR','CN','BR'])[1 + g % 8]
                  FROM generate_series(1, $n) g;"
            done_rows=$((done_rows + n))
        done | "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 "$URL" >/dev/null
    ) &
done
wait $(jobs -p | grep -v "^$UP_PID$") 2>/dev/null || true
inserted_seconds=$(python3 -c "print($(now) - $start)")
total=$((per_writer * WRITERS))
wait_stored "$total"
ingest_seconds=$(python3 -c "print($(now) - $start)")
stop_up

python3 - "$ROWS" "$total" "$producer_seconds" "$ingest_seconds" "$inserted_seconds" "$WRITERS" "$BATCH" <<'EOF'
import json, sys
rows, total, p, i, ins, writers, batch = sys.argv[1:]
rows, total, p, i, ins = int(rows), int(total), float(p), float(i), float(ins)
print(json.dumps({
    "rows": total,
    "producer_path": {"orders": rows, "seconds": round(p, 2), "orders_per_second": round(rows / p)},
    "ingest_path": {"rows": total, "seconds": round(i, 2), "rows_per_second": round(total / i),
                    "insert_seconds": round(ins, 2), "writers": int(writers), "rows_per_transaction": int(batch)},
    "ingest_vs_producer": round((total / i) / (rows / p), 3),
}, indent=2))
EOF
