//! The audit against the embedded broker and a real SQLite file, with the pipeline's
//! records written by hand so that every offset, commit and store write is exactly where
//! a case needs it: redeliveries, conflicts, in-flight records, retention, records that
//! arrive during the audit, dead letters, and unreachable Kafka.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use async_trait::async_trait;
use orders_core::audit::{audit, AuditError, AuditOptions, AuditReport};
use orders_core::domain::{FraudAlert, Order, Payment, PaymentStatus, Timestamp};
use orders_core::fraud::FraudRules;
use orders_core::generator::OrderGenerator;
use orders_core::kafka::{
    pipeline_topics, EmbeddedBroker, KafkaSettings, ANALYTICS_GROUP, FRAUD_ALERTS_TOPIC,
    FRAUD_GROUP, PAYMENTS_GROUP, PAYMENTS_TOPIC,
};
use orders_core::store::*;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const ORDERS: &str = "orders";

/// A broker with the pipeline's topics, a store, and hands to play every daemon.
struct World {
    _dir: tempfile::TempDir,
    _broker: EmbeddedBroker,
    kafka: KafkaSettings,
    store: SqliteStore,
    producer: FutureProducer,
    generator: OrderGenerator,
    rules: FraudRules,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let broker = EmbeddedBroker::start(&pipeline_topics(ORDERS)).unwrap();
        let kafka = broker.settings();
        let producer = kafka
            .producer_config("audit-test")
            .set("message.max.bytes", "2000000")
            // Uncompressed: padded records take their size on the broker.
            .set("compression.type", "none")
            .create()
            .unwrap();
        World {
            store: SqliteStore::open(dir.path().join("orders.db")).unwrap(),
            _dir: dir,
            _broker: broker,
            kafka,
            producer,
            generator: OrderGenerator::new(5),
            rules: FraudRules::default(),
        }
    }

    fn order(&self, id: u64) -> Order {
        self.generator.order(id, Timestamp::now())
    }

    /// Produces a record; returns its partition and offset.
    async fn send(&self, topic: &str, partition: i32, key: &str, payload: &[u8]) -> (i32, i64) {
        self.send_with(
            FutureRecord::to(topic)
                .partition(partition)
                .key(key)
                .payload(payload),
        )
        .await
    }

    async fn send_with(&self, record: FutureRecord<'_, str, [u8]>) -> (i32, i64) {
        let delivery = self
            .producer
            .send(record, Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)
            .unwrap();
        (delivery.partition, delivery.offset)
    }

    /// The producer's part: the order onto partition `id % 6`. Returns it as analytics
    /// would store it.
    async fn produce_order(&self, order: &Order) -> StoredOrder {
        let partition = (order.order_id % 6) as i32;
        let (partition, offset) = self
            .send(ORDERS, partition, &order.key(), &order.to_json())
            .await;
        StoredOrder {
            order: order.clone(),
            kafka_partition: partition,
            kafka_offset: offset,
            processed_at: Timestamp::now(),
        }
    }

    /// The fraud service's part: the alert the rules raise, if any.
    async fn produce_alert(&self, order: &Order) -> Option<FraudAlert> {
        let alert = self.rules.evaluate(order)?;
        let partition = (order.order_id % 6) as i32;
        self.send(
            FRAUD_ALERTS_TOPIC,
            partition,
            &order.key(),
            &alert.to_json(),
        )
        .await;
        Some(alert)
    }

    /// The payment service's part.
    async fn produce_payment(&self, order: &Order) -> Payment {
        let payment = Payment {
            order_id: order.order_id,
            status: PaymentStatus::Paid,
            amount: order.amount,
            country: order.country,
            timestamp: 1_705_314_600.5,
        };
        let partition = (order.order_id % 6) as i32;
        self.send(PAYMENTS_TOPIC, partition, &order.key(), &payment.to_json())
            .await;
        payment
    }

    /// Orders `ids` through every service and into the store.
    async fn pipeline(&self, ids: impl IntoIterator<Item = u64>) {
        let mut batch = StoreBatch::default();
        for id in ids {
            let order = self.order(id);
            batch.orders.push(self.produce_order(&order).await);
            batch.alerts.extend(self.produce_alert(&order).await);
            batch.payments.push(self.produce_payment(&order).await);
        }
        self.store.apply(Arc::new(batch)).await.unwrap();
    }

    /// Commits `group`'s offsets on `topic` as a consumer of that group would.
    fn commit(&self, group: &str, topic: &str, offsets: &[(i32, i64)]) {
        let consumer = self.kafka.admin_consumer("audit-test", group).unwrap();
        let mut tpl = TopicPartitionList::new();
        for (partition, offset) in offsets {
            tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))
                .unwrap();
        }
        consumer.commit(&tpl, CommitMode::Sync).unwrap();
    }

    /// Every group done with everything on its topics.
    fn commit_all(&self) {
        let consumer = self.kafka.admin_consumer("audit-test", "x").unwrap();
        let end = |topic: &str| -> Vec<(i32, i64)> {
            (0..6)
                .map(|p| {
                    let (_, high) = consumer
                        .fetch_watermarks(topic, p, Duration::from_secs(10))
                        .unwrap();
                    (p, high)
                })
                .collect()
        };
        for group in [FRAUD_GROUP, PAYMENTS_GROUP, ANALYTICS_GROUP] {
            self.commit(group, ORDERS, &end(ORDERS));
        }
        self.commit(
            ANALYTICS_GROUP,
            FRAUD_ALERTS_TOPIC,
            &end(FRAUD_ALERTS_TOPIC),
        );
        self.commit(ANALYTICS_GROUP, PAYMENTS_TOPIC, &end(PAYMENTS_TOPIC));
    }

    async fn audit_with(&self, store: &dyn OrderStore) -> AuditReport {
        let options = AuditOptions {
            page_size: 7,
            timeout: Duration::from_secs(20),
            ..AuditOptions::default()
        };
        audit(&self.kafka, store, &self.rules, &options)
            .await
            .unwrap()
    }

    async fn audit(&self) -> AuditReport {
        self.audit_with(&self.store).await
    }
}

fn ids(f: &orders_core::audit::Finding) -> Vec<u64> {
    f.order_ids.iter().copied().collect()
}

fn found(report: &AuditReport) -> Vec<(&'static str, u64)> {
    report.discrepancies.found()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_pipeline_audits_clean_and_redeliveries_are_counted() {
    let w = World::new();
    w.pipeline(1..=60).await;
    // Redeliveries: an order produced again unchanged, its alert and payment again.
    let again = w
        .store
        .orders_before(Some(21), 1)
        .await
        .unwrap()
        .remove(0)
        .order;
    assert_eq!(again.order_id, 20);
    w.produce_order(&again).await;
    let flagged = (1..=60)
        .map(|id| w.order(id))
        .find(|o| w.rules.evaluate(o).is_some())
        .unwrap();
    w.produce_alert(&flagged).await;
    w.produce_payment(&again).await;
    w.produce_payment(&again).await;
    w.commit_all();

    let report = w.audit().await;
    assert!(report.is_clean(), "{}", report.summary());
    let expected_alerts = (1..=60)
        .filter(|id| w.rules.evaluate(&w.order(*id)).is_some())
        .count() as u64;
    assert!(expected_alerts > 0);
    assert_eq!(report.orders.topic_records, 61);
    assert_eq!(
        (
            report.orders.on_topic,
            report.orders.stored,
            report.orders.redelivered
        ),
        (60, 60, 1)
    );
    assert_eq!(
        (
            report.fraud.alerts_expected,
            report.fraud.stored,
            report.fraud.redelivered
        ),
        (expected_alerts, expected_alerts, 1)
    );
    assert_eq!(
        (
            report.payments.on_topic,
            report.payments.stored,
            report.payments.redelivered
        ),
        (60, 60, 2)
    );
    assert_eq!(report.payments.paid, 60);
    assert_eq!(report.in_flight, Default::default());
    assert!(report.totals.mismatches.is_empty());
    assert_eq!(report.totals.counted, report.totals.stored);
    assert_eq!(report.snapshot.partitions.len(), 6 * 3 + 3);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["consistent"], true);
    assert_eq!(json["discrepancies"]["orders_not_stored"]["count"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivery_with_other_content_is_a_conflict() {
    let w = World::new();
    w.pipeline(1..=10).await;
    let mut changed = w.order(7);
    changed.amount.0 += 1;
    w.produce_order(&changed).await;
    w.commit_all();
    let report = w.audit().await;
    assert_eq!(found(&report), [("orders_conflicting", 1)]);
    assert_eq!(ids(&report.discrepancies.orders_conflicting), [7]);
    assert_eq!(report.orders.redelivered, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_beyond_the_committed_offsets_are_in_flight_not_missing() {
    let w = World::new();
    // Twenty orders on partition 0 only (ids that are multiples of 6), at offsets 0..20.
    let orders: Vec<Order> = (1..=20).map(|i| w.order(i * 6)).collect();
    let mut stored = Vec::new();
    for o in &orders {
        stored.push(w.produce_order(o).await);
    }
    // Analytics stored the first 10; fraud decided on all; payment paid the first 5, and
    // analytics stored those payments.
    w.store
        .apply(Arc::new(StoreBatch {
            orders: stored[..10].to_vec(),
            ..StoreBatch::default()
        }))
        .await
        .unwrap();
    let mut alerts = Vec::new();
    for o in &orders {
        alerts.extend(w.produce_alert(o).await);
    }
    let mut payments = Vec::new();
    for o in &orders[..5] {
        payments.push(w.produce_payment(o).await);
    }
    w.store
        .apply(Arc::new(StoreBatch {
            alerts: alerts.clone(),
            payments,
            ..StoreBatch::default()
        }))
        .await
        .unwrap();
    w.commit(ANALYTICS_GROUP, ORDERS, &[(0, 10)]);
    w.commit(FRAUD_GROUP, ORDERS, &[(0, 20)]);
    w.commit(PAYMENTS_GROUP, ORDERS, &[(0, 5)]);
    w.commit(
        ANALYTICS_GROUP,
        FRAUD_ALERTS_TOPIC,
        &[(0, alerts.len() as i64)],
    );
    w.commit(ANALYTICS_GROUP, PAYMENTS_TOPIC, &[(0, 5)]);

    let report = w.audit().await;
    assert!(report.is_clean(), "{}", report.summary());
    assert_eq!(report.in_flight.orders_not_yet_stored, 10);
    assert_eq!(report.in_flight.payments_not_yet_made, 15);
    assert_eq!(report.in_flight.alerts_not_yet_raised, 0);

    // Analytics commits past five more orders it never stored: those are lost.
    w.commit(ANALYTICS_GROUP, ORDERS, &[(0, 15)]);
    // The payment service pays two more; analytics has not stored them yet.
    for o in &orders[5..7] {
        w.produce_payment(o).await;
    }
    let report = w.audit().await;
    assert_eq!(found(&report), [("orders_not_stored", 5)]);
    let lost: Vec<u64> = orders[10..15].iter().map(|o| o.order_id).collect();
    assert_eq!(ids(&report.discrepancies.orders_not_stored), lost);
    assert_eq!(report.in_flight.orders_not_yet_stored, 5);
    assert_eq!(report.in_flight.payments_not_yet_stored, 2);
    assert_eq!(report.in_flight.payments_not_yet_made, 13);

    // The payment group commits past them all without paying the rest: missing payments;
    // analytics commits past the two payments on the topic without storing them.
    w.commit(PAYMENTS_GROUP, ORDERS, &[(0, 20)]);
    w.commit(ANALYTICS_GROUP, PAYMENTS_TOPIC, &[(0, 7)]);
    let report = w.audit().await;
    assert_eq!(report.discrepancies.payments_missing.count, 15);
    assert_eq!(report.in_flight.payments_not_yet_made, 0);
    assert_eq!(report.in_flight.payments_not_yet_stored, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fraud_decisions_are_judged_by_the_rules_in_force() {
    let w = World::new();
    w.pipeline(1..=40).await;
    w.commit_all();
    let flagged: Vec<u64> = (1..=40)
        .filter(|id| w.rules.evaluate(&w.order(*id)).is_some())
        .collect();
    assert!(flagged.len() >= 2, "{flagged:?}");
    // Under stricter rules (every order above $0 from anywhere) the unflagged orders
    // lack alerts; under none at all, every alert is extra.
    let report = audit(
        &w.kafka,
        &w.store,
        &FraudRules(vec![orders_core::fraud::FraudRule {
            id: "all".into(),
            reason: "HIGH_AMOUNT_RISKY_COUNTRY".into(),
            above: orders_core::Cents(0),
            except_countries: BTreeSet::new(),
            only_countries: BTreeSet::new(),
        }]),
        &AuditOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        found(&report),
        [("alerts_missing", 40 - flagged.len() as u64)]
    );
    let report = audit(
        &w.kafka,
        &w.store,
        &FraudRules(vec![]),
        &AuditOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(found(&report), [("alerts_extra", flagged.len() as u64)]);
    assert_eq!(ids(&report.discrepancies.alerts_extra), flagged);
    // A rule of another name fires on the same orders: the stored reasons differ.
    let mut renamed = FraudRules::default();
    renamed.0[0].reason = "SOMETHING_ELSE".into();
    let report = audit(&w.kafka, &w.store, &renamed, &AuditOptions::default())
        .await
        .unwrap();
    assert_eq!(found(&report), [("alerts_differ", flagged.len() as u64)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_orders_the_topic_no_longer_holds_are_counted_apart() {
    let w = World::new();
    // Orders padded with an unknown field (readers accept it) past the broker's ~5 MiB per
    // partition, all on partition 0: the oldest drop out of the topic.
    let pad = "x".repeat(20_000);
    let mut batch = StoreBatch::default();
    for i in 1..=400 {
        let order = w.order(i * 6);
        let mut json: serde_json::Value = serde_json::from_slice(&order.to_json()).unwrap();
        json["pad"] = serde_json::json!(pad);
        let payload = serde_json::to_vec(&json).unwrap();
        let (partition, offset) = w.send(ORDERS, 0, &order.key(), &payload).await;
        batch.orders.push(StoredOrder {
            order: order.clone(),
            kafka_partition: partition,
            kafka_offset: offset,
            processed_at: Timestamp::now(),
        });
        batch.alerts.extend(w.produce_alert(&order).await);
        batch.payments.push(w.produce_payment(&order).await);
    }
    w.store.apply(Arc::new(batch)).await.unwrap();
    w.commit_all();
    let report = w.audit().await;
    let low = report
        .snapshot
        .partitions
        .iter()
        .find(|p| p.topic == ORDERS && p.partition == 0)
        .unwrap()
        .low_watermark;
    assert!(low > 0, "nothing dropped: pad more");
    assert!(report.is_clean(), "{}", report.summary());
    assert_eq!(report.orders.no_longer_on_topic, low as u64);
    assert_eq!(
        report.orders.on_topic + report.orders.no_longer_on_topic,
        400
    );

    // Still judged: a gone order's payment must be there.
    let gone = w.order(6);
    assert!(report
        .snapshot
        .partitions
        .iter()
        .any(|p| p.low_watermark > 0));
    tamper(
        &w.store,
        "DELETE FROM payments WHERE order_id = ?1",
        gone.order_id,
    );
    let report = w.audit().await;
    assert_eq!(found(&report).first(), Some(&("payments_missing", 1)));
    assert_eq!(ids(&report.discrepancies.payments_missing), [gone.order_id]);
}

/// Runs one statement with `?1 = id` on the store's file, behind the store's back.
fn tamper(store: &SqliteStore, sql: &str, id: u64) {
    let conn = rusqlite::Connection::open(store.path()).unwrap();
    assert_eq!(conn.execute(sql, [id as i64]).unwrap(), 1, "{sql}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_orders_off_the_topic_are_placed_by_where_they_were() {
    let w = World::new();
    w.pipeline(1..=12).await;
    w.commit_all();
    let high = |p: i32, r: &AuditReport| {
        r.snapshot
            .partitions
            .iter()
            .find(|s| s.topic == ORDERS && s.partition == p)
            .unwrap()
            .high_watermark
    };
    let before = w.audit().await;
    assert!(before.is_clean(), "{}", before.summary());
    // Partition 0 holds orders 6 and 12 at offsets 0 and 1.
    assert_eq!(high(0, &before), 2);
    let stored_at = |id: u64, offset: i64, processed_at: Timestamp| StoredOrder {
        order: w.order(id),
        kafka_partition: 0,
        kafka_offset: offset,
        processed_at,
    };
    let long_ago = Timestamp::from_micros(1_600_000_000_000_000).unwrap();
    w.store
        .apply(Arc::new(StoreBatch {
            orders: vec![
                // Where the topic holds another order: not on the topic.
                stored_at(100, 1, Timestamp::now()),
                // Stored before the partition's oldest record was written: from a topic
                // since recreated (a restarted embedded broker), gone, so judged done.
                stored_at(101, 0, long_ago),
                // Beyond the snapshot: arrived during the audit, so still in flight.
                stored_at(102, 2, Timestamp::now()),
            ],
            payments: vec![w.produce_payment(&w.order(101)).await],
            alerts: w.rules.evaluate(&w.order(101)).into_iter().collect(),
            ..StoreBatch::default()
        }))
        .await
        .unwrap();
    w.commit_all();
    let report = w.audit().await;
    assert_eq!(found(&report), [("orders_not_on_topic", 1)]);
    assert_eq!(ids(&report.discrepancies.orders_not_on_topic), [100]);
    assert_eq!(report.orders.no_longer_on_topic, 1);
    assert_eq!(report.in_flight.orders_after_snapshot, 1);
    assert_eq!(
        report.in_flight.payments_not_yet_made, 1,
        "102 arrived after the snapshot: its payment may still come"
    );
    // The payment of 101 on the topic belongs to a known order: no unknown payments.
    assert_eq!(report.payments.on_topic, 13);
}

/// The SQLite store, with writes made (by `arrive`) the moment the audit's scan begins:
/// as if the pipeline stored them while the audit ran.
struct ArrivingDuringScan {
    inner: SqliteStore,
    arrive: Mutex<Option<futures::future::BoxFuture<'static, ()>>>,
}

#[async_trait]
impl OrderStore for ArrivingDuringScan {
    async fn apply(&self, batch: Arc<StoreBatch>) -> Result<BatchOutcome, StoreError> {
        self.inner.apply(batch).await
    }
    async fn totals(&self) -> Result<Totals, StoreError> {
        self.inner.totals().await
    }
    async fn minute_windows(&self, from: i64, to: i64) -> Result<Vec<MinuteWindow>, StoreError> {
        self.inner.minute_windows(from, to).await
    }
    async fn max_order_id(&self) -> Result<Option<u64>, StoreError> {
        self.inner.max_order_id().await
    }
    async fn latest_orders(&self, q: &OrderQuery) -> Result<Vec<OrderDocument>, StoreError> {
        self.inner.latest_orders(q).await
    }
    async fn order(&self, id: u64) -> Result<Option<OrderDocument>, StoreError> {
        self.inner.order(id).await
    }
    async fn alert(&self, id: u64) -> Result<Option<StoredAlert>, StoreError> {
        self.inner.alert(id).await
    }
    async fn payment(&self, id: u64) -> Result<Option<StoredPayment>, StoreError> {
        self.inner.payment(id).await
    }
    async fn latest_alerts(&self, limit: usize) -> Result<Vec<StoredAlert>, StoreError> {
        self.inner.latest_alerts(limit).await
    }
    async fn latest_payments(&self, limit: usize) -> Result<Vec<StoredPayment>, StoreError> {
        self.inner.latest_payments(limit).await
    }
    async fn orders_before(
        &self,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<StoredOrder>, StoreError> {
        let arrive = self.arrive.lock().unwrap().take();
        if let Some(arrive) = arrive {
            arrive.await;
        }
        self.inner.orders_before(before, limit).await
    }
    async fn alerts_before(
        &self,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<StoredAlert>, StoreError> {
        self.inner.alerts_before(before, limit).await
    }
    async fn payments_before(
        &self,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<StoredPayment>, StoreError> {
        self.inner.payments_before(before, limit).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
    async fn record_canary_stages(
        &self,
        stages: Arc<Vec<orders_core::canary::CanaryStage>>,
    ) -> Result<(), StoreError> {
        self.inner.record_canary_stages(stages).await
    }
    async fn canaries_before(
        &self,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<orders_core::canary::CanaryJourney>, StoreError> {
        self.inner.canaries_before(before, limit).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_arriving_during_the_audit_are_new_and_unknown_orders_are_reported() {
    let w = Arc::new(World::new());
    w.pipeline(1..=10).await;
    // An alert and a payment for an order no one ever produced.
    let nobody = w.order(5_000);
    w.store
        .apply(Arc::new(StoreBatch {
            alerts: vec![FraudAlert {
                order_id: 5_000,
                reason: "HIGH_AMOUNT_RISKY_COUNTRY".into(),
                amount: nobody.amount,
                country: nobody.country,
                rule_id: None,
                detected_at: None,
            }],
            payments: vec![w.produce_payment(&nobody).await],
            ..StoreBatch::default()
        }))
        .await
        .unwrap();
    w.commit_all();
    // While the audit runs: an order produced whose alert and payment are stored before
    // the order itself, and one produced and stored whole.
    let flagged = (5_001..)
        .map(|id| w.order(id))
        .find(|o| w.rules.evaluate(o).is_some())
        .unwrap();
    let whole = w.order(flagged.order_id + 1);
    let whole_flagged = u64::from(w.rules.evaluate(&whole).is_some());
    let world = w.clone();
    let arrive = async move {
        let w = world;
        w.produce_order(&flagged).await;
        let stored_whole = w.produce_order(&whole).await;
        let mut batch = StoreBatch {
            orders: vec![stored_whole],
            ..StoreBatch::default()
        };
        for order in [&flagged, &whole] {
            batch.alerts.extend(w.produce_alert(order).await);
            batch.payments.push(w.produce_payment(order).await);
        }
        w.store.apply(Arc::new(batch)).await.unwrap();
    };
    let store = ArrivingDuringScan {
        inner: w.store.clone(),
        arrive: Mutex::new(Some(Box::pin(arrive))),
    };
    let report = w.audit_with(&store).await;
    assert_eq!(
        found(&report),
        [
            ("alerts_for_unknown_orders", 1),
            ("payments_for_unknown_orders", 1)
        ],
        "{}",
        report.summary()
    );
    assert_eq!(
        ids(&report.discrepancies.alerts_for_unknown_orders),
        [5_000]
    );
    assert_eq!(
        ids(&report.discrepancies.payments_for_unknown_orders),
        [5_000]
    );
    assert_eq!(report.in_flight.orders_after_snapshot, 1);
    assert_eq!(report.in_flight.payments_after_snapshot, 2);
    assert_eq!(report.in_flight.alerts_after_snapshot, 1 + whole_flagged);
    assert!(report.totals.changed_during_audit);
    assert!(report.totals.mismatches.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_reported_by_reason_and_group() {
    let w = World::new();
    w.pipeline(1..=5).await;
    w.send(ORDERS, 3, "poison", b"this is not json").await;
    let dead = |reason: &'static str, group: &'static str| {
        OwnedHeaders::new()
            .insert(Header {
                key: "dlq.reason",
                value: Some(reason),
            })
            .insert(Header {
                key: "dlq.group",
                value: Some(group),
            })
    };
    for (topic, key, reason, group) in [
        ("orders.dlq", "poison", "not-json", FRAUD_GROUP),
        ("orders.dlq", "poison", "not-json", PAYMENTS_GROUP),
        ("orders.dlq", "poison", "not-json", ANALYTICS_GROUP),
        ("payments.dlq", "42", "schema", ANALYTICS_GROUP),
    ] {
        w.send_with(
            FutureRecord::to(topic)
                .key(key)
                .payload(b"{}".as_slice())
                .headers(dead(reason, group)),
        )
        .await;
    }
    w.commit_all();
    let report = w.audit().await;
    assert_eq!(found(&report), [("dead_letters", 4)]);
    assert_eq!(ids(&report.discrepancies.dead_letters), [42]);
    let topics = &report.dead_letters.topics;
    assert_eq!(report.dead_letters.records, 4);
    assert_eq!(topics["orders.dlq"].records, 3);
    assert_eq!(topics["orders.dlq"].by_reason["not-json"], 3);
    assert_eq!(topics["orders.dlq"].by_group.len(), 3);
    assert_eq!(topics["payments.dlq"].by_reason["schema"], 1);
    assert_eq!(topics["fraud-alerts.dlq"].records, 0);
    assert_eq!(report.orders.undecodable.by_reason["not-json"], 1);
    assert_eq!(report.orders.on_topic, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_kafka_and_missing_topics_are_errors_not_reports() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("orders.db")).unwrap();
    let options = AuditOptions {
        timeout: Duration::from_secs(2),
        ..AuditOptions::default()
    };
    let rules = FraudRules::default();
    let nowhere = KafkaSettings::plaintext("127.0.0.1:1");
    let err = audit(&nowhere, &store, &rules, &options).await.unwrap_err();
    assert!(matches!(err, AuditError::KafkaUnreachable(_)), "{err}");
    assert!(err.is_unreachable());

    let topics: Vec<(String, i32)> = pipeline_topics(ORDERS)
        .into_iter()
        .filter(|(t, _)| !t.ends_with(".dlq"))
        .collect();
    let broker = EmbeddedBroker::start(&topics).unwrap();
    let err = audit(&broker.settings(), &store, &rules, &options)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, AuditError::MissingTopic(t) if t == "orders.dlq"),
        "{err}"
    );
}
