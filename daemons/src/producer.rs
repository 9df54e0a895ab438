//! The producer daemon: generates the SPEC's orders onto the orders topic, paced by
//! `SLEEP_SECONDS` or a rate, with ids that continue after any already stored or published.

use crate::output::{OutRecord, Output, OutputError};
use crate::progress::Progress;
use crate::DaemonError;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use orders_core::domain::{Timestamp, MAX_ORDER_ID, ORDER_IDS};
use orders_core::generator::OrderGenerator;
use orders_core::kafka::KafkaSettings;
use orders_core::store::OrderStore;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

type Delivered = (
    Result<
        rdkafka::producer::future_producer::OwnedDeliveryResult,
        futures::channel::oneshot::Canceled,
    >,
    String,
    Vec<u8>,
);

/// How fast orders are produced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// A pause between orders (the seed's `SLEEP_SECONDS`).
    Sleep(Duration),
    /// Orders per second; `0` means as fast as possible.
    Rate(f64),
}

#[derive(Debug, Clone)]
pub struct ProducerConfig {
    pub topic: String,
    pub pace: Pace,
    /// Stop after this many orders.
    pub max_orders: Option<u64>,
    pub seed: u64,
}

pub struct ProducerDeps {
    pub kafka: KafkaSettings,
    /// Consulted for the highest stored id, when there is a store.
    pub store: Option<Arc<dyn OrderStore>>,
    pub progress: Arc<Progress>,
    /// When set, never be more than this many orders ahead of the slowest consumer group
    /// of this process (the embedded broker keeps only a few MiB per partition).
    pub flow_window: Option<u64>,
}

/// The highest order id on the topic: the last record of every partition (ids only grow).
/// Blocking: call from a blocking context.
pub fn max_order_id_on_topic(
    settings: &KafkaSettings,
    topic: &str,
    timeout: Duration,
) -> Result<Option<u64>, DaemonError> {
    let consumer: BaseConsumer =
        settings.admin_consumer("orders-producer-scan", "orders-producer-scan")?;
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let mut tpl = TopicPartitionList::new();
    for t in metadata.topics().iter().filter(|t| t.name() == topic) {
        for p in t.partitions() {
            let (low, high) = consumer.fetch_watermarks(topic, p.id(), timeout)?;
            if high > low {
                tpl.add_partition_offset(topic, p.id(), Offset::Offset(high - 1))?;
            }
        }
    }
    let mut remaining = tpl.count();
    if remaining == 0 {
        return Ok(None);
    }
    consumer.assign(&tpl)?;
    let deadline = std::time::Instant::now() + timeout;
    let mut max = None;
    while remaining > 0 && std::time::Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                remaining -= 1;
                let from_key = m
                    .key()
                    .and_then(|k| std::str::from_utf8(k).ok())
                    .and_then(|k| k.parse::<u64>().ok());
                let id = from_key.or_else(|| {
                    m.payload()
                        .and_then(|p| serde_json::from_slice::<serde_json::Value>(p).ok())
                        .and_then(|v| v.get("order_id").and_then(serde_json::Value::as_u64))
                });
                // An id out of range was dead-lettered by every reader; it must not
                // push the next id past what the store and JSON readers hold.
                max = max.max(id.filter(|id| ORDER_IDS.contains(id)));
            }
            Some(Err(e)) => tracing::warn!(error = %e, "scanning the orders topic"),
            None => {}
        }
    }
    if remaining > 0 {
        tracing::warn!(
            partitions = remaining,
            "could not read the last record of every partition"
        );
    }
    Ok(max)
}

/// The first id to use: one past the highest stored or published.
pub async fn first_order_id(deps: &ProducerDeps, topic: &str) -> Result<u64, DaemonError> {
    let stored = match &deps.store {
        Some(store) => store.max_order_id().await?,
        None => None,
    };
    let settings = deps.kafka.clone();
    let topic = topic.to_owned();
    let published = tokio::task::spawn_blocking(move || {
        max_order_id_on_topic(&settings, &topic, Duration::from_secs(10))
    })
    .await
    .map_err(|e| DaemonError::Task(e.to_string()))??;
    let next = stored.max(published).unwrap_or(0) + 1;
    if !ORDER_IDS.contains(&next) {
        return Err(DaemonError::Task(format!(
            "order ids are exhausted: the highest id in use is {MAX_ORDER_ID}"
        )));
    }
    Ok(next)
}

/// Runs the producer until `shutdown` or until `max_orders` are acknowledged.
/// Returns the number of orders produced.
pub async fn run(
    config: ProducerConfig,
    deps: ProducerDeps,
    shutdown: CancellationToken,
) -> Result<u64, DaemonError> {
    let output = Output::new(&deps.kafka, "orders-producer")?;
    let mut next_id = first_order_id(&deps, &config.topic).await?;
    tracing::info!(first_order_id = next_id, topic = %config.topic, pace = ?config.pace, "producing orders");
    let generator = OrderGenerator::new(config.seed);
    let started = Instant::now();
    let mut sent: u64 = 0;
    let mut acked: u64 = 0;
    let mut deliveries: FuturesUnordered<BoxFuture<'static, Delivered>> = FuturesUnordered::new();
    let gate_base = deps.progress.orders_done_by_all();
    let log_each = matches!(config.pace, Pace::Sleep(d) if d >= Duration::from_millis(100));
    let mut retries: Vec<OutRecord> = Vec::new();

    let handle = |r: Result<rdkafka::producer::future_producer::OwnedDeliveryResult, _>,
                  key: String,
                  payload: Vec<u8>|
     -> Option<OutRecord> {
        match r {
            Ok(Ok(_)) => None,
            Ok(Err((e, _))) => {
                tracing::warn!(order_id = %key, error = %e, "order not delivered; retrying");
                Some(OutRecord {
                    topic: config.topic.clone(),
                    key,
                    payload,
                    headers: None,
                })
            }
            Err(_) => Some(OutRecord {
                topic: config.topic.clone(),
                key,
                payload,
                headers: None,
            }),
        }
    };

    'produce: loop {
        // Collect what has been delivered so far.
        while let Some(Some((r, key, payload))) = deliveries.next().now_or_never() {
            match handle(r, key, payload) {
                None => {
                    acked += 1;
                    deps.progress
                        .orders_produced
                        .fetch_add(1, Ordering::Relaxed);
                }
                Some(retry) => retries.push(retry),
            }
        }
        if shutdown.is_cancelled() {
            break;
        }
        let record = if let Some(r) = retries.pop() {
            r
        } else {
            if config.max_orders.is_some_and(|max| sent >= max) {
                if deliveries.is_empty() {
                    break;
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break 'produce,
                    Some((r, key, payload)) = deliveries.next() => {
                        match handle(r, key, payload) {
                            None => { acked += 1; deps.progress.orders_produced.fetch_add(1, Ordering::Relaxed); }
                            Some(retry) => retries.push(retry),
                        }
                    }
                }
                continue;
            }
            // Pacing.
            match config.pace {
                Pace::Sleep(pause) if sent > 0 => {
                    tokio::select! {
                        _ = shutdown.cancelled() => break 'produce,
                        _ = tokio::time::sleep(pause) => {}
                    }
                }
                Pace::Rate(rate) if rate > 0.0 => {
                    let due = started + Duration::from_secs_f64(sent as f64 / rate);
                    if due > Instant::now() {
                        tokio::select! {
                            _ = shutdown.cancelled() => break 'produce,
                            _ = tokio::time::sleep_until(due) => {}
                        }
                    }
                }
                _ => {}
            }
            // Flow control against this process's own consumers.
            if let Some(window) = deps.flow_window {
                while sent.saturating_sub(deps.progress.orders_done_by_all() - gate_base) >= window
                {
                    if shutdown.is_cancelled() {
                        break 'produce;
                    }
                    deps.progress.changed(Duration::from_millis(5)).await;
                }
            }
            let order = generator.order(next_id, Timestamp::now());
            next_id += 1;
            sent += 1;
            if log_each {
                tracing::info!(order_id = order.order_id, amount = %order.amount, country = %order.country, "order produced");
            }
            OutRecord {
                topic: config.topic.clone(),
                key: order.key(),
                payload: order.to_json(),
                headers: None,
            }
        };
        match output.enqueue(&record, &shutdown).await {
            Ok(delivery) => {
                let OutRecord { key, payload, .. } = record;
                deliveries.push(delivery.map(move |r| (r, key, payload)).boxed());
            }
            Err(OutputError::Cancelled) => break,
            Err(OutputError::Kafka(e)) => return Err(e.into()),
        }
    }
    // Wait for what is queued, briefly, then flush.
    let drain = async {
        while let Some((r, key, payload)) = deliveries.next().await {
            if handle(r, key, payload).is_none() {
                acked += 1;
                deps.progress
                    .orders_produced
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), drain).await;
    output.flush(Duration::from_secs(5));
    tracing::info!(orders = acked, next_order_id = next_id, "producer stopped");
    Ok(acked)
}
