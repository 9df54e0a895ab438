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
use std::ops::ControlFlow;
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
    let Some(ids) = first_ids_patiently(&deps, &config.topic, &shutdown).await? else {
        tracing::info!(orders = 0, "producer stopped before its first order");
        return Ok(0);
    };
    tracing::info!(first_order_id = ids.order, topic = %config.topic, pace = ?config.pace, "producing orders");
    let mut producing = Producing::new(&config, &deps, output, ids, &shutdown);
    producing.produce().await?;
    producing.finish().await
}

/// What the produce loop does next.
enum Next {
    /// Send these records: new orders, or refused ones again.
    Send(Vec<OutRecord>),
    /// Go round again: collect answers, look for shutdown and a canary due.
    Again,
    /// Stop producing: shutdown, or every order of `max_orders` sent and answered.
    Stop,
}

/// A running producer: its ids, what it sent, and what the broker answered so far.
///
/// Its async steps take `&mut self` even where they only read: the batches in flight are
/// `Send` but not `Sync`, so a `&Producing` held across an await would make the task's
/// future not `Send`.
struct Producing<'a> {
    config: &'a ProducerConfig,
    progress: &'a Progress,
    flow_window: Option<u64>,
    output: ConfirmedProducer,
    shutdown: &'a CancellationToken,
    generator: OrderGenerator,
    next_id: u64,
    canary_ids: CanaryIds,
    started: Instant,
    sent: u64,
    acked: u64,
    batches: FuturesUnordered<BoxFuture<'static, Answered>>,
    /// The consumers' count of records done when the producer started (flow control).
    gate_base: u64,
    log_each: bool,
    retries: Vec<OutRecord>,
    next_canary: Option<Instant>,
    canaries: Canaries,
    /// When the last order was sent (the `SLEEP_SECONDS` pause runs from it).
    last_order_at: Instant,
}

impl<'a> Producing<'a> {
    fn new(
        config: &'a ProducerConfig,
        deps: &'a ProducerDeps,
        output: ConfirmedProducer,
        ids: FirstIds,
        shutdown: &'a CancellationToken,
    ) -> Self {
        let progress = &*deps.progress;
        Producing {
            config,
            progress,
            flow_window: deps.flow_window,
            output,
            shutdown,
            generator: OrderGenerator::new(config.seed),
            next_id: ids.order,
            canary_ids: ids.canaries,
            started: Instant::now(),
            sent: 0,
            acked: 0,
            batches: FuturesUnordered::new(),
            gate_base: progress.orders_done_by_all(),
            log_each: matches!(config.pace, Pace::Sleep(d) if d >= Duration::from_millis(100)),
            retries: Vec::new(),
            next_canary: config.canary_interval.map(|_| Instant::now()),
            canaries: Canaries::default(),
            last_order_at: Instant::now(),
        }
    }

    /// Sends canaries when due and orders as the pace allows, until shutdown, `max_orders`
    /// answered, or a refusal for good (an error, returned at once).
    async fn produce(&mut self) -> Result<(), DaemonError> {
        loop {
            self.collect_answers()?;
            if self.shutdown.is_cancelled() {
                return Ok(());
            }
            let next = match self.canary_due_now() {
                Some((due, interval)) => self.send_canary(due, interval).await?,
                None => self.next_orders().await?,
            };
            match next {
                Next::Send(records) => {
                    if self.send_orders(records).await?.is_break() {
                        return Ok(());
                    }
                }
                Next::Again => {}
                Next::Stop => return Ok(()),
            }
        }
    }

    /// Settles what the broker has answered so far, without waiting.
    fn collect_answers(&mut self) -> Result<(), ProduceError> {
        while let Some(Some(done)) = self.batches.next().now_or_never() {
            settle(done, &mut self.acked, self.progress, &mut self.retries)?;
        }
        while let Some(Some(done)) = self.canaries.pending.next().now_or_never() {
            self.canaries.settle(done)?;
        }
        Ok(())
    }

    /// When a canary is due now: its due time and the canaries' interval.
    fn canary_due_now(&self) -> Option<(Instant, Duration)> {
        match (self.next_canary, self.config.canary_interval) {
            (Some(due), Some(interval)) if due <= Instant::now() => Some((due, interval)),
            _ => None,
        }
    }

    /// Sends the canary due at `due`, and schedules the next one.
    async fn send_canary(&mut self, due: Instant, interval: Duration) -> Result<Next, DaemonError> {
        let now = Timestamp::now();
        let Some(id) = self.canary_ids.next(now) else {
            tracing::warn!("the canaries' ids are used up; no more canaries");
            self.next_canary = None;
            return Ok(Next::Again);
        };
        let order = canary_order(&self.generator, id, now);
        self.canaries.sent += 1;
        tracing::info!(order_id = order.order_id, "canary order produced");
        let record = OutRecord {
            topic: self.config.topic.clone(),
            key: order.key(),
            payload: order.to_json(),
            headers: None,
        };
        match self
            .output
            .send(std::slice::from_ref(&record), self.shutdown)
            .await
        {
            Ok(pending) => self.canaries.pending.push(pending.refused().boxed()),
            Err(ProduceError::Cancelled) => return Ok(Next::Stop),
            Err(e) => return Err(e.into()),
        }
        // A producer that fell behind skips the canaries it missed.
        self.next_canary = Some((due + interval).max(Instant::now()));
        Ok(Next::Again)
    }

    /// The orders to send next: refused ones again first, else as many new ones as the
    /// pace, `max_orders`, the flow window and the bound on unanswered orders allow.
    async fn next_orders(&mut self) -> Result<Next, DaemonError> {
        if !self.retries.is_empty() {
            return Ok(Next::Send(std::mem::take(&mut self.retries)));
        }
        let left = self
            .config
            .max_orders
            .map_or(u64::MAX, |max| max.saturating_sub(self.sent));
        let unanswered = self.sent.saturating_sub(self.acked);
        // Done, or as far ahead of the broker's answers as a producer goes: wait for one.
        if left == 0 || (unanswered >= MAX_UNANSWERED && !self.batches.is_empty()) {
            return self.await_answer().await;
        }
        let due = match self.due().await {
            ControlFlow::Continue(due) => due,
            ControlFlow::Break(next) => return Ok(next),
        };
        let Some(room) = self.room().await else {
            return Ok(Next::Stop);
        };
        let count = due
            .min(left)
            .min(room)
            .min(MAX_BATCH)
            .min(MAX_UNANSWERED.saturating_sub(unanswered).max(1));
        Ok(Next::Send(self.generate(count)))
    }

    /// Waits for the broker's next answer; `Stop` when none is awaited, or on shutdown.
    async fn await_answer(&mut self) -> Result<Next, DaemonError> {
        if self.batches.is_empty() {
            return Ok(Next::Stop);
        }
        tokio::select! {
            _ = self.shutdown.cancelled() => return Ok(Next::Stop),
            Some(done) = self.batches.next() => {
                settle(done, &mut self.acked, self.progress, &mut self.retries)?
            }
        }
        Ok(Next::Again)
    }

    /// Pacing: how many orders are due now, once the next one is; a break for shutdown,
    /// or for a canary that comes due first.
    async fn due(&mut self) -> ControlFlow<Next, u64> {
        match self.config.pace {
            Pace::Sleep(pause) => {
                if self.sent > 0 {
                    self.wait_until(self.last_order_at + pause).await?;
                }
                ControlFlow::Continue(1)
            }
            Pace::Rate(rate) if rate > 0.0 => {
                // The settings bound the rate; a due time past what a clock can hold
                // still never panics: it waits for shutdown instead.
                let next_due = Duration::try_from_secs_f64(self.sent as f64 / rate)
                    .ok()
                    .and_then(|d| self.started.checked_add(d))
                    .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365));
                if next_due > Instant::now() {
                    self.wait_until(next_due).await?;
                }
                // The next order and any other whose time has come.
                ControlFlow::Continue(
                    ((self.started.elapsed().as_secs_f64() * rate) as u64)
                        .saturating_sub(self.sent)
                        .max(1),
                )
            }
            Pace::Rate(_) => ControlFlow::Continue(MAX_BATCH),
        }
    }

    /// Sleeps until `at`; a break on shutdown or when a canary comes due first.
    async fn wait_until(&mut self, at: Instant) -> ControlFlow<Next> {
        tokio::select! {
            _ = self.shutdown.cancelled() => ControlFlow::Break(Next::Stop),
            _ = canary_due(self.next_canary) => ControlFlow::Break(Next::Again),
            _ = tokio::time::sleep_until(at) => ControlFlow::Continue(()),
        }
    }

    /// Flow control against this process's own consumers: how many orders may go before
    /// the producer is a window ahead of them (unbounded without a window); `None` on
    /// shutdown.
    async fn room(&mut self) -> Option<u64> {
        let Some(window) = self.flow_window else {
            return Some(u64::MAX);
        };
        loop {
            // The consumers count canaries among the records they are done with.
            let ahead = (self.sent + self.canaries.sent)
                .saturating_sub(self.progress.orders_done_by_all() - self.gate_base);
            if ahead < window {
                return Some(window - ahead);
            }
            if self.shutdown.is_cancelled() {
                return None;
            }
            self.progress.changed(Duration::from_millis(5)).await;
        }
    }

    /// The next `count` orders, as records, counted as sent.
    fn generate(&mut self, count: u64) -> Vec<OutRecord> {
        let now = Timestamp::now();
        let mut records = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let order = self.generator.order(self.next_id, now);
            self.next_id += 1;
            if self.log_each {
                tracing::info!(order_id = order.order_id, amount = %order.amount, country = %order.country, "order produced");
            }
            records.push(OutRecord {
                topic: self.config.topic.clone(),
                key: order.key(),
                payload: order.to_json(),
                headers: None,
            });
        }
        self.sent += count;
        self.last_order_at = Instant::now();
        self.progress
            .orders_sent
            .fetch_add(count, Ordering::Relaxed);
        records
    }

    /// Hands `records` to the broker; a break on shutdown.
    async fn send_orders(
        &mut self,
        records: Vec<OutRecord>,
    ) -> Result<ControlFlow<()>, DaemonError> {
        let count = records.len();
        match self.output.send(&records, self.shutdown).await {
            Ok(pending) => self
                .batches
                .push(pending.refused().map(move |r| (count, r)).boxed()),
            Err(ProduceError::Cancelled) => return Ok(ControlFlow::Break(())),
            Err(e) => return Err(e.into()),
        }
        Ok(ControlFlow::Continue(()))
    }

    /// Waits for what is queued, briefly, then flushes; the orders acknowledged, or the
    /// first refusal for good met on the way.
    async fn finish(mut self) -> Result<u64, DaemonError> {
        let rejected = self.drain_orders().await;
        let canary_rejected = self.drain_canaries().await;
        self.output.flush(Duration::from_secs(5));
        tracing::info!(
            orders = self.acked,
            canaries = self.canaries.acked,
            next_order_id = self.next_id,
            "producer stopped"
        );
        match rejected.or(canary_rejected) {
            Some(e) => Err(e.into()),
            None => Ok(self.acked),
        }
    }

    /// Waits up to 10 s for the broker's answers to the orders queued; logs those refused
    /// and never sent again.
    async fn drain_orders(&mut self) -> Option<ProduceError> {
        let drain = async {
            let mut unsent = std::mem::take(&mut self.retries);
            let mut rejected = None;
            while let Some(done) = self.batches.next().await {
                if let Err(e) = settle(done, &mut self.acked, self.progress, &mut unsent) {
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
        rejected
    }

    /// Waits up to 5 s for the broker's answers to the canaries queued.
    async fn drain_canaries(&mut self) -> Option<ProduceError> {
        let canaries = &mut self.canaries;
        let drain = async {
            let mut rejected = None;
            while let Some(done) = canaries.pending.next().await {
                if let Err(e) = canaries.settle(done) {
                    rejected.get_or_insert(e);
                }
            }
            rejected
        };
        match tokio::time::timeout(Duration::from_secs(5), drain).await {
            Ok(rejected) => rejected,
            Err(_) => {
                tracing::warn!("stopped before every canary was acknowledged");
                None
            }
        }
    }
}
