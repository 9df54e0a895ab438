//! End-to-end tests of the pipeline on the embedded broker (librdkafka's mock cluster,
//! over TCP) and a real SQLite file: exact counts, crash and restart, poison records.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use orders_core::domain::{DecodeError, Order, Timestamp};
use orders_core::fraud::FraudRules;
use orders_core::generator::OrderGenerator;
use orders_core::kafka::{
    consumer_lag, pipeline_topics, BrokerFault, EmbeddedBroker, KafkaSettings, ANALYTICS_GROUP,
    FRAUD_ALERTS_TOPIC, ORDER_GROUPS, PAYMENTS_GROUP, PAYMENTS_TOPIC,
};
use orders_core::money::Cents;
use orders_core::store::OrderStore;
use orders_daemons::local_pipeline::{LocalOptions, LocalPipeline, Role};
use orders_daemons::producer::{self, max_order_id_on_topic, Pace, ProducerConfig, ProducerDeps};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_orders_end_to_end() {
    let (_dir, mut pipeline) = start(10_000, 0.0, |_| {}).await;
    wait_all_done(&pipeline, 10_000).await;
    pipeline.stop().await.unwrap();
    assert_exact(pipeline.store.as_ref(), 10_000).await;
    assert_eq!(
        total_lag(&pipeline.kafka()).await,
        0,
        "lag after the final commit"
    );
    topics::assert_analytics_topic(&pipeline.kafka(), 10_000).await;
    let counts = topics::assert_records_match_schemas(&pipeline.kafka()).await;
    assert_eq!(
        counts["orders"], 10_000,
        "orders checked against the schema"
    );
    assert!(
        counts[PAYMENTS_TOPIC] >= 10_000,
        "payments checked: {counts:?}"
    );
    assert!(counts[FRAUD_ALERTS_TOPIC] > 0, "alerts checked: {counts:?}");
    assert!(
        counts["order-analytics"] > 8,
        "analytics checked: {counts:?}"
    );
}

/// A producer at full speed against a slow broker keeps at most
/// [`producer::MAX_UNANSWERED`] orders handed to librdkafka and not yet answered for: it
/// queued the whole run there before (200,000 orders, most of its 37-81 MB of RSS).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_producer_at_full_speed_keeps_a_bounded_number_of_orders_unanswered() {
    let broker =
        tokio::task::spawn_blocking(|| EmbeddedBroker::start(&pipeline_topics("orders")).unwrap())
            .await
            .unwrap();
    // Every answer 20 ms late: the generator outruns the broker by far.
    broker
        .inject(BrokerFault::RoundTripTime(1, Duration::from_millis(20)))
        .unwrap();
    let progress = std::sync::Arc::new(orders_daemons::progress::Progress::default());
    let deps = ProducerDeps {
        kafka: broker.settings(),
        store: None,
        progress: progress.clone(),
        flow_window: None,
    };
    let orders = 5 * producer::MAX_UNANSWERED;
    let run = tokio::spawn(producer::run(
        producer(orders, 0.0),
        deps,
        tokio_util::sync::CancellationToken::new(),
    ));
    let mut most_unanswered = 0;
    while !run.is_finished() {
        let sent = progress
            .orders_sent
            .load(std::sync::atomic::Ordering::Relaxed);
        let produced = progress
            .orders_produced
            .load(std::sync::atomic::Ordering::Relaxed);
        most_unanswered = most_unanswered.max(sent.saturating_sub(produced));
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(run.await.unwrap().unwrap(), orders);
    assert!(
        most_unanswered <= producer::MAX_UNANSWERED,
        "{most_unanswered} orders unanswered at once (bound {})",
        producer::MAX_UNANSWERED
    );
    // The bound is reached: it is what limits the producer here, not the generator.
    assert!(
        most_unanswered > producer::MAX_UNANSWERED / 2,
        "{most_unanswered}"
    );
}

/// A daemon process that is killed if the test ends early (a failed assertion included).
async fn crash_and_restart(role: Role, name: &str) {
    let (dir, mut pipeline) = start(10_000, 2_000.0, |o| {
        o.flow_window = u64::MAX; // one group runs in another process
        o.consumers = vec![Role::Fraud, Role::Payment, Role::Analytics]
            .into_iter()
            .filter(|r| *r != role)
            .collect();
    })
    .await;
    let kafka = pipeline.bootstrap_servers().to_owned();
    let store = pipeline.store.clone();

    let first = ordersd(&kafka, dir.path(), name);
    let s = store.clone();
    eventually("the daemon is mid-stream", Duration::from_secs(120), || {
        let s = s.clone();
        async move {
            let t = s.totals().await.unwrap();
            let n = if role == Role::Payment {
                t.payment_count
            } else {
                t.order_count
            };
            assert!(
                n < 10_000,
                "the stream ended before the crash; slow the producer down"
            );
            n >= 500
        }
    })
    .await;
    crash(first);
    let before = store.totals().await.unwrap();
    // What the killed daemon had made durable but not yet committed: the restart must see
    // those records again (redelivery), and the counts below prove nothing doubled.
    let kafka_settings = pipeline.kafka();
    let redelivered = if role == Role::Payment {
        // Payments published for orders the group had not committed.
        let (committed, _) = committed_and_records(&kafka_settings, PAYMENTS_GROUP, "orders").await;
        let (_, published) =
            committed_and_records(&kafka_settings, PAYMENTS_GROUP, PAYMENTS_TOPIC).await;
        published - committed
    } else {
        let (committed, _) =
            committed_and_records(&kafka_settings, ANALYTICS_GROUP, "orders").await;
        i64::try_from(before.order_count).unwrap() - committed
    };
    assert!(
        redelivered > 0,
        "the crash left nothing uncommitted, so it tests no redelivery"
    );
    let mut second = ordersd(&kafka, dir.path(), name);
    let s = store.clone();
    eventually(
        "everything stored after the restart",
        Duration::from_secs(180),
        || {
            let s = s.clone();
            async move {
                let t = s.totals().await.unwrap();
                t.order_count >= 10_000 && t.payment_count >= 10_000
            }
        },
    )
    .await;
    // A clean stop: SIGTERM, then the final commit.
    let status = terminate(&mut second);
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
    pipeline.stop().await.unwrap();
    assert!(before.order_count < 10_000 || before.payment_count < 10_000);
    assert_exact(store.as_ref(), 10_000).await;
    assert_eq!(total_lag(&pipeline.kafka()).await, 0);
    // The figures published across the crash are exact too: after the restart the
    // redelivered orders were not counted again, nothing was reset.
    topics::assert_analytics_topic(&kafka_settings, 10_000).await;
    if role == Role::Payment {
        // The redelivered orders were paid again on the topic; the store kept one each.
        let (_, published) =
            committed_and_records(&kafka_settings, PAYMENTS_GROUP, PAYMENTS_TOPIC).await;
        assert!(published > 10_000, "payments on the topic: {published}");
    }
    eprintln!("{name}: {redelivered} records made durable but uncommitted before the crash");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn analytics_crash_loses_nothing_and_counts_nothing_twice() {
    crash_and_restart(Role::Analytics, "analytics").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn payment_crash_loses_nothing_and_pays_once() {
    crash_and_restart(Role::Payment, "payment").await;
}

/// The value of header `key` of a dead-lettered record (which must have it).
fn header(m: &impl Message, key: &str) -> String {
    let headers = m.headers().unwrap();
    headers
        .iter()
        .find(|h| h.key == key)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_else(|| panic!("no header {key}"))
}

/// A record's headers as a JSON object (name to value, null without one), the shape the
/// dead-letter headers' schema describes.
fn headers_json(m: &impl Message) -> serde_json::Value {
    let headers = m.headers().unwrap();
    serde_json::Value::Object(
        headers
            .iter()
            .map(|h| {
                let v = h.value.map(|v| String::from_utf8_lossy(v).into_owned());
                (h.key.to_owned(), serde_json::json!(v))
            })
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn poison_records_go_to_the_dead_letter_topic() {
    let dir = tempfile::tempdir().unwrap();
    let mut pipeline = LocalPipeline::start(LocalOptions::new(dir.path().join("orders.db")))
        .await
        .unwrap();
    let kafka = pipeline.bootstrap_servers().to_owned();
    let raw: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &kafka)
        .set("message.max.bytes", "3000000")
        .create()
        .unwrap();
    let generator = OrderGenerator::new(SEED);
    let good = |id: u64| generator.order(id, Timestamp::now()).to_json();
    let big = format!(r#"{{"order_id": 999, "pad": "{}"}}"#, "x".repeat(1_100_000));
    let poison: Vec<(&str, Vec<u8>)> = vec![
        ("not-json", b"this is not json".to_vec()),
        ("schema", br#"{"order_id": 7, "customer_id": 1234}"#.to_vec()),
        ("schema", br#"{"order_id": "eight", "customer_id": 1234, "amount": 10.0, "currency": "USD", "country": "US", "status": "CREATED", "created_at": "2024-01-15T10:30:00Z"}"#.to_vec()),
        ("invalid-value", br#"{"order_id": 9, "customer_id": 1234, "amount": -5.0, "currency": "USD", "country": "US", "status": "CREATED", "created_at": "2024-01-15T10:30:00Z"}"#.to_vec()),
        ("oversized", big.into_bytes()),
        // An id no reader holds exactly; it must not move the producer's next id either.
        ("invalid-value", br#"{"order_id": 18446744073709551615, "customer_id": 1234, "amount": 5.0, "currency": "USD", "country": "US", "status": "CREATED", "created_at": "2024-01-15T10:30:00Z"}"#.to_vec()),
    ];
    let mut id = 1;
    let mut send_good = |count: u64| {
        for _ in 0..count {
            raw.send(
                BaseRecord::to("orders")
                    .key(&id.to_string())
                    .payload(&good(id)),
            )
            .unwrap();
            id += 1;
        }
    };
    let send_poison = |key: &str, payload: &[u8]| {
        raw.send(
            BaseRecord::<str, [u8]>::to("orders")
                .key(key)
                .payload(payload),
        )
        .unwrap();
    };
    let (huge_id, others) = poison.split_last().unwrap();
    for (_, payload) in others {
        send_good(20);
        send_poison("poison", payload);
    }
    send_good(20);
    // Last on its partition, keyed like an order, as a misbehaving producer would: the
    // record the next producer reads to find the highest id in use.
    send_poison("18446744073709551615", &huge_id.1);
    // The topics analytics reads besides orders get theirs too.
    let side_poison = [
        (
            FRAUD_ALERTS_TOPIC,
            "schema",
            br#"{"order_id": 3, "reason": 7}"#.to_vec(),
        ),
        (PAYMENTS_TOPIC, "not-json", b"{{{".to_vec()),
    ];
    for (topic, _, payload) in &side_poison {
        raw.send(
            BaseRecord::<str, [u8]>::to(topic)
                .key("3")
                .payload(payload.as_slice()),
        )
        .unwrap();
    }
    raw.flush(Duration::from_secs(10)).unwrap();
    let good_count = id - 1;
    let total = good_count + poison.len() as u64;
    let analytics_dead = (poison.len() + side_poison.len()) as u64;
    let progress = pipeline.progress.clone();
    eventually(
        "all records handled by every group",
        Duration::from_secs(120),
        || {
            let p = progress.clone();
            async move {
                p.orders_done_by_all() >= total
                    && p.orders_stored.load(std::sync::atomic::Ordering::Relaxed) >= good_count
                    && p.payments_stored.load(std::sync::atomic::Ordering::Relaxed) >= good_count
                    && p.analytics
                        .dead_lettered
                        .load(std::sync::atomic::Ordering::Relaxed)
                        >= analytics_dead
            }
        },
    )
    .await;
    pipeline.stop().await.unwrap();
    let dead = |c: &orders_daemons::progress::GroupCounters| {
        c.dead_lettered.load(std::sync::atomic::Ordering::Relaxed)
    };
    assert_eq!(dead(&progress.fraud), poison.len() as u64);
    assert_eq!(dead(&progress.payments), poison.len() as u64);
    assert_eq!(
        dead(&progress.analytics),
        (poison.len() + side_poison.len()) as u64
    );
    // The good records around the poison went all the way: stored, paid, alerted.
    assert_exact(pipeline.store.as_ref(), good_count).await;
    // The next producer continues after the good ids, not after the poison's.
    let settings = pipeline.kafka();
    let published = tokio::task::spawn_blocking(move || {
        max_order_id_on_topic(&settings, "orders", Duration::from_secs(10))
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(published, Some(good_count));

    // Every group sent every poison record to orders.dlq, with its reason.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &kafka)
        .set("group.id", "dlq-reader")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("orders.dlq", 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut reasons = Vec::new();
    let dlq_headers = topics::Checker::named("dead-letter-headers");
    let deadline = Instant::now() + Duration::from_secs(30);
    while reasons.len() < poison.len() * 3 && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let get = |k: &str| header(&m, k);
            dlq_headers.check(&headers_json(&m), "orders.dlq");
            assert_eq!(get("dlq.topic"), "orders");
            assert!(!get("dlq.error").is_empty());
            reasons.push((get("dlq.group"), get("dlq.reason")));
        }
    }
    reasons.sort();
    let mut expected: Vec<(String, String)> = ORDER_GROUPS
        .iter()
        .flat_map(|g| {
            poison
                .iter()
                .map(move |(r, _)| (g.to_string(), r.to_string()))
        })
        .collect();
    expected.sort();
    assert_eq!(reasons, expected);

    for (topic, reason, _) in &side_poison {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&format!("{topic}.dlq"), 0, Offset::Beginning)
            .unwrap();
        consumer.assign(&tpl).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let m = loop {
            assert!(Instant::now() < deadline, "nothing on {topic}.dlq");
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
                break m.detach();
            }
        };
        let get = |k: &str| header(&m, k);
        dlq_headers.check(&headers_json(&m), topic);
        assert_eq!(get("dlq.topic"), *topic);
        assert_eq!(get("dlq.reason"), *reason);
        assert_eq!(get("dlq.group"), ANALYTICS_GROUP);
    }
}

/// Analytics against a Couchbase that never answers: it keeps running, stores nothing and
/// commits nothing (so every order waits in Kafka for the store to come back).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn analytics_waits_for_an_unreachable_couchbase_without_committing() {
    const N: u64 = 200;
    let (_dir, mut pipeline) = start(N, 0.0, |o| {
        o.flow_window = u64::MAX; // analytics runs in another process
        o.consumers = vec![Role::Fraud, Role::Payment];
    })
    .await;
    let kafka = pipeline.bootstrap_servers().to_owned();
    let couchbase = free_port();
    let mut analytics = Daemon(Some(
        Command::new(env!("CARGO_BIN_EXE_ordersd"))
            // Each daemon its own ops port: several run at once.
            .env("ORDERS_OPS_ADDR", "127.0.0.1:0")
            .args(["--kafka-bootstrap-servers", &kafka])
            .args([
                "--couchbase-host",
                &format!("couchbase://127.0.0.1:{couchbase}"),
            ])
            .args(["--couchbase-username", "app", "--couchbase-password", "pw"])
            .arg("analytics")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    ));
    let progress = pipeline.progress.clone();
    eventually("fraud and payment done", Duration::from_secs(60), || {
        let p = progress.clone();
        async move {
            p.fraud
                .orders_done
                .load(std::sync::atomic::Ordering::Relaxed)
                >= N
                && p.payments
                    .orders_done
                    .load(std::sync::atomic::Ordering::Relaxed)
                    >= N
        }
    })
    .await;
    // Long enough for several connection attempts and auto-commit intervals.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let child = analytics.0.as_mut().unwrap();
    assert!(
        child.try_wait().unwrap().is_none(),
        "analytics kept running"
    );
    let settings = pipeline.kafka();
    let lag = tokio::task::spawn_blocking(move || {
        consumer_lag(
            &settings,
            ANALYTICS_GROUP,
            &["orders"],
            Duration::from_secs(10),
        )
        .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(lag.total(), N as i64, "nothing committed: {lag:?}");
    drop(analytics);
    pipeline.stop().await.unwrap();
}

#[path = "pipeline/faults.rs"]
mod faults;

/// Two sources give one order id to two different orders: the second is not stored, not
/// counted, and not taken for a redelivery — analytics dead-letters it with reason
/// `id-conflict`, counted, and the audit names the id.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_order_id_arriving_with_other_content_is_dead_lettered_as_a_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let mut pipeline = LocalPipeline::start(LocalOptions::new(dir.path().join("orders.db")))
        .await
        .unwrap();
    let kafka = pipeline.bootstrap_servers().to_owned();
    let raw: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &kafka)
        .create()
        .unwrap();
    let generator = OrderGenerator::new(SEED);
    let first = generator.order(9_100_001, Timestamp::now());
    let mut second = first.clone();
    second.amount = Cents(first.amount.0 + 100);
    second.source = Some("another-service".into());
    let send = |o: &Order| {
        raw.send(
            BaseRecord::to("orders")
                .key(&o.order_id.to_string())
                .payload(&o.to_json()),
        )
        .unwrap();
    };
    // The same record twice is a redelivery, then the other order under the same id.
    send(&first);
    send(&first);
    send(&second);
    raw.flush(Duration::from_secs(10)).unwrap();
    let conflicts = DecodeError::CODES
        .iter()
        .position(|c| *c == "id-conflict")
        .unwrap();
    let progress = pipeline.progress.clone();
    eventually(
        "the conflict dead-lettered",
        Duration::from_secs(60),
        || {
            let p = progress.clone();
            async move {
                p.orders_done_by_all() >= 3
                    && p.analytics.dead_lettered_by_reason[conflicts]
                        .load(std::sync::atomic::Ordering::Relaxed)
                        == 1
            }
        },
    )
    .await;

    // The first order stands, counted once.
    let stored = pipeline.store.order(9_100_001).await.unwrap().unwrap();
    assert_eq!(stored.order, first);
    let totals = pipeline.store.totals().await.unwrap();
    assert_eq!((totals.order_count, totals.total_sales), (1, first.amount));

    // On orders.dlq from analytics-group, with the record as it came and what differs.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &kafka)
        .set("group.id", "dlq-reader")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("orders.dlq", 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let m = loop {
        assert!(Instant::now() < deadline, "nothing on orders.dlq");
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            break m;
        }
    };
    assert_eq!(header(&m, "dlq.reason"), "id-conflict");
    assert_eq!(header(&m, "dlq.group"), ANALYTICS_GROUP);
    let error = header(&m, "dlq.error");
    assert!(
        error.contains("9100001") && error.contains("amount, source"),
        "{error}"
    );
    assert_eq!(m.payload().unwrap(), second.to_json().as_slice());
    assert_eq!(m.key().unwrap(), b"9100001");
    assert!(
        consumer.poll(Duration::from_secs(2)).is_none(),
        "one dead letter: the redelivery is none"
    );

    // The audit sees the id given twice, and the dead letter.
    let report = audit_report(&pipeline).await;
    assert!(!report.is_clean());
    assert_eq!(
        report
            .discrepancies
            .orders_conflicting
            .order_ids
            .iter()
            .collect::<Vec<_>>(),
        vec![&9_100_001]
    );
    pipeline.stop().await.unwrap();
}
#[path = "pipeline/canary.rs"]
mod canary;
#[path = "pipeline/topics.rs"]
mod topics;
