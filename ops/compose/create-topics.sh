#!/usr/bin/env bash
# One-shot topic creator for the local stack (the `kafka-init` service of
# docker-compose.yml, run in the apache/kafka image). The broker has
# auto.create.topics.enable=false, like production, and the daemons exit naming a missing
# topic, so every topic of the pipeline is created here before they start.
#
# Idempotent: existing topics are kept (--if-not-exists), then every topic's partition
# count is checked against the wanted one; a mismatch (an old volume made by another
# layout) fails with a hint instead of running the pipeline on the wrong layout.
#
# Environment:
#   BOOTSTRAP_SERVERS   broker to talk to (kafka:9092)
#   TOPICS              "name:partitions[:compact]" words, e.g. "orders:6 orders.dlq:1
#                       orders.dlq.handled:1:compact" (compact: cleanup.policy=compact)
#   REPLICATION_FACTOR  1 on a single local broker
set -euo pipefail

BOOTSTRAP_SERVERS=${BOOTSTRAP_SERVERS:-kafka:9092}
REPLICATION_FACTOR=${REPLICATION_FACTOR:-1}
TOPICS=${TOPICS:?set TOPICS to name:partitions words}
KAFKA_TOPICS=${KAFKA_TOPICS:-/opt/kafka/bin/kafka-topics.sh}

log() { echo "kafka-init: $*"; }

declare -A wanted=() compact=()
order=()
for spec in $TOPICS; do
    IFS=: read -r name partitions policy extra <<<"$spec"
    if [[ -z $name || -n ${extra:-} || ! ${partitions:-} =~ ^[1-9][0-9]*$ \
        || ! ${policy:-} =~ ^(compact)?$ ]]; then
        log "bad TOPICS entry '$spec' (want name:partitions or name:partitions:compact)" >&2
        exit 2
    fi
    wanted[$name]=$partitions
    compact[$name]=${policy:-}
    order+=("$name")
done

# The broker's healthcheck passed, but give it a little longer to answer admin requests.
existing=""
for attempt in $(seq 1 30); do
    if existing=$("$KAFKA_TOPICS" --bootstrap-server "$BOOTSTRAP_SERVERS" --list 2>/dev/null); then
        break
    fi
    if [[ $attempt -eq 30 ]]; then
        log "no answer from Kafka at $BOOTSTRAP_SERVERS" >&2
        exit 1
    fi
    sleep 2
done

for name in "${order[@]}"; do
    if grep -qxF -- "$name" <<<"$existing"; then
        log "topic $name exists"
        continue
    fi
    config=()
    if [[ -n ${compact[$name]} ]]; then
        config=(--config cleanup.policy=compact)
    fi
    log "creating $name (${wanted[$name]} partitions, replication factor $REPLICATION_FACTOR${compact[$name]:+, compacted})"
    "$KAFKA_TOPICS" --bootstrap-server "$BOOTSTRAP_SERVERS" --create --if-not-exists \
        --topic "$name" --partitions "${wanted[$name]}" \
        --replication-factor "$REPLICATION_FACTOR" "${config[@]}"
done

# One describe for all topics; summary lines look like
#   Topic: orders  TopicId: ...  PartitionCount: 6  ReplicationFactor: 1  Configs: ...
described=$("$KAFKA_TOPICS" --bootstrap-server "$BOOTSTRAP_SERVERS" --describe)
actual=$(awk '{
    topic = ""; count = ""
    for (i = 1; i < NF; i++) {
        if ($i == "Topic:" && topic == "") topic = $(i + 1)
        if ($i == "PartitionCount:") count = $(i + 1)
    }
    if (topic != "" && count != "") print topic, count
}' <<<"$described")

failed=0
for name in "${order[@]}"; do
    count=$(awk -v t="$name" '$1 == t { print $2 }' <<<"$actual")
    if [[ -z $count ]]; then
        log "topic $name is missing after creation" >&2
        failed=1
    elif [[ $count != "${wanted[$name]}" ]]; then
        log "topic $name has $count partitions, want ${wanted[$name]}" \
            "(left over from an older stack? reset it with: docker compose down -v)" >&2
        failed=1
    else
        log "ok: $name has $count partitions"
    fi
done
exit "$failed"
