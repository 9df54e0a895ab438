//! `ordersctl bench`: the whole pipeline on a fresh embedded broker and store, as fast as it
//! goes, next to raw librdkafka produce+consume on the same broker, in one run; where the
//! time went in each phase, and the figures against the committed baseline.

mod baseline;
mod phase;
mod raw;

use anyhow::{bail, Context};
use baseline::Baseline;
use clap::Args;
use orders_core::domain::Timestamp;
use orders_core::generator::OrderGenerator;
use orders_core::progress::{HistogramSnapshot, LatencySummary, DURATION_BUCKETS};
use orders_daemons::local_pipeline::{LocalOptions, LocalPipeline, Role};
use orders_daemons::producer::Pace;
use phase::{busy, push_orders, round3, PhaseFigures};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

const WARM_UP: u64 = 2_000;

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Orders pushed through the pipeline as fast as possible.
    #[arg(long, default_value_t = 200_000)]
    pub orders: u64,
    /// Rate of the latency phase, in orders per second.
    #[arg(long, default_value_t = 2_000.0)]
    pub latency_rate: f64,
    /// Length of the latency phase, in seconds.
    #[arg(long, default_value_t = 10)]
    pub latency_seconds: u64,
    /// Simulated payment processing time, in milliseconds (the seed's 100 ms).
    #[arg(long, default_value_t = 100)]
    pub payment_delay_ms: u64,
    /// Most payments in processing at once.
    #[arg(long, default_value_t = 20_000)]
    pub payment_concurrency: usize,
    /// How far the producer may run ahead of the slowest group.
    #[arg(long, default_value_t = 50_000)]
    pub flow_window: u64,
    /// Messages in each round of the raw yardstick, whatever --orders is.
    #[arg(long, default_value_t = raw::ROUND_MESSAGES)]
    pub raw_messages: u64,
    /// Rounds of the raw yardstick; its rate is their median.
    #[arg(long, default_value_t = raw::ROUNDS)]
    pub raw_rounds: usize,
    /// Give up on a phase after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout_seconds: u64,
    /// Compare with this baseline instead of the committed one (tui/src/bench/baseline.json).
    #[arg(long, value_name = "FILE")]
    pub baseline: Option<PathBuf>,
}

/// The raw phase's figures: every round, and the median round by rate (the yardstick).
struct RawFigures {
    messages_per_round: u64,
    rounds: Vec<raw::Round>,
}

impl RawFigures {
    /// The median round by rate (of an even count, the faster of the middle two).
    fn median(&self) -> raw::Round {
        let mut by_seconds = self.rounds.clone();
        by_seconds.sort_by(|a, b| a.seconds.total_cmp(&b.seconds));
        by_seconds[(by_seconds.len() - 1) / 2]
    }

    fn rate_of(&self, round: &raw::Round) -> f64 {
        self.messages_per_round as f64 / round.seconds
    }

    /// The yardstick: the median round's rate.
    fn rate(&self) -> f64 {
        self.rate_of(&self.median())
    }

    /// The median round's CPU per message, in microseconds.
    fn cpu_us_per_msg(&self) -> f64 {
        self.median().cpu_seconds * 1e6 / self.messages_per_round as f64
    }

    /// How busy the cores were in the median round.
    fn busy(&self) -> f64 {
        let median = self.median();
        busy(median.cpu_seconds, median.seconds)
    }

    /// Every round's rate, in the order they ran.
    fn rates(&self) -> Vec<f64> {
        self.rounds.iter().map(|r| self.rate_of(r)).collect()
    }

    /// The median round's figures, and every round's rate.
    fn to_json(&self) -> Value {
        let median = self.median();
        let by_round: Vec<f64> = self.rates().into_iter().map(f64::round).collect();
        json!({
            "messages": self.messages_per_round,
            "rounds": self.rounds.len(),
            "seconds": median.seconds,
            "msgs_per_sec": self.rate().round(),
            "msgs_per_sec_by_round": by_round,
            "cpu_seconds": round3(median.cpu_seconds),
            "cpu_us_per_msg": round3(self.cpu_us_per_msg()),
            "cores_busy": round3(self.busy()),
        })
    }
}

/// 1. Raw librdkafka on the same broker, same client settings, same payloads: the yardstick,
///    over a fixed number of messages whatever `--orders` is (see [`raw`]).
async fn raw_phase(
    pipeline: &LocalPipeline,
    args: &BenchArgs,
) -> anyhow::Result<(RawFigures, usize)> {
    let generator = OrderGenerator::new(7);
    let now = Timestamp::now();
    let payloads: Vec<Vec<u8>> = (1..=args.raw_messages)
        .map(|id| generator.order(id, now).to_json())
        .collect();
    let payload_bytes = payloads.iter().map(Vec::len).sum::<usize>() / payloads.len();
    let kafka = pipeline.kafka();
    let rounds = args.raw_rounds;
    let measured = tokio::task::spawn_blocking(move || {
        raw::produce_consume(&kafka, &payloads, WARM_UP, rounds)
    })
    .await??;
    let figures = RawFigures {
        messages_per_round: args.raw_messages,
        rounds: measured,
    };
    Ok((figures, payload_bytes))
}

fn settings_json(args: &BenchArgs, payload_bytes: usize) -> Value {
    json!({
        "orders": args.orders,
        "payload_bytes_mean": payload_bytes,
        "orders_partitions": 6,
        "broker": "embedded (librdkafka mock cluster, 1 broker, TCP on loopback)",
        "store": "SQLite file, WAL, synchronous=FULL, temporary directory",
        "payment_delay_ms": args.payment_delay_ms,
        "payment_concurrency": args.payment_concurrency,
        "flow_window": args.flow_window,
        "producer": "acks=all, idempotent, lz4, linger.ms=2",
        "consumer": "offsets stored after effects are durable, auto-commit 1 s",
        "latency_rate": args.latency_rate,
        "latency_seconds": args.latency_seconds,
        "warm_up_orders": WARM_UP,
        "raw_messages_per_round": args.raw_messages,
        "raw_rounds": args.raw_rounds,
        "cores": phase::cores(),
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
    })
}

/// The three phases' figures in one human table: rate and how busy the cores were.
fn render_phases(raw: &RawFigures, e2e: &PhaseFigures, latency: &PhaseFigures) -> String {
    let row = |name: &str, rate: f64, unit: &str, seconds: f64, cpu: f64| {
        format!(
            "  {name:<12} {rate:>12.0} {unit:<9} {seconds:>7.2} s  CPU {cpu:>6.2} s  cores busy {:>4.0}%\n",
            busy(cpu, seconds) * 100.0
        )
    };
    let mut out = String::from("bench phases:\n");
    let median = raw.median();
    out.push_str(&row(
        "raw",
        raw.rate(),
        "msgs/s",
        median.seconds,
        median.cpu_seconds,
    ));
    let rates: Vec<String> = raw.rates().iter().map(|r| format!("{r:.0}")).collect();
    out.push_str(&format!(
        "  {:<12} the median of {} rounds of {} messages: {} msgs/s\n",
        "",
        raw.rounds.len(),
        raw.messages_per_round,
        rates.join(", ")
    ));
    out.push_str(&row(
        "end to end",
        e2e.rate(),
        "orders/s",
        e2e.seconds,
        e2e.cpu_seconds,
    ));
    out.push_str(&row(
        "latency",
        latency.rate(),
        "orders/s",
        latency.seconds,
        latency.cpu_seconds,
    ));
    out
}

/// Runs the three phases (raw, end to end, latency) on one fresh pipeline, then reports them
/// as JSON on stdout and a table and the baseline comparison on stderr.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.orders == 0 || !args.latency_rate.is_finite() || args.latency_rate <= 0.0 {
        bail!("--orders and --latency-rate must be positive");
    }
    if args.raw_messages == 0 || args.raw_rounds == 0 {
        bail!("--raw-messages and --raw-rounds must be positive");
    }
    crate::init_logging("warn");
    let (baseline_source, baseline) = Baseline::load(args.baseline.as_deref())?;
    let dir = tempfile::tempdir().context("creating a temporary store directory")?;
    let mut options = LocalOptions::new(dir.path().join("orders.db"));
    options.extra_topics = vec![(raw::RAW_TOPIC.to_owned(), 6)];
    options.consumers = Vec::new();
    options.payment.delay = Duration::from_millis(args.payment_delay_ms);
    options.payment.concurrency = args.payment_concurrency;
    options.flow_window = args.flow_window;
    let mut pipeline = LocalPipeline::start(options.clone()).await?;
    let timeout = Duration::from_secs(args.timeout_seconds);

    let (raw, payload_bytes) = raw_phase(&pipeline, &args).await?;
    let e2e = end_to_end_phase(&mut pipeline, &mut options, args.orders, timeout).await?;
    // The raw rate moves each record through one produce and one consume (two ops).
    let ratio_per_op = e2e.figures.rate() * e2e.ops_per_order / (2.0 * raw.rate());
    let factors = RatioFactors::of(&raw, &e2e);
    let (latency_phase, latency) =
        latency_phase(&mut pipeline, &mut options, &args, timeout).await?;
    pipeline.stop().await?;

    let compared = baseline::compare(&baseline, e2e.figures.rate(), ratio_per_op);
    let report = json!({
        "settings": settings_json(&args, payload_bytes),
        "raw": raw.to_json(),
        "end_to_end": e2e.to_json(args.orders),
        "ratio_end_to_end_to_raw": round3(e2e.figures.rate() / raw.rate()),
        "ratio_per_kafka_record_op": round3(ratio_per_op),
        "ratio_per_kafka_record_op_factors": factors.to_json(),
        "latency_created_to_stored": {
            "rate": args.latency_rate,
            "orders": latency.stored.count,
            "p50_ms": latency.stored.p50_ms,
            "p99_ms": latency.stored.p99_ms,
            "max_ms": latency.stored.max_ms,
            "cores_busy": round3(latency_phase.busy()),
            "created_to_received_by_analytics": {
                "p50_ms": latency.received.p50_ms,
                "p99_ms": latency.received.p99_ms,
                "max_ms": latency.received.max_ms,
            },
            "store_transactions": latency.store_writes,
            "store_transactions_over_50ms": latency.store_writes_over_50ms,
        },
        "against_baseline": baseline::to_json(&baseline_source, &baseline, &compared),
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    eprint!("{}", render_phases(&raw, &e2e.figures, &latency_phase));
    eprint!("{}", factors.render(ratio_per_op));
    eprint!("{}", latency.render());
    eprint!(
        "{}",
        baseline::render(&baseline_source, &baseline, &compared)
    );
    Ok(())
}

/// The end-to-end phase's figures, and what the groups produced on the way.
struct EndToEnd {
    figures: PhaseFigures,
    alerts: u64,
    payments: u64,
    /// Kafka records one order costs: its produce and three consumes, each alert and
    /// payment produced once and consumed once (by analytics).
    ops_per_order: f64,
}

impl EndToEnd {
    fn to_json(&self, orders: u64) -> Value {
        let e2e = &self.figures;
        json!({
            "orders": orders,
            "seconds": e2e.seconds,
            "orders_per_sec": e2e.rate().round(),
            "cpu_seconds": round3(e2e.cpu_seconds),
            "cpu_us_per_order": round3(e2e.cpu_us_per_order()),
            "cores_busy": round3(e2e.busy()),
            "fraud_alerts": self.alerts,
            "payments": self.payments,
            "kafka_record_ops_per_order": (self.ops_per_order * 100.0).round() / 100.0,
            "where_the_time_went": e2e.detail,
        })
    }
}

/// The per-op ratio as the product of two factors, so that a low ratio says which one is
/// low: the share of an order's CPU that its Kafka record ops would cost at the raw phase's
/// price per message (the rest is the store, decoding and the pipeline's own work), and how
/// busy the cores were end to end against the raw phase ("idle and slow").
///
/// With `busy = cpu / (seconds × cores)`, a phase's rate is `busy × cores / cpu per item`,
/// so `ratio = e2e rate × ops / (2 × raw rate) = cpu_share × busy_ratio`.
struct RatioFactors {
    /// CPU an order's record ops cost at the raw phase's price (µs).
    kafka_us: f64,
    /// CPU per order, end to end (µs).
    order_us: f64,
    busy_ratio: f64,
}

impl RatioFactors {
    fn of(raw: &RawFigures, e2e: &EndToEnd) -> RatioFactors {
        RatioFactors {
            // A raw message is one produce and one consume: two record ops.
            kafka_us: e2e.ops_per_order / 2.0 * raw.cpu_us_per_msg(),
            order_us: e2e.figures.cpu_us_per_order(),
            busy_ratio: e2e.figures.busy() / raw.busy(),
        }
    }

    fn cpu_share(&self) -> f64 {
        self.kafka_us / self.order_us
    }

    fn to_json(&self) -> Value {
        json!({
            "kafka_cpu_us_per_order_at_raw_cost": round3(self.kafka_us),
            "other_cpu_us_per_order": round3(self.order_us - self.kafka_us),
            "cpu_share": round3(self.cpu_share()),
            "cores_busy_against_raw": round3(self.busy_ratio),
        })
    }

    fn render(&self, ratio: f64) -> String {
        format!(
            "per-op ratio {ratio:.3} = CPU share {:.3} x cores busy against raw {:.3}: an order's \
             Kafka record ops would cost {:.2} us at the raw phase's price, the other {:.2} us \
             of its {:.2} us are the store, decoding and the pipeline's own work\n",
            self.cpu_share(),
            self.busy_ratio,
            self.kafka_us,
            self.order_us - self.kafka_us,
            self.order_us
        )
    }
}

/// 2. End to end: producer → fraud, payment, analytics (store) as fast as possible.
async fn end_to_end_phase(
    pipeline: &mut LocalPipeline,
    options: &mut LocalOptions,
    orders: u64,
    timeout: Duration,
) -> anyhow::Result<EndToEnd> {
    for role in [Role::Fraud, Role::Payment, Role::Analytics] {
        pipeline.spawn_with(role, options, pipeline.shutdown_token().child_token());
    }
    let fast = Pace::Rate(0.0);
    push_orders(pipeline, options, WARM_UP, fast, timeout).await?;
    let alerts_before = pipeline.progress.fraud.produced.load(Ordering::Relaxed);
    let payments_before = pipeline.progress.payments.produced.load(Ordering::Relaxed);
    let figures = push_orders(pipeline, options, orders, fast, timeout).await?;
    let alerts = pipeline.progress.fraud.produced.load(Ordering::Relaxed) - alerts_before;
    let payments = pipeline.progress.payments.produced.load(Ordering::Relaxed) - payments_before;
    Ok(EndToEnd {
        figures,
        alerts,
        payments,
        ops_per_order: 4.0 + 2.0 * (alerts + payments) as f64 / orders as f64,
    })
}

/// 3. Latency at a fixed moderate rate.
async fn latency_phase(
    pipeline: &mut LocalPipeline,
    options: &mut LocalOptions,
    args: &BenchArgs,
    timeout: Duration,
) -> anyhow::Result<(PhaseFigures, Latency)> {
    let latency_orders = (args.latency_rate * args.latency_seconds as f64).round() as u64;
    pipeline.progress.reset_latency();
    let writes_before = pipeline.progress.store_write_seconds.snapshot();
    let pace = Pace::Rate(args.latency_rate);
    let figures = push_orders(pipeline, options, latency_orders, pace, timeout).await?;
    let writes = pipeline.progress.store_write_seconds.snapshot();
    let latency = Latency {
        stored: pipeline.progress.latency(),
        received: pipeline.progress.received_latency(),
        store_writes: writes.count - writes_before.count,
        store_writes_over_50ms: slower_than(&writes, 0.05) - slower_than(&writes_before, 0.05),
    };
    Ok((figures, latency))
}

/// Observations in `h` that took longer than `seconds`, one of [`DURATION_BUCKETS`].
fn slower_than(h: &HistogramSnapshot, seconds: f64) -> u64 {
    let within = DURATION_BUCKETS
        .iter()
        .position(|b| *b >= seconds)
        .and_then(|i| h.cumulative.get(i))
        .copied()
        .unwrap_or(h.count);
    h.count - within
}

/// The latency phase's created → stored, and its first leg: created → received by the
/// analytics daemon (so a slow tail shows in Kafka's hops or in the store writer's).
struct Latency {
    stored: LatencySummary,
    received: LatencySummary,
    /// The store writer's transactions in the phase, and those that took over 50 ms.
    store_writes: u64,
    store_writes_over_50ms: u64,
}

impl Latency {
    fn render(&self) -> String {
        let ms =
            |l: &LatencySummary| format!("{:.1} / {:.1} / {:.1} ms", l.p50_ms, l.p99_ms, l.max_ms);
        format!(
            "latency p50 / p99 / max: created -> stored {}; of it created -> received by analytics {}; \
             store transactions {} ({} over 50 ms)\n",
            ms(&self.stored),
            ms(&self.received),
            self.store_writes,
            self.store_writes_over_50ms
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orders_core::progress::DurationHistogram;

    #[test]
    fn slower_than_counts_the_observations_past_a_bound() {
        let h = DurationHistogram::default();
        for ms in [1, 20, 40, 60, 120] {
            h.observe(Duration::from_millis(ms));
        }
        assert_eq!(slower_than(&h.snapshot(), 0.05), 2);
        assert_eq!(slower_than(&h.snapshot(), 0.025), 3);
        assert_eq!(
            slower_than(&DurationHistogram::default().snapshot(), 0.05),
            0
        );
    }
}
