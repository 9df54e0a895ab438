//! `ordersctl chaos`: the pipeline at a steady rate on a three-broker embedded cluster, with
//! extra `ordersd` members in each consumer group, while faults are injected one after another
//! at random (seeded): members killed, stopped, paused; brokers down, slow, moving leaders,
//! answering with errors. Then it drains, audits, and prints one JSON summary.

use anyhow::{bail, Context};
use clap::Args;
use orders_core::kafka::{consumer_lag, BrokerFault, RDKafkaApiKey, RDKafkaRespErr, ORDER_GROUPS};
use orders_core::store::OrderStore;
use orders_daemons::cli::{parse_rate, CanaryIntervalArgs};
use orders_daemons::local_pipeline::{LocalOptions, LocalPipeline};
use orders_daemons::producer::{Pace, ProducerConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Args)]
pub struct ChaosArgs {
    /// How long to inject faults, in minutes.
    #[arg(long, default_value_t = 2.0, value_parser = parse_minutes)]
    pub minutes: f64,
    /// Seed of the fault schedule and of the orders (same seed, same schedule).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Orders per second.
    #[arg(long, default_value_t = 100.0, value_parser = parse_rate)]
    pub rate: f64,
    /// Extra `ordersd` members per consumer group (besides the one in this process).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(0..=5))]
    pub members: u64,
    /// The `ordersd` binary (default: the one next to this `ordersctl`).
    #[arg(long)]
    pub ordersd: Option<PathBuf>,
    /// Simulated payment processing time, in milliseconds.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(0..=10_000))]
    pub payment_delay_ms: u64,
    /// Only these kinds of fault (comma-separated; default: every kind).
    #[arg(long, value_delimiter = ',', value_parser = clap::builder::PossibleValuesParser::new(KINDS))]
    pub faults: Vec<String>,
    #[command(flatten)]
    pub canary: CanaryIntervalArgs,
}

fn parse_minutes(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of minutes"))?;
    if !(0.05..=1440.0).contains(&v) {
        return Err(format!("{s} is out of range: give 0.05 to 1440 minutes"));
    }
    Ok(v)
}

/// The kinds of fault, as named in the summary.
const KINDS: [&str; 9] = [
    "member_kill",
    "member_term",
    "member_pause",
    "broker_down",
    "all_brokers_down",
    "slow_broker",
    "leader_moves",
    "request_errors",
    "coordinator_errors",
];

/// The kinds that act on a member process.
fn is_member_fault(kind: &str) -> bool {
    kind.starts_with("member_")
}

/// An extra `ordersd` process in a consumer group.
struct Member {
    role: &'static str,
    child: Option<Child>,
}

impl Drop for Member {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

struct Members {
    ordersd: PathBuf,
    kafka: String,
    data_dir: PathBuf,
    log_dir: PathBuf,
    all: Vec<Member>,
}

impl Members {
    fn spawn(&self, role: &'static str, n: usize) -> anyhow::Result<Child> {
        let log = std::fs::File::create(self.log_dir.join(format!("{role}-{n}.log")))?;
        Command::new(&self.ordersd)
            .args(["--kafka-bootstrap-servers", &self.kafka, "--data-dir"])
            .arg(&self.data_dir)
            .arg(role)
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.ordersd.display()))
    }

    /// Starts `per_group` extra members in each consumer group.
    fn spawn_all(&mut self, per_group: u64) -> anyhow::Result<()> {
        for role in ["fraud", "payment", "analytics"] {
            for _ in 0..per_group {
                let n = self.all.len();
                let child = self.spawn(role, n)?;
                self.all.push(Member {
                    role,
                    child: Some(child),
                });
            }
        }
        Ok(())
    }

    /// Asks every member to leave (SIGTERM) and waits for it.
    async fn stop_all(&mut self) {
        for m in &mut self.all {
            if let Some(child) = &m.child {
                let _ = Members::signal(child, "-TERM");
            }
            if let Some(mut child) = m.child.take() {
                let _ = tokio::task::spawn_blocking(move || child.wait()).await;
            }
        }
    }

    fn signal(child: &Child, sig: &str) -> anyhow::Result<()> {
        let ok = Command::new("kill")
            .args([sig, &child.id().to_string()])
            .status()?
            .success();
        if !ok {
            bail!("kill {sig} {} failed", child.id());
        }
        Ok(())
    }
}

/// What one fault did and how long the pipeline took to get over it.
#[derive(Debug)]
struct Injected {
    kind: &'static str,
    detail: String,
    /// When it began, in seconds since the run started.
    at_seconds: f64,
    /// The next order id the producer was to generate when it began (ids count from 1).
    next_order_id: u64,
    held_seconds: f64,
    recovery_seconds: Option<f64>,
}

impl Injected {
    /// Its entry in the summary's schedule.
    fn to_json(&self) -> serde_json::Value {
        json!({
            "kind": self.kind,
            "detail": self.detail,
            "at_seconds": (self.at_seconds * 10.0).round() / 10.0,
            "next_order_id": self.next_order_id,
            "held_seconds": (self.held_seconds * 10.0).round() / 10.0,
            "recovery_seconds": self.recovery_seconds.map(|s| (s * 10.0).round() / 10.0),
        })
    }
}

fn ordersd_path(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(p) = given {
        return Ok(p);
    }
    let here = std::env::current_exe().context("locating ordersctl")?;
    let next_to = here.with_file_name(format!("ordersd{}", std::env::consts::EXE_SUFFIX));
    if next_to.exists() {
        return Ok(next_to);
    }
    bail!(
        "no ordersd next to {}: build it (cargo build --release --bin ordersd) or give --ordersd",
        here.display()
    )
}

fn summary(values: &mut [f64]) -> serde_json::Value {
    if values.is_empty() {
        return json!({"count": 0, "p50": null, "max": null});
    }
    values.sort_by(f64::total_cmp);
    let p50 = values[(values.len() - 1) / 2];
    let max = values[values.len() - 1];
    let round = |x: f64| (x * 10.0).round() / 10.0;
    json!({"count": values.len(), "p50": round(p50), "max": round(max)})
}

/// Waits until every order generated so far is acknowledged by Kafka, processed by all
/// three groups (their committed offsets on `orders` have passed it) and stored and paid;
/// the seconds it took.
async fn recovery(pipeline: &LocalPipeline, limit: Duration) -> Option<f64> {
    let start = Instant::now();
    let progress = pipeline.progress.clone();
    let generated = progress.orders_sent.load(Ordering::Relaxed);
    let kafka = pipeline.kafka();
    let high_watermarks = |kafka: orders_core::kafka::KafkaSettings| {
        consumer_lag(
            &kafka,
            ORDER_GROUPS[0],
            &["orders"],
            Duration::from_secs(10),
        )
        .map(|lag| {
            lag.partitions
                .iter()
                .map(|p| (p.partition, p.high_watermark))
                .collect::<BTreeMap<i32, i64>>()
        })
    };
    let mut published: Option<BTreeMap<i32, i64>> = None;
    while start.elapsed() < limit {
        if published.is_none() && progress.orders_produced.load(Ordering::Relaxed) >= generated {
            let k = kafka.clone();
            published = tokio::task::spawn_blocking(move || high_watermarks(k).ok())
                .await
                .ok()
                .flatten();
        }
        if let Some(published) = published.clone() {
            let k = kafka.clone();
            let committed = tokio::task::spawn_blocking(move || {
                ORDER_GROUPS.iter().all(|group| {
                    consumer_lag(&k, group, &["orders"], Duration::from_secs(10)).is_ok_and(|lag| {
                        lag.partitions.iter().all(|p| {
                            p.committed.unwrap_or(0)
                                >= published.get(&p.partition).copied().unwrap_or(0)
                        })
                    })
                })
            })
            .await
            .unwrap_or(false);
            if committed {
                if let Ok(t) = pipeline.store.totals().await {
                    if t.order_count >= generated && t.payment_count >= generated {
                        return Some(start.elapsed().as_secs_f64());
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

/// Starts the pipeline and the members, injects faults until the time is up, then drains,
/// audits and prints the summary; whether the run was clean.
pub async fn run(args: ChaosArgs) -> anyhow::Result<bool> {
    crate::init_logging("warn");
    let ordersd = ordersd_path(args.ordersd.clone())?;
    let seed = args
        .seed
        .unwrap_or_else(|| orders_core::domain::Timestamp::now().micros() as u64);
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().context("creating a temporary data dir")?;
    let mut pipeline = start_pipeline(&args, seed, dir.path()).await?;
    let mut members = Members {
        ordersd,
        kafka: pipeline.bootstrap_servers().to_owned(),
        data_dir: dir.path().to_owned(),
        log_dir: dir.path().to_owned(),
        all: Vec::new(),
    };
    members.spawn_all(args.members)?;
    eprintln!(
        "chaos: seed {seed}, {} min at {} orders/s, 3 brokers, {} extra members per group",
        args.minutes, args.rate, args.members
    );
    let run_start = Instant::now();
    let deadline = run_start + Duration::from_secs_f64(args.minutes * 60.0);
    wait_for_flow(&pipeline).await?;
    let mut injected: Vec<Injected> = Vec::new();
    while Instant::now() < deadline {
        let kind = pick_kind(&args.faults, &members, &mut rng)?;
        injected.push(inject_one(kind, &pipeline, &mut members, &mut rng, run_start).await?);
        tokio::time::sleep(Duration::from_millis(rng.random_range(1_000..=4_000))).await;
    }

    let clean = finish(&args, seed, &mut pipeline, &mut members, &injected).await?;
    keep_logs_on_failure(clean, dir.path());
    Ok(clean)
}

/// Drains (the producer stops, every group finishes, the members leave), audits, and prints
/// the summary; whether the run was clean.
async fn finish(
    args: &ChaosArgs,
    seed: u64,
    pipeline: &mut LocalPipeline,
    members: &mut Members,
    injected: &[Injected],
) -> anyhow::Result<bool> {
    eprintln!("chaos: faults over; draining");
    let stopped = pipeline.stop_with(CancellationToken::new()).await;
    members.stop_all().await;
    let rules = orders_core::fraud::FraudRules::default();
    let audit = orders_core::audit::audit(
        &pipeline.kafka(),
        pipeline.store.as_ref() as &dyn OrderStore,
        &rules,
        &orders_core::audit::AuditOptions::default(),
    )
    .await
    .context("auditing after the chaos run")?;
    let orders = OrderCount::of(pipeline).await?;
    let clean = audit.is_clean()
        && stopped.is_ok()
        && orders.ids_missing == 0
        && orders.stored == orders.acknowledged
        && injected.iter().all(|i| i.recovery_seconds.is_some());
    let stop = match &stopped {
        Ok(()) => "clean".to_owned(),
        Err(e) => e.to_string(),
    };
    let report = json!({
        "seed": seed,
        "minutes": args.minutes,
        "rate": args.rate,
        "brokers": 3,
        "extra_members_per_group": args.members,
        "orders": orders.to_json(),
        "faults": fault_counts(injected),
        "faults_total": injected.len(),
        "recovery_seconds": recovery_summary(injected),
        "not_recovered": injected.iter().filter(|i| i.recovery_seconds.is_none())
            .map(|i| json!({"kind": i.kind, "detail": i.detail})).collect::<Vec<_>>(),
        "schedule": injected.iter().map(Injected::to_json).collect::<Vec<_>>(),
        "stop": stop,
        "audit_clean": audit.is_clean(),
        "audit": audit,
        "clean": clean,
    });
    println!("{report}");
    Ok(clean)
}

/// Starts the local pipeline on three brokers, with the producer at the asked rate.
async fn start_pipeline(args: &ChaosArgs, seed: u64, dir: &Path) -> anyhow::Result<LocalPipeline> {
    let mut options = LocalOptions::new(dir.join("orders.db"));
    options.brokers = 3;
    options.payment.delay = Duration::from_millis(args.payment_delay_ms);
    options.drain_grace = Duration::from_secs(180);
    options.producer = Some(ProducerConfig {
        topic: options.orders_topic.clone(),
        pace: Pace::Rate(args.rate),
        max_orders: None,
        seed,
        canary_interval: args.canary.interval(),
    });
    Ok(LocalPipeline::start(options).await?)
}

/// Lets the groups form and orders flow before the first fault.
async fn wait_for_flow(pipeline: &LocalPipeline) -> anyhow::Result<()> {
    let flowing = Instant::now();
    loop {
        let stored = pipeline
            .store
            .totals()
            .await
            .map(|t| t.payment_count)
            .unwrap_or(0);
        if stored > 0 && recovery(pipeline, Duration::from_secs(60)).await.is_some() {
            return Ok(());
        }
        if flowing.elapsed() > Duration::from_secs(120) {
            bail!("no order went through the pipeline in 120 s; nothing to break");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Draws the next kind of fault among those asked for (member faults only with members).
fn pick_kind(
    asked: &[String],
    members: &Members,
    rng: &mut StdRng,
) -> anyhow::Result<&'static str> {
    let kinds: Vec<&'static str> = KINDS
        .iter()
        .copied()
        .filter(|k| !is_member_fault(k) || !members.all.is_empty())
        .filter(|k| asked.is_empty() || asked.iter().any(|f| f == k))
        .collect();
    if kinds.is_empty() {
        bail!("no fault to inject: member faults need --members above 0");
    }
    Ok(kinds[rng.random_range(0..kinds.len())])
}

/// Injects one fault of `kind`, holds it, lifts it and waits for the pipeline to recover.
async fn inject_one(
    kind: &'static str,
    pipeline: &LocalPipeline,
    members: &mut Members,
    rng: &mut StdRng,
    run_start: Instant,
) -> anyhow::Result<Injected> {
    let hold = Duration::from_millis(rng.random_range(2_000..=10_000));
    let started = Instant::now();
    let at_seconds = run_start.elapsed().as_secs_f64();
    let next_order_id = pipeline.progress.orders_sent.load(Ordering::Relaxed) + 1;
    let detail = if is_member_fault(kind) {
        member_fault(kind, members, rng, hold).await?
    } else {
        broker_fault(kind, pipeline, rng, hold).await?
    };
    let held_seconds = started.elapsed().as_secs_f64();
    let recovery_seconds = recovery(pipeline, Duration::from_secs(180)).await;
    match recovery_seconds {
        Some(s) => {
            eprintln!("chaos: {kind}: {detail}; held {held_seconds:.1} s, recovered in {s:.1} s")
        }
        None => {
            eprintln!("chaos: {kind}: {detail}; held {held_seconds:.1} s, NOT recovered in 180 s")
        }
    }
    Ok(Injected {
        kind,
        detail,
        at_seconds,
        next_order_id,
        held_seconds,
        recovery_seconds,
    })
}

/// Kills, stops or pauses a member for `hold`, then restarts (or resumes) it.
async fn member_fault(
    kind: &'static str,
    members: &mut Members,
    rng: &mut StdRng,
    hold: Duration,
) -> anyhow::Result<String> {
    let i = rng.random_range(0..members.all.len());
    let role = members.all[i].role;
    let pid = members.all[i]
        .child
        .as_ref()
        .map(Child::id)
        .unwrap_or_default();
    let sig = match kind {
        "member_kill" => "-KILL",
        "member_term" => "-TERM",
        _ => "-STOP",
    };
    if let Some(child) = &members.all[i].child {
        Members::signal(child, sig)?;
    }
    tokio::time::sleep(hold).await;
    if kind == "member_pause" {
        if let Some(child) = &members.all[i].child {
            Members::signal(child, "-CONT")?;
        }
    } else {
        if let Some(mut old) = members.all[i].child.take() {
            let status = tokio::task::spawn_blocking(move || old.wait()).await??;
            if kind == "member_term" && !status.success() {
                tracing::warn!(role, ?status, "a member did not exit cleanly on SIGTERM");
            }
        }
        members.all[i].child = Some(members.spawn(role, i)?);
    }
    Ok(format!("{role} member (pid {pid}) {sig}"))
}

/// Sends `fault` to the embedded cluster.
fn broker(pipeline: &LocalPipeline, fault: BrokerFault) -> anyhow::Result<()> {
    pipeline
        .broker()
        .context("the embedded broker is gone")?
        .inject(fault)?;
    Ok(())
}

/// Puts one broker-side fault of `kind` on the cluster for `hold`, then lifts it.
async fn broker_fault(
    kind: &'static str,
    pipeline: &LocalPipeline,
    rng: &mut StdRng,
    hold: Duration,
) -> anyhow::Result<String> {
    let inject = |fault| broker(pipeline, fault);
    Ok(match kind {
        "broker_down" => {
            let b = rng.random_range(1..=3);
            inject(BrokerFault::Down(b))?;
            tokio::time::sleep(hold).await;
            inject(BrokerFault::Up(b))?;
            format!("broker {b} down")
        }
        "all_brokers_down" => {
            inject(BrokerFault::AllDown)?;
            tokio::time::sleep(hold).await;
            inject(BrokerFault::AllUp)?;
            "every broker down".to_owned()
        }
        "slow_broker" => {
            let b = rng.random_range(1..=3);
            let rtt = Duration::from_millis(rng.random_range(100..=1_000));
            inject(BrokerFault::RoundTripTime(b, rtt))?;
            tokio::time::sleep(hold).await;
            inject(BrokerFault::RoundTripTime(b, Duration::ZERO))?;
            format!("broker {b} answers {} ms late", rtt.as_millis())
        }
        "leader_moves" => {
            let mut moves = Vec::new();
            for partition in 0..6 {
                let to = rng.random_range(1..=3);
                inject(BrokerFault::PartitionLeader {
                    topic: "orders".into(),
                    partition,
                    broker: to,
                })?;
                moves.push(format!("{partition}->{to}"));
            }
            tokio::time::sleep(hold).await;
            format!("orders leaders {}", moves.join(" "))
        }
        "request_errors" => request_errors(pipeline, rng, hold).await?,
        _ => coordinator_errors(pipeline, hold).await?,
    })
}

/// Answers a few requests of one kind with a retriable error for `hold`.
async fn request_errors(
    pipeline: &LocalPipeline,
    rng: &mut StdRng,
    hold: Duration,
) -> anyhow::Result<String> {
    let (api, errors) = [
        (
            RDKafkaApiKey::Produce,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
        ),
        (
            RDKafkaApiKey::Produce,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
        ),
        (
            RDKafkaApiKey::Fetch,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
        ),
        (
            RDKafkaApiKey::OffsetCommit,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
        ),
    ][rng.random_range(0..4)];
    let n = rng.random_range(5..=50);
    broker(pipeline, BrokerFault::RequestErrors(api, vec![errors; n]))?;
    tokio::time::sleep(hold).await;
    broker(pipeline, BrokerFault::ClearRequestErrors(api))?;
    Ok(format!("{n} x {errors:?} on {api:?}"))
}

/// Answers the group requests with NOT_COORDINATOR for `hold`.
async fn coordinator_errors(pipeline: &LocalPipeline, hold: Duration) -> anyhow::Result<String> {
    let apis = [
        RDKafkaApiKey::Heartbeat,
        RDKafkaApiKey::JoinGroup,
        RDKafkaApiKey::SyncGroup,
        RDKafkaApiKey::OffsetCommit,
    ];
    for api in apis {
        broker(
            pipeline,
            BrokerFault::RequestErrors(
                api,
                vec![RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_COORDINATOR; 5],
            ),
        )?;
    }
    tokio::time::sleep(hold).await;
    for api in apis {
        broker(pipeline, BrokerFault::ClearRequestErrors(api))?;
    }
    Ok("NOT_COORDINATOR on group requests".to_owned())
}

/// The orders counted after the drain. The audit sees what reached the topics. Ids are
/// consecutive from 1 in this fresh store, so a gap below the highest stored id is an order
/// acknowledged (or generated) that never arrived: a loss the topics alone cannot show.
struct OrderCount {
    generated: u64,
    acknowledged: u64,
    stored: u64,
    highest_id: u64,
    ids_missing: u64,
    /// The first (up to 20) of them.
    missing_ids: Vec<u64>,
}

impl OrderCount {
    async fn of(pipeline: &LocalPipeline) -> anyhow::Result<Self> {
        let totals = pipeline.store.totals().await?;
        let highest_id = pipeline.store.max_order_id().await?.unwrap_or(0);
        let ids_missing = highest_id.saturating_sub(totals.order_count);
        let mut missing_ids = Vec::new();
        if ids_missing > 0 {
            for id in 1..=highest_id {
                if pipeline.store.order(id).await?.is_none() {
                    missing_ids.push(id);
                    if missing_ids.len() == 20 {
                        break;
                    }
                }
            }
        }
        Ok(Self {
            generated: pipeline.progress.orders_sent.load(Ordering::Relaxed),
            acknowledged: pipeline.progress.orders_produced.load(Ordering::Relaxed),
            stored: totals.order_count,
            highest_id,
            ids_missing,
            missing_ids,
        })
    }

    fn to_json(&self) -> serde_json::Value {
        json!({
            "generated": self.generated,
            "acknowledged": self.acknowledged,
            "stored": self.stored,
            "highest_stored_id": self.highest_id,
            "ids_missing_below_highest": self.ids_missing,
            "missing_ids": self.missing_ids,
        })
    }
}

/// How many faults of each kind were injected.
fn fault_counts(injected: &[Injected]) -> BTreeMap<&str, u64> {
    let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
    for i in injected {
        *counts.entry(i.kind).or_default() += 1;
    }
    counts
}

/// The recovery times, over all faults and by kind.
fn recovery_summary(injected: &[Injected]) -> serde_json::Value {
    let mut by_kind: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for i in injected {
        if let Some(s) = i.recovery_seconds {
            by_kind.entry(i.kind).or_default().push(s);
        }
    }
    let mut all: Vec<f64> = by_kind.values().flatten().copied().collect();
    let recovery_by_kind: BTreeMap<&str, serde_json::Value> =
        by_kind.iter_mut().map(|(k, v)| (*k, summary(v))).collect();
    json!({"all": summary(&mut all), "by_kind": recovery_by_kind})
}

/// Keeps the members' logs when the run was not clean, so the cause can be read.
fn keep_logs_on_failure(clean: bool, dir: &Path) {
    if clean {
        return;
    }
    let keep = std::env::temp_dir().join(format!("ordersctl-chaos-{}", std::process::id()));
    if std::fs::create_dir_all(&keep).is_ok() {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.path().extension().is_some_and(|x| x == "log") {
                    let _ = std::fs::copy(e.path(), keep.join(e.file_name()));
                }
            }
        }
        eprintln!("chaos: not clean; member logs kept in {}", keep.display());
    }
}
