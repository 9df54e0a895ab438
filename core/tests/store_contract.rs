//! The store contract: every `OrderStore` adapter passes the same tests. SQLite always runs;
//! Couchbase joins when `COUCHBASE_CONNSTR` points at a cluster (and says so when it does not).
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use orders_core::canary::{CanaryJourney, CanaryLeg, CanaryStage};
use orders_core::domain::{FraudAlert, Order, OrderStatus, Payment, PaymentStatus, Timestamp};
use orders_core::generator::OrderGenerator;
use orders_core::money::Cents;
use orders_core::store::{
    couchbase::{init_store, Freshness},
    CouchbaseConfig, CouchbaseStore, KafkaPosition, OrderQuery, OrderStore, SqliteStore,
    StoreBatch, StoredAlert, StoredOrder, StoredPayment,
};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;

/// A fresh offset: every record of these tests is read at its own, increasing ones.
fn next_offset() -> i64 {
    static NEXT: AtomicI64 = AtomicI64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Where the record of an order (`kind` 0), its alert (1) or its payment (2) was read: on
/// partition id % 6, at a fresh offset the first time, at the same place when redelivered,
/// as Kafka does (the Couchbase store counts each record by its position).
fn position(kind: u8, id: u64) -> KafkaPosition {
    static SEEN: Mutex<BTreeMap<(u8, u64), KafkaPosition>> = Mutex::new(BTreeMap::new());
    *SEEN
        .lock()
        .unwrap()
        .entry((kind, id))
        .or_insert_with(|| KafkaPosition {
            partition: (id % 6) as i32,
            offset: next_offset(),
        })
}

fn stored(order: Order) -> StoredOrder {
    let at = position(0, order.order_id);
    StoredOrder {
        order,
        kafka_partition: at.partition,
        kafka_offset: at.offset,
        processed_at: Timestamp::now(),
    }
}

/// `batch` with the positions of its alerts and payments.
fn positioned(mut batch: StoreBatch) -> Arc<StoreBatch> {
    batch.alert_positions = batch
        .alerts
        .iter()
        .map(|a| position(1, a.order_id))
        .collect();
    batch.payment_positions = (batch.payments.iter())
        .map(|p| position(2, p.order_id))
        .collect();
    Arc::new(batch)
}

fn orders(ids: std::ops::RangeInclusive<u64>) -> Vec<Order> {
    let g = OrderGenerator::new(11);
    ids.map(|id| g.order(id, Timestamp::now())).collect()
}

fn batch_of(orders: &[Order]) -> Arc<StoreBatch> {
    Arc::new(StoreBatch {
        orders: orders.iter().cloned().map(stored).collect(),
        ..StoreBatch::default()
    })
}

fn alert(o: &Order) -> FraudAlert {
    FraudAlert {
        order_id: o.order_id,
        reason: "HIGH_AMOUNT_RISKY_COUNTRY".into(),
        amount: o.amount,
        country: o.country,
        rule_id: Some("r".into()),
        detected_at: Some(Timestamp::now()),
    }
}

fn payment(o: &Order, status: PaymentStatus) -> Payment {
    Payment {
        order_id: o.order_id,
        status,
        amount: o.amount,
        country: o.country,
        timestamp: 1705314600.123,
    }
}

async fn writes_are_idempotent_and_totals_exact(store: &dyn OrderStore) {
    let all = orders(1..=500);
    let first = store.apply(batch_of(&all[..300])).await.unwrap();
    assert_eq!(first.new_orders, 300);
    // A redelivery overlapping the first batch counts only the new orders.
    let second = store.apply(batch_of(&all[200..])).await.unwrap();
    assert_eq!(second.new_orders, 200);
    let again = store.apply(batch_of(&all)).await.unwrap();
    assert_eq!(again.new_orders, 0);

    let t = store.totals().await.unwrap();
    assert_eq!(t.order_count, 500);
    let sum: Cents = all.iter().map(|o| o.amount).sum();
    assert_eq!(t.total_sales, sum);
    assert_eq!(t.average(), Cents(sum.0 / 500));
    let by_country_sum: i64 = t.by_country.values().map(|c| c.sales.0).sum();
    assert_eq!(by_country_sum, sum.0);
    for (country, cs) in &t.by_country {
        let want: Vec<&Order> = all
            .iter()
            .filter(|o| o.country.as_str() == country)
            .collect();
        assert_eq!(cs.count, want.len() as u64, "{country}");
        assert_eq!(cs.sales, want.iter().map(|o| o.amount).sum(), "{country}");
    }
    let by_status_count: u64 = t.by_status.values().map(|c| c.count).sum();
    assert_eq!(by_status_count, 500);
    assert_eq!(store.max_order_id().await.unwrap(), Some(500));
}

async fn alerts_and_payments_join_orders_in_any_order(store: &dyn OrderStore) {
    let all = orders(1_001..=1_010);
    // An alert and a payment that arrive before their order.
    store
        .apply(positioned(StoreBatch {
            alerts: vec![alert(&all[0])],
            payments: vec![payment(&all[0], PaymentStatus::Paid)],
            ..StoreBatch::default()
        }))
        .await
        .unwrap();
    store.apply(batch_of(&all)).await.unwrap();
    // And some after.
    let late = StoreBatch {
        alerts: vec![alert(&all[1]), alert(&all[1])],
        payments: vec![
            payment(&all[1], PaymentStatus::Paid),
            payment(&all[2], PaymentStatus::Failed),
        ],
        ..StoreBatch::default()
    };
    let outcome = store.apply(positioned(late)).await.unwrap();
    assert_eq!(outcome.new_alerts, 1, "one alert per order");
    assert_eq!(outcome.new_payments, 2);

    let doc = store.order(all[0].order_id).await.unwrap().unwrap();
    assert!(doc.fraud);
    assert_eq!(
        doc.fraud_reason.as_deref(),
        Some("HIGH_AMOUNT_RISKY_COUNTRY")
    );
    assert_eq!(doc.payment_status, Some(PaymentStatus::Paid));
    assert_eq!(doc.order, all[0]);
    let doc = store.order(all[1].order_id).await.unwrap().unwrap();
    assert!(doc.fraud);
    let doc = store.order(all[2].order_id).await.unwrap().unwrap();
    assert!(!doc.fraud);
    assert_eq!(doc.payment_status, Some(PaymentStatus::Failed));
    assert_eq!(
        store
            .order(all[3].order_id)
            .await
            .unwrap()
            .unwrap()
            .payment_status,
        None
    );

    let t = store.totals().await.unwrap();
    assert_eq!(t.fraud_count, 2);
    assert_eq!(t.fraud_sales, all[0].amount + all[1].amount);
    assert_eq!(t.payment_count, 3);
    assert_eq!(t.paid_count, 2);

    assert_eq!(
        store
            .alert(all[0].order_id)
            .await
            .unwrap()
            .unwrap()
            .alert
            .reason,
        "HIGH_AMOUNT_RISKY_COUNTRY"
    );
    assert!(store.alert(all[5].order_id).await.unwrap().is_none());
    assert_eq!(
        store
            .payment(all[2].order_id)
            .await
            .unwrap()
            .unwrap()
            .payment
            .status,
        PaymentStatus::Failed
    );
    let alerts = store.latest_alerts(10).await.unwrap();
    assert_eq!(
        alerts.iter().map(|a| a.alert.order_id).collect::<Vec<_>>(),
        vec![1_002, 1_001]
    );
    let payments = store.latest_payments(2).await.unwrap();
    assert_eq!(
        payments
            .iter()
            .map(|p| p.payment.order_id)
            .collect::<Vec<_>>(),
        vec![1_003, 1_002]
    );
}

async fn lists_newest_first_with_filters_and_cursor(store: &dyn OrderStore) {
    let all = orders(2_001..=2_300);
    store.apply(batch_of(&all)).await.unwrap();
    store
        .apply(positioned(StoreBatch {
            alerts: all
                .iter()
                .filter(|o| o.order_id % 7 == 0)
                .map(alert)
                .collect(),
            payments: all
                .iter()
                .filter(|o| o.order_id % 2 == 0)
                .map(|o| payment(o, PaymentStatus::Paid))
                .collect(),
            ..StoreBatch::default()
        }))
        .await
        .unwrap();
    let page = store
        .latest_orders(&OrderQuery {
            limit: 10,
            ..OrderQuery::default()
        })
        .await
        .unwrap();
    let ids: Vec<u64> = page.iter().map(|d| d.order.order_id).collect();
    assert_eq!(ids, (2_291..=2_300).rev().collect::<Vec<_>>());
    let next = store
        .latest_orders(&OrderQuery {
            limit: 5,
            before_id: Some(2_291),
            ..OrderQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(
        next.iter().map(|d| d.order.order_id).collect::<Vec<_>>(),
        vec![2_290, 2_289, 2_288, 2_287, 2_286]
    );

    let de = "DE".parse().unwrap();
    let q = OrderQuery {
        limit: 1000,
        country: Some(de),
        ..OrderQuery::default()
    };
    // Earlier tests left other orders in the store: look at this test's ids only.
    let mine = |docs: Vec<orders_core::store::OrderDocument>| -> Vec<u64> {
        docs.iter()
            .map(|d| d.order.order_id)
            .filter(|id| (2_001..=2_300).contains(id))
            .collect()
    };
    let got = mine(store.latest_orders(&q).await.unwrap());
    let want: Vec<u64> = all
        .iter()
        .rev()
        .filter(|o| o.country == de)
        .map(|o| o.order_id)
        .collect();
    assert_eq!(got, want);

    let q = OrderQuery {
        limit: 1000,
        status: Some(OrderStatus::Cancelled),
        fraud: Some(true),
        ..OrderQuery::default()
    };
    let cancelled_fraud = store.latest_orders(&q).await.unwrap();
    for d in &cancelled_fraud {
        assert_eq!(d.order.status, OrderStatus::Cancelled);
        assert!(d.fraud);
    }
    let want = all
        .iter()
        .filter(|o| o.status == OrderStatus::Cancelled && o.order_id % 7 == 0)
        .count();
    assert_eq!(mine(cancelled_fraud).len(), want);
    let q = OrderQuery {
        limit: 1000,
        fraud: Some(false),
        payment_status: Some(PaymentStatus::Paid),
        ..OrderQuery::default()
    };
    let got = mine(store.latest_orders(&q).await.unwrap());
    assert_eq!(
        got.len(),
        all.iter()
            .filter(|o| o.order_id % 7 != 0 && o.order_id % 2 == 0)
            .count()
    );
    assert!(store.order(999_999).await.unwrap().is_none());
    store.ping().await.unwrap();
}

/// Every page of a full scan, checking the pages' contract on the way: at most
/// `page_size` each, ids strictly descending across pages, a short page last.
async fn scan_all<T>(
    page_size: usize,
    id: impl Fn(&T) -> u64,
    page: impl AsyncFn(Option<u64>, usize) -> Vec<T>,
) -> Vec<T> {
    let mut all: Vec<T> = Vec::new();
    let mut before = None;
    loop {
        let items = page(before, page_size).await;
        assert!(items.len() <= page_size, "page of {}", items.len());
        let last_page = items.len() < page_size;
        if let Some(last) = items.last() {
            before = Some(id(last));
        }
        all.extend(items);
        if last_page {
            break;
        }
    }
    let ids: Vec<u64> = all.iter().map(&id).collect();
    assert!(
        ids.windows(2).all(|w| w[0] > w[1]),
        "ids not strictly descending: {ids:?}"
    );
    all
}

async fn full_scans_page_through_everything_highest_first(store: &dyn OrderStore) {
    let all = orders(3_001..=3_100);
    let batch = batch_of(&all);
    store.apply(batch.clone()).await.unwrap();
    store
        .apply(positioned(StoreBatch {
            alerts: all
                .iter()
                .filter(|o| o.order_id % 5 == 0)
                .map(alert)
                .collect(),
            payments: all
                .iter()
                .filter(|o| o.order_id % 3 == 0)
                .map(|o| payment(o, PaymentStatus::Failed))
                .collect(),
            ..StoreBatch::default()
        }))
        .await
        .unwrap();
    let totals = store.totals().await.unwrap();
    let mine = |id: u64| (3_001..=3_100).contains(&id);

    // Page sizes that do not divide the counts, so the last page is short.
    let orders = scan_all(
        7,
        |o: &StoredOrder| o.order.order_id,
        async |b, n| store.orders_before(b, n).await.unwrap(),
    )
    .await;
    assert_eq!(
        orders.len() as u64,
        totals.order_count,
        "every stored order"
    );
    let scanned: Vec<&StoredOrder> = orders.iter().filter(|o| mine(o.order.order_id)).collect();
    let mut expected: Vec<&StoredOrder> = batch.orders.iter().collect();
    expected.reverse();
    assert_eq!(scanned, expected, "orders exactly as analytics stored them");

    let alerts = scan_all(
        3,
        |a: &StoredAlert| a.alert.order_id,
        async |b, n| store.alerts_before(b, n).await.unwrap(),
    )
    .await;
    assert_eq!(
        alerts.len() as u64,
        totals.fraud_count,
        "every stored alert"
    );
    let scanned: Vec<FraudAlert> = alerts
        .into_iter()
        .map(|a| a.alert)
        .filter(|a| mine(a.order_id))
        .collect();
    let expected: Vec<FraudAlert> = all
        .iter()
        .rev()
        .filter(|o| o.order_id % 5 == 0)
        .map(alert)
        .collect();
    assert_eq!(scanned.len(), expected.len());
    for (got, want) in scanned.iter().zip(&expected) {
        assert_eq!(
            (got.order_id, &got.reason, got.amount, got.country),
            (want.order_id, &want.reason, want.amount, want.country)
        );
    }

    let payments = scan_all(
        4,
        |p: &StoredPayment| p.payment.order_id,
        async |b, n| store.payments_before(b, n).await.unwrap(),
    )
    .await;
    assert_eq!(payments.len() as u64, totals.payment_count);
    let scanned: Vec<Payment> = payments
        .into_iter()
        .map(|p| p.payment)
        .filter(|p| mine(p.order_id))
        .collect();
    let expected: Vec<Payment> = all
        .iter()
        .rev()
        .filter(|o| o.order_id % 3 == 0)
        .map(|o| payment(o, PaymentStatus::Failed))
        .collect();
    assert_eq!(scanned, expected);

    // The cursor is exclusive; a zero limit reads nothing.
    let page = store.orders_before(Some(3_050), 5).await.unwrap();
    assert_eq!(
        page.iter().map(|o| o.order.order_id).collect::<Vec<_>>(),
        vec![3_049, 3_048, 3_047, 3_046, 3_045]
    );
    let page = store.alerts_before(Some(3_050), 2).await.unwrap();
    assert_eq!(
        page.iter().map(|a| a.alert.order_id).collect::<Vec<_>>(),
        vec![3_045, 3_040]
    );
    let page = store.payments_before(Some(3_003), 1).await.unwrap();
    assert!(page.iter().all(|p| p.payment.order_id < 3_003));
    assert!(store.orders_before(None, 0).await.unwrap().is_empty());
    assert!(store.orders_before(Some(1), 10).await.unwrap().is_empty());
}

/// Another client publishes ids far above ours; orders, alerts and payments that arrive
/// after them still list first, and the cursor pages on in arrival order.
async fn lists_by_arrival_not_by_id(store: &dyn OrderStore) {
    let at = |t: Timestamp, orders: &[Order]| StoreBatch {
        orders: orders
            .iter()
            .map(|o| StoredOrder {
                processed_at: t,
                ..stored(o.clone())
            })
            .collect(),
        alerts: orders.iter().map(alert).collect(),
        payments: orders
            .iter()
            .map(|o| payment(o, PaymentStatus::Paid))
            .collect(),
        ..StoreBatch::default()
    };
    let theirs = orders(7_000_001..=7_000_500);
    let ours = orders(4_001..=4_005);
    let t0 = Timestamp::now();
    store.apply(positioned(at(t0, &theirs))).await.unwrap();
    let t1 = Timestamp::from_micros(t0.micros() + 1_000).unwrap();
    store.apply(positioned(at(t1, &ours))).await.unwrap();

    let ids = |docs: &[orders_core::store::OrderDocument]| -> Vec<u64> {
        docs.iter().map(|d| d.order.order_id).collect()
    };
    let page = store
        .latest_orders(&OrderQuery {
            limit: 7,
            ..OrderQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(
        ids(&page),
        vec![4_005, 4_004, 4_003, 4_002, 4_001, 7_000_500, 7_000_499]
    );
    let next = store
        .latest_orders(&OrderQuery {
            limit: 3,
            before_id: Some(7_000_499),
            ..OrderQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(&next), vec![7_000_498, 7_000_497, 7_000_496]);
    let filtered = store
        .latest_orders(&OrderQuery {
            limit: 2,
            before_id: Some(4_001),
            payment_status: Some(PaymentStatus::Paid),
            ..OrderQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(&filtered), vec![7_000_500, 7_000_499]);
    let unknown = OrderQuery {
        limit: 5,
        before_id: Some(999_999),
        ..OrderQuery::default()
    };
    assert!(store.latest_orders(&unknown).await.unwrap().is_empty());

    let alerts = store.latest_alerts(2).await.unwrap();
    let alert_ids: Vec<u64> = alerts.iter().map(|a| a.alert.order_id).collect();
    assert_eq!(alert_ids, vec![4_005, 4_004]);
    let payments = store.latest_payments(2).await.unwrap();
    let payment_ids: Vec<u64> = payments.iter().map(|p| p.payment.order_id).collect();
    assert_eq!(payment_ids, vec![4_005, 4_004]);
}

/// An id stored already, arriving with other content, is refused and named — never taken
/// for a redelivery; a redelivery (same content, to the microsecond) is no conflict.
async fn an_id_with_other_content_is_a_conflict(store: &dyn OrderStore) {
    let before = store.totals().await.unwrap();
    let first = orders(8_800_001..=8_800_002);
    assert_eq!(store.apply(batch_of(&first)).await.unwrap().new_orders, 2);
    let redelivered = store.apply(batch_of(&first)).await.unwrap();
    assert_eq!(
        (redelivered.new_orders, redelivered.conflicts.len()),
        (0, 0)
    );

    let mut other = first[0].clone();
    other.amount = Cents(other.amount.0 + 1);
    other.source = Some("another-service".into());
    let mut batch = (*batch_of(&[other.clone(), first[1].clone()])).clone();
    // Another record (a fresh offset) under a stored id.
    let offset = next_offset();
    batch.orders[0].kafka_partition = 4;
    batch.orders[0].kafka_offset = offset;
    let outcome = store.apply(Arc::new(batch)).await.unwrap();
    assert_eq!(outcome.new_orders, 0);
    assert_eq!(outcome.conflicts.len(), 1, "{:?}", outcome.conflicts);
    let c = &outcome.conflicts[0];
    assert_eq!(
        (c.order_id, c.kafka_partition, c.kafka_offset),
        (8_800_001, 4, offset)
    );
    assert_eq!(c.differing, vec!["amount", "source"]);
    // The first stays, counted once.
    let kept = store.order(8_800_001).await.unwrap().unwrap();
    assert_eq!(kept.order, first[0]);
    let after = store.totals().await.unwrap();
    assert_eq!(after.order_count, before.order_count + 2);
    let sum: Cents = first.iter().map(|o| o.amount).sum();
    assert_eq!(after.total_sales.0, before.total_sales.0 + sum.0);
}

/// Per-minute windows by creation time: each new order once, in its minute and country;
/// redelivery changes nothing; the range is of minutes, start included, end excluded.
async fn minute_windows_are_exact(store: &dyn OrderStore) {
    use orders_core::store::{minute_of, WINDOW_MICROS};
    // Far from every other test's creation times (those use "now").
    let base = minute_of(Timestamp::now().micros()) - 1000 * WINDOW_MICROS;
    let at = |m: i64, s: i64| Timestamp::from_micros(base + m * WINDOW_MICROS + s).unwrap();
    let mut list = orders(8_900_001..=8_900_005);
    let spec = [
        (0, 0, "DE"),
        (0, 59_999_999, "DE"),
        (0, 30_000_000, "US"),
        (2, 1, "FR"),
        (3, 0, "FR"),
    ];
    for (o, (m, s, c)) in list.iter_mut().zip(spec) {
        o.created_at = at(m, s);
        o.country = c.parse().unwrap();
    }
    store.apply(batch_of(&list)).await.unwrap();
    store.apply(batch_of(&list[..3])).await.unwrap();
    let w = store
        .minute_windows(base, base + 3 * WINDOW_MICROS)
        .await
        .unwrap();
    assert_eq!(w.len(), 2, "minutes 0 and 2, not the empty 1 nor 3: {w:?}");
    assert_eq!(w[0].minute, at(0, 0));
    assert_eq!(w[0].order_count, 3);
    let cents = |i: usize| list[i].amount.0;
    assert_eq!(w[0].total_sales.0, cents(0) + cents(1) + cents(2));
    assert_eq!(w[0].by_country["DE"].count, 2);
    assert_eq!(w[0].by_country["DE"].sales.0, cents(0) + cents(1));
    assert_eq!(w[0].by_country["US"].count, 1);
    assert_eq!(w[1].minute, at(2, 0));
    assert_eq!((w[1].order_count, w[1].total_sales.0), (1, cents(3)));
    let later = store
        .minute_windows(base + 3 * WINDOW_MICROS, base + 4 * WINDOW_MICROS)
        .await
        .unwrap();
    assert_eq!(later.len(), 1);
    assert_eq!(later[0].by_country["FR"].sales.0, cents(4));
}

async fn contract(store: &dyn OrderStore) {
    writes_are_idempotent_and_totals_exact(store).await;
    an_id_with_other_content_is_a_conflict(store).await;
    alerts_and_payments_join_orders_in_any_order(store).await;
    lists_newest_first_with_filters_and_cursor(store).await;
    full_scans_page_through_everything_highest_first(store).await;
    lists_by_arrival_not_by_id(store).await;
    minute_windows_are_exact(store).await;
    canary_journeys_merge_stages_apart_from_the_orders(store).await;
}

/// Canary stages arrive from three topics in any order, possibly redelivered: each
/// journey keeps the first time of each stage, lists highest id first in pages, and
/// nothing of it shows in the orders, alerts, payments or totals.
async fn canary_journeys_merge_stages_apart_from_the_orders(store: &dyn OrderStore) {
    let before = store.totals().await.unwrap();
    let t = |ms: i64| Timestamp::from_micros(1_700_000_000_000_000 + ms * 1_000).unwrap();
    let base = 8_000_000_000u64;
    let stages = |id: u64, shift: i64| {
        vec![
            CanaryStage::Paid {
                order_id: id,
                at: t(300 + shift),
            },
            CanaryStage::Stored {
                order_id: id,
                created_at: t(0),
                stored_at: t(400 + shift),
            },
            CanaryStage::Decided {
                order_id: id,
                at: t(100 + shift),
                flagged: shift == 0,
            },
        ]
    };
    // Canary 1 arrives whole; 2 only partly; then everything is redelivered later.
    let mut first = stages(base + 1, 0);
    first.push(stages(base + 2, 0)[0]);
    store.record_canary_stages(Arc::new(first)).await.unwrap();
    store
        .record_canary_stages(Arc::new(stages(base + 3, 0)[1..2].to_vec()))
        .await
        .unwrap();
    let mut again = stages(base + 1, 5_000);
    again.extend(stages(base + 2, 0)[1..].to_vec());
    store.record_canary_stages(Arc::new(again)).await.unwrap();
    store
        .record_canary_stages(Arc::new(Vec::new()))
        .await
        .unwrap();

    let all = store.canaries_before(None, 10).await.unwrap();
    let ids: Vec<u64> = all.iter().map(|j| j.order_id).collect();
    assert_eq!(ids, vec![base + 3, base + 2, base + 1]);
    let one = &all[2];
    assert_eq!(
        *one,
        CanaryJourney {
            order_id: base + 1,
            created_at: Some(t(0)),
            decided_at: Some(t(100)),
            flagged: Some(true),
            paid_at: Some(t(300)),
            stored_at: Some(t(400)),
        },
        "the first time of each stage is kept"
    );
    assert!(one.is_complete());
    assert_eq!(one.seconds(CanaryLeg::Paid), Some(0.3));
    assert!(all[1].is_complete(), "stages from separate writes merge");
    assert_eq!(all[1].flagged, Some(true));
    let three = &all[0];
    assert!(!three.is_complete());
    assert_eq!((three.decided_at, three.paid_at), (None, None));
    assert_eq!(three.stored_at, Some(t(400)));
    // Pages.
    let page = store.canaries_before(Some(base + 3), 1).await.unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].order_id, base + 2);
    assert!(store
        .canaries_before(Some(base + 1), 10)
        .await
        .unwrap()
        .is_empty());
    // Never an order, alert, payment or total.
    for id in base + 1..=base + 3 {
        assert!(store.order(id).await.unwrap().is_none());
        assert!(store.alert(id).await.unwrap().is_none());
        assert!(store.payment(id).await.unwrap().is_none());
    }
    assert_eq!(store.totals().await.unwrap(), before);
}

#[tokio::test]
async fn sqlite_scans_an_empty_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("orders.db")).unwrap();
    assert!(store.orders_before(None, 100).await.unwrap().is_empty());
    assert!(store.alerts_before(None, 100).await.unwrap().is_empty());
    assert!(store.payments_before(None, 100).await.unwrap().is_empty());
}

#[tokio::test]
async fn sqlite_passes_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("orders.db")).unwrap();
    contract(&store).await;
}

/// The same contract against a real cluster: `COUCHBASE_CONNSTR` (a host or a connection
/// string), `COUCHBASE_USERNAME`, `COUCHBASE_PASSWORD`, `COUCHBASE_BUCKET` (default
/// `order_analytics`), `COUCHBASE_DURABILITY` (default `majority`, which a single node meets
/// with a bucket of 0 replicas). Each run writes under its own key prefix, so runs sharing a
/// bucket never see each other's orders (their ids overlap). Its user needs what `ordersctl
/// store init` needs (docs/deploy.md).
#[tokio::test]
async fn couchbase_passes_the_contract() {
    let bucket = std::env::var("COUCHBASE_BUCKET").unwrap_or_else(|_| "order_analytics".into());
    let Some(mut config) = common::couchbase_config(bucket, "couchbase contract") else {
        return;
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    config.key_prefix = format!("contract-{}-{nanos}:", std::process::id());
    // The contract reads its own writes: its lists wait for the indexes (the api's do not).
    config.list_freshness = Freshness::AllWrites;
    eprintln!(
        "couchbase contract: key prefix {}, COUCHBASE_DURABILITY={:?}, lists at request_plus",
        config.key_prefix, config.durability
    );
    // The store only checks its indexes and totals; the test user makes them, as `store
    // init` does.
    let init = init_store(&config, Duration::from_secs(900)).await.unwrap();
    if let Some(problem) = &init.durability_problem {
        panic!(
            "couchbase contract: bucket {} cannot take a write at COUCHBASE_DURABILITY={:?}: \
             {problem}",
            config.bucket, config.durability
        );
    }
    eprintln!("couchbase contract: store init done ({init:?})");
    migrates_an_earlier_layouts_records(&config).await;
    let (bucket, ns) = (config.bucket.clone(), config.key_prefix.clone());
    let store = CouchbaseStore::connect(config).unwrap();
    store.wait_ready(Duration::from_secs(180)).await.unwrap();
    contract(&store).await;
    explain_and_time_every_list(&store, &bucket, &ns).await;
}

/// Records as the counter layout stored them (no `position`, a `tally`, fraud and payment
/// status copied), written with the SDK under a run of their own: `store init` sums them
/// into the totals' base once, and the store then answers as if it had written them.
async fn migrates_an_earlier_layouts_records(config: &CouchbaseConfig) {
    use couchbase::authenticator::PasswordAuthenticator;
    use couchbase::cluster::Cluster;
    use couchbase::options::cluster_options::{ClusterOptions, TlsOptions};
    let mut config = config.clone();
    config.key_prefix = format!("{}earlier:", config.key_prefix);
    let ns = config.key_prefix.clone();
    let auth =
        PasswordAuthenticator::new(config.username.clone(), config.password.expose().to_owned());
    let mut options = ClusterOptions::new(auth.into());
    if !config.ca_certificates.is_empty() {
        options = options.tls_options(
            TlsOptions::new().add_ca_certificates(config.ca_certificates.iter().cloned()),
        );
    }
    let cluster = Cluster::connect(&config.connection_string, options)
        .await
        .unwrap();
    let collection = cluster.bucket(config.bucket.clone()).default_collection();
    let olds = orders(1..=20);
    let now = Timestamp::now();
    for o in &olds {
        let flagged = o.order_id % 5 == 0;
        let mut doc = serde_json::json!({
            "type": "order", "ns": ns, "order_id": o.order_id, "customer_id": o.customer_id,
            "amount": o.amount, "amount_cents": o.amount.0, "currency": o.currency,
            "country": o.country, "status": o.status, "created_at": o.created_at,
            "created_us": o.created_at.micros(), "kafka_partition": 0,
            "kafka_offset": o.order_id, "processed_at": now, "processed_us": now.micros(),
            "tally": "tally::0::0", "fraud": flagged,
        });
        if flagged {
            doc["fraud_reason"] = serde_json::json!("HIGH_AMOUNT");
            let alert = serde_json::json!({
                "type": "alert", "ns": ns, "order_id": o.order_id, "reason": "HIGH_AMOUNT",
                "amount": o.amount, "amount_cents": o.amount.0, "country": o.country,
                "stored_at": now, "stored_us": now.micros(), "tally": "tally::0::0",
            });
            collection
                .upsert(format!("{ns}alert::{}", o.order_id), &alert, None)
                .await
                .unwrap();
        }
        collection
            .upsert(format!("{ns}{}", o.order_id), &doc, None)
            .await
            .unwrap();
    }
    let first = init_store(&config, Duration::from_secs(900)).await.unwrap();
    assert_eq!(
        (first.migration.earlier_records, first.migration.changed),
        (24, true),
        "{first:?}"
    );
    let again = init_store(&config, Duration::from_secs(900)).await.unwrap();
    assert!(!again.migration.changed, "{again:?}");
    let store = CouchbaseStore::connect(config).unwrap();
    store.wait_ready(Duration::from_secs(180)).await.unwrap();
    let totals = store.totals().await.unwrap();
    assert_eq!(totals.order_count, 20);
    assert_eq!(
        totals.total_sales,
        olds.iter().map(|o| o.amount).sum::<Cents>()
    );
    assert_eq!(totals.fraud_count, 4);
    // Redelivered to the new writer, they count nothing more.
    let outcome = store.apply(batch_of(&olds)).await.unwrap();
    assert_eq!(outcome.new_orders, 0);
    assert_eq!(store.totals().await.unwrap(), totals);
}

/// Every statement the store runs reads the index it names alone, with the shape it needs
/// (first pages: filter, order and limit pushed down; cursor pages: no sort; aggregates:
/// covering), read from the planner (`EXPLAIN`); then each list is timed at 100k orders.
async fn explain_and_time_every_list(store: &CouchbaseStore, bucket: &str, ns: &str) {
    use orders_core::store::couchbase::{list_statements, PlanSummary};
    for list in list_statements(bucket, ns) {
        let plan = store
            .explain(&list.statement, list.params.clone())
            .await
            .unwrap();
        let summary = PlanSummary::of(&plan);
        assert_eq!(
            summary.problem(list.index, list.shape),
            None,
            "{}: {}",
            list.name,
            serde_json::to_string_pretty(&plan).unwrap()
        );
        eprintln!(
            "couchbase contract: {} uses {} ({:?})",
            list.name, list.index, list.shape
        );
    }
    // 100k orders, then each list's time.
    let total = 100_000u64;
    let g = OrderGenerator::new(17);
    let started = std::time::Instant::now();
    for chunk in (9_000_001..9_000_001 + total)
        .collect::<Vec<_>>()
        .chunks(5_000)
    {
        let orders: Vec<Order> = chunk
            .iter()
            .map(|id| g.order(*id, Timestamp::now()))
            .collect();
        store.apply(batch_of(&orders)).await.unwrap();
    }
    eprintln!(
        "couchbase contract: {total} orders stored in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let queries = [
        OrderQuery {
            limit: 50,
            ..OrderQuery::default()
        },
        OrderQuery {
            limit: 50,
            country: "DE".parse().ok(),
            ..OrderQuery::default()
        },
        OrderQuery {
            limit: 50,
            status: Some(OrderStatus::Cancelled),
            ..OrderQuery::default()
        },
        OrderQuery {
            limit: 50,
            fraud: Some(true),
            ..OrderQuery::default()
        },
        OrderQuery {
            limit: 50,
            payment_status: Some(PaymentStatus::Failed),
            ..OrderQuery::default()
        },
    ];
    for q in &queries {
        let t = std::time::Instant::now();
        let page = store.latest_orders(q).await.unwrap();
        eprintln!(
            "couchbase contract: {q:?}: {} orders in {:.1} ms",
            page.len(),
            t.elapsed().as_secs_f64() * 1e3
        );
    }
    for (name, t) in [
        ("alerts", {
            let t = std::time::Instant::now();
            store.latest_alerts(50).await.unwrap();
            t.elapsed()
        }),
        ("payments", {
            let t = std::time::Instant::now();
            store.latest_payments(50).await.unwrap();
            t.elapsed()
        }),
    ] {
        eprintln!(
            "couchbase contract: latest {name}: {:.1} ms",
            t.as_secs_f64() * 1e3
        );
    }
}

#[tokio::test]
async fn sqlite_keeps_everything_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dir/orders.db");
    let all = orders(1..=100);
    let before = {
        let store = SqliteStore::open(&path).unwrap();
        store.apply(batch_of(&all)).await.unwrap();
        store.totals().await.unwrap()
    };
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.totals().await.unwrap(), before);
    assert_eq!(
        store.apply(batch_of(&all)).await.unwrap().new_orders,
        0,
        "no double count after restart"
    );
    assert_eq!(store.totals().await.unwrap(), before);
}

#[tokio::test]
async fn sqlite_open_fails_clearly_on_a_bad_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let err = match SqliteStore::open(file.join("orders.db")) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("opened a store under a regular file"),
    };
    assert!(err.contains("a-file"), "{err}");
}

#[tokio::test]
async fn sqlite_upgrades_a_version_2_store_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("orders.db");
    let old = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/resources/sqlite-schema-v2.sql"
    ))
    .unwrap();
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch(&old)
        .unwrap();
    let store = SqliteStore::open(&path).unwrap();
    let docs = store
        .latest_orders(&OrderQuery {
            limit: 10,
            ..OrderQuery::default()
        })
        .await
        .unwrap();
    let ids: Vec<u64> = docs.iter().map(|d| d.order.order_id).collect();
    assert_eq!(ids, vec![5, 9_000_001], "newest arrival first");
    drop(store);
    let version: i64 = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 4);
    // And opens again as the current version, with the per-minute windows of the orders
    // written before they existed.
    let store = SqliteStore::open(&path).unwrap();
    let w = store
        .minute_windows(1_705_314_600_000_000, 1_705_314_660_000_000)
        .await
        .unwrap();
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!((w[0].order_count, w[0].total_sales), (2, Cents(4998)));
    assert_eq!(w[0].by_country["DE"].sales, Cents(2999));
    assert!(store.canaries_before(None, 10).await.unwrap().is_empty());
}

/// A bucket that does not exist is named as such (not blamed on the host or the password),
/// when a cluster is configured.
#[tokio::test]
async fn couchbase_names_a_missing_bucket() {
    let missing = format!("orders_missing_{}", std::process::id());
    let Some(config) = common::couchbase_config(missing.clone(), "couchbase missing-bucket check")
    else {
        return;
    };
    let password = config.password.expose().to_owned();
    let store = CouchbaseStore::connect(config).unwrap();
    let e = store
        .wait_ready(Duration::from_secs(60))
        .await
        .expect_err("a missing bucket cannot be ready")
        .to_string();
    assert!(
        e.contains(&format!("bucket {missing:?}")) && e.contains("existing bucket"),
        "{e}"
    );
    assert!(!e.contains(&password), "{e}");
}
