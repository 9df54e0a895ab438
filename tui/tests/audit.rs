//! `ordersctl audit` against the real pipeline (`LocalPipeline`: the embedded broker over
//! TCP, the daemons, a SQLite file): clean after a run, each kind of tampering found, quiet
//! while the pipeline runs, retention told apart; and the binary's exit codes.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use orders_core::audit::{audit, AuditOptions, AuditReport};
use orders_core::config::UpInfo;
use orders_core::domain::{Order, Payment, PaymentStatus, Timestamp};
use orders_core::fraud::FraudRules;
use orders_core::generator::OrderGenerator;
use orders_core::kafka::{
    consumer_lag, KafkaSettings, ANALYTICS_GROUP, FRAUD_ALERTS_TOPIC, ORDER_GROUPS, PAYMENTS_TOPIC,
};
use orders_core::store::SqliteStore;
use orders_daemons::local_pipeline::{LocalOptions, LocalPipeline};
use orders_daemons::producer::{Pace, ProducerConfig};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const SEED: u64 = 11;

/// Every variable the audit reads, so the tests' environment cannot leak in.
const CONFIG_VARS: &[&str] = &[
    "KAFKA_BOOTSTRAP_SERVERS",
    "CONFLUENT_API_KEY",
    "CONFLUENT_API_SECRET",
    "TOPIC_NAME",
    "COUCHBASE_HOST",
    "COUCHBASE_BUCKET",
    "COUCHBASE_USERNAME",
    "COUCHBASE_PASSWORD",
    "ORDERS_DATA_DIR",
    "FRAUD_THRESHOLD",
    "FRAUD_SAFE_COUNTRIES",
    "FRAUD_RULES",
    "ORDERS_AUDIT_MAX_IDS",
    "ORDERS_AUDIT_PAGE_SIZE",
    "ORDERS_AUDIT_TIMEOUT_SECONDS",
];

fn ordersctl_audit(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ordersctl"));
    cmd.arg("audit").args(args);
    for var in CONFIG_VARS {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied()).env("RUST_LOG", "warn");
    cmd.output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The one JSON line the binary printed.
fn report_json(out: &Output) -> serde_json::Value {
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    assert_eq!(text.lines().count(), 1, "one line of JSON: {text}");
    serde_json::from_str(&text).unwrap()
}

async fn start(
    orders: u64,
    rate: f64,
    payment_delay_ms: u64,
) -> (tempfile::TempDir, LocalPipeline) {
    let dir = tempfile::tempdir().unwrap();
    let mut options = LocalOptions::new(dir.path().join("orders.db"));
    options.payment.delay = Duration::from_millis(payment_delay_ms);
    if orders > 0 {
        options.producer = Some(ProducerConfig {
            topic: "orders".into(),
            pace: Pace::Rate(rate),
            max_orders: Some(orders),
            seed: SEED,
            canary_interval: None,
        });
    }
    (dir, LocalPipeline::start(options).await.unwrap())
}

/// Records the groups have yet to commit, over every topic they read.
async fn uncommitted(kafka: &KafkaSettings) -> i64 {
    let kafka = kafka.clone();
    tokio::task::spawn_blocking(move || {
        let t = Duration::from_secs(10);
        let mut total = 0;
        for group in ORDER_GROUPS {
            total += consumer_lag(&kafka, group, &["orders"], t).unwrap().total();
        }
        let side = [FRAUD_ALERTS_TOPIC, PAYMENTS_TOPIC];
        total
            + consumer_lag(&kafka, ANALYTICS_GROUP, &side, t)
                .unwrap()
                .total()
    })
    .await
    .unwrap()
}

/// Waits (bounded) until every group has finished and committed `orders` orders.
async fn wait_done(pipeline: &LocalPipeline, orders: u64) {
    let p = pipeline.progress.clone();
    let kafka = pipeline.kafka();
    let start = Instant::now();
    loop {
        let handled = p.orders_done_by_all() >= orders
            && p.orders_stored.load(Ordering::Relaxed) >= orders
            && p.payments_stored.load(Ordering::Relaxed) >= orders;
        if handled && uncommitted(&kafka).await == 0 {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "pipeline not done with {orders} orders: done by all {}, stored {}, paid {}, \
             uncommitted {}",
            p.orders_done_by_all(),
            p.orders_stored.load(Ordering::Relaxed),
            p.payments_stored.load(Ordering::Relaxed),
            uncommitted(&kafka).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn run_audit(kafka: &KafkaSettings, store: &SqliteStore) -> AuditReport {
    audit(
        kafka,
        store,
        &FraudRules::default(),
        &AuditOptions::default(),
    )
    .await
    .unwrap()
}

fn found(report: &AuditReport) -> Vec<(&'static str, u64)> {
    report.discrepancies.found()
}

fn ids(report: &AuditReport, kind: &str) -> Vec<u64> {
    let (_, f) = report
        .discrepancies
        .kinds()
        .into_iter()
        .find(|(k, _)| *k == kind)
        .unwrap();
    f.order_ids.iter().copied().collect()
}

fn mismatched_fields(report: &AuditReport) -> Vec<String> {
    let mut fields: Vec<String> = report
        .totals
        .mismatches
        .iter()
        .map(|m| m.field.clone())
        .collect();
    fields.sort();
    fields
}

fn seeded(id: u64) -> Order {
    OrderGenerator::new(SEED).order(id, Timestamp::now())
}

fn flagged(ids: std::ops::RangeInclusive<u64>) -> Vec<u64> {
    let rules = FraudRules::default();
    ids.filter(|id| rules.evaluate(&seeded(*id)).is_some())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_finished_pipeline_audits_clean_with_the_expected_counts() {
    const N: u64 = 3_000;
    let (dir, mut pipeline) = start(N, 0.0, 5).await;
    wait_done(&pipeline, N).await;
    pipeline.stop().await.unwrap();

    let report = run_audit(&pipeline.kafka(), &pipeline.store).await;
    assert!(report.is_clean(), "{}", report.summary());
    let alerts = flagged(1..=N).len() as u64;
    assert!(alerts > 0 && alerts < N);
    assert_eq!((report.orders.on_topic, report.orders.stored), (N, N));
    assert_eq!(report.orders.no_longer_on_topic, 0);
    assert_eq!(
        (
            report.fraud.alerts_expected,
            report.fraud.on_topic,
            report.fraud.stored
        ),
        (alerts, alerts, alerts)
    );
    assert_eq!((report.payments.stored, report.payments.paid), (N, N));
    assert_eq!(report.dead_letters.records, 0);
    assert_eq!(report.in_flight, Default::default());
    assert_eq!(report.totals.counted, report.totals.stored);

    // The binary, attached the way a developer's shell is: through `ordersctl up`'s
    // up.json in the data directory.
    UpInfo {
        api: "http://127.0.0.1:1".into(),
        kafka: pipeline.bootstrap_servers().to_owned(),
    }
    .write(dir.path())
    .unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let out = ordersctl_audit(&["--data-dir", data_dir], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let json = report_json(&out);
    assert_eq!(json["consistent"], true);
    assert_eq!(json["discrepancy_count"], 0);
    assert_eq!(json["orders"]["on_topic"], N);
    assert_eq!(json["fraud"]["stored"], alerts);
    assert!(stderr(&out).contains("consistent"), "{}", stderr(&out));
}

/// One way to change the store behind the pipeline's back, and what the audit must say.
struct Tampering {
    what: &'static str,
    sql: String,
    /// Every kind of discrepancy found, with its count.
    found: Vec<(&'static str, u64)>,
    /// The kind whose ids are listed in `ids`.
    kind: &'static str,
    ids: Vec<u64>,
    /// The totals figures that no longer add up.
    totals: Vec<String>,
}

/// A consistent copy of the store at `from`, changed by `sql`, in a directory of its own
/// (`<dir>/orders.db`, as the binary's `--data-dir` expects).
fn tampered_copy(from: &Path, sql: &str) -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("orders.db");
    let source = rusqlite::Connection::open(from).unwrap();
    source
        .execute("VACUUM INTO ?1", [path.to_str().unwrap()])
        .unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    assert_eq!(conn.execute(sql, []).unwrap(), 1, "{sql}");
    drop(conn);
    let store = SqliteStore::open(&path).unwrap();
    (dir, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_kind_of_tampering_is_found_and_exits_1() {
    const N: u64 = 2_000;
    let (_dir, mut pipeline) = start(N, 0.0, 5).await;
    wait_done(&pipeline, N).await;
    let kafka = pipeline.kafka();
    let db = pipeline.store.path().to_owned();
    assert!(run_audit(&kafka, &pipeline.store).await.is_clean());

    let (x, y, w) = (seeded(10), seeded(20), seeded(30));
    let z = flagged(1..=N)[0];
    let by = |o: &Order| {
        vec![
            format!("by_country.{}", o.country),
            format!("by_status.{}", o.status),
        ]
    };
    let fields = |names: Vec<String>| {
        let mut f: Vec<String> = names;
        f.sort();
        f
    };
    let cases = [
        Tampering {
            what: "an order row deleted",
            sql: "DELETE FROM orders WHERE order_id = 10".into(),
            found: vec![("orders_not_stored", 1), ("totals_differ", 6)],
            kind: "orders_not_stored",
            ids: vec![10],
            totals: fields(
                ["order_count".to_owned(), "total_sales_cents".to_owned()]
                    .into_iter()
                    .chain(
                        by(&x)
                            .iter()
                            .flat_map(|b| [format!("{b}.count"), format!("{b}.sales_cents")]),
                    )
                    .collect(),
            ),
        },
        Tampering {
            what: "an amount changed",
            sql: "UPDATE orders SET amount_cents = amount_cents + 1 WHERE order_id = 20".into(),
            found: vec![("orders_differ", 1), ("totals_differ", 3)],
            kind: "orders_differ",
            ids: vec![20],
            totals: fields(
                std::iter::once("total_sales_cents".to_owned())
                    .chain(by(&y).iter().map(|b| format!("{b}.sales_cents")))
                    .collect(),
            ),
        },
        Tampering {
            what: "an alert deleted",
            sql: format!("DELETE FROM fraud_alerts WHERE order_id = {z}"),
            found: vec![("alerts_missing", 1), ("totals_differ", 2)],
            kind: "alerts_missing",
            ids: vec![z],
            totals: fields(vec!["fraud_count".into(), "fraud_sales_cents".into()]),
        },
        Tampering {
            what: "an alert inserted for an unknown order",
            sql: "INSERT INTO fraud_alerts (order_id, reason, rule_id, amount_cents, country, \
                  detected_us, stored_us) VALUES (888888888, 'HIGH_AMOUNT_RISKY_COUNTRY', NULL, \
                  40000, 'DE', NULL, 0)"
                .into(),
            found: vec![("alerts_for_unknown_orders", 1), ("totals_differ", 2)],
            kind: "alerts_for_unknown_orders",
            ids: vec![888_888_888],
            totals: fields(vec!["fraud_count".into(), "fraud_sales_cents".into()]),
        },
        Tampering {
            what: "a payment deleted",
            sql: "DELETE FROM payments WHERE order_id = 30".into(),
            found: vec![("payments_missing", 1), ("totals_differ", 2)],
            kind: "payments_missing",
            ids: vec![w.order_id],
            totals: fields(vec!["paid_count".into(), "payment_count".into()]),
        },
        Tampering {
            what: "a totals row changed",
            sql: "UPDATE totals_by_status SET order_count = order_count + 1 \
                  WHERE status = 'CREATED'"
                .into(),
            found: vec![("totals_differ", 1)],
            kind: "totals_differ",
            ids: vec![],
            totals: vec!["by_status.CREATED.count".into()],
        },
    ];
    for case in &cases {
        let (_copy, store) = tampered_copy(&db, &case.sql);
        let report = run_audit(&kafka, &store).await;
        let what = case.what;
        assert_eq!(found(&report), case.found, "{what}: {}", report.summary());
        assert_eq!(ids(&report, case.kind), case.ids, "{what}");
        assert_eq!(mismatched_fields(&report), case.totals, "{what}");
        assert!(!report.is_clean());
    }

    // The binary on one of them: exit 1, the report on stdout, the kinds on stderr.
    let (copy, _store) = tampered_copy(&db, "DELETE FROM orders WHERE order_id = 10");
    let bootstrap = pipeline.bootstrap_servers().to_owned();
    let data_dir = copy.path().to_str().unwrap();
    let args = [
        "--kafka-bootstrap-servers",
        &bootstrap,
        "--data-dir",
        data_dir,
    ];
    let out = ordersctl_audit(&args, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let json = report_json(&out);
    assert_eq!(json["consistent"], false);
    assert_eq!(json["discrepancies"]["orders_not_stored"]["count"], 1);
    assert_eq!(
        json["discrepancies"]["orders_not_stored"]["order_ids"],
        serde_json::json!([10])
    );
    assert_eq!(json["discrepancy_count"], 7);
    assert!(
        stderr(&out).contains("orders_not_stored: 1 (order ids 10)"),
        "{}",
        stderr(&out)
    );

    // On the topics: a payment for an order that never was, and a poison order (every
    // group dead-letters it).
    let producer: FutureProducer = kafka.producer_config("audit-test").create().unwrap();
    let stranger = Payment {
        order_id: 999_999_999,
        status: PaymentStatus::Paid,
        amount: orders_core::Cents(1_000),
        country: "FR".parse().unwrap(),
        timestamp: 1_705_314_600.0,
    };
    for (topic, key, payload) in [
        (PAYMENTS_TOPIC, "999999999", stranger.to_json()),
        ("orders", "poison", b"this is not json".to_vec()),
    ] {
        producer
            .send(
                FutureRecord::to(topic).key(key).payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
    let p = pipeline.progress.clone();
    let start = Instant::now();
    while p.analytics.dead_lettered.load(Ordering::Relaxed) < 1
        || p.fraud.dead_lettered.load(Ordering::Relaxed) < 1
        || p.payments.dead_lettered.load(Ordering::Relaxed) < 1
        || p.payments_stored.load(Ordering::Relaxed) < N + 1
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "extras not handled"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_done(&pipeline, N).await;
    pipeline.stop().await.unwrap();
    let report = run_audit(&kafka, &pipeline.store).await;
    assert_eq!(
        found(&report),
        [("payments_for_unknown_orders", 1), ("dead_letters", 3)],
        "{}",
        report.summary()
    );
    assert_eq!(ids(&report, "payments_for_unknown_orders"), [999_999_999]);
    let dlq = &report.dead_letters.topics["orders.dlq"];
    assert_eq!(dlq.by_reason["not-json"], 3);
    assert_eq!(dlq.by_group.values().sum::<u64>(), 3);
    assert_eq!(dlq.by_group.len(), 3, "{:?}", dlq.by_group);
    assert_eq!(report.orders.undecodable.by_reason["not-json"], 1);
    let db_dir = db.parent().unwrap().to_str().unwrap();
    let out = ordersctl_audit(
        &[
            "--kafka-bootstrap-servers",
            &bootstrap,
            "--data-dir",
            db_dir,
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(report_json(&out)["dead_letters"]["records"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_audit_while_the_pipeline_runs_finds_orders_in_flight_not_missing() {
    const N: u64 = 5_000;
    // A moderate rate, and payments taking the seed's 100 ms.
    let (_dir, mut pipeline) = start(N, 500.0, 100).await;
    let kafka = pipeline.kafka();
    let p = pipeline.progress.clone();
    let mut in_flight_seen = 0;
    for stored_at_least in [500, 2_000] {
        while p.orders_stored.load(Ordering::Relaxed) < stored_at_least {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let report = run_audit(&kafka, &pipeline.store).await;
        assert!(report.is_clean(), "{}", report.summary());
        assert!(report.orders.on_topic < N, "the run ended before the audit");
        let f = report.in_flight;
        in_flight_seen += f.orders_not_yet_stored
            + f.alerts_not_yet_raised
            + f.alerts_not_yet_stored
            + f.payments_not_yet_made
            + f.payments_not_yet_stored
            + f.orders_after_snapshot;
        eprintln!("while running: {}", report.summary());
    }
    assert!(
        in_flight_seen > 0,
        "nothing was in flight: the test proves nothing"
    );
    wait_done(&pipeline, N).await;
    pipeline.stop().await.unwrap();
    let report = run_audit(&kafka, &pipeline.store).await;
    assert!(report.is_clean(), "{}", report.summary());
    assert_eq!(report.in_flight, Default::default());
    assert_eq!(report.orders.on_topic, N);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn orders_retention_dropped_from_the_topic_are_not_missing() {
    const N: u64 = 400;
    let (_dir, mut pipeline) = start(0, 0.0, 5).await;
    let kafka = pipeline.kafka();
    // Large orders (20 KB: an unknown field the readers accept, incompressible), all on
    // one partition: past the embedded broker's ~5 MiB per partition the oldest go.
    let producer: FutureProducer = kafka
        .producer_config("audit-test")
        .set("compression.type", "none")
        .create()
        .unwrap();
    let mut noise = SEED;
    for id in 1..=N {
        // In chunks the pipeline finishes before the next: retention then drops only
        // records every group is done with (it would drop unread ones just the same).
        if id % 100 == 1 {
            wait_done(&pipeline, id - 1).await;
        }
        let order = seeded(id);
        let mut json: serde_json::Value = serde_json::from_slice(&order.to_json()).unwrap();
        // 20 KB of xorshift noise as hex.
        let pad: String = (0..1_250)
            .map(|_| {
                noise ^= noise << 13;
                noise ^= noise >> 7;
                noise ^= noise << 17;
                format!("{noise:016x}")
            })
            .collect();
        json["pad"] = serde_json::json!(pad);
        let payload = serde_json::to_vec(&json).unwrap();
        producer
            .send(
                FutureRecord::to("orders")
                    .partition(0)
                    .key(&order.key())
                    .payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
    wait_done(&pipeline, N).await;
    pipeline.stop().await.unwrap();
    let report = run_audit(&kafka, &pipeline.store).await;
    assert!(report.is_clean(), "{}", report.summary());
    let low = report
        .snapshot
        .partitions
        .iter()
        .find(|s| s.topic == "orders" && s.partition == 0)
        .unwrap()
        .low_watermark;
    assert!(low > 0, "nothing was dropped: the test proves nothing");
    assert_eq!(report.orders.no_longer_on_topic, low as u64);
    assert_eq!(report.orders.on_topic + report.orders.no_longer_on_topic, N);
    assert_eq!(report.payments.stored, N);
}

#[test]
fn bad_flags_and_settings_are_one_line_and_exit_2() {
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)]);
    let cases: [Case; 5] = [
        (&["--max-ids", "lots"], &[]),
        (&["--page-size", "0"], &[]),
        (&["--no-such-flag"], &[]),
        (&[], &[("FRAUD_RULES", "{")]),
        (
            &[
                "--confluent-api-key",
                "k",
                "--kafka-bootstrap-servers",
                "x:1",
            ],
            &[],
        ),
    ];
    for (args, env) in cases {
        let out = ordersctl_audit(args, env);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?} {env:?}: {}",
            stderr(&out)
        );
        assert_eq!(
            stderr(&out).trim_end().lines().count(),
            1,
            "{}",
            stderr(&out)
        );
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn unreachable_kafka_or_store_exits_4_with_nothing_on_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    // No Kafka configured, and no `ordersctl up` to attach to.
    let out = ordersctl_audit(&["--data-dir", data_dir], &[]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("KAFKA_BOOTSTRAP_SERVERS"),
        "{}",
        stderr(&out)
    );
    // No store in the data directory: not created, reported.
    let kafka = ["--kafka-bootstrap-servers", "127.0.0.1:1"];
    let out = ordersctl_audit(&[&kafka[..], &["--data-dir", data_dir]].concat(), &[]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("no store"), "{}", stderr(&out));
    assert!(!dir.path().join("orders.db").exists());
    // A store, but nothing listens where Kafka should be.
    drop(SqliteStore::open(dir.path().join("orders.db")).unwrap());
    let started = Instant::now();
    let out = ordersctl_audit(
        &[
            &kafka[..],
            &["--data-dir", data_dir, "--timeout-seconds", "2"],
        ]
        .concat(),
        &[],
    );
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    assert!(
        stderr(&out).contains("kafka cannot be reached"),
        "{}",
        stderr(&out)
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    // Couchbase that never answers (a closed port): the store is waited for, then named.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let host = format!("couchbase://127.0.0.1:{closed}");
    let couchbase = ["--couchbase-host", &host, "--couchbase-username", "app"];
    let out = ordersctl_audit(
        &[&kafka[..], &couchbase[..], &["--timeout-seconds", "3"]].concat(),
        &[("COUCHBASE_PASSWORD", "PASSWORD-VALUE-7")],
    );
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    let said = stderr(&out);
    assert!(said.contains("store cannot be reached"), "{said}");
    assert!(said.contains(&closed.to_string()), "{said}");
    assert!(!said.contains("PASSWORD-VALUE-7"), "{said}");
}
