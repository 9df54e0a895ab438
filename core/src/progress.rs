//! Pipeline counters shared by the daemons of one process: what was produced, consumed,
//! dead-lettered and stored, the created→stored latency, and the flow gate that keeps the
//! embedded producer from running far ahead of its consumers.

use hdrhistogram::Histogram;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::Notify;

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
}

impl GroupCounters {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
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
    /// Orders newly written to the store (redeliveries excluded).
    pub orders_stored: AtomicU64,
    pub alerts_stored: AtomicU64,
    pub payments_stored: AtomicU64,
    /// Store write attempts that failed (and were retried).
    pub store_errors: AtomicU64,
    /// Why the store writer's writes are failing right now; `None` while they succeed.
    store_failing: Mutex<Option<String>>,
    /// created_at → durable in the store, in microseconds.
    latency_us: Mutex<Option<Histogram<u64>>>,
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
            orders_stored: AtomicU64::new(0),
            alerts_stored: AtomicU64::new(0),
            payments_stored: AtomicU64::new(0),
            store_errors: AtomicU64::new(0),
            store_failing: Mutex::new(None),
            // 1 µs .. 1 hour at 3 significant digits; the bounds are valid constants.
            latency_us: Mutex::new(Histogram::new_with_bounds(1, 3_600_000_000, 3).ok()),
            changed: Notify::new(),
        }
    }
}

/// Percentiles of the created→stored latency.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Progress {
    pub fn group(&self, group: &str) -> Option<&GroupCounters> {
        match group {
            crate::kafka::FRAUD_GROUP => Some(&self.fraud),
            crate::kafka::PAYMENTS_GROUP => Some(&self.payments),
            crate::kafka::ANALYTICS_GROUP => Some(&self.analytics),
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

    pub fn record_latency(&self, micros: impl IntoIterator<Item = i64>) {
        if let Ok(mut guard) = self.latency_us.lock() {
            let Some(h) = guard.as_mut() else { return };
            for us in micros {
                let _ = h.record(us.max(1) as u64);
            }
        }
    }

    pub fn reset_latency(&self) {
        if let Ok(mut guard) = self.latency_us.lock() {
            if let Some(h) = guard.as_mut() {
                h.reset();
            }
        }
    }

    pub fn latency(&self) -> LatencySummary {
        let guard = self.latency_us.lock();
        match guard.as_deref().ok().and_then(Option::as_ref) {
            Some(h) if !h.is_empty() => LatencySummary {
                count: h.len(),
                p50_ms: h.value_at_quantile(0.50) as f64 / 1000.0,
                p99_ms: h.value_at_quantile(0.99) as f64 / 1000.0,
                max_ms: h.max() as f64 / 1000.0,
            },
            _ => LatencySummary::default(),
        }
    }
}
