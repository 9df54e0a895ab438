//! Pipeline counters shared by the daemons of one process: what was produced, consumed,
//! dead-lettered and stored, the created→stored latency, and the flow gate that keeps the
//! embedded producer from running far ahead of its consumers.

use crate::domain::DecodeError;
use crate::liveness::Liveness;
use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// Upper bounds, in seconds, of the duration histograms (chunk processing, store writes).
pub const DURATION_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A Prometheus histogram of durations over [`DURATION_BUCKETS`], lock-free.
#[derive(Debug, Default)]
pub struct DurationHistogram {
    /// Non-cumulative counts per bucket; the last one is +Inf.
    buckets: [AtomicU64; DURATION_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

/// What a [`DurationHistogram`] holds at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// Cumulative counts for each bound of [`DURATION_BUCKETS`], then +Inf.
    pub cumulative: Vec<u64>,
    pub sum_seconds: f64,
    pub count: u64,
}

impl DurationHistogram {
    pub fn observe(&self, d: Duration) {
        let seconds = d.as_secs_f64();
        let bucket = DURATION_BUCKETS
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(DURATION_BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut total = 0;
        let cumulative = self
            .buckets
            .iter()
            .map(|b| {
                total += b.load(Ordering::Relaxed);
                total
            })
            .collect();
        HistogramSnapshot {
            cumulative,
            sum_seconds: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
            count: total,
        }
    }
}

/// What a consumer group member knows of its partitions.
#[derive(Debug, Default)]
pub struct MemberState {
    /// Records between this member's position and the high watermark, by topic and
    /// partition, over the partitions assigned to it now.
    pub lag: BTreeMap<(String, i32), i64>,
}

/// Counters of one consumer group.
#[derive(Debug, Default)]
pub struct GroupCounters {
    /// Records received from Kafka (all topics).
    pub consumed: AtomicU64,
    /// Records whose offsets were stored after their effect became durable.
    pub done: AtomicU64,
    /// Records of the orders topic among `done`.
    pub orders_done: AtomicU64,
    /// Records sent to a dead-letter topic.
    pub dead_lettered: AtomicU64,
    /// Records this group produced (alerts, payments, totals).
    pub produced: AtomicU64,
    /// Dead-lettered records by reason, in the order of [`DecodeError::CODES`].
    pub dead_lettered_by_reason: [AtomicU64; DecodeError::CODES.len()],
    /// Records that could not be decoded (each is then dead-lettered).
    pub decode_errors: AtomicU64,
    /// Received → effects durable and offsets stored, per chunk of records.
    pub chunk_seconds: DurationHistogram,
    /// Rebalances this member took part in (assignments and revocations).
    pub rebalances: AtomicU64,
    /// Partitions assigned to this member now.
    pub assigned_partitions: AtomicU64,
    member: Mutex<MemberState>,
}

impl GroupCounters {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Counts a record dead-lettered for `error`.
    pub fn dead_lettered(&self, error_code_index: usize, n: u64) {
        self.dead_lettered.fetch_add(n, Ordering::Relaxed);
        if let Some(c) = self.dead_lettered_by_reason.get(error_code_index) {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Replaces this member's per-partition lag.
    pub fn set_lag(&self, lag: BTreeMap<(String, i32), i64>) {
        self.assigned_partitions
            .store(lag.len() as u64, Ordering::Relaxed);
        self.member.lock().unwrap_or_else(|e| e.into_inner()).lag = lag;
    }

    /// This member's per-partition lag, as last measured.
    pub fn lag(&self) -> BTreeMap<(String, i32), i64> {
        self.member
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .lag
            .clone()
    }
}

/// What the ingest role (rows of a Postgres table → the orders topic) counts.
#[derive(Debug)]
pub struct IngestCounters {
    /// Whether this process runs the ingest role (its metrics are exported only then).
    pub active: std::sync::atomic::AtomicBool,
    /// Rows published to the orders topic and acknowledged by Kafka.
    pub rows_published: AtomicU64,
    /// Rows sent to the dead-letter topic, by reason, in the order of [`DecodeError::CODES`].
    pub dead_lettered_by_reason: [AtomicU64; DecodeError::CODES.len()],
    /// Committed transactions whose rows were published and past which the slot was
    /// advanced (heartbeats included).
    pub transactions: AtomicU64,
    /// Bytes of the log between the slot's confirmed position and the server's current
    /// position, as last measured; -1 before the first measurement.
    pub lag_bytes: AtomicI64,
    /// Bytes of the log the slot makes the server keep (from its restart position); -1
    /// unknown.
    pub retained_bytes: AtomicI64,
    /// Seconds since the oldest log the slot keeps was written; -1 unknown.
    pub oldest_retained_seconds: AtomicI64,
    /// The slot's `safe_wal_size`: bytes that can still be written before it is at risk of
    /// invalidation; `i64::MIN` when the server sets no limit (or unknown).
    pub safe_wal_bytes: AtomicI64,
    /// The slot's `wal_status`, as an index into [`WAL_STATUSES`] plus one; 0 unknown.
    pub slot_state: std::sync::atomic::AtomicU8,
    /// Dead letters Kafka refused for good (their rows are logged, not published).
    pub dead_letters_refused: AtomicU64,
    /// Updates and deletes of the table's rows, not published and dead-lettered instead
    /// (`source-update`, `source-delete`), in the order of [`REFUSED_CHANGE_KINDS`].
    pub refused_changes: [AtomicU64; REFUSED_CHANGE_KINDS.len()],
    /// The database: `None` before the first connection, else why it is failing (`Some`
    /// of a reason) or that it answers (`Some("")`).
    postgres: Mutex<Option<String>>,
}

impl Default for IngestCounters {
    fn default() -> Self {
        IngestCounters {
            active: std::sync::atomic::AtomicBool::new(false),
            rows_published: AtomicU64::new(0),
            dead_lettered_by_reason: Default::default(),
            transactions: AtomicU64::new(0),
            lag_bytes: AtomicI64::new(-1),
            retained_bytes: AtomicI64::new(-1),
            oldest_retained_seconds: AtomicI64::new(-1),
            safe_wal_bytes: AtomicI64::new(i64::MIN),
            slot_state: std::sync::atomic::AtomicU8::new(0),
            dead_letters_refused: AtomicU64::new(0),
            refused_changes: Default::default(),
            postgres: Mutex::new(None),
        }
    }
}

/// The changes to the table's rows the ingest refuses to publish (the `kind` label of
/// `orders_ingest_refused_changes_total`; the dead letters' reason is `source-<kind>`).
pub const REFUSED_CHANGE_KINDS: [&str; 2] = ["update", "delete"];

/// PostgreSQL's `wal_status` of a replication slot: `reserved` (within max_wal_size),
/// `extended` (kept beyond it for the slot), `unreserved` (will be removed at the next
/// checkpoint), `lost` (removed: the slot is invalidated).
pub const WAL_STATUSES: [&str; 4] = ["reserved", "extended", "unreserved", "lost"];

impl IngestCounters {
    /// Records the slot's `wal_status` (`None`: the slot is missing or the status unknown).
    pub fn set_slot_state(&self, status: Option<&str>) {
        let index = status
            .and_then(|s| WAL_STATUSES.iter().position(|w| *w == s))
            .map_or(0, |i| i as u8 + 1);
        self.slot_state.store(index, Ordering::Relaxed);
    }

    /// The slot's `wal_status`, when known.
    pub fn slot_state(&self) -> Option<&'static str> {
        match self.slot_state.load(Ordering::Relaxed) {
            0 => None,
            i => WAL_STATUSES.get(usize::from(i) - 1).copied(),
        }
    }

    /// Records that the database answers (`None`) or why it does not.
    pub fn set_postgres_failing(&self, why: Option<String>) {
        *self.postgres.lock().unwrap_or_else(|e| e.into_inner()) = Some(why.unwrap_or_default());
    }

    /// For readiness: `ok`, `unavailable` (with why), or `connecting` before the first
    /// connection.
    pub fn postgres_state(&self) -> (&'static str, Option<String>) {
        match &*self.postgres.lock().unwrap_or_else(|e| e.into_inner()) {
            None => ("connecting", None),
            Some(why) if why.is_empty() => ("ok", None),
            Some(why) => ("unavailable", Some(why.clone())),
        }
    }

    /// Updates and deletes refused, of `kind` (`update` or `delete`).
    pub fn refused_changes(&self, kind: &str) -> u64 {
        REFUSED_CHANGE_KINDS
            .iter()
            .position(|k| *k == kind)
            .and_then(|i| self.refused_changes.get(i))
            .map_or(0, |n| n.load(Ordering::Relaxed))
    }

    /// All rows dead-lettered (inserted rows that are not orders; refused changes are
    /// counted apart).
    pub fn dead_lettered(&self) -> u64 {
        self.dead_lettered_by_reason
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .sum()
    }
}

/// Everything one process counts about the pipeline.
#[derive(Debug)]
pub struct Progress {
    pub orders_produced: AtomicU64,
    /// Orders generated and handed to Kafka, acknowledged or not.
    pub orders_sent: AtomicU64,
    pub fraud: GroupCounters,
    pub payments: GroupCounters,
    pub analytics: GroupCounters,
    /// The ingest role's counters (zero in processes that do not run it).
    pub ingest: IngestCounters,
    /// Orders newly written to the store (redeliveries excluded).
    pub orders_stored: AtomicU64,
    pub alerts_stored: AtomicU64,
    pub payments_stored: AtomicU64,
    /// Store write attempts that failed (and were retried).
    pub store_errors: AtomicU64,
    /// Time of each store write attempt (the analytics store writer's transactions).
    pub store_write_seconds: DurationHistogram,
    /// Records Kafka refused (transiently: they are sent again) or rejected for good.
    pub produce_errors: AtomicU64,
    /// Records sent again after Kafka refused them.
    pub produce_retries: AtomicU64,
    /// Payments being simulated now.
    pub payments_in_flight: AtomicI64,
    /// Whether the loops are alive ([`Liveness::check`]).
    pub liveness: Arc<Liveness>,
    /// Why the store writer's writes are failing right now; `None` while they succeed.
    store_failing: Mutex<Option<String>>,
    /// created_at → durable in the store, and its first leg, in microseconds.
    latency_us: Mutex<Option<LatencyHistograms>>,
    changed: Notify,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            orders_produced: AtomicU64::new(0),
            orders_sent: AtomicU64::new(0),
            fraud: GroupCounters::default(),
            payments: GroupCounters::default(),
            analytics: GroupCounters::default(),
            ingest: IngestCounters::default(),
            orders_stored: AtomicU64::new(0),
            alerts_stored: AtomicU64::new(0),
            payments_stored: AtomicU64::new(0),
            store_errors: AtomicU64::new(0),
            store_write_seconds: DurationHistogram::default(),
            produce_errors: AtomicU64::new(0),
            produce_retries: AtomicU64::new(0),
            payments_in_flight: AtomicI64::new(0),
            liveness: Arc::new(Liveness::default()),
            store_failing: Mutex::new(None),
            latency_us: Mutex::new(LatencyHistograms::new()),
            changed: Notify::new(),
        }
    }
}

/// Percentiles of a latency.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl LatencySummary {
    fn of(h: &Histogram<u64>) -> LatencySummary {
        if h.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            count: h.len(),
            p50_ms: h.value_at_quantile(0.50) as f64 / 1000.0,
            p99_ms: h.value_at_quantile(0.99) as f64 / 1000.0,
            max_ms: h.max() as f64 / 1000.0,
        }
    }
}

/// One stored order's latency: created → received by the analytics daemon (the producer,
/// the broker and the consumer's fetch), and created → durable in the store (that, plus the
/// wait for and the time of the store transaction).
#[derive(Debug, Clone, Copy)]
pub struct OrderLatency {
    pub received_us: i64,
    pub stored_us: i64,
}

#[derive(Debug)]
struct LatencyHistograms {
    received: Histogram<u64>,
    stored: Histogram<u64>,
}

impl LatencyHistograms {
    fn new() -> Option<Self> {
        // 1 µs .. 1 hour at 3 significant digits; the bounds are valid constants.
        let histogram = || Histogram::new_with_bounds(1, 3_600_000_000, 3).ok();
        Some(LatencyHistograms {
            received: histogram()?,
            stored: histogram()?,
        })
    }
}

impl Progress {
    pub fn group(&self, group: &str) -> Option<&GroupCounters> {
        match group {
            crate::topology::FRAUD_GROUP => Some(&self.fraud),
            crate::topology::PAYMENTS_GROUP => Some(&self.payments),
            crate::topology::ANALYTICS_GROUP => Some(&self.analytics),
            _ => None,
        }
    }

    /// Orders of the topic that every group has finished with.
    pub fn orders_done_by_all(&self) -> u64 {
        [&self.fraud, &self.payments, &self.analytics]
            .iter()
            .map(|g| g.orders_done.load(Ordering::Relaxed))
            .min()
            .unwrap_or(0)
    }

    /// Records that store writes are failing (with why), or succeed again (`None`).
    pub fn set_store_failing(&self, why: Option<String>) {
        *self.store_failing.lock().unwrap_or_else(|e| e.into_inner()) = why;
    }

    /// Why store writes are failing, while they are.
    pub fn store_failing(&self) -> Option<String> {
        self.store_failing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn notify(&self) {
        self.changed.notify_waiters();
    }

    /// Waits until something changes or `timeout` passes.
    pub async fn changed(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.changed.notified()).await;
    }

    pub fn record_latency(&self, orders: impl IntoIterator<Item = OrderLatency>) {
        if let Ok(mut guard) = self.latency_us.lock() {
            let Some(h) = guard.as_mut() else { return };
            for o in orders {
                let _ = h.received.record(o.received_us.max(1) as u64);
                let _ = h.stored.record(o.stored_us.max(1) as u64);
            }
        }
    }

    pub fn reset_latency(&self) {
        if let Ok(mut guard) = self.latency_us.lock() {
            if let Some(h) = guard.as_mut() {
                h.received.reset();
                h.stored.reset();
            }
        }
    }

    /// Created → durable in the store.
    pub fn latency(&self) -> LatencySummary {
        self.latency_of(|h| &h.stored)
    }

    /// Created → received by the analytics daemon, of the same orders as [`Self::latency`]:
    /// the rest of theirs is the store writer's.
    pub fn received_latency(&self) -> LatencySummary {
        self.latency_of(|h| &h.received)
    }

    fn latency_of(&self, leg: impl Fn(&LatencyHistograms) -> &Histogram<u64>) -> LatencySummary {
        let guard = self.latency_us.lock();
        match guard.as_deref().ok().and_then(Option::as_ref) {
            Some(h) => LatencySummary::of(leg(h)),
            None => LatencySummary::default(),
        }
    }
}
