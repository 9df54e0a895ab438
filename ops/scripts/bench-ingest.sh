#!/usr/bin/env bash
# Benchmarks the ingest path next to the producer path, the same way for both: rows/s from
# the first insert (or the first produced order) to the last order stored, on the embedded
# pipeline of `ordersctl up --headless` (release build), with the payment delay at 0.
#
#   1. producer: `ordersctl up --orders ROWS --rate 0`, timed until /api/totals counts ROWS
#      (skipped with ROWS_PRODUCER=0);
#   2. ingest:   `ordersctl up --orders 0` on a throwaway PostgreSQL cluster (initdb in a
#      temporary directory, wal_level=logical, a free port, run as `nobody` when this is
#      root) with ops/postgres/orders.sql applied, and `ordersd ingest` as a process of its
#      own on the pipeline's embedded broker (its memory and its backends' CPU are its own);
#      ROWS rows are inserted by WRITERS concurrent psql sessions in transactions of BATCH
#      rows, timed from the first insert until /api/totals counts them;
#   3. one transaction of BIG_TX rows (0 skips it): the time until stored, and the ingest's
#      peak resident memory (VmHWM) after it;
#   4. HOLD seconds of load (WRITERS sessions, 100 rows per transaction, 20 transactions a
#      second each) twice, without and then with one transaction held open (one row
#      written, then open for the whole time): the CPU seconds of the ingest's backends
#      (the sessions named ordersd-ingest) each time (HOLD=0 skips it).
#
# Prints one JSON object. Needs the Debian package postgresql (initdb, pg_ctl, psql), curl
# and python3. Environment: ROWS (100000), ROWS_PRODUCER (ROWS), WRITERS (4), BATCH (500),
# BIG_TX (1000000), HOLD (60), PORT (18090); ORDERSD and ORDERSCTL name prebuilt binaries
# (to measure another version) instead of building these.
set -euo pipefail

ROWS=${ROWS:-100000}
ROWS_PRODUCER=${ROWS_PRODUCER:-$ROWS}
WRITERS=${WRITERS:-4}
BATCH=${BATCH:-500}
BIG_TX=${BIG_TX:-1000000}
HOLD=${HOLD:-60}
PORT=${PORT:-18090}

cd "$(dirname "$0")/../.."
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
if [ -z "$PGBIN" ] || [ ! -x "$PGBIN/initdb" ]; then
    echo "bench-ingest: PostgreSQL is missing; install it with: apt-get install -y postgresql" >&2
    exit 1
fi
if [ -z "${ORDERSD:-}" ] || [ -z "${ORDERSCTL:-}" ]; then
    cargo build --release --quiet --bin ordersctl --bin ordersd
    TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
    ORDERSCTL="$TARGET_DIR/release/ordersctl"
    ORDERSD="$TARGET_DIR/release/ordersd"
fi

WORK=$(mktemp -d)
UP_PID=""
INGEST_PID=""
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u nobody -- "$@"; else "$@"; fi; }
cleanup() {
    for pid in $INGEST_PID $UP_PID; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
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
    for _ in $(seq 72000); do [ "$(stored)" -ge "$n" ] && return 0; sleep 0.05; done
    echo "bench-ingest: timed out waiting for $n stored orders" >&2; return 1
}
now() { date +%s.%N; }
stop_up() { kill -INT "$UP_PID"; wait "$UP_PID" 2>/dev/null || true; UP_PID=""; }
since() { python3 -c "print($(now) - $1)"; }

# 1. The producer path.
producer_seconds=0
if [ "$ROWS_PRODUCER" -gt 0 ]; then
    mkdir "$WORK/producer"
    "$ORDERSCTL" up --headless --data-dir "$WORK/producer" --port "$PORT" --payment-delay-ms 0 \
        --orders "$ROWS_PRODUCER" --rate 0 --drain-seconds 5 >"$WORK/producer.log" 2>&1 &
    UP_PID=$!
    start=$(now)
    wait_up
    wait_stored "$ROWS_PRODUCER"
    producer_seconds=$(since "$start")
    stop_up
fi

# 2. The ingest path: the pipeline, the database, and the ingest on the pipeline's broker.
PGPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
as_pg "$PGBIN/initdb" -D "$WORK/pg" -U postgres -A trust --no-sync >/dev/null
cat >>"$WORK/pg/postgresql.conf" <<EOF
wal_level = logical
max_replication_slots = 4
max_wal_size = '4GB'
listen_addresses = '127.0.0.1'
port = $PGPORT
unix_socket_directories = '$WORK'
fsync = off
EOF
as_pg "$PGBIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pg.log" -w start >/dev/null
URL="postgresql://postgres@127.0.0.1:$PGPORT/postgres"
psql_() { "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 "$URL" "$@"; }
psql_ -f ops/postgres/orders.sql >/dev/null
mkdir "$WORK/ingest"
"$ORDERSCTL" up --headless --data-dir "$WORK/ingest" --port "$PORT" --payment-delay-ms 0 \
    --orders 0 --drain-seconds 5 >"$WORK/up.log" 2>&1 &
UP_PID=$!
wait_up
KAFKA=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["kafka"])' "$WORK/ingest/up.json")
OPS_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
POSTGRES_URL="$URL" KAFKA_BOOTSTRAP_SERVERS="$KAFKA" ORDERS_OPS_ADDR="127.0.0.1:$OPS_PORT" \
    "$ORDERSD" ingest >"$WORK/ingestd.log" 2>&1 &
INGEST_PID=$!
for _ in $(seq 300); do curl -fsS "http://127.0.0.1:$OPS_PORT/readyz" >/dev/null 2>&1 && break; sleep 0.1; done

insert_rows() { # ROWS in transactions of BATCH by WRITERS sessions
    local per_writer=$(($1 / WRITERS))
    for _ in $(seq "$WRITERS"); do
        (
            done_rows=0
            while [ "$done_rows" -lt "$per_writer" ]; do
                n=$BATCH; [ $((per_writer - done_rows)) -lt "$n" ] && n=$((per_writer - done_rows))
                echo "INSERT INTO orders (customer_id, amount, country)
                      SELECT 1000 + (g * 7919) % 9000, 10 + (g % 49000) / 100.0,
                             (ARRAY['US','CA','DE','IN','GB','FR','CN','BR'])[1 + g % 8]
                      FROM generate_series(1, $n) g;"
                done_rows=$((done_rows + n))
            done | psql_ >/dev/null
        ) &
    done
    wait $(jobs -p | grep -v -e "^$UP_PID$" -e "^$INGEST_PID$") 2>/dev/null || true
}
per_writer=$((ROWS / WRITERS))
total=$((per_writer * WRITERS))
start=$(now)
insert_rows "$ROWS"
inserted_seconds=$(since "$start")
wait_stored "$total"
ingest_seconds=$(since "$start")
count=$total

# 3. One large transaction.
big_seconds=0
if [ "$BIG_TX" -gt 0 ]; then
    start=$(now)
    psql_ -c "INSERT INTO orders (customer_id, amount, country)
              SELECT 1000 + (g * 7919) % 9000, 10 + (g % 49000) / 100.0,
                     (ARRAY['US','CA','DE','IN','GB','FR','CN','BR'])[1 + g % 8]
              FROM generate_series(1::bigint, $BIG_TX) g" >/dev/null
    count=$((count + BIG_TX))
    wait_stored "$count"
    big_seconds=$(since "$start")
fi
peak_rss_kib=$(awk '/VmHWM/ {print $2}' "/proc/$INGEST_PID/status")

# 4. Load with and without a transaction held open: the CPU of the ingest's backends.
backend_cpu() { # CPU seconds of the sessions named ordersd-ingest
    local total=0
    for pid in $(psql_ -A -t -c "SELECT pid FROM pg_stat_activity WHERE application_name = 'ordersd-ingest'"); do
        total=$(awk -v t="$total" '{ split($0, a, ") "); split(a[2], f, " "); print t + (f[12] + f[13]) / 100 }' "/proc/$pid/stat" 2>/dev/null || echo "$total")
    done
    echo "$total"
}
load() { # HOLD seconds of WRITERS sessions writing 100 rows per transaction, 20 a second
    local statements=$((HOLD * 20))
    for _ in $(seq "$WRITERS"); do
        (
            for _ in $(seq "$statements"); do
                echo "INSERT INTO orders (customer_id, amount, country)
                      SELECT 1000 + (g * 7919) % 9000, 10 + (g % 49000) / 100.0, 'US'
                      FROM generate_series(1, 100) g; SELECT pg_sleep(0.05);"
            done | psql_ >/dev/null
        ) &
    done
    wait $(jobs -p | grep -v -e "^$UP_PID$" -e "^$INGEST_PID$" -e "^${HELD_PID:-x}$") 2>/dev/null || true
    count=$((count + WRITERS * statements * 100))
}
cpu_without=0
cpu_with=0
if [ "$HOLD" -gt 0 ]; then
    before=$(backend_cpu)
    load
    cpu_without=$(python3 -c "print(round($(backend_cpu) - $before, 2))")
    wait_stored "$count"
    echo "BEGIN; INSERT INTO orders (customer_id, amount, country) VALUES (5678, 25, 'US');
          SELECT pg_sleep($HOLD + 30); COMMIT;" | psql_ >/dev/null &
    HELD_PID=$!
    sleep 1
    before=$(backend_cpu)
    load
    cpu_with=$(python3 -c "print(round($(backend_cpu) - $before, 2))")
    kill "$HELD_PID" 2>/dev/null || true
    wait "$HELD_PID" 2>/dev/null || true
fi
kill "$INGEST_PID"; wait "$INGEST_PID" 2>/dev/null || true; INGEST_PID=""
stop_up

python3 - "$ROWS_PRODUCER" "$total" "$producer_seconds" "$ingest_seconds" "$inserted_seconds" \
    "$WRITERS" "$BATCH" "$BIG_TX" "$big_seconds" "$peak_rss_kib" "$HOLD" "$cpu_without" "$cpu_with" <<'EOF'
import json, sys
(rows_p, total, p, i, ins, writers, batch, big, big_s, rss, hold, cpu0, cpu1) = sys.argv[1:]
rows_p, total, p, i, ins = int(rows_p), int(total), float(p), float(i), float(ins)
out = {
    "ingest_path": {"rows": total, "seconds": round(i, 2), "rows_per_second": round(total / i),
                    "insert_seconds": round(ins, 2), "writers": int(writers), "rows_per_transaction": int(batch)},
    "one_transaction": {"rows": int(big), "seconds": round(float(big_s), 2),
                        "ingest_peak_rss_mib": round(int(rss) / 1024, 1)},
    "backend_cpu_seconds": {"load_seconds": int(hold), "without_open_transaction": float(cpu0),
                            "with_open_transaction": float(cpu1)},
}
if rows_p > 0:
    out["producer_path"] = {"orders": rows_p, "seconds": round(p, 2), "orders_per_second": round(rows_p / p)}
    out["ingest_vs_producer"] = round((total / i) / (rows_p / p), 3)
print(json.dumps(out, indent=2))
EOF
