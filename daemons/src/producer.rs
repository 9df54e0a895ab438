//! The producer daemon: generates the SPEC's orders onto the orders topic, paced by
//! `SLEEP_SECONDS` or a rate, with ids that continue after any already stored or published,
//! and a canary order (`source: "canary"`, with an id of the canaries' own range) every
//! `ORDERS_CANARY_INTERVAL_SECONDS`.

use crate::confirmed_producer::{ConfirmedProducer, OutRecord, ProduceError};
use crate::progress::Progress;
use crate::DaemonError;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use orders_core::canary::{self, CanaryIds};
use orders_core::domain::{Order, Timestamp, CANARY_ORDER_ID_BASE, PRODUCER_ORDER_IDS};
use orders_core::generator::OrderGenerator;
use orders_core::kafka::{close_in_background, KafkaSettings, KafkaSetupError, RangeReader};
use orders_core::store::{OrderStore, StoreError};
use rdkafka::consumer::Consumer;
use rdkafka::Message;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

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
    /// A canary order (`orders_core::canary`) this often, the first at start; `None`: none.
    /// Canaries take ids from their own range ([`CanaryIds`]), so the orders' ids run
    /// without gaps, and never count as orders produced.
    pub canary_interval: Option<Duration>,
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

/// The highest order id of the producer's range ([`PRODUCER_ORDER_IDS`]) on the topic.
/// The producer's ids only grow, so on each partition it is in the last record of that
/// range: the last record, unless records from the database's range (published by the
/// ingest role) came after it, in which case the scan looks further back, in windows 16
/// times larger each round, until it finds one or reaches the start of the partition.
///
/// Each round reads every partition still open at once, with a consumer of its own: a
/// consumer assigned again waits about a second before its first fetch, so the scan that
/// re-assigned one consumer partition by partition kept every producer from starting for
/// 4–6 s (which cut the bench's end-to-end figure to a third; BENCHMARKS.md).
/// Blocking: call from a blocking context.
pub fn max_order_id_on_topic(
    settings: &KafkaSettings,
    topic: &str,
    timeout: Duration,
) -> Result<Option<u64>, DaemonError> {
    let consumer = settings.admin_consumer("orders-producer-scan", "orders-producer-scan")?;
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    // Per partition still to read: its low watermark and the end of what is left to read.
    let mut open: Vec<(i32, i64, i64)> = Vec::new();
    for t in metadata.topics().iter().filter(|t| t.name() == topic) {
        for p in t.partitions() {
            let (low, high) = consumer.fetch_watermarks(topic, p.id(), timeout)?;
            if high > low {
                open.push((p.id(), low, high));
            }
        }
    }
    let reader = RangeReader::new(settings, "orders-producer-scan");
    let mut max = None;
    let mut window: i64 = 1;
    while !open.is_empty() {
        let ranges: Vec<(i32, i64, i64)> = open
            .iter()
            .map(|&(p, low, end)| (p, end.saturating_sub(window).max(low), end))
            .collect();
        let mut found: BTreeMap<i32, u64> = BTreeMap::new();
        reader.read(topic, &ranges, timeout, |m| {
            if let Some(id) = producer_order_id(m) {
                let best = found.entry(m.partition()).or_insert(id);
                *best = (*best).max(id);
            }
        })?;
        max = max.max(found.values().copied().max());
        // Partitions with no producer id in this window look further back, if they can.
        open = ranges
            .iter()
            .zip(&open)
            .filter(|((p, from, _), (_, low, _))| !found.contains_key(p) && from > low)
            .map(|(&(p, from, _), &(_, low, _))| (p, low, from))
            .collect();
        window = window.saturating_mul(16);
    }
    close_in_background(consumer);
    Ok(max)
}

/// The order id of a record of the orders topic, when it is one of the producer's range:
/// an id out of range was dead-lettered by every reader (it must not push the next id past
/// what the store and JSON readers hold), and one of the database's range is not the
/// producer's to continue after.
fn producer_order_id(m: &rdkafka::message::BorrowedMessage<'_>) -> Option<u64> {
    let from_key = m
        .key()
        .and_then(|k| std::str::from_utf8(k).ok())
        .and_then(|k| k.parse::<u64>().ok());
    let id = from_key.or_else(|| {
        m.payload()
            .and_then(|p| serde_json::from_slice::<serde_json::Value>(p).ok())
            .and_then(|v| v.get("order_id").and_then(serde_json::Value::as_u64))
    });
    id.filter(|id| PRODUCER_ORDER_IDS.contains(id))
}

/// The first ids to use: for orders, one past the highest of the producer's range stored
/// or published; for canaries, ids above the highest canary journey stored.
pub async fn first_ids(deps: &ProducerDeps, topic: &str) -> Result<FirstIds, DaemonError> {
    // The highest stored id of the producer's range: ids of the database's range (orders
    // the ingest role published) are not the producer's to continue after.
    let stored = match &deps.store {
        Some(store) => store
            .orders_before(Some(PRODUCER_ORDER_IDS.end), 1)
            .await?
            .first()
            .map(|o| o.order.order_id),
        None => None,
    };
    let settings = deps.kafka.clone();
    let topic = topic.to_owned();
    let published = tokio::task::spawn_blocking(move || {
        max_order_id_on_topic(&settings, &topic, Duration::from_secs(10))
    })
    .await
    .map_err(|e| DaemonError::Task(e.to_string()))??;
    // Canaries are not stored as orders; their journeys keep their ids. Those of the
    // canaries' own range are no bound on the orders' ids; those below it come from a
    // producer that gave canaries ids of the orders' sequence, and are.
    let (canary_in_order_range, canary) = match &deps.store {
        Some(store) => (
            store
                .canaries_before(Some(CANARY_ORDER_ID_BASE), 1)
                .await?
                .first()
                .map(|j| j.order_id),
            store
                .canaries_before(None, 1)
                .await?
                .first()
                .map(|j| j.order_id),
        ),
        None => (None, None),
    };
    let next = stored
        .max(published)
        .max(canary_in_order_range)
        .unwrap_or(0)
        + 1;
    if !PRODUCER_ORDER_IDS.contains(&next) {
        return Err(DaemonError::IdsExhausted(PRODUCER_ORDER_IDS.end - 1));
    }
    Ok(FirstIds {
        order: next,
        canaries: CanaryIds::after(canary),
    })
}

/// Where the producer's ids start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FirstIds {
    /// The first order's id.
    pub order: u64,
    /// The canaries' ids.
    pub canaries: CanaryIds,
}

/// [`first_ids`], tried again with backoff while Kafka or the store cannot answer (a
/// producer started during an outage waits for it to end); `None` on shutdown.
async fn first_ids_patiently(
    deps: &ProducerDeps,
    topic: &str,
    shutdown: &CancellationToken,
) -> Result<Option<FirstIds>, DaemonError> {
    let since = Instant::now();
    let mut logged: Option<Instant> = None;
    let mut backoff = Duration::from_millis(200);
    loop {
        match first_ids(deps, topic).await {
            Ok(ids) => {
                if logged.is_some() {
                    tracing::info!(
                        waited_seconds = since.elapsed().as_secs_f64(),
                        "the highest order id in use is known; producing"
                    );
                }
                return Ok(Some(ids));
            }
            // Settled facts, not outages: waiting changes nothing.
            Err(
                e @ (DaemonError::IdsExhausted(_)
                | DaemonError::Store(StoreError::Corrupt(_) | StoreError::Query(_))
                | DaemonError::Setup(
                    KafkaSetupError::MissingTopic(_)
                    | KafkaSetupError::HalfCredentials
                    | KafkaSetupError::NoBootstrap,
                )),
            ) => return Err(e),
            Err(e) => {
                if logged.is_none_or(|at| at.elapsed() >= Duration::from_secs(30)) {
                    logged = Some(Instant::now());
                    tracing::warn!(
                        error = %e,
                        waiting_seconds = since.elapsed().as_secs(),
                        "cannot read the highest order id in use yet; waiting (logged every 30 s)"
                    );
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Most orders sent as one batch (one wait for the broker's answers).
const MAX_BATCH: u64 = 1_000;

/// Most orders handed to librdkafka and not yet answered for. Unbounded, a producer at full
/// speed generated orders faster than the broker took them, and librdkafka's queue held up
/// to the whole run (200,000 orders: 37-81 MB of RSS); this many cover the broker's round
/// trips at full speed (BENCHMARKS.md).
pub const MAX_UNANSWERED: u64 = 10 * MAX_BATCH;

/// A batch the broker has answered for: how many orders it held, and those refused.
type Answered = (usize, Result<Vec<OutRecord>, ProduceError>);

fn settle(
    (count, refused): Answered,
    acked: &mut u64,
    progress: &Progress,
    retries: &mut Vec<OutRecord>,
) -> Result<(), ProduceError> {
    let refused = refused?;
    let delivered = (count - refused.len()) as u64;
    *acked += delivered;
    progress
        .orders_produced
        .fetch_add(delivered, Ordering::Relaxed);
    // Refused records were counted as produce errors when answered; each is sent again.
    progress
        .produce_retries
        .fetch_add(refused.len() as u64, Ordering::Relaxed);
    retries.extend(refused);
    Ok(())
}

/// Canary orders sent and not yet answered for. Apart from the orders: a canary never counts
/// as an order produced, and one the broker refuses is not sent again (the next comes soon).
#[derive(Default)]
struct Canaries {
    sent: u64,
    acked: u64,
    pending: FuturesUnordered<BoxFuture<'static, Result<Vec<OutRecord>, ProduceError>>>,
}

impl Canaries {
    /// A refusal for good stops the producer as it does for an order.
    fn settle(&mut self, answer: Result<Vec<OutRecord>, ProduceError>) -> Result<(), ProduceError> {
        match answer {
            Ok(refused) if refused.is_empty() => self.acked += 1,
            Ok(_) => tracing::warn!("a canary order was refused by the broker; not sent again"),
            Err(ProduceError::Cancelled) => {}
            Err(e) => return Err(e),
        }
        Ok(())
    }
}

/// The canary order with id `order_id` made at `now`: an ordinary generated order marked as
/// a canary.
pub fn canary_order(generator: &OrderGenerator, order_id: u64, now: Timestamp) -> Order {
    let mut order = generator.order(order_id, now);
    order.source = Some(canary::CANARY_SOURCE.to_owned());
    order
}

/// Resolves when the next canary is due; never when there are none.
async fn canary_due(next: Option<Instant>) {
    match next {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Runs the producer until `shutdown` or until `max_orders` are acknowledged.
/// Returns the number of orders produced.
pub async fn run(
    config: ProducerConfig,
    deps: ProducerDeps,
    shutdown: CancellationToken,
) -> Result<u64, DaemonError> {
    let output = ConfirmedProducer::new(&deps.kafka, "orders-producer")?
        .with_progress(deps.progress.clone());
    let Some(FirstIds {
        order: mut next_id,
        canaries: mut canary_ids,
    }) = first_ids_patiently(&deps, &config.topic, &shutdown).await?
    else {
        tracing::info!(orders = 0, "producer stopped before its first order");
        return Ok(0);
    };
    tracing::info!(first_order_id = next_id, topic = %config.topic, pace = ?config.pace, "producing orders");
    let generator = OrderGenerator::new(config.seed);
    let started = Instant::now();
    let progress = deps.progress.clone();
    let mut sent: u64 = 0;
    let mut acked: u64 = 0;
    let mut batches: FuturesUnordered<BoxFuture<'static, Answered>> = FuturesUnordered::new();
    let gate_base = progress.orders_done_by_all();
    let log_each = matches!(config.pace, Pace::Sleep(d) if d >= Duration::from_millis(100));
    let mut retries: Vec<OutRecord> = Vec::new();
    let mut next_canary = config.canary_interval.map(|_| Instant::now());
    let mut canaries = Canaries::default();
    // When the last order was sent (the `SLEEP_SECONDS` pause runs from it).
    let mut last_order_at = Instant::now();

    'produce: loop {
        // Collect what has been answered so far.
        while let Some(Some(done)) = batches.next().now_or_never() {
            settle(done, &mut acked, &progress, &mut retries)?;
        }
        while let Some(Some(done)) = canaries.pending.next().now_or_never() {
            canaries.settle(done)?;
        }
        if shutdown.is_cancelled() {
            break;
        }
        if let (Some(due), Some(interval)) = (next_canary, config.canary_interval) {
            if due <= Instant::now() {
                let now = Timestamp::now();
                let Some(id) = canary_ids.next(now) else {
                    tracing::warn!("the canaries' ids are used up; no more canaries");
                    next_canary = None;
                    continue;
                };
                let order = canary_order(&generator, id, now);
                canaries.sent += 1;
                tracing::info!(order_id = order.order_id, "canary order produced");
                let record = OutRecord {
                    topic: config.topic.clone(),
                    key: order.key(),
                    payload: order.to_json(),
                    headers: None,
                };
                match output.send(std::slice::from_ref(&record), &shutdown).await {
                    Ok(pending) => canaries.pending.push(pending.refused().boxed()),
                    Err(ProduceError::Cancelled) => break,
                    Err(e) => return Err(e.into()),
                }
                // A producer that fell behind skips the canaries it missed.
                next_canary = Some((due + interval).max(Instant::now()));
                continue;
            }
        }
        let records = if !retries.is_empty() {
            std::mem::take(&mut retries)
        } else {
            let left = config
                .max_orders
                .map_or(u64::MAX, |max| max.saturating_sub(sent));
            // Done, or as far ahead of the broker's answers as a producer goes: wait for one.
            if left == 0 || (sent.saturating_sub(acked) >= MAX_UNANSWERED && !batches.is_empty()) {
                if batches.is_empty() {
                    break;
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break 'produce,
                    Some(done) = batches.next() => settle(done, &mut acked, &progress, &mut retries)?,
                }
                continue;
            }
            // Pacing: how many orders are due now.
            let due = match config.pace {
                Pace::Sleep(pause) => {
                    if sent > 0 {
                        tokio::select! {
                            _ = shutdown.cancelled() => break 'produce,
                            _ = canary_due(next_canary) => continue 'produce,
                            _ = tokio::time::sleep_until(last_order_at + pause) => {}
                        }
                    }
                    1
                }
                Pace::Rate(rate) if rate > 0.0 => {
                    // The settings bound the rate; a due time past what a clock can hold
                    // still never panics: it waits for shutdown instead.
                    let next_due = Duration::try_from_secs_f64(sent as f64 / rate)
                        .ok()
                        .and_then(|d| started.checked_add(d))
                        .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365));
                    if next_due > Instant::now() {
                        tokio::select! {
                            _ = shutdown.cancelled() => break 'produce,
                            _ = canary_due(next_canary) => continue 'produce,
                            _ = tokio::time::sleep_until(next_due) => {}
                        }
                    }
                    // The next order and any other whose time has come.
                    ((started.elapsed().as_secs_f64() * rate) as u64)
                        .saturating_sub(sent)
                        .max(1)
                }
                Pace::Rate(_) => MAX_BATCH,
            };
            // Flow control against this process's own consumers.
            let mut room = u64::MAX;
            if let Some(window) = deps.flow_window {
                loop {
                    // The consumers count canaries among the records they are done with.
                    let ahead = (sent + canaries.sent)
                        .saturating_sub(progress.orders_done_by_all() - gate_base);
                    if ahead < window {
                        room = window - ahead;
                        break;
                    }
                    if shutdown.is_cancelled() {
                        break 'produce;
                    }
                    progress.changed(Duration::from_millis(5)).await;
                }
            }
            let count = due.min(left).min(room).min(MAX_BATCH).min(
                MAX_UNANSWERED
                    .saturating_sub(sent.saturating_sub(acked))
                    .max(1),
            );
            let now = Timestamp::now();
            let mut records = Vec::with_capacity(count as usize);
            for _ in 0..count {
                let order = generator.order(next_id, now);
                next_id += 1;
                if log_each {
                    tracing::info!(order_id = order.order_id, amount = %order.amount, country = %order.country, "order produced");
                }
                records.push(OutRecord {
                    topic: config.topic.clone(),
                    key: order.key(),
                    payload: order.to_json(),
                    headers: None,
                });
            }
            sent += count;
            last_order_at = Instant::now();
            progress.orders_sent.fetch_add(count, Ordering::Relaxed);
            records
        };
        let count = records.len();
        match output.send(&records, &shutdown).await {
            Ok(pending) => batches.push(pending.refused().map(move |r| (count, r)).boxed()),
            Err(ProduceError::Cancelled) => break,
            Err(e) => return Err(e.into()),
        }
    }
    // Wait for what is queued, briefly, then flush.
    let drain = async {
        let mut unsent = std::mem::take(&mut retries);
        let mut rejected = None;
        while let Some(done) = batches.next().await {
            if let Err(e) = settle(done, &mut acked, &progress, &mut unsent) {
                rejected.get_or_insert(e);
            }
        }
        (unsent, rejected)
    };
    let (unsent, rejected) = match tokio::time::timeout(Duration::from_secs(10), drain).await {
        Ok(done) => done,
        Err(_) => {
            tracing::warn!("stopped before every order was acknowledged");
            (Vec::new(), None)
        }
    };
    if !unsent.is_empty() {
        // Never published: their ids are simply not used.
        let ids: Vec<u64> = unsent.iter().filter_map(|r| r.key.parse().ok()).collect();
        tracing::warn!(
            orders = unsent.len(),
            lowest_id = ids.iter().min().copied().unwrap_or_default(),
            highest_id = ids.iter().max().copied().unwrap_or_default(),
            "orders refused by the broker and not sent again before shutdown; never published"
        );
    }
    let drain_canaries = async {
        let mut rejected = None;
        while let Some(done) = canaries.pending.next().await {
            if let Err(e) = canaries.settle(done) {
                rejected.get_or_insert(e);
            }
        }
        rejected
    };
    let canary_rejected = match tokio::time::timeout(Duration::from_secs(5), drain_canaries).await {
        Ok(rejected) => rejected,
        Err(_) => {
            tracing::warn!("stopped before every canary was acknowledged");
            None
        }
    };
    output.flush(Duration::from_secs(5));
    tracing::info!(
        orders = acked,
        canaries = canaries.acked,
        next_order_id = next_id,
        "producer stopped"
    );
    match rejected.or(canary_rejected) {
        Some(e) => Err(e.into()),
        None => Ok(acked),
    }
}
