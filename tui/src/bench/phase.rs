//! One phase of the bench: the producer pushes a number of orders through the running
//! pipeline, and the phase ends once every group is done with them and the store holds
//! them. It measures where the time went: when each stage finished, how long the groups'
//! chunks and the store's transactions took, and how busy the CPUs were.

use anyhow::bail;
use orders_core::cpu_time::process_cpu_seconds;
use orders_core::progress::{GroupCounters, HistogramSnapshot, Progress};
use orders_daemons::local_pipeline::{LocalOptions, LocalPipeline, Role};
use orders_daemons::producer::{Pace, ProducerConfig};
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The cores this process may use.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// How busy the cores were: CPU seconds used over the seconds the cores had.
pub fn busy(cpu_seconds: f64, seconds: f64) -> f64 {
    cpu_seconds / (seconds * cores() as f64).max(f64::MIN_POSITIVE)
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Seconds from the start of a phase until each stage was done with all of its orders.
#[derive(Debug, Default, Clone, Copy)]
struct Stages {
    /// The producer's start: until its first order went to Kafka.
    first_order_sent: Option<f64>,
    produced: Option<f64>,
    fraud: Option<f64>,
    payments: Option<f64>,
    analytics: Option<f64>,
    stored: Option<f64>,
}

/// The counters a phase reads, as they were when it started.
struct Start {
    sent: u64,
    produced: u64,
    fraud: u64,
    payments: u64,
    analytics: u64,
    stored: u64,
    chunks: [HistogramSnapshot; 3],
    store_writes: HistogramSnapshot,
}

fn groups(progress: &Progress) -> [(&'static str, &GroupCounters); 3] {
    [
        ("fraud", &progress.fraud),
        ("payments", &progress.payments),
        ("analytics", &progress.analytics),
    ]
}

fn load(counter: &std::sync::atomic::AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

impl Start {
    fn now(progress: &Progress) -> Self {
        Start {
            sent: load(&progress.orders_sent),
            produced: load(&progress.orders_produced),
            fraud: load(&progress.fraud.orders_done),
            payments: load(&progress.payments.orders_done),
            analytics: load(&progress.analytics.orders_done),
            stored: load(&progress.orders_stored),
            chunks: groups(progress).map(|(_, g)| g.chunk_seconds.snapshot()),
            store_writes: progress.store_write_seconds.snapshot(),
        }
    }
}

impl Stages {
    /// Marks the stages that are done with `count` orders now; true once all are.
    fn mark(&mut self, progress: &Progress, start: &Start, count: u64, at: f64) -> bool {
        let reached = |slot: &mut Option<f64>, now: u64, before: u64, want: u64| {
            if slot.is_none() && now >= before + want {
                *slot = Some(at);
            }
            slot.is_some()
        };
        reached(
            &mut self.first_order_sent,
            load(&progress.orders_sent),
            start.sent,
            1,
        );
        let all = [
            reached(
                &mut self.produced,
                load(&progress.orders_produced),
                start.produced,
                count,
            ),
            reached(
                &mut self.fraud,
                load(&progress.fraud.orders_done),
                start.fraud,
                count,
            ),
            reached(
                &mut self.payments,
                load(&progress.payments.orders_done),
                start.payments,
                count,
            ),
            reached(
                &mut self.analytics,
                load(&progress.analytics.orders_done),
                start.analytics,
                count,
            ),
            reached(
                &mut self.stored,
                load(&progress.orders_stored),
                start.stored,
                count,
            ),
        ];
        all.iter().all(|done| *done)
    }

    fn to_json(self) -> Value {
        let s = |v: Option<f64>| v.map(round3);
        json!({
            "first_order_sent": s(self.first_order_sent),
            "all_produced": s(self.produced),
            "fraud_done": s(self.fraud),
            "payments_done": s(self.payments),
            "analytics_done": s(self.analytics),
            "all_stored": s(self.stored),
        })
    }
}

/// What one phase measured.
#[derive(Debug, Clone)]
pub struct PhaseFigures {
    pub orders: u64,
    pub seconds: f64,
    pub cpu_seconds: f64,
    /// Where the time went, as JSON for the report.
    pub detail: Value,
}

impl PhaseFigures {
    pub fn rate(&self) -> f64 {
        self.orders as f64 / self.seconds
    }

    pub fn busy(&self) -> f64 {
        busy(self.cpu_seconds, self.seconds)
    }

    /// CPU per order, in microseconds.
    pub fn cpu_us_per_order(&self) -> f64 {
        self.cpu_seconds * 1e6 / self.orders as f64
    }
}

/// Mean of the observations between two snapshots, in milliseconds, and their count.
fn mean_ms(before: &HistogramSnapshot, after: &HistogramSnapshot) -> Value {
    let count = after.count.saturating_sub(before.count);
    let sum = after.sum_seconds - before.sum_seconds;
    json!({
        "count": count,
        "mean_ms": (count > 0).then(|| round3(sum * 1e3 / count as f64)),
    })
}

/// Runs the producer for `count` orders at `pace` and waits until every group is done and
/// the store holds them.
pub async fn push_orders(
    pipeline: &mut LocalPipeline,
    options: &mut LocalOptions,
    count: u64,
    pace: Pace,
    timeout: Duration,
) -> anyhow::Result<PhaseFigures> {
    let progress = pipeline.progress.clone();
    let start = Start::now(&progress);
    options.producer = Some(ProducerConfig {
        topic: options.orders_topic.clone(),
        pace,
        max_orders: Some(count),
        seed: 7,
        // Benchmarks measure orders alone.
        canary_interval: None,
    });
    let cpu_before = process_cpu_seconds();
    let clock = Instant::now();
    let mut stages = Stages::default();
    pipeline.spawn_with(Role::Producer, options, CancellationToken::new());
    while !stages.mark(&progress, &start, count, clock.elapsed().as_secs_f64()) {
        if clock.elapsed() > timeout {
            bail!(
                "pipeline did not finish {count} orders in {timeout:?}: {}",
                stages.to_json()
            );
        }
        progress.changed(Duration::from_millis(5)).await;
    }
    let seconds = clock.elapsed().as_secs_f64();
    let cpu_seconds = process_cpu_seconds() - cpu_before;
    // The producer task has ended; collect it.
    let _ = pipeline.next_finished().await;
    let chunks: serde_json::Map<String, Value> = groups(&progress)
        .iter()
        .zip(&start.chunks)
        .map(|((name, g), before)| {
            (
                (*name).to_owned(),
                mean_ms(before, &g.chunk_seconds.snapshot()),
            )
        })
        .collect();
    let detail = json!({
        "stages_done_at_seconds": stages.to_json(),
        "chunks": chunks,
        "store_transactions": mean_ms(&start.store_writes, &progress.store_write_seconds.snapshot()),
    });
    Ok(PhaseFigures {
        orders: count,
        seconds,
        cpu_seconds,
        detail,
    })
}
