//! The write path of a batch: each order, alert and payment stored and counted once
//! ([`super::counters`]), and what the pipeline learned about an order (fraud, payment
//! status) copied onto the order's document, so filtered lists read one index and no join.
//!
//! Alerts and payments may be stored before their order. The copy is made from both
//! sides, each after its own insert: an alert or payment sets the fields on its order's
//! document when it exists, and an order looks its alert and payment up after its insert.
//! Whatever the interleaving, the later of the two inserts is followed by a step that
//! sees the other, and every step is an idempotent upsert that a redelivery repeats.

use super::counters::{Counted, Counters};
use super::documents::{Documents, Lookup, Mutated, Mutation};
use super::{alert_document, alert_key, order_document, order_key, payment_document, payment_key};
use crate::domain::{Country, FraudAlert, OrderStatus, Payment, PaymentStatus, Timestamp};
use crate::store::{BatchOutcome, OrderConflict, StoreBatch, StoreError, StoredOrder};
use futures::{StreamExt, TryStreamExt};
use serde_json::{json, Value};

/// Records whose learned fields are copied at once.
const CONCURRENCY: usize = 64;

/// An order as counted: its key, marker and what it adds to the totals (`doc` is left
/// null, for a caller that has one to set).
pub(super) fn order_counted(
    ns: &str,
    id: u64,
    cents: i64,
    country: Country,
    status: OrderStatus,
) -> Counted {
    Counted {
        key: order_key(ns, id),
        doc: Value::Null,
        order_id: id,
        marker: format!("o{id}"),
        deltas: vec![
            ("n".into(), 1),
            ("cents".into(), cents),
            (format!("country.{}.n", country.as_str()), 1),
            (format!("country.{}.cents", country.as_str()), cents),
            (format!("status.{}.n", status.as_str()), 1),
            (format!("status.{}.cents", status.as_str()), cents),
        ],
    }
}

/// A fraud alert as counted (see [`order_counted`]).
pub(super) fn alert_counted(ns: &str, id: u64, cents: i64) -> Counted {
    Counted {
        key: alert_key(ns, id),
        doc: Value::Null,
        order_id: id,
        marker: format!("a{id}"),
        deltas: vec![("fraud_n".into(), 1), ("fraud_cents".into(), cents)],
    }
}

/// A payment as counted (see [`order_counted`]).
pub(super) fn payment_counted(ns: &str, id: u64, status: PaymentStatus) -> Counted {
    Counted {
        key: payment_key(ns, id),
        doc: Value::Null,
        order_id: id,
        marker: format!("p{id}"),
        deltas: vec![
            ("payments".into(), 1),
            ("paid".into(), i64::from(status == PaymentStatus::Paid)),
        ],
    }
}

fn order_record(ns: &str, s: &StoredOrder) -> Counted {
    let o = &s.order;
    Counted {
        doc: order_document(ns, s),
        ..order_counted(ns, o.order_id, o.amount.0, o.country, o.status)
    }
}

fn alert_record(ns: &str, a: &FraudAlert, now: Timestamp) -> Counted {
    Counted {
        doc: alert_document(ns, a, now),
        ..alert_counted(ns, a.order_id, a.amount.0)
    }
}

fn payment_record(ns: &str, p: &Payment, now: Timestamp) -> Counted {
    Counted {
        doc: payment_document(ns, p, now),
        ..payment_counted(ns, p.order_id, p.status)
    }
}

/// Sets fields on an order's document; an order not stored yet is fine (it looks them up
/// itself once stored).
pub(super) async fn learn(
    docs: &dyn Documents,
    key: String,
    fields: Vec<Mutation>,
) -> Result<(), StoreError> {
    if fields.is_empty() {
        return Ok(());
    }
    match docs.mutate_in(&key, &fields, None).await? {
        Mutated::Done(_) | Mutated::DocumentNotFound => Ok(()),
        other => Err(StoreError::Query(format!("updating {key}: {other:?}"))),
    }
}

pub(super) fn fraud_fields(reason: Value) -> Vec<Mutation> {
    vec![
        Mutation::Upsert("fraud".into(), json!(true)),
        Mutation::Upsert("fraud_reason".into(), reason),
    ]
}

/// After an order's insert: what its alert and payment (if stored) say about it.
pub(super) async fn learn_from_effects(
    docs: &dyn Documents,
    ns: &str,
    id: u64,
) -> Result<(), StoreError> {
    let first =
        |l: Option<super::documents::Looked>| l.and_then(|l| l.values.into_iter().next().flatten());
    let (alert_at, payment_at) = (alert_key(ns, id), payment_key(ns, id));
    let (reason, status) = (
        [Lookup::Get("reason".into())],
        [Lookup::Get("status".into())],
    );
    let (alert, payment) = futures::try_join!(
        docs.lookup_in(&alert_at, &reason),
        docs.lookup_in(&payment_at, &status),
    )?;
    let mut fields = Vec::new();
    if let Some(reason) = first(alert) {
        fields.extend(fraud_fields(reason));
    }
    if let Some(status) = first(payment) {
        fields.push(Mutation::Upsert("payment_status".into(), status));
    }
    learn(docs, order_key(ns, id), fields).await
}

/// An order's content on its document, and the names [`OrderConflict`] gives them.
const CONTENT: [(&str, &str); 7] = [
    ("customer_id", "customer_id"),
    ("amount_cents", "amount"),
    ("currency", "currency"),
    ("country", "country"),
    ("status", "status"),
    ("created_us", "created_at"),
    ("source", "source"),
];

/// After an order's insert found its key taken: a redelivery when the stored document has
/// this order's content, else a conflict (another order under the same id), which is not
/// stored or counted (its marker was there already).
async fn conflict_of(
    docs: &dyn Documents,
    ns: &str,
    s: &StoredOrder,
) -> Result<Option<OrderConflict>, StoreError> {
    let specs: Vec<Lookup> = CONTENT
        .iter()
        .map(|(p, _)| Lookup::Get((*p).into()))
        .collect();
    let key = order_key(ns, s.order.order_id);
    let Some(stored) = docs.lookup_in(&key, &specs).await? else {
        return Err(StoreError::Query(format!(
            "{key} was refused as existing, then not found"
        )));
    };
    let mine = order_document(ns, s);
    let differing: Vec<&'static str> = CONTENT
        .iter()
        .zip(stored.values)
        .filter(|((path, _), theirs)| mine.get(*path) != theirs.as_ref())
        .map(|((_, name), _)| *name)
        .collect();
    Ok((!differing.is_empty()).then_some(OrderConflict {
        order_id: s.order.order_id,
        kafka_partition: s.kafka_partition,
        kafka_offset: s.kafka_offset,
        differing,
    }))
}

/// Stores and counts a batch. Not one transaction: a failed batch is retried whole by the
/// writer, and every step finds what an earlier attempt did.
pub async fn apply(
    docs: &dyn Documents,
    counters: &Counters,
    batch: &StoreBatch,
    now: Timestamp,
) -> Result<BatchOutcome, StoreError> {
    let ns = counters.ns.as_str();
    let orders: Vec<Counted> = batch.orders.iter().map(|s| order_record(ns, s)).collect();
    let alerts: Vec<Counted> = batch
        .alerts
        .iter()
        .map(|a| alert_record(ns, a, now))
        .collect();
    let payments: Vec<Counted> = batch
        .payments
        .iter()
        .map(|p| payment_record(ns, p, now))
        .collect();
    let (orders_new, new_alerts, new_payments) = futures::try_join!(
        counters.write_each(docs, &orders),
        counters.write_all(docs, &alerts),
        counters.write_all(docs, &payments),
    )?;
    let new_orders = orders_new.iter().filter(|new| **new).count();
    // Only the orders found stored already are read again: a redelivery's cost.
    let found: Vec<&StoredOrder> = batch
        .orders
        .iter()
        .zip(&orders_new)
        .filter(|(_, new)| !**new)
        .map(|(s, _)| s)
        .collect();
    let mut conflicts = Vec::new();
    for chunk in found.chunks(CONCURRENCY) {
        let checked =
            futures::future::try_join_all(chunk.iter().map(|s| conflict_of(docs, ns, s))).await?;
        conflicts.extend(checked.into_iter().flatten());
    }
    // By id and value, not by reference: see `Counters::write_all`.
    let order_ids: Vec<u64> = batch.orders.iter().map(|s| s.order.order_id).collect();
    let from_orders = futures::stream::iter(order_ids)
        .map(|id| learn_from_effects(docs, ns, id))
        .buffer_unordered(CONCURRENCY)
        .try_collect::<()>();
    let alerts_learned: Vec<(String, Value)> = batch
        .alerts
        .iter()
        .map(|a| (order_key(ns, a.order_id), json!(a.reason)))
        .collect();
    let from_alerts = futures::stream::iter(alerts_learned)
        .map(|(key, reason)| learn(docs, key, fraud_fields(reason)))
        .buffer_unordered(CONCURRENCY)
        .try_collect::<()>();
    let payments_learned: Vec<(String, Value)> = batch
        .payments
        .iter()
        .map(|p| (order_key(ns, p.order_id), json!(p.status)))
        .collect();
    let from_payments = futures::stream::iter(payments_learned)
        .map(|(key, status)| {
            learn(
                docs,
                key,
                vec![Mutation::Upsert("payment_status".into(), status)],
            )
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<()>();
    futures::try_join!(from_orders, from_alerts, from_payments)?;
    Ok(BatchOutcome {
        new_orders,
        new_alerts,
        new_payments,
        conflicts,
    })
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::counters::Layout;
    use super::super::documents::MemoryDocuments;
    use super::*;
    use crate::domain::Order;
    use crate::generator::OrderGenerator;
    use crate::money::Cents;
    use crate::store::{CountAndSum, Totals};

    /// Tiny generations and few shards, so a batch seals and folds many of them.
    pub(in super::super) const LAYOUT: Layout = Layout {
        shards: 3,
        markers_per_generation: 4,
    };

    /// A batch with everything the write path meets: orders; alerts and payments for some
    /// of them; an alert and a payment whose order is not in the batch (it arrives in the
    /// next); the same order, alert and payment twice.
    pub(in super::super) fn batches() -> (StoreBatch, StoreBatch) {
        let g = OrderGenerator::new(5);
        let now = Timestamp::now();
        let orders: Vec<Order> = (1..=30).map(|id| g.order(id, now)).collect();
        let stored = |o: &Order| StoredOrder {
            order: o.clone(),
            kafka_partition: 0,
            kafka_offset: o.order_id as i64,
            processed_at: now,
        };
        let alert = |o: &Order| FraudAlert {
            order_id: o.order_id,
            reason: "HIGH_AMOUNT_RISKY_COUNTRY".into(),
            amount: o.amount,
            country: o.country,
            rule_id: None,
            detected_at: None,
        };
        let payment = |o: &Order| Payment {
            order_id: o.order_id,
            status: if o.order_id.is_multiple_of(4) {
                PaymentStatus::Failed
            } else {
                PaymentStatus::Paid
            },
            amount: o.amount,
            country: o.country,
            timestamp: 1.0,
        };
        let mut first = StoreBatch {
            orders: orders[..25].iter().map(stored).collect(),
            alerts: orders
                .iter()
                .filter(|o| o.order_id.is_multiple_of(3))
                .map(alert)
                .collect(),
            payments: orders
                .iter()
                .filter(|o| o.order_id.is_multiple_of(2))
                .map(payment)
                .collect(),
        };
        first.orders.push(stored(&orders[3]));
        first.alerts.push(alert(&orders[2]));
        first.payments.push(payment(&orders[1]));
        let second = StoreBatch {
            orders: orders[20..].iter().map(stored).collect(),
            alerts: vec![alert(&orders[29])],
            payments: vec![payment(&orders[28])],
        };
        (first, second)
    }

    /// The totals of the batches, computed directly from their distinct records.
    pub(in super::super) fn expected(batches: &[&StoreBatch]) -> Totals {
        let mut t = Totals::default();
        let mut seen = std::collections::HashSet::new();
        for b in batches {
            for s in &b.orders {
                let o = &s.order;
                if !seen.insert(("o", o.order_id)) {
                    continue;
                }
                t.order_count += 1;
                t.total_sales.0 += o.amount.0;
                for (map, k) in [
                    (&mut t.by_country, o.country.as_str()),
                    (&mut t.by_status, o.status.as_str()),
                ] {
                    let e = map.entry(k.to_owned()).or_insert(CountAndSum::default());
                    e.count += 1;
                    e.sales.0 += o.amount.0;
                }
            }
            for a in &b.alerts {
                if seen.insert(("a", a.order_id)) {
                    t.fraud_count += 1;
                    t.fraud_sales.0 += a.amount.0;
                }
            }
            for p in &b.payments {
                if seen.insert(("p", p.order_id)) {
                    t.payment_count += 1;
                    t.paid_count += u64::from(p.status == PaymentStatus::Paid);
                }
            }
        }
        t
    }

    /// Everything a finished run must show: exact totals, every learned field on its
    /// order's document, every generation within its bound.
    pub(in super::super) fn check(
        docs: &MemoryDocuments,
        counters: &Counters,
        batches: &[&StoreBatch],
        what: &str,
    ) {
        let totals = futures::executor::block_on(counters.totals(docs)).unwrap();
        assert_eq!(totals, expected(batches), "{what}");
        for b in batches {
            for a in &b.alerts {
                if let Some(doc) = docs.get(&order_key("", a.order_id)) {
                    assert_eq!(doc["fraud"], json!(true), "{what}: order {}", a.order_id);
                    assert_eq!(doc["fraud_reason"], json!(a.reason), "{what}");
                }
            }
            for p in &b.payments {
                if let Some(doc) = docs.get(&order_key("", p.order_id)) {
                    assert_eq!(
                        doc["payment_status"],
                        json!(p.status),
                        "{what}: {}",
                        p.order_id
                    );
                }
            }
        }
        let (_, largest) = docs.sizes();
        assert!(largest < 2_000, "{what}: a document of {largest} bytes");
    }

    fn run(docs: &MemoryDocuments, batch: &StoreBatch) -> Result<BatchOutcome, StoreError> {
        // A fresh writer each time: a restarted process remembers nothing.
        let counters = Counters::new("", LAYOUT);
        futures::executor::block_on(apply(docs, &counters, batch, Timestamp::now()))
    }

    /// An order id stored with other content is named as a conflict, not stored or
    /// counted; the batch's redelivery (same content) is no conflict.
    #[test]
    fn another_order_under_a_stored_id_is_a_conflict() {
        let (first, _) = batches();
        let docs = MemoryDocuments::new();
        run(&docs, &first).unwrap();
        let again = run(&docs, &first).unwrap();
        assert_eq!((again.new_orders, again.conflicts.len()), (0, 0));
        let mut other = first.orders[3].clone();
        other.order.amount = Cents(other.order.amount.0 + 1);
        other.order.status = crate::domain::OrderStatus::Cancelled;
        if first.orders[3].order.status == crate::domain::OrderStatus::Cancelled {
            other.order.status = crate::domain::OrderStatus::Created;
        }
        other.kafka_offset = 999;
        let batch = StoreBatch {
            orders: vec![other.clone()],
            ..StoreBatch::default()
        };
        let outcome = run(&docs, &batch).unwrap();
        assert_eq!(outcome.new_orders, 0);
        assert_eq!(outcome.conflicts.len(), 1, "{:?}", outcome.conflicts);
        let c = &outcome.conflicts[0];
        assert_eq!((c.order_id, c.kafka_offset), (other.order.order_id, 999));
        assert_eq!(c.differing, vec!["amount", "status"]);
        check(
            &docs,
            &Counters::new("", LAYOUT),
            &[&first],
            "after the conflict",
        );
    }

    /// Crash the writer between every pair of its calls (after call k, for every k), then
    /// deliver the batch again as Kafka would, and again: the totals are the exact figures
    /// every time, and the third delivery finds nothing new.
    #[test]
    fn a_crash_between_any_two_calls_neither_loses_nor_double_counts() {
        let (first, second) = batches();
        let clean = MemoryDocuments::new();
        let outcome = run(&clean, &first).unwrap();
        assert_eq!(outcome.new_orders, 25);
        assert_eq!(outcome.new_alerts, 10);
        assert_eq!(outcome.new_payments, 15);
        let calls = clean.calls().total();
        let counters = Counters::new("", LAYOUT);
        check(&clean, &counters, &[&first], "clean run");
        assert!(
            clean.get("tally::0").unwrap()["generation"]
                .as_u64()
                .unwrap()
                > 2,
            "generations rolled over"
        );
        for k in 0..calls {
            let docs = MemoryDocuments::new();
            docs.crash_after(k);
            assert!(
                run(&docs, &first).is_err(),
                "crash after {k} of {calls} calls"
            );
            docs.restart();
            run(&docs, &first).unwrap();
            check(
                &docs,
                &counters,
                &[&first],
                &format!("crash after call {k}"),
            );
            let again = run(&docs, &first).unwrap();
            assert_eq!(again, BatchOutcome::default(), "crash after call {k}");
            // A crash in the next batch too, and in its redelivery.
            docs.crash_after(k % 97);
            let _ = run(&docs, &second);
            docs.crash_after((k * 7) % 113);
            let _ = run(&docs, &second);
            docs.restart();
            run(&docs, &second).unwrap();
            check(&docs, &counters, &[&first, &second], &format!("then {k}"));
        }
    }

    /// Two writers storing the same records at once (a rebalance hands a partition over
    /// while the old owner still writes), their calls interleaved one by one.
    #[tokio::test]
    async fn concurrent_writers_of_the_same_records_count_each_once() {
        let (first, second) = batches();
        for round in 0..20 {
            let docs = MemoryDocuments::interleaving();
            let (a, b) = (Counters::new("", LAYOUT), Counters::new("", LAYOUT));
            let mut reversed = first.clone();
            reversed.orders.rotate_left(round);
            reversed.payments.reverse();
            let now = Timestamp::now();
            let (x, y) = tokio::join!(
                apply(&docs, &a, &first, now),
                apply(&docs, &b, &reversed, now)
            );
            let (x, y) = (x.unwrap(), y.unwrap());
            assert_eq!(x.new_orders + y.new_orders, 25, "round {round}");
            let (x, y) = tokio::join!(
                apply(&docs, &a, &second, now),
                apply(&docs, &b, &second, now)
            );
            x.unwrap();
            y.unwrap();
            let totals = a.totals(&docs).await.unwrap();
            assert_eq!(totals, expected(&[&first, &second]), "round {round}");
        }
    }

    /// Reading totals while a writer writes: each shard is one snapshot, so the countries
    /// always sum to the count and the statuses too.
    #[tokio::test]
    async fn totals_read_mid_write_are_consistent() {
        let (first, _) = batches();
        let docs = MemoryDocuments::interleaving();
        let writer = Counters::new("", LAYOUT);
        let reader = Counters::new("", LAYOUT);
        let write = apply(&docs, &writer, &first, Timestamp::now());
        let read = async {
            let mut seen = 0;
            for _ in 0..200 {
                let t = reader.totals(&docs).await.unwrap();
                let countries: u64 = t.by_country.values().map(|c| c.count).sum();
                let sales: Cents = t.by_country.values().map(|c| c.sales).sum();
                let statuses: u64 = t.by_status.values().map(|c| c.count).sum();
                assert_eq!(countries, t.order_count, "{t:?}");
                assert_eq!(statuses, t.order_count, "{t:?}");
                assert_eq!(sales, t.total_sales, "{t:?}");
                seen = seen.max(t.order_count);
                tokio::task::yield_now().await;
            }
            seen
        };
        let (written, seen) = tokio::join!(write, read);
        written.unwrap();
        assert!(seen > 0, "the reader saw the writes under way");
    }
}
