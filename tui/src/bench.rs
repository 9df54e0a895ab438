//! `ordersctl bench`: the whole pipeline on a fresh embedded broker and store, as fast as it
//! goes, next to raw librdkafka produce+consume on the same broker, in one run.

use anyhow::{bail, Context};
use clap::Args;
use orders_core::domain::Timestamp;
use orders_core::generator::OrderGenerator;
use orders_core::kafka::KafkaSettings;
use orders_core::progress::Progress;
use orders_daemons::local_pipeline::{LocalOptions, LocalPipeline, Role};
use orders_daemons::producer::{Pace, ProducerConfig};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use serde_json::json;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const RAW_TOPIC: &str = "bench-raw";
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
    /// Give up on a phase after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout_seconds: u64,
}

/// Produces `payloads` and consumes them back with no processing; returns seconds taken.
/// The payloads are real generated orders, each different, so compression and the broker
/// see what the pipeline sends.
fn raw_produce_consume(settings: &KafkaSettings, payloads: &[Vec<u8>]) -> anyhow::Result<f64> {
    let n = payloads.len() as u64;
    let producer: ThreadedProducer<DefaultProducerContext> =
        settings.producer_config("bench-raw-producer").create()?;
    let consumer: BaseConsumer = settings
        .consumer_config("bench-raw-consumer", "bench-raw")
        .create()?;
    consumer.subscribe(&[RAW_TOPIC])?;
    let produce = |count: u64, from: u64| -> anyhow::Result<()> {
        for i in from..from + count {
            let key = i.to_string();
            let payload = &payloads[(i % n) as usize];
            let mut record = BaseRecord::to(RAW_TOPIC)
                .key(&key)
                .payload(payload.as_slice());
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        record = r;
                        producer.poll(Duration::from_millis(1));
                    }
                    Err((e, _)) => return Err(e.into()),
                }
            }
        }
        Ok(())
    };
    let consume = |count: u64| -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(300);
        let mut got = 0;
        while got < count {
            if Instant::now() > deadline {
                bail!("raw consumer received {got} of {count}");
            }
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(_)) => got += 1,
                Some(Err(e)) => tracing::warn!(error = %e, "raw consumer"),
                None => {}
            }
        }
        Ok(())
    };
    // Warm up: the group joins and the connections are open before the clock starts.
    produce(WARM_UP, 0)?;
    consume(WARM_UP)?;
    let start = Instant::now();
    std::thread::scope(|s| -> anyhow::Result<()> {
        let producing = s.spawn(|| produce(n, WARM_UP));
        consume(n)?;
        producing
            .join()
            .map_err(|_| anyhow::anyhow!("raw producer thread panicked"))??;
        Ok(())
    })?;
    let seconds = start.elapsed().as_secs_f64();
    producer.flush(Duration::from_secs(10))?;
    Ok(seconds)
}

/// CPU time this process has used, all threads, in seconds.
fn cpu_seconds() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

fn stored(progress: &Progress) -> u64 {
    progress.orders_stored.load(Ordering::Relaxed)
}

/// Runs the producer for `count` orders and waits until every group is done and the store
/// holds them; returns seconds taken.
async fn push_orders(
    pipeline: &mut LocalPipeline,
    options: &mut LocalOptions,
    count: u64,
    pace: Pace,
    timeout: Duration,
) -> anyhow::Result<f64> {
    let progress = pipeline.progress.clone();
    let done_before = progress.orders_done_by_all();
    let stored_before = stored(&progress);
    options.producer = Some(ProducerConfig {
        topic: options.orders_topic.clone(),
        pace,
        max_orders: Some(count),
        seed: 7,
        // Benchmarks measure orders alone.
        canary_interval: None,
    });
    let start = Instant::now();
    let mut last_report = start;
    pipeline.spawn_with(Role::Producer, options, CancellationToken::new());
    while progress.orders_done_by_all() < done_before + count
        || stored(&progress) < stored_before + count
    {
        if start.elapsed() > timeout {
            bail!(
                "pipeline did not finish in {timeout:?}: done by all {}, stored {}",
                progress.orders_done_by_all() - done_before,
                stored(&progress) - stored_before
            );
        }
        progress.changed(Duration::from_millis(5)).await;
        if last_report.elapsed() > Duration::from_millis(500) {
            last_report = Instant::now();
            tracing::debug!(
                produced = progress.orders_produced.load(Ordering::Relaxed),
                fraud = progress.fraud.orders_done.load(Ordering::Relaxed),
                payments = progress.payments.orders_done.load(Ordering::Relaxed),
                analytics = progress.analytics.orders_done.load(Ordering::Relaxed),
                stored = stored(&progress),
                "progress"
            );
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    // The producer task has ended; collect it.
    let _ = pipeline.next_finished().await;
    Ok(seconds)
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.orders == 0 || !args.latency_rate.is_finite() || args.latency_rate <= 0.0 {
        bail!("--orders and --latency-rate must be positive");
    }
    crate::init_logging("warn");
    let dir = tempfile::tempdir().context("creating a temporary store directory")?;
    let mut options = LocalOptions::new(dir.path().join("orders.db"));
    options.extra_topics = vec![(RAW_TOPIC.to_owned(), 6)];
    options.consumers = Vec::new();
    options.payment.delay = Duration::from_millis(args.payment_delay_ms);
    options.payment.concurrency = args.payment_concurrency;
    options.flow_window = args.flow_window;
    let mut pipeline = LocalPipeline::start(options.clone()).await?;
    let timeout = Duration::from_secs(args.timeout_seconds);

    // 1. Raw librdkafka on the same broker, same client settings, same payload size.
    let generator = OrderGenerator::new(7);
    let now = Timestamp::now();
    let payloads: Vec<Vec<u8>> = (1..=args.orders)
        .map(|id| generator.order(id, now).to_json())
        .collect();
    let payload_bytes = payloads.iter().map(Vec::len).sum::<usize>() / payloads.len();
    let kafka = pipeline.kafka();
    let raw_n = args.orders;
    let cpu_before_raw = cpu_seconds();
    let raw_seconds =
        tokio::task::spawn_blocking(move || raw_produce_consume(&kafka, &payloads)).await??;
    let raw_cpu = cpu_seconds() - cpu_before_raw;
    let raw_rate = raw_n as f64 / raw_seconds;

    // 2. End to end: producer → fraud, payment, analytics (store) as fast as possible.
    for role in [Role::Fraud, Role::Payment, Role::Analytics] {
        pipeline.spawn_with(role, &options, pipeline.shutdown_token().child_token());
    }
    push_orders(
        &mut pipeline,
        &mut options,
        WARM_UP,
        Pace::Rate(0.0),
        timeout,
    )
    .await?;
    let alerts_before = pipeline.progress.fraud.produced.load(Ordering::Relaxed);
    let payments_before = pipeline.progress.payments.produced.load(Ordering::Relaxed);
    let cpu_before_e2e = cpu_seconds();
    let e2e_seconds = push_orders(
        &mut pipeline,
        &mut options,
        args.orders,
        Pace::Rate(0.0),
        timeout,
    )
    .await?;
    let e2e_cpu = cpu_seconds() - cpu_before_e2e;
    let e2e_rate = args.orders as f64 / e2e_seconds;
    let e2e_alerts = pipeline.progress.fraud.produced.load(Ordering::Relaxed) - alerts_before;
    let e2e_payments =
        pipeline.progress.payments.produced.load(Ordering::Relaxed) - payments_before;
    // Kafka records one order costs: its produce and three consumes, each alert and payment
    // produced once and consumed once (by analytics).
    let ops_per_order = 4.0 + 2.0 * (e2e_alerts + e2e_payments) as f64 / args.orders as f64;

    // 3. Latency at a fixed moderate rate.
    let latency_orders = (args.latency_rate * args.latency_seconds as f64).round() as u64;
    pipeline.progress.reset_latency();
    push_orders(
        &mut pipeline,
        &mut options,
        latency_orders,
        Pace::Rate(args.latency_rate),
        timeout,
    )
    .await?;
    let latency = pipeline.progress.latency();

    pipeline.stop().await?;
    let report = json!({
        "settings": {
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
            "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            "build": if cfg!(debug_assertions) { "debug" } else { "release" },
        },
        "raw": {
            "messages": raw_n,
            "seconds": raw_seconds,
            "msgs_per_sec": raw_rate.round(),
            "cpu_seconds": round3(raw_cpu),
            "cpu_us_per_msg": round3(raw_cpu * 1e6 / raw_n as f64),
        },
        "end_to_end": {
            "orders": args.orders,
            "seconds": e2e_seconds,
            "orders_per_sec": e2e_rate.round(),
            "cpu_seconds": round3(e2e_cpu),
            "cpu_us_per_order": round3(e2e_cpu * 1e6 / args.orders as f64),
            "fraud_alerts": e2e_alerts,
            "payments": e2e_payments,
            "kafka_record_ops_per_order": (ops_per_order * 100.0).round() / 100.0,
        },
        "ratio_end_to_end_to_raw": round3(e2e_rate / raw_rate),
        // The raw rate moves each record through one produce and one consume (two ops).
        "ratio_per_kafka_record_op": round3(e2e_rate * ops_per_order / (2.0 * raw_rate)),
        "latency_created_to_stored": {
            "rate": args.latency_rate,
            "orders": latency.count,
            "p50_ms": latency.p50_ms,
            "p99_ms": latency.p99_ms,
            "max_ms": latency.max_ms,
        },
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
