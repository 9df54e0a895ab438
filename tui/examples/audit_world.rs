//! A finished pipeline of N orders to audit, built directly: an embedded broker whose
//! topics hold every order, alert and payment, a SQLite store holding the same (as
//! analytics stores them), and every group committed to the end. It writes `up.json` into
//! the data directory, so `ordersctl audit --data-dir DIR` attaches, and keeps the broker
//! up until Ctrl-C or SIGTERM. Used by `ops/scripts/bench-audit.sh` to measure the
//! audit's memory and time on 1,000,000 orders.
//!
//! `cargo run --release -p ordersctl --example audit_world -- --data-dir data/audit-world --orders 1000000`

use anyhow::{bail, Context};
use clap::Parser;
use orders_core::config::UpInfo;
use orders_core::domain::{Payment, PaymentStatus, Timestamp};
use orders_core::fraud::FraudRules;
use orders_core::generator::OrderGenerator;
use orders_core::kafka::{
    dlq_topic, EmbeddedBroker, KafkaSettings, ANALYTICS_GROUP, ANALYTICS_TOPIC, FRAUD_ALERTS_TOPIC,
    FRAUD_GROUP, PAYMENTS_GROUP, PAYMENTS_TOPIC,
};
use orders_core::store::{OrderStore, SqliteStore, StoreBatch, StoredOrder};
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const ORDERS_TOPIC: &str = "orders";

#[derive(Parser)]
struct Args {
    /// Where `orders.db` and `up.json` go (must not hold a store yet).
    #[arg(long)]
    data_dir: PathBuf,
    #[arg(long, default_value_t = 1_000_000)]
    orders: u64,
    /// Partitions of each topic. The embedded broker keeps about 5 MiB per partition, so
    /// enough of them keep every record of a large run (the SPEC's 6 would drop most).
    #[arg(long, default_value_t = 48)]
    partitions: i32,
    /// Orders per store transaction.
    #[arg(long, default_value_t = 50_000)]
    batch: u64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

/// Sends a record, waiting while librdkafka's queue is full.
fn send(
    producer: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    partition: i32,
    key: &str,
    payload: &[u8],
) -> anyhow::Result<()> {
    let mut record = BaseRecord::to(topic)
        .partition(partition)
        .key(key)
        .payload(payload);
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                producer.poll(Duration::from_millis(1));
            }
            Err((e, _)) => return Err(e.into()),
        }
    }
}

/// Commits `group` at the end of every partition of `topic` (checking the ends are what
/// was produced: then every offset recorded in the store is the record's real one; the
/// oldest may be gone already, which the audit counts as no longer on the topic).
fn commit_at_end(
    kafka: &KafkaSettings,
    group: &str,
    topic: &str,
    expected: &[i64],
) -> anyhow::Result<()> {
    let consumer = kafka.admin_consumer("audit-world", group)?;
    let mut tpl = TopicPartitionList::new();
    for (partition, want) in expected.iter().enumerate() {
        let partition = i32::try_from(partition)?;
        let (_, high) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(30))?;
        if high != *want {
            bail!("{topic}/{partition} ends at {high}, expected {want}");
        }
        tpl.add_partition_offset(topic, partition, Offset::Offset(high))?;
    }
    consumer.commit(&tpl, CommitMode::Sync)?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let began = Instant::now();
    let db = args.data_dir.join("orders.db");
    if db.exists() {
        bail!("{} exists: use an empty data directory", db.display());
    }
    let topics = topics(args.partitions);
    let broker = tokio::task::spawn_blocking(move || EmbeddedBroker::start(&topics)).await??;
    let kafka = broker.settings();
    let store = SqliteStore::open(&db).with_context(|| db.display().to_string())?;
    let producer: ThreadedProducer<DefaultProducerContext> =
        kafka.producer_config("audit-world").create()?;
    let next_offset = produce_and_store(&args, &producer, &store).await?;
    producer.flush(Duration::from_secs(60))?;
    {
        let kafka = kafka.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            for group in [FRAUD_GROUP, PAYMENTS_GROUP, ANALYTICS_GROUP] {
                commit_at_end(&kafka, group, ORDERS_TOPIC, &next_offset[0])?;
            }
            commit_at_end(&kafka, ANALYTICS_GROUP, FRAUD_ALERTS_TOPIC, &next_offset[1])?;
            commit_at_end(&kafka, ANALYTICS_GROUP, PAYMENTS_TOPIC, &next_offset[2])
        })
        .await??;
    }
    UpInfo {
        api: String::new(),
        kafka: broker.bootstrap_servers().to_owned(),
    }
    .write(&args.data_dir)?;
    eprintln!(
        "audit_world: ready after {:.1} s: {} orders, kafka at {}; Ctrl-C or SIGTERM ends it",
        began.elapsed().as_secs_f64(),
        args.orders,
        broker.bootstrap_servers()
    );
    let stop = CancellationToken::new();
    orders_daemons::signals::cancel_on_signals(stop.clone());
    stop.cancelled().await;
    UpInfo::remove(&args.data_dir);
    Ok(())
}

/// The topics with `p` partitions each, the analytics topic and the dead-letter topics.
fn topics(p: i32) -> Vec<(String, i32)> {
    let mut topics: Vec<(String, i32)> = [ORDERS_TOPIC, FRAUD_ALERTS_TOPIC, PAYMENTS_TOPIC]
        .iter()
        .map(|t| ((*t).to_owned(), p))
        .collect();
    topics.push((ANALYTICS_TOPIC.to_owned(), 1));
    for t in [ORDERS_TOPIC, FRAUD_ALERTS_TOPIC, PAYMENTS_TOPIC] {
        topics.push((dlq_topic(t), 1));
    }
    topics
}

/// Produces every order with its alert and payment and stores them, a batch at a time; the
/// next offset of each partition of orders, alerts and payments.
async fn produce_and_store(
    args: &Args,
    producer: &ThreadedProducer<DefaultProducerContext>,
    store: &SqliteStore,
) -> anyhow::Result<Vec<Vec<i64>>> {
    let p = args.partitions;
    let generator = OrderGenerator::new(args.seed);
    let rules = FraudRules::default();
    let width = usize::try_from(p)?;
    // Partition of order n: n % p. One idempotent producer keeps each partition's order,
    // so the k-th record sent to a partition is at offset k.
    let mut next_offset = vec![vec![0_i64; width]; 3];
    let mut id = 1;
    while id <= args.orders {
        let last = (id + args.batch - 1).min(args.orders);
        let mut batch = StoreBatch::default();
        let now = Timestamp::now();
        for n in id..=last {
            let partition = usize::try_from(n % u64::try_from(p)?)?;
            let order = generator.order(n, now);
            let key = order.key();
            let part = i32::try_from(partition)?;
            send(producer, ORDERS_TOPIC, part, &key, &order.to_json())?;
            batch.orders.push(StoredOrder {
                order: order.clone(),
                kafka_partition: part,
                kafka_offset: next_offset[0][partition],
                processed_at: now,
            });
            next_offset[0][partition] += 1;
            if let Some(alert) = rules.evaluate(&order) {
                send(producer, FRAUD_ALERTS_TOPIC, part, &key, &alert.to_json())?;
                next_offset[1][partition] += 1;
                batch.alerts.push(alert);
            }
            let payment = Payment {
                order_id: n,
                status: PaymentStatus::Paid,
                amount: order.amount,
                country: order.country,
                timestamp: now.micros() as f64 / 1e6,
            };
            send(producer, PAYMENTS_TOPIC, part, &key, &payment.to_json())?;
            next_offset[2][partition] += 1;
            batch.payments.push(payment);
        }
        store.apply(Arc::new(batch)).await?;
        eprintln!("audit_world: orders {id}..={last} produced and stored");
        id = last + 1;
    }
    Ok(next_offset)
}
