#!/usr/bin/env bash
# One-shot initialisation of the local Couchbase node (the `couchbase-init` service of
# docker-compose.yml, run in the couchbase/server image, which ships couchbase-cli and
# curl): cluster (data, index and query services), the bucket, the totals collection, the
# indexes the store queries with, and the totals directory. Idempotent: every step first
# looks whether it is done already, so running it again (each `docker compose up`) changes
# nothing.
#
# The daemons only check these (they wait while one is missing); in production `ordersctl
# store init` creates them. This image has no ordersctl, so the same definitions are here
# (a test in the store's index module checks they match). A volume written by an earlier
# layout needs `ordersctl store init` run against it once (docs/deploy.md), or a reset
# (docker compose down -v).
#
# Environment (defaults are for the local stack only; never use them elsewhere):
#   CB_HOST              the Couchbase node (couchbase)
#   COUCHBASE_USERNAME   cluster administrator to create / log in as
#   COUCHBASE_PASSWORD   its password (at least 6 characters)
#   COUCHBASE_BUCKET     bucket (order_analytics)
#   CB_DATA_RAMSIZE, CB_INDEX_RAMSIZE, CB_BUCKET_RAMSIZE   memory quotas in MiB
#   CB_BIN               where couchbase-cli and curl are (/opt/couchbase/bin)
set -euo pipefail

CB_HOST=${CB_HOST:-couchbase}
USERNAME=${COUCHBASE_USERNAME:?set COUCHBASE_USERNAME}
PASSWORD=${COUCHBASE_PASSWORD:?set COUCHBASE_PASSWORD}
BUCKET=${COUCHBASE_BUCKET:-order_analytics}
DATA_RAMSIZE=${CB_DATA_RAMSIZE:-512}
INDEX_RAMSIZE=${CB_INDEX_RAMSIZE:-256}
BUCKET_RAMSIZE=${CB_BUCKET_RAMSIZE:-256}

PATH=${CB_BIN:-/opt/couchbase/bin}:$PATH
MGMT="http://$CB_HOST:8091"
QUERY="http://$CB_HOST:8093"

log() { echo "couchbase-init: $*"; }
die() { echo "couchbase-init: $*" >&2; exit 1; }

# HTTP status of a request (000 when there is no answer); the body goes to $BODY.
BODY=$(mktemp)
trap 'rm -f "$BODY"' EXIT
http() { curl -sS -o "$BODY" -w '%{http_code}' "$@" 2>/dev/null || true; }
authed() { http -u "$USERNAME:$PASSWORD" "$@"; }

# Runs "$@" until it succeeds, every 2 s, at most $1 times.
retry() {
    local tries=$1 what=$2 i
    shift 2
    for ((i = 1; i <= tries; i++)); do
        if "$@"; then return 0; fi
        sleep 2
    done
    die "gave up waiting for $what"
}

# 1. The management service answers (the compose healthcheck says so too).
management_up() { [[ $(http "$MGMT/pools") == 200 ]]; }
retry 60 "the management service at $MGMT" management_up

# 2. The cluster: /pools lists the "default" pool once the node is initialised.
http "$MGMT/pools" >/dev/null
if grep -q '"name":"default"' "$BODY"; then
    log "cluster already initialised"
else
    log "initialising the cluster (data, index, query; ${DATA_RAMSIZE} MiB data, ${INDEX_RAMSIZE} MiB index)"
    couchbase-cli cluster-init -c "$CB_HOST:8091" \
        --cluster-name orders-local \
        --cluster-username "$USERNAME" --cluster-password "$PASSWORD" \
        --services data,index,query \
        --cluster-ramsize "$DATA_RAMSIZE" --cluster-index-ramsize "$INDEX_RAMSIZE" \
        --index-storage-setting default
fi
logged_in() {
    case $(authed "$MGMT/pools/default") in
        200) return 0 ;;
        401) die "the cluster was initialised with other credentials than" \
            "COUCHBASE_USERNAME/COUCHBASE_PASSWORD (reset the local stack with: docker compose down -v)" ;;
        *) return 1 ;;
    esac
}
retry 30 "the cluster to answer as $USERNAME" logged_in

# 3. The bucket.
if [[ $(authed "$MGMT/pools/default/buckets/$BUCKET") == 200 ]]; then
    log "bucket $BUCKET exists"
else
    log "creating bucket $BUCKET (${BUCKET_RAMSIZE} MiB, no replicas)"
    if ! out=$(couchbase-cli bucket-create -c "$CB_HOST:8091" \
        -u "$USERNAME" -p "$PASSWORD" \
        --bucket "$BUCKET" --bucket-type couchbase --bucket-ramsize "$BUCKET_RAMSIZE" \
        --bucket-replica 0 --enable-flush 0 --wait 2>&1); then
        # Another run may have created it in the meantime.
        grep -qi "already exists" <<<"$out" || die "bucket-create failed: $out"
        log "bucket $BUCKET exists"
    else
        log "$out"
    fi
fi
bucket_healthy() {
    [[ $(authed "$MGMT/pools/default/buckets/$BUCKET") == 200 ]] \
        && grep -q '"status":"healthy"' "$BODY"
}
retry 90 "bucket $BUCKET to be ready" bucket_healthy

# 4. The totals collection and the indexes, through the query service's REST API. Right after the bucket is made
# the query and index services may not know it yet, so each statement is retried.
query_up() { [[ $(authed "$QUERY/admin/ping") == 200 ]]; }
retry 60 "the query service at $QUERY" query_up

run_statement() {
    local code
    code=$(authed "$QUERY/query/service" --data-urlencode "statement=$1")
    [[ $code == 200 ]] && grep -Eq '"status":[[:space:]]*"success"' "$BODY"
}

B="\`$BUCKET\`"
statements=(
    "CREATE COLLECTION IF NOT EXISTS $B._default.totals"
    "CREATE INDEX IF NOT EXISTS idx_orders_latest ON $B(ns, order_id DESC) WHERE type = \"order\""
    "CREATE INDEX IF NOT EXISTS idx_orders_arrival ON $B(ns, processed_us DESC, order_id DESC) WHERE type = \"order\""
    "CREATE INDEX IF NOT EXISTS idx_orders_country_arrival ON $B(ns, country, processed_us DESC, order_id DESC) WHERE type = \"order\""
    "CREATE INDEX IF NOT EXISTS idx_orders_status_arrival ON $B(ns, status, processed_us DESC, order_id DESC) WHERE type = \"order\""
    "CREATE INDEX IF NOT EXISTS idx_orders_fraud_arrival ON $B(ns, fraud, processed_us DESC, order_id DESC) WHERE type = \"order\""
    "CREATE INDEX IF NOT EXISTS idx_orders_payment_arrival ON $B(ns, payment_status, processed_us DESC, order_id DESC) WHERE type = \"order\""
    "CREATE INDEX IF NOT EXISTS idx_orders_created_minute ON $B(ns, created_us, country, amount_cents) WHERE type = \"order\""
    "CREATE INDEX IF NOT EXISTS idx_alerts_latest ON $B(ns, order_id DESC) WHERE type = \"alert\""
    "CREATE INDEX IF NOT EXISTS idx_alerts_arrival ON $B(ns, stored_us DESC, order_id DESC) WHERE type = \"alert\""
    "CREATE INDEX IF NOT EXISTS idx_payments_latest ON $B(ns, order_id DESC) WHERE type = \"payment\""
    "CREATE INDEX IF NOT EXISTS idx_payments_arrival ON $B(ns, stored_us DESC, order_id DESC) WHERE type = \"payment\""
    "CREATE INDEX IF NOT EXISTS idx_canary_stages ON $B(ns, order_id DESC, stage, at_us, created_us, flagged) WHERE type = \"canary_stage\""
    "CREATE INDEX IF NOT EXISTS idx_totals_base ON $B(ns, type, country, status, amount_cents) WHERE type IN [\"order\", \"alert\", \"payment\"] AND position IS MISSING"
    "DROP INDEX IF EXISTS idx_orders_created ON $B"
    "DROP INDEX IF EXISTS idx_orders_by_country ON $B"
    "DROP INDEX IF EXISTS idx_orders_by_status ON $B"
    "DROP INDEX IF EXISTS idx_recount_pending ON $B"
)
for statement in "${statements[@]}"; do
    case $statement in
        DROP*) name="index $(awk '{ print $5 }' <<<"$statement")" ;;
        "CREATE COLLECTION"*) name="collection totals" ;;
        *) name="index $(awk '{ print $6 }' <<<"$statement")" ;;
    esac
    for attempt in $(seq 1 30); do
        if run_statement "$statement"; then
            log "$name ready"
            break
        fi
        if [[ $attempt -eq 30 ]]; then
            die "creating $name failed: $(head -c 2000 "$BODY")"
        fi
        sleep 2
    done
done

# The totals directory (what `ordersctl store init` writes on a new bucket): inserted once;
# a second run finds it ("Duplicate Key") and leaves it as the writers have changed it.
directory="INSERT INTO $B._default.totals (KEY, VALUE) VALUES (\"totals\", {\"type\": \"totals_directory\", \"ns\": \"\", \"partitions\": {}, \"base\": {}, \"base_records\": 0})"
directory_there() { run_statement "$directory" || grep -q "Duplicate Key" "$BODY"; }
retry 30 "the totals directory" directory_there
log "totals directory ready"

# 5. Wait until every index is online (a non-deferred CREATE INDEX usually returns after
# the build; this covers the one that did not).
indexes_online() {
    run_statement "SELECT RAW COUNT(*) FROM system:indexes WHERE keyspace_id = \"$BUCKET\" AND state != \"online\"" \
        && tr -d '\n' <"$BODY" | grep -Eq '"results":[[:space:]]*\[[[:space:]]*0[[:space:]]*\]'
}
retry 60 "the indexes of $BUCKET to be online" indexes_online
log "done: cluster, bucket $BUCKET, its totals collection, directory and indexes are ready"
