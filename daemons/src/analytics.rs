//! The analytics daemon: stores every order (and the fraud alerts and payments published
//! about them) in the order store, idempotently by order id, and publishes running totals
//! and per-country figures to `order-analytics`.
//!
//! Canary orders (`orders_core::canary`) and what fraud and payment publish about them are
//! not stored as orders, alerts or payments: they become stages of the canary's journey,
//! written with the batch before its offsets are stored, so they never count in totals.
//!
//! Writes from many chunks are gathered into one transaction (group commit), so the store
//! sees few large transactions under load and small quick ones when the stream is light.

use crate::confirmed_producer::{ConfirmedProducer, OutRecord, ProduceError};
use crate::consumer_loop::{
    dead_letter, run_consumer, ChunkError, ChunkOutcome, ChunkProcessor, ConsumerOptions, Record,
};
use crate::progress::{OrderLatency, Progress};
use crate::DaemonError;
use futures::future::BoxFuture;
use futures::FutureExt;
use orders_core::canary::{self, CanaryMark, CanaryStage};
use orders_core::client_log::ClientLog;
use orders_core::domain::{
    AnalyticsTotals, CountryTotals, DecodeError, FraudAlert, Order, Payment, Timestamp,
};
use orders_core::kafka::{
    KafkaSettings, ANALYTICS_GROUP, ANALYTICS_TOPIC, FRAUD_ALERTS_TOPIC, PAYMENTS_TOPIC,
};
use orders_core::liveness::Wait;
use orders_core::store::{
    BatchOutcome, CountAndSum, KafkaPosition, OrderConflict, OrderStore, StoreBatch, StoredOrder,
    Totals,
};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

/// Most records written in one transaction.
const MAX_TRANSACTION_RECORDS: usize = 50_000;

#[derive(Debug, Clone)]
pub struct AnalyticsConfig {
    pub orders_topic: String,
}

pub struct AnalyticsDeps {
    pub kafka: KafkaSettings,
    pub store: Arc<dyn OrderStore>,
    pub progress: Arc<Progress>,
}

struct WriteRequest {
    batch: StoreBatch,
    /// Stages of canary journeys: written with the batch, never as orders.
    canaries: Vec<CanaryStage>,
    /// Written: the orders of the transaction that were refused as id conflicts (of every
    /// request in it; each processor picks its own records).
    done: oneshot::Sender<Result<Vec<OrderConflict>, ProduceError>>,
}

struct AnalyticsProcessor {
    orders_topic: String,
    writes: mpsc::Sender<WriteRequest>,
    output: ConfirmedProducer,
    progress: Arc<Progress>,
    shutdown: CancellationToken,
}

impl ChunkProcessor for AnalyticsProcessor {
    fn process(
        &mut self,
        chunk: Vec<Record>,
    ) -> BoxFuture<'static, Result<ChunkOutcome, ChunkError>> {
        let now = Timestamp::now();
        let mut sorted = SortedChunk::default();
        for r in &chunk {
            self.sort(r, now, &mut sorted);
        }
        let effects = ChunkEffects {
            writes: self.writes.clone(),
            output: self.output.clone(),
            shutdown: self.shutdown.clone(),
            orders_topic: self.orders_topic.clone(),
        };
        effects.make_durable(chunk, sorted).boxed()
    }
}

/// A chunk's records sorted by what becomes of each.
#[derive(Default)]
struct SortedChunk {
    /// Orders, alerts and payments to store.
    batch: StoreBatch,
    /// Stages of canary journeys: written with the batch, never as orders.
    canaries: Vec<CanaryStage>,
    /// Records that cannot be read, as dead letters.
    dead: Vec<OutRecord>,
    outcome: ChunkOutcome,
}

impl AnalyticsProcessor {
    /// Decodes `r` into what it becomes: an order, alert or payment to store, a canary's
    /// stage, or a dead letter.
    fn sort(&self, r: &Record, now: Timestamp, into: &mut SortedChunk) {
        let payload = r.payload.as_deref();
        // When the record says its stage ended: its own time, else Kafka's.
        let record_time = || {
            r.timestamp_ms
                .and_then(|ms| Timestamp::from_micros(ms.saturating_mul(1_000)))
                .unwrap_or(now)
        };
        let SortedChunk {
            batch, canaries, ..
        } = into;
        let decoded = if *r.topic == *self.orders_topic {
            Order::decode(payload).map(|order| {
                if canary::is_canary(&order) {
                    // `stored_at` is set again when the writer records it.
                    canaries.push(CanaryStage::Stored {
                        order_id: order.order_id,
                        created_at: order.created_at,
                        stored_at: now,
                    });
                } else {
                    batch.orders.push(StoredOrder {
                        order,
                        kafka_partition: r.partition,
                        kafka_offset: r.offset,
                        processed_at: now,
                    })
                }
            })
        } else if &*r.topic == FRAUD_ALERTS_TOPIC {
            FraudAlert::decode(payload).map(|a| match CanaryMark::of(payload) {
                Some(mark) => canaries.push(CanaryStage::Decided {
                    order_id: a.order_id,
                    at: a.detected_at.unwrap_or_else(record_time),
                    flagged: mark.flagged.unwrap_or(a.reason != canary::NOT_FLAGGED),
                }),
                None => batch.push_alert(a, position(r)),
            })
        } else if &*r.topic == PAYMENTS_TOPIC {
            Payment::decode(payload).map(|p| match CanaryMark::of(payload) {
                Some(_) => canaries.push(CanaryStage::Paid {
                    order_id: p.order_id,
                    at: Timestamp::from_micros((p.timestamp * 1e6) as i64)
                        .unwrap_or_else(record_time),
                }),
                None => batch.push_payment(p, position(r)),
            })
        } else {
            Ok(())
        };
        if let Err(e) = decoded {
            self.progress
                .analytics
                .decode_errors
                .fetch_add(1, Ordering::Relaxed);
            into.outcome.dead_letter(&e);
            into.dead.push(dead_letter(ANALYTICS_GROUP, r, &e));
        }
    }
}

/// What makes a chunk's effects durable, apart from the processor.
struct ChunkEffects {
    writes: mpsc::Sender<WriteRequest>,
    output: ConfirmedProducer,
    shutdown: CancellationToken,
    orders_topic: String,
}

impl ChunkEffects {
    /// Writes the chunk's batch and sends its dead letters at once, then dead-letters the
    /// orders the store refused as id conflicts.
    async fn make_durable(
        self,
        chunk: Vec<Record>,
        sorted: SortedChunk,
    ) -> Result<ChunkOutcome, ChunkError> {
        let SortedChunk {
            batch,
            canaries,
            dead,
            mut outcome,
        } = sorted;
        let dlq = self.output.send_all(&dead, &self.shutdown);
        let write = hand_to_writer(&self.writes, batch, canaries);
        let (dlq, conflicts) = futures::join!(dlq, write);
        dlq?;
        // An order whose id is stored with other content was not stored: it goes to the
        // dead-letter topic, acknowledged before this chunk's offsets are stored.
        let conflicts = conflicts?;
        let refused: Vec<_> = chunk
            .iter()
            .filter(|r| *r.topic == *self.orders_topic)
            .filter_map(|r| {
                let c = conflicts
                    .iter()
                    .find(|c| c.kafka_partition == r.partition && c.kafka_offset == r.offset)?;
                let e = DecodeError::IdConflict(c.describe());
                outcome.dead_letter(&e);
                Some(dead_letter(ANALYTICS_GROUP, r, &e))
            })
            .collect();
        if !refused.is_empty() {
            self.output.send_all(&refused, &self.shutdown).await?;
        }
        Ok(outcome)
    }
}

/// Hands a batch and its canary stages to the store writer and waits until they are
/// written; the orders of the transaction refused as id conflicts.
async fn hand_to_writer(
    writes: &mpsc::Sender<WriteRequest>,
    batch: StoreBatch,
    canaries: Vec<CanaryStage>,
) -> Result<Vec<OrderConflict>, ChunkError> {
    if batch.is_empty() && canaries.is_empty() {
        return Ok(Vec::new());
    }
    let (tx, rx) = oneshot::channel();
    let gone = || ChunkError::Stopped("the analytics store writer stopped".into());
    writes
        .send(WriteRequest {
            batch,
            canaries,
            done: tx,
        })
        .await
        .map_err(|_| gone())?;
    Ok(rx.await.map_err(|_| gone())??)
}

/// Where `r` was read (the Couchbase store counts alerts and payments by it).
fn position(r: &Record) -> KafkaPosition {
    KafkaPosition {
        partition: r.partition,
        offset: r.offset,
    }
}

/// How often a store outage is logged while it lasts.
const OUTAGE_LOG_INTERVAL: Duration = Duration::from_secs(30);

/// A run of failed store writes: logged when it starts, every 30 s while it lasts, and when
/// it ends, instead of once per retry.
struct StoreOutage {
    since: std::time::Instant,
    logged: Option<std::time::Instant>,
    attempts: u64,
}

impl StoreOutage {
    fn new() -> Self {
        StoreOutage {
            since: std::time::Instant::now(),
            logged: None,
            attempts: 0,
        }
    }

    fn failed(&mut self, error: &orders_core::store::StoreError, records: usize) {
        self.attempts += 1;
        if self
            .logged
            .is_none_or(|at| at.elapsed() >= OUTAGE_LOG_INTERVAL)
        {
            self.logged = Some(std::time::Instant::now());
            tracing::warn!(
                %error,
                records,
                attempts = self.attempts,
                failing_for_seconds = self.since.elapsed().as_secs(),
                "store writes failing; retrying with backoff, committing no offset (logged every 30 s while it lasts)"
            );
        }
    }

    fn over(self) {
        tracing::info!(
            attempts = self.attempts,
            failed_for_seconds = self.since.elapsed().as_secs_f64(),
            "store writes succeed again"
        );
    }
}

/// Writes what the processors hand over, many requests per transaction; retries a failed
/// write with backoff (the consumer stops taking new records meanwhile) until shutdown.
async fn store_writer(
    store: Arc<dyn OrderStore>,
    mut requests: mpsc::Receiver<WriteRequest>,
    stored_orders: watch::Sender<()>,
    progress: Arc<Progress>,
    shutdown: CancellationToken,
) {
    while let Some(first) = requests.recv().await {
        let Transaction {
            batch,
            canaries,
            waiting,
        } = Transaction::gather(first, &mut requests);
        let batch = Arc::new(batch);
        let outcome = match write(&*store, &batch, canaries, &progress, &shutdown).await {
            Ok(outcome) => outcome,
            Err(e) => {
                for w in waiting {
                    let _ = w.send(Err(ProduceError::Cancelled));
                }
                tracing::warn!(error = %e, "store writer stopping with writes not done");
                return;
            }
        };
        written(&batch, &outcome, &progress);
        for w in waiting {
            let _ = w.send(Ok(outcome.conflicts.clone()));
        }
        if outcome.new_orders > 0 {
            // Nobody listening only when the publisher is gone, which leaves nothing to do.
            let _ = stored_orders.send(());
        }
    }
}

/// The write requests waiting when a transaction starts, up to `MAX_TRANSACTION_RECORDS`,
/// as one transaction (group commit).
struct Transaction {
    batch: StoreBatch,
    canaries: Vec<CanaryStage>,
    waiting: Vec<oneshot::Sender<Result<Vec<OrderConflict>, ProduceError>>>,
}

impl Transaction {
    fn gather(first: WriteRequest, requests: &mut mpsc::Receiver<WriteRequest>) -> Transaction {
        let mut records = first.batch.len();
        let mut parts = vec![first];
        while records < MAX_TRANSACTION_RECORDS {
            match requests.try_recv() {
                Ok(req) => {
                    records += req.batch.len();
                    parts.push(req);
                }
                Err(_) => break,
            }
        }
        let mut batches = Vec::with_capacity(parts.len());
        let mut canaries = Vec::new();
        let mut waiting = Vec::with_capacity(parts.len());
        for part in parts {
            batches.push(part.batch);
            canaries.extend(part.canaries);
            waiting.push(part.done);
        }
        Transaction {
            batch: StoreBatch::concat(batches),
            canaries,
            waiting,
        }
    }
}

/// Writes `batch` and then its canary stages, both before any offset is stored, retrying
/// with backoff while the store fails; an error only when stopped.
async fn write(
    store: &dyn OrderStore,
    batch: &Arc<StoreBatch>,
    canaries: Vec<CanaryStage>,
    progress: &Progress,
    shutdown: &CancellationToken,
) -> Result<BatchOutcome, ProduceError> {
    let mut canaries = Arc::new(canaries);
    let mut backoff = Duration::from_millis(50);
    let mut outage: Option<StoreOutage> = None;
    let outcome = loop {
        let attempt = {
            let _writing = progress.liveness.begin(Wait::StoreWrite);
            let started = std::time::Instant::now();
            let attempt = match store.apply(batch.clone()).await {
                Ok(outcome) if !canaries.is_empty() => {
                    stamp_stored(&mut canaries);
                    store
                        .record_canary_stages(canaries.clone())
                        .await
                        .map(|()| outcome)
                }
                other => other,
            };
            progress.store_write_seconds.observe(started.elapsed());
            attempt
        };
        match attempt {
            Ok(outcome) => break outcome,
            Err(e) => {
                progress.store_errors.fetch_add(1, Ordering::Relaxed);
                progress.set_store_failing(Some(e.to_string()));
                outage
                    .get_or_insert_with(StoreOutage::new)
                    .failed(&e, batch.len());
                tokio::select! {
                    _ = shutdown.cancelled() => return Err(ProduceError::Cancelled),
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    };
    if let Some(outage) = outage {
        progress.set_store_failing(None);
        outage.over();
    }
    Ok(outcome)
}

/// Counts what a transaction stored and when its orders became durable.
fn written(batch: &StoreBatch, outcome: &BatchOutcome, progress: &Progress) {
    let durable = Timestamp::now().micros();
    progress.record_latency(batch.orders.iter().map(|o| {
        let created = o.order.created_at.micros();
        OrderLatency {
            received_us: o.processed_at.micros() - created,
            stored_us: durable - created,
        }
    }));
    progress
        .orders_stored
        .fetch_add(outcome.new_orders as u64, Ordering::Relaxed);
    progress
        .alerts_stored
        .fetch_add(outcome.new_alerts as u64, Ordering::Relaxed);
    progress
        .payments_stored
        .fetch_add(outcome.new_payments as u64, Ordering::Relaxed);
}

/// Marks when the canaries among `stages` are recorded: now (the stored leg ends when
/// analytics writes, as an order's does).
fn stamp_stored(stages: &mut Arc<Vec<CanaryStage>>) {
    let now = Timestamp::now();
    for stage in Arc::make_mut(stages) {
        if let CanaryStage::Stored { stored_at, .. } = stage {
            *stored_at = now;
        }
    }
}

/// What was last published to `order-analytics` (confirmed by the broker).
#[derive(Debug, Default)]
struct Published {
    totals: Option<(u64, orders_core::Cents)>,
    by_country: BTreeMap<String, CountAndSum>,
}

impl Published {
    /// The records that bring the topic to `totals`: the totals record (no key) when the
    /// totals changed, and one record per country whose figures changed (key = country).
    fn records_for(&self, totals: &Totals) -> Vec<OutRecord> {
        let mut records = Vec::new();
        if self.totals != Some((totals.order_count, totals.total_sales)) {
            records.push(OutRecord {
                topic: ANALYTICS_TOPIC.to_owned(),
                // No key, as the SPEC has it: readers of the totals record take the
                // records without a key.
                key: String::new(),
                payload: AnalyticsTotals {
                    total_sales: totals.total_sales,
                    order_count: totals.order_count,
                }
                .to_json(),
                headers: None,
            });
        }
        for (code, figures) in &totals.by_country {
            if self.by_country.get(code) == Some(figures) {
                continue;
            }
            let country = match code.parse() {
                Ok(c) => c,
                Err(e) => {
                    // Readers store only valid codes, so this is a store fault; skip it.
                    tracing::warn!(error = %e, "stored totals hold a bad country code");
                    continue;
                }
            };
            let record = CountryTotals {
                country,
                order_count: figures.count,
                total_sales: figures.sales,
            };
            records.push(OutRecord {
                topic: ANALYTICS_TOPIC.to_owned(),
                key: record.key(),
                payload: record.to_json(),
                headers: None,
            });
        }
        records
    }

    fn sent(&mut self, totals: Totals) {
        self.totals = Some((totals.order_count, totals.total_sales));
        self.by_country = totals.by_country;
    }
}

/// Publishes the running figures each time the store writer made new orders durable: the
/// totals record and the per-country records whose figures changed. They are read from the
/// store (exact, and kept across restarts; after a restart every country is published
/// once), one snapshot at a time, each confirmed by the broker before the next, so the last
/// record per key on the topic is always the latest figure. Ends, after a last round, when
/// the writer has stopped.
async fn publish_analytics(
    store: Arc<dyn OrderStore>,
    output: ConfirmedProducer,
    progress: Arc<Progress>,
    mut stored_orders: watch::Receiver<()>,
    shutdown: CancellationToken,
) {
    let mut published = Published::default();
    // Failures are logged once per 30 s per kind: a refusal would otherwise repeat every
    // round.
    let log = ClientLog::new("orders-analytics");
    loop {
        let writer_running = stored_orders.changed().await.is_ok();
        let mut backoff = Duration::from_millis(100);
        let totals = loop {
            match store.totals().await {
                Ok(t) => break Some(t),
                Err(e) => {
                    if let Some(repeated) = log.admit("totals-unreadable") {
                        tracing::warn!(error = %e, repeated, "could not read the totals to publish; retrying");
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => break None,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        };
        if let Some(totals) = totals {
            let records = published.records_for(&totals);
            match output.send_all(&records, &shutdown).await {
                Ok(()) => {
                    progress
                        .analytics
                        .produced
                        .fetch_add(records.len() as u64, Ordering::Relaxed);
                    published.sent(totals);
                }
                Err(e) => {
                    if let Some(repeated) = log.admit("publish-failed") {
                        tracing::warn!(
                            error = %e,
                            repeated,
                            "could not publish to order-analytics; sent again with the next round"
                        );
                    }
                }
            }
        }
        if !writer_running {
            return;
        }
    }
}

/// Runs the analytics daemon until `shutdown`.
pub async fn run(
    config: AnalyticsConfig,
    deps: AnalyticsDeps,
    shutdown: CancellationToken,
) -> Result<(), DaemonError> {
    let output = ConfirmedProducer::new(&deps.kafka, "orders-analytics")?
        .with_progress(deps.progress.clone());
    let (tx, rx) = mpsc::channel(64);
    let (stored_orders, mut stored_orders_rx) = watch::channel(());
    // A first round at start: a crash may have come between a write and its publication,
    // and the redelivered orders are not new, so nothing else would publish them.
    stored_orders_rx.mark_changed();
    let publisher = tokio::spawn(publish_analytics(
        deps.store.clone(),
        output.clone(),
        deps.progress.clone(),
        stored_orders_rx,
        shutdown.clone(),
    ));
    let writer_stop = CancellationToken::new();
    let writer = tokio::spawn(store_writer(
        deps.store.clone(),
        rx,
        stored_orders,
        deps.progress.clone(),
        writer_stop.clone(),
    ));
    let processor = AnalyticsProcessor {
        orders_topic: config.orders_topic.clone(),
        writes: tx,
        output: output.clone(),
        progress: deps.progress.clone(),
        shutdown: shutdown.clone(),
    };
    let options = ConsumerOptions::new(
        ANALYTICS_GROUP,
        &[&config.orders_topic, FRAUD_ALERTS_TOPIC, PAYMENTS_TOPIC],
        &config.orders_topic,
    );
    let result = run_consumer(&deps.kafka, options, processor, deps.progress, shutdown).await;
    // The processor (and with it the last sender) is gone: the writer drains and ends.
    writer_stop.cancel();
    let writer = writer.await;
    // The writer is gone: the publisher publishes what it left and ends.
    let publisher = publisher.await;
    output.flush(Duration::from_secs(5));
    if let Err(e) = publisher {
        return Err(DaemonError::Task(format!(
            "the analytics publisher failed: {e}"
        )));
    }
    if let Err(e) = writer {
        return Err(DaemonError::Task(format!(
            "the analytics store writer failed: {e}"
        )));
    }
    Ok(result?)
}
