//! What the daemons' test binaries share: a seeded pipeline to start, waits, the exact check
//! of the store against the generator, the audit, `ordersd` processes to start, stop and
//! kill, free ports, and the groups' committed offsets and the records on a topic.
#![allow(clippy::unwrap_used)]
// tests: a failed unwrap is a failed test
// Each test binary that includes this module uses a part of it.
#![allow(dead_code)]

use orders_core::audit::{AuditOptions, AuditReport};
use orders_core::domain::{Order, Timestamp};
use orders_core::fraud::FraudRules;
use orders_core::generator::OrderGenerator;
use orders_core::kafka::{
    consumer_lag, KafkaSettings, ANALYTICS_GROUP, FRAUD_ALERTS_TOPIC, ORDER_GROUPS, PAYMENTS_TOPIC,
};
use orders_core::money::Cents;
use orders_core::store::{OrderQuery, OrderStore};
use orders_daemons::local_pipeline::{LocalOptions, LocalPipeline};
use orders_daemons::producer::{Pace, ProducerConfig};
use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// The generator seed of every pipeline here.
pub const SEED: u64 = 42;

/// A producer of `n` orders at `rate` per second (0: as fast as it can), no canaries.
pub fn producer(n: u64, rate: f64) -> ProducerConfig {
    ProducerConfig {
        topic: "orders".into(),
        pace: Pace::Rate(rate),
        max_orders: Some(n),
        seed: SEED,
        canary_interval: None,
    }
}

/// Waits (bounded) until `cond` holds; panics with `what` otherwise.
pub async fn eventually<F, Fut>(what: &str, limit: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !cond().await {
        assert!(start.elapsed() < limit, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The lag left on `orders` in every group and on the side topics in analytics.
pub async fn total_lag(kafka: &KafkaSettings) -> i64 {
    let kafka = kafka.clone();
    tokio::task::spawn_blocking(move || {
        let mut total = 0;
        for group in ORDER_GROUPS {
            total += consumer_lag(&kafka, group, &["orders"], Duration::from_secs(10))
                .unwrap()
                .total();
        }
        total += consumer_lag(
            &kafka,
            ANALYTICS_GROUP,
            &[FRAUD_ALERTS_TOPIC, PAYMENTS_TOPIC],
            Duration::from_secs(10),
        )
        .unwrap()
        .total();
        total
    })
    .await
    .unwrap()
}

/// Checks the store against what the seeded generator produced for ids 1..=n.
pub async fn assert_exact(store: &dyn OrderStore, n: u64) {
    let generator = OrderGenerator::new(SEED);
    let rules = FraudRules::default();
    let t0 = Timestamp::now();
    let expected: Vec<Order> = (1..=n).map(|id| generator.order(id, t0)).collect();
    let expected_sales: Cents = expected.iter().map(|o| o.amount).sum();
    let expected_fraud: BTreeSet<u64> = expected
        .iter()
        .filter(|o| rules.evaluate(o).is_some())
        .map(|o| o.order_id)
        .collect();

    let totals = store.totals().await.unwrap();
    assert_eq!(totals.order_count, n, "orders stored");
    assert_eq!(totals.total_sales, expected_sales, "total sales in cents");
    assert_eq!(
        totals.fraud_count,
        expected_fraud.len() as u64,
        "fraud alerts stored"
    );
    assert_eq!(totals.payment_count, n, "one payment per order");
    assert_eq!(totals.paid_count, n);

    let stored = store
        .latest_orders(&OrderQuery {
            limit: n as usize + 10,
            ..OrderQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(stored.len() as u64, n);
    let mut fraud_seen = BTreeSet::new();
    for doc in &stored {
        let want = &expected[(doc.order.order_id - 1) as usize];
        assert_eq!(doc.order.amount, want.amount);
        assert_eq!(doc.order.country, want.country);
        assert_eq!(doc.order.customer_id, want.customer_id);
        assert_eq!(doc.order.status, want.status);
        assert_eq!(
            doc.payment_status.map(|s| s.as_str()),
            Some("PAID"),
            "order {}",
            doc.order.order_id
        );
        if doc.fraud {
            fraud_seen.insert(doc.order.order_id);
        }
    }
    assert_eq!(
        fraud_seen, expected_fraud,
        "alerts exactly for the orders matching the rule"
    );
    let alerts = store.latest_alerts(n as usize).await.unwrap();
    let alert_ids: BTreeSet<u64> = alerts.iter().map(|a| a.alert.order_id).collect();
    assert_eq!(alert_ids, expected_fraud);
}

/// An `ordersd` process, killed when dropped.
pub struct Daemon(pub Option<Child>);

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `ordersd` against `kafka` with its data in `data_dir`, on an ops port of its own.
fn ordersd_command(kafka: &str, data_dir: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ordersd"));
    // Each daemon its own ops port: several run at once.
    command
        .env("ORDERS_OPS_ADDR", "127.0.0.1:0")
        .args(["--kafka-bootstrap-servers", kafka, "--data-dir"])
        .arg(data_dir);
    command
}

/// Starts `ordersd ROLE` (its log on stderr at `TEST_DAEMON_LOG`, default warn).
pub fn ordersd(kafka: &str, data_dir: &std::path::Path, role: &str) -> Daemon {
    let child = ordersd_command(kafka, data_dir)
        .arg(role)
        .env(
            "RUST_LOG",
            std::env::var("TEST_DAEMON_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    Daemon(Some(child))
}

/// Kills a daemon process abruptly (SIGKILL: no shutdown, no final commit).
pub fn crash(mut daemon: Daemon) {
    let mut child = daemon.0.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
}

/// A group's committed offsets on `topic`, summed (records it will not see again), and the
/// records on `topic` (high watermarks, summed).
pub async fn committed_and_records(kafka: &KafkaSettings, group: &str, topic: &str) -> (i64, i64) {
    let (kafka, group, topic) = (kafka.clone(), group.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let lag = consumer_lag(&kafka, &group, &[&topic], Duration::from_secs(10)).unwrap();
        let committed = lag.partitions.iter().filter_map(|p| p.committed).sum();
        let records = lag.partitions.iter().map(|p| p.high_watermark).sum();
        (committed, records)
    })
    .await
    .unwrap()
}

/// The records on `topic` (high watermarks, summed).
pub async fn records_on(kafka: &KafkaSettings, topic: &str) -> i64 {
    committed_and_records(kafka, ANALYTICS_GROUP, topic).await.1
}

/// `ordersctl audit`'s reconciliation of the topics with the store, default rules and
/// options.
pub async fn audit_report(pipeline: &LocalPipeline) -> AuditReport {
    orders_core::audit::audit(
        &pipeline.kafka(),
        pipeline.store.as_ref(),
        &FraudRules::default(),
        &AuditOptions::default(),
    )
    .await
    .unwrap()
}

/// A port free on loopback now (whoever needs it binds it right after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A pipeline producing `n` orders at `rate` (0: as fast as it can), with `options` adjusted
/// by `adjust`; its data dir lives as long as the returned guard.
pub async fn start(
    n: u64,
    rate: f64,
    adjust: impl FnOnce(&mut LocalOptions),
) -> (tempfile::TempDir, LocalPipeline) {
    let dir = tempfile::tempdir().unwrap();
    let mut options = LocalOptions::new(dir.path().join("orders.db"));
    options.producer = Some(producer(n, rate));
    adjust(&mut options);
    let pipeline = LocalPipeline::start(options).await.unwrap();
    (dir, pipeline)
}

/// Waits until the producer has had `n` orders acknowledged.
pub async fn wait_produced(pipeline: &LocalPipeline, n: u64) {
    let progress = pipeline.progress.clone();
    eventually(
        &format!("{n} orders produced"),
        Duration::from_secs(120),
        || {
            let p = progress.clone();
            async move { p.orders_produced.load(Ordering::Relaxed) >= n }
        },
    )
    .await;
}

/// Waits until every group is done with `n` orders and all are stored and paid.
pub async fn wait_all_done(pipeline: &LocalPipeline, n: u64) {
    let progress = pipeline.progress.clone();
    eventually(
        &format!("every group done with {n} orders, all stored"),
        Duration::from_secs(180),
        || {
            let p = progress.clone();
            async move {
                p.orders_done_by_all() >= n && p.payments_stored.load(Ordering::Relaxed) >= n
            }
        },
    )
    .await;
}

/// Stops a daemon cleanly (SIGTERM, then its final commit); how it exited.
pub fn terminate(daemon: &mut Daemon) -> std::process::ExitStatus {
    let child = daemon.0.as_mut().unwrap();
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    daemon.0 = None;
    status
}

/// Runs `ordersd ARGS` against `kafka` until it exits (bounded); its status and stderr.
pub fn ordersd_until_exit(
    kafka: &str,
    data_dir: &std::path::Path,
    args: &[&str],
) -> (std::process::ExitStatus, String) {
    let mut child = ordersd_command(kafka, data_dir)
        .args(args)
        .env("RUST_LOG", "off")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("ordersd {args:?} kept running: a silent retry loop");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
