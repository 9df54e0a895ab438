//! The write path of a batch: each order, alert and payment inserted once under its key,
//! what the pipeline learned about an order copied onto the order's document, and the
//! totals of each (stream, partition) the batch touched moved past the batch with one CAS
//! write ([`super::totals`]).
//!
//! ## Counted exactly once
//! Every record document carries `position`, the Kafka partition and offset of the record
//! that inserted it: its owner. A record counts when it owns its document and its offset is
//! above its partition's stored offset, with the figures *of the stored document*. Each
//! document has one owner, and the CAS write moves a partition's offset past a record once,
//! so each document counts once, whichever writer (a redelivery, a crashed writer's
//! successor, a zombie still writing) gets there; a record whose id is stored by another
//! record (a conflict, or the producer sending it twice) counts nowhere. Records at or
//! below the stored offset had every effect before the offset moved past them: an order
//! is only read again (an id conflict must be reported again, since its dead letter may not
//! have been sent), alerts and payments not at all.
//!
//! ## Fraud flag and payment status on the order
//! Alerts and payments may be stored before their order. The copy is made from both
//! sides, each after its own insert: an alert or payment copies what its *stored* document
//! says onto the order when the order exists, and an order reads its alert and payment after
//! its insert. Whatever the interleaving, the later insert is followed by a step that sees
//! the other; every copy is a CAS replace of the order (at `COUCHBASE_DURABILITY`) that
//! writes what the first-stored alert or payment says, so one status wins everywhere.

use super::documents::{Documents, Replaced, Space};
use super::totals::{Figures, PartitionTotals, Stream, TotalsBook, CAS_ATTEMPTS};
use super::{alert_document, alert_key, order_document, order_key, payment_document, payment_key};
use crate::domain::Timestamp;
use crate::store::{
    BatchOutcome, KafkaPosition, OrderConflict, StoreBatch, StoreError, StoredOrder,
};
use futures::{StreamExt, TryStreamExt};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

/// Records handled at once.
const CONCURRENCY: usize = 64;

/// One record of a batch.
struct Record<'a> {
    stream: Stream,
    position: KafkaPosition,
    key: String,
    doc: Value,
    order_id: u64,
    /// The order itself, to name a conflict.
    order: Option<&'a StoredOrder>,
}

/// What storing one record found.
#[derive(Default)]
struct Effect {
    /// Its figures, when it owns its document.
    owned: Option<Figures>,
    conflict: Option<OrderConflict>,
}

/// The partition and offset a stored document's owner was read at.
fn owner(doc: &Value) -> Option<KafkaPosition> {
    let p = doc.get("position")?.as_array()?;
    Some(KafkaPosition {
        partition: i32::try_from(p.first()?.as_i64()?).ok()?,
        offset: p.get(1)?.as_i64()?,
    })
}

fn text<'v>(doc: &'v Value, field: &str) -> &'v str {
    doc.get(field).and_then(Value::as_str).unwrap_or("")
}

/// What a stored record adds to the totals: read from the document, never from the record
/// that found it.
fn figures_of(stream: Stream, doc: &Value) -> Figures {
    let cents = doc.get("amount_cents").and_then(Value::as_i64).unwrap_or(0);
    let mut f = Figures::default();
    match stream {
        Stream::Orders => f.add_orders(1, cents, text(doc, "country"), text(doc, "status")),
        Stream::Alerts => f.add_alerts(1, cents),
        Stream::Payments => f.add_payments(1, u64::from(text(doc, "status") == "PAID")),
    }
    f
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

/// The conflict of an order with the document stored under its id, if their content differs.
fn conflict_of(mine: &Value, stored: &Value, s: &StoredOrder) -> Option<OrderConflict> {
    let differing: Vec<&'static str> = CONTENT
        .iter()
        .filter(|(path, _)| mine.get(*path) != stored.get(*path))
        .map(|(_, name)| *name)
        .collect();
    (!differing.is_empty()).then_some(OrderConflict {
        order_id: s.order.order_id,
        kafka_partition: s.kafka_partition,
        kafka_offset: s.kafka_offset,
        differing,
    })
}

/// Sets fields on an order's document (a CAS replace, durable), unless they are set
/// already; an order not stored yet is left (it reads them itself once stored).
pub(super) async fn copy_onto_order(
    docs: &dyn Documents,
    key: &str,
    fields: &[(&str, Value)],
) -> Result<(), StoreError> {
    if fields.is_empty() {
        return Ok(());
    }
    for _ in 0..CAS_ATTEMPTS {
        let Some(stored) = docs.get(Space::Records, key).await? else {
            return Ok(());
        };
        let mut doc = stored.doc;
        if fields.iter().all(|(k, v)| doc.get(*k) == Some(v)) {
            return Ok(());
        }
        if let Some(map) = doc.as_object_mut() {
            for (k, v) in fields {
                map.insert((*k).to_owned(), v.clone());
            }
        }
        match docs.replace(Space::Records, key, &doc, stored.cas).await? {
            Replaced::Done => return Ok(()),
            Replaced::CasMismatch | Replaced::NotFound => continue,
        }
    }
    Err(StoreError::Unavailable(format!(
        "{key}: {CAS_ATTEMPTS} writers in a row changed it first"
    )))
}

fn fraud_fields(alert: &Value) -> Vec<(&'static str, Value)> {
    vec![
        ("fraud", json!(true)),
        (
            "fraud_reason",
            alert.get("reason").cloned().unwrap_or(Value::Null),
        ),
    ]
}

fn payment_fields(payment: &Value) -> Vec<(&'static str, Value)> {
    vec![(
        "payment_status",
        payment.get("status").cloned().unwrap_or(Value::Null),
    )]
}

/// After an order's insert: what its stored alert and payment (if any) say about it.
async fn learn_from_effects(docs: &dyn Documents, ns: &str, id: u64) -> Result<(), StoreError> {
    let (alert_at, payment_at) = (alert_key(ns, id), payment_key(ns, id));
    let (alert, payment) = futures::try_join!(
        docs.get(Space::Records, &alert_at),
        docs.get(Space::Records, &payment_at),
    )?;
    let mut fields = Vec::new();
    if let Some(a) = alert {
        fields.extend(fraud_fields(&a.doc));
    }
    if let Some(p) = payment {
        fields.extend(payment_fields(&p.doc));
    }
    copy_onto_order(docs, &order_key(ns, id), &fields).await
}

/// Stores one record above its partition's offset: inserts it (or reads what is stored under
/// its key), copies what it says onto its order, and says whether it owns the document.
async fn store_above(docs: &dyn Documents, ns: &str, r: &Record<'_>) -> Result<Effect, StoreError> {
    let stored = if docs.insert(Space::Records, &r.key, &r.doc).await? {
        r.doc.clone()
    } else {
        docs.get(Space::Records, &r.key)
            .await?
            .ok_or_else(|| {
                StoreError::Query(format!("{} was refused as existing, then not found", r.key))
            })?
            .doc
    };
    let conflict = r.order.and_then(|s| conflict_of(&r.doc, &stored, s));
    let owns = conflict.is_none() && owner(&stored) == Some(r.position);
    if owns {
        match r.stream {
            Stream::Orders => learn_from_effects(docs, ns, r.order_id).await?,
            Stream::Alerts => {
                copy_onto_order(docs, &order_key(ns, r.order_id), &fraud_fields(&stored)).await?
            }
            Stream::Payments => {
                copy_onto_order(docs, &order_key(ns, r.order_id), &payment_fields(&stored)).await?
            }
        }
    }
    Ok(Effect {
        owned: owns.then(|| figures_of(r.stream, &stored)),
        conflict,
    })
}

/// An order at or below its partition's offset: stored already, by it or by another order
/// (a conflict, named again). Not stored at all means the offsets went back: the topic was
/// recreated, or another topic is read under the same name.
async fn check_below(
    docs: &dyn Documents,
    r: &Record<'_>,
    stored_offset: i64,
) -> Result<Effect, StoreError> {
    let Some(s) = r.order else {
        return Ok(Effect::default());
    };
    let Some(stored) = docs.get(Space::Records, &r.key).await? else {
        return Err(StoreError::Corrupt(format!(
            "order {} (partition {}, offset {}) is not stored, yet the totals of {} partition \
             {} have passed offset {stored_offset}: the topic was recreated or TOPIC_NAME \
             changed; see docs/deploy.md (Couchbase totals)",
            r.order_id,
            r.position.partition,
            r.position.offset,
            r.stream.name(),
            r.position.partition
        )));
    };
    Ok(Effect {
        owned: None,
        conflict: conflict_of(&r.doc, &stored.doc, s),
    })
}

/// Stores one record, or checks it when its partition's totals have passed it.
async fn store_one(
    docs: &dyn Documents,
    ns: &str,
    r: &Record<'_>,
    stored_offset: i64,
) -> Result<Effect, StoreError> {
    if r.position.offset > stored_offset {
        store_above(docs, ns, r).await
    } else {
        check_below(docs, r, stored_offset).await
    }
}

/// Moves one partition's totals past `max_offset`, adding the figures of the owned records
/// above the offset read; returns how many records it added (0 when another writer had
/// moved it already).
async fn settle(
    docs: &dyn Documents,
    book: &TotalsBook,
    (stream, partition): (Stream, i32),
    first_read: (Option<u64>, PartitionTotals),
    owned: &BTreeMap<i64, Option<Figures>>,
) -> Result<usize, StoreError> {
    let Some(max_offset) = owned.keys().next_back().copied() else {
        return Ok(0);
    };
    let start = first_read.1.offset;
    let mut read = first_read;
    for _ in 0..CAS_ATTEMPTS {
        let (cas, current) = read;
        if current.offset >= max_offset {
            return Ok(0);
        }
        if current.offset < start {
            return Err(StoreError::Corrupt(format!(
                "the totals of {} partition {partition} went back from offset {start} to {}",
                stream.name(),
                current.offset
            )));
        }
        let mut next = PartitionTotals {
            offset: max_offset,
            figures: current.figures,
        };
        let mut added = 0;
        for figures in owned
            .range(current.offset + 1..)
            .filter_map(|(_, f)| f.as_ref())
        {
            next.figures.add(figures);
            added += 1;
        }
        if book.write(docs, stream, partition, cas, &next).await? {
            return Ok(added);
        }
        read = book.read(docs, stream, partition).await?;
    }
    Err(StoreError::Unavailable(format!(
        "the totals of {} partition {partition}: {CAS_ATTEMPTS} writers in a row wrote first",
        stream.name()
    )))
}

/// The batch's records, each with its stream and position.
fn records<'a>(
    ns: &str,
    batch: &'a StoreBatch,
    now: Timestamp,
) -> Result<Vec<Record<'a>>, StoreError> {
    if batch.alert_positions.len() != batch.alerts.len()
        || batch.payment_positions.len() != batch.payments.len()
    {
        return Err(StoreError::Query(format!(
            "a batch of {} alerts and {} payments came with {} and {} Kafka positions: the \
             couchbase store counts each record by its position",
            batch.alerts.len(),
            batch.payments.len(),
            batch.alert_positions.len(),
            batch.payment_positions.len()
        )));
    }
    let mut all = Vec::with_capacity(batch.len());
    for s in &batch.orders {
        let position = KafkaPosition {
            partition: s.kafka_partition,
            offset: s.kafka_offset,
        };
        all.push(Record {
            stream: Stream::Orders,
            position,
            key: order_key(ns, s.order.order_id),
            doc: order_document(ns, s),
            order_id: s.order.order_id,
            order: Some(s),
        });
    }
    for (a, position) in batch.alerts.iter().zip(&batch.alert_positions) {
        all.push(Record {
            stream: Stream::Alerts,
            position: *position,
            key: alert_key(ns, a.order_id),
            doc: alert_document(ns, a, *position, now),
            order_id: a.order_id,
            order: None,
        });
    }
    for (p, position) in batch.payments.iter().zip(&batch.payment_positions) {
        all.push(Record {
            stream: Stream::Payments,
            position: *position,
            key: payment_key(ns, p.order_id),
            doc: payment_document(ns, p, *position, now),
            order_id: p.order_id,
            order: None,
        });
    }
    Ok(all)
}

/// Stores and counts a batch. Not one transaction: a failed batch is retried whole by the
/// writer, and every step finds what an earlier attempt (or another writer) did.
pub async fn apply(
    docs: &dyn Documents,
    book: &TotalsBook,
    batch: &StoreBatch,
    now: Timestamp,
) -> Result<BatchOutcome, StoreError> {
    let ns = book.ns.as_str();
    let mut all = records(ns, batch, now)?;
    // One record per position: a record delivered twice in one batch is one record.
    let mut seen = BTreeSet::new();
    all.retain(|r| seen.insert((r.stream, r.position.partition, r.position.offset)));
    let partitions: BTreeSet<(Stream, i32)> = all
        .iter()
        .map(|r| (r.stream, r.position.partition))
        .collect();
    let listing = book.list(docs, &partitions);
    let reading =
        futures::future::try_join_all(partitions.iter().map(|(s, p)| book.read(docs, *s, *p)));
    let (_, read) = futures::try_join!(listing, reading)?;
    let read: BTreeMap<(Stream, i32), (Option<u64>, PartitionTotals)> =
        partitions.iter().copied().zip(read).collect();
    // The futures are made first (a stream of closures over borrowed records would not be
    // `Send` for every lifetime, as the trait's future must be).
    let steps: Vec<_> = all
        .iter()
        .map(|r| {
            let stored_offset = read
                .get(&(r.stream, r.position.partition))
                .map_or(-1, |(_, t)| t.offset);
            store_one(docs, ns, r, stored_offset)
        })
        .collect();
    let effects: Vec<Effect> = futures::stream::iter(steps)
        .buffered(CONCURRENCY)
        .try_collect()
        .await?;
    let mut owned: BTreeMap<(Stream, i32), BTreeMap<i64, Option<Figures>>> = BTreeMap::new();
    let mut conflicts = Vec::new();
    for (r, effect) in all.iter().zip(effects) {
        owned
            .entry((r.stream, r.position.partition))
            .or_default()
            .insert(r.position.offset, effect.owned);
        conflicts.extend(effect.conflict);
    }
    let mut read = read;
    let settled =
        futures::future::try_join_all(
            owned.iter().map(|(at, offsets)| {
                let first = read.remove(at).unwrap_or((None, PartitionTotals::empty()));
                async move {
                    Ok::<_, StoreError>((at.0, settle(docs, book, *at, first, offsets).await?))
                }
            }),
        )
        .await?;
    let added = |stream| -> usize {
        settled
            .iter()
            .filter(|(s, _)| *s == stream)
            .map(|(_, n)| n)
            .sum()
    };
    Ok(BatchOutcome {
        new_orders: added(Stream::Orders),
        new_alerts: added(Stream::Alerts),
        new_payments: added(Stream::Payments),
        conflicts,
    })
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::documents::MemoryDocuments;
    use super::*;
    use crate::domain::{FraudAlert, Order, Payment, PaymentStatus};
    use crate::generator::OrderGenerator;
    use crate::money::Cents;
    use crate::store::{CountAndSum, Totals};

    pub(in super::super) fn at(partition: i32, offset: u64) -> KafkaPosition {
        KafkaPosition {
            partition,
            offset: offset as i64,
        }
    }

    pub(in super::super) fn stored(o: &Order, now: Timestamp) -> StoredOrder {
        StoredOrder {
            order: o.clone(),
            kafka_partition: (o.order_id % 3) as i32,
            kafka_offset: o.order_id as i64,
            processed_at: now,
        }
    }

    fn alert(o: &Order) -> FraudAlert {
        FraudAlert {
            order_id: o.order_id,
            reason: "HIGH_AMOUNT_RISKY_COUNTRY".into(),
            amount: o.amount,
            country: o.country,
            rule_id: None,
            detected_at: None,
        }
    }

    fn payment(o: &Order) -> Payment {
        Payment {
            order_id: o.order_id,
            status: if o.order_id.is_multiple_of(4) {
                PaymentStatus::Failed
            } else {
                PaymentStatus::Paid
            },
            amount: o.amount,
            country: o.country,
            timestamp: 1.0,
        }
    }

    /// A batch with everything the write path meets: orders on three partitions; alerts and
    /// payments for some of them; an alert and a payment whose order is not in the batch (it
    /// arrives in the next); the same order, alert and payment twice. The second batch
    /// redelivers part of the first.
    pub(in super::super) fn batches() -> (StoreBatch, StoreBatch) {
        let g = OrderGenerator::new(5);
        let now = Timestamp::now();
        let orders: Vec<Order> = (1..=30).map(|id| g.order(id, now)).collect();
        let mut first = StoreBatch {
            orders: orders[..25].iter().map(|o| stored(o, now)).collect(),
            ..StoreBatch::default()
        };
        for o in orders.iter().filter(|o| o.order_id.is_multiple_of(3)) {
            first.push_alert(alert(o), at((o.order_id % 2) as i32, o.order_id));
        }
        for o in orders.iter().filter(|o| o.order_id.is_multiple_of(2)) {
            first.push_payment(payment(o), at((o.order_id % 2) as i32, o.order_id));
        }
        first.orders.push(stored(&orders[3], now));
        first.push_alert(alert(&orders[2]), at(1, 3));
        first.push_payment(payment(&orders[1]), at(0, 2));
        let mut second = StoreBatch {
            orders: orders[20..].iter().map(|o| stored(o, now)).collect(),
            ..StoreBatch::default()
        };
        second.push_alert(alert(&orders[29]), at(0, 40));
        second.push_payment(payment(&orders[28]), at(1, 41));
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

    /// A stand-in bucket as `store init` leaves a new one (an empty totals directory), made
    /// outside the calls counted.
    pub(in super::super) fn initialised(docs: MemoryDocuments) -> MemoryDocuments {
        let empty = json!({"type": "totals_directory", "ns": "", "partitions": {}});
        docs.put(Space::Totals, "totals", empty);
        docs
    }

    pub(in super::super) fn totals(docs: &MemoryDocuments) -> Totals {
        futures::executor::block_on(TotalsBook::new("").totals(docs)).unwrap()
    }

    /// Everything a finished run must show: exact totals, and on every stored order what
    /// its stored alert and payment say.
    pub(in super::super) fn check(docs: &MemoryDocuments, batches: &[&StoreBatch], what: &str) {
        assert_eq!(totals(docs), expected(batches), "{what}");
        for b in batches {
            for id in b
                .alerts
                .iter()
                .map(|a| a.order_id)
                .chain(b.payments.iter().map(|p| p.order_id))
            {
                let Some(order) = docs.doc(Space::Records, &order_key("", id)) else {
                    continue;
                };
                if let Some(a) = docs.doc(Space::Records, &alert_key("", id)) {
                    assert_eq!(order["fraud"], json!(true), "{what}: order {id}");
                    assert_eq!(order["fraud_reason"], a["reason"], "{what}: order {id}");
                }
                if let Some(p) = docs.doc(Space::Records, &payment_key("", id)) {
                    assert_eq!(order["payment_status"], p["status"], "{what}: order {id}");
                }
            }
        }
    }

    fn run(docs: &MemoryDocuments, batch: &StoreBatch) -> Result<BatchOutcome, StoreError> {
        // A fresh writer each time: a restarted process remembers nothing.
        futures::executor::block_on(apply(docs, &TotalsBook::new(""), batch, Timestamp::now()))
    }

    fn one_order(s: &StoredOrder) -> StoreBatch {
        StoreBatch {
            orders: vec![s.clone()],
            ..StoreBatch::default()
        }
    }

    /// Crash the writer between every pair of its calls (after call k, for every k), then
    /// deliver the batch again as Kafka would, and again: the totals are the exact figures
    /// every time, and the third delivery finds nothing new.
    #[test]
    fn a_crash_between_any_two_calls_neither_loses_nor_double_counts() {
        let (first, second) = batches();
        let clean = initialised(MemoryDocuments::new());
        let before = clean.calls().total();
        let outcome = run(&clean, &first).unwrap();
        assert_eq!(
            (outcome.new_orders, outcome.new_alerts, outcome.new_payments),
            (25, 10, 15)
        );
        let calls = clean.calls().total() - before;
        check(&clean, &[&first], "clean run");
        for k in 0..calls {
            let docs = initialised(MemoryDocuments::new());
            docs.crash_after(k);
            assert!(
                run(&docs, &first).is_err(),
                "crash after {k} of {calls} calls"
            );
            docs.restart();
            run(&docs, &first).unwrap();
            check(&docs, &[&first], &format!("crash after call {k}"));
            let again = run(&docs, &first).unwrap();
            assert_eq!(again, BatchOutcome::default(), "crash after call {k}");
            // A crash in the next batch too, and in its redelivery.
            docs.crash_after(k % 37);
            let _ = run(&docs, &second);
            docs.crash_after((k * 7) % 41);
            let _ = run(&docs, &second);
            docs.restart();
            run(&docs, &second).unwrap();
            check(&docs, &[&first, &second], &format!("then {k}"));
        }
    }

    /// A durable write whose acknowledgement is lost (applied, reported failed) at any call:
    /// the retried batch reads the offsets again and counts nothing twice.
    #[test]
    fn an_ambiguous_write_at_any_call_is_settled_by_the_retry() {
        let (first, second) = batches();
        let calls = {
            let clean = initialised(MemoryDocuments::new());
            let before = clean.calls().total();
            run(&clean, &first).unwrap();
            clean.calls().total() - before
        };
        for k in 0..calls {
            let docs = initialised(MemoryDocuments::new());
            docs.ambiguous_after(k);
            let _ = run(&docs, &first);
            docs.restart();
            run(&docs, &first).unwrap();
            run(&docs, &second).unwrap();
            check(&docs, &[&first, &second], &format!("ambiguous call {k}"));
        }
    }

    /// Two writers storing the same records at once (a rebalance hands a partition over
    /// while the old owner, a zombie, still writes), their calls interleaved one by one:
    /// one wins each partition's CAS, the other reads again and adds nothing.
    #[tokio::test]
    async fn concurrent_writers_of_the_same_records_count_each_once() {
        let (first, second) = batches();
        for round in 0..20 {
            let docs = initialised(MemoryDocuments::interleaving());
            let (a, b) = (TotalsBook::new(""), TotalsBook::new(""));
            let mut reversed = first.clone();
            reversed.orders.rotate_left(round);
            reversed.orders.truncate(20 + round % 6);
            let now = Timestamp::now();
            let (x, y) = tokio::join!(
                apply(&docs, &a, &first, now),
                apply(&docs, &b, &reversed, now)
            );
            let (x, y) = (x.unwrap(), y.unwrap());
            assert!(x.new_orders + y.new_orders <= 25, "round {round}");
            let (x, y) = tokio::join!(
                apply(&docs, &a, &second, now),
                apply(&docs, &b, &first, now)
            );
            x.unwrap();
            y.unwrap();
            assert_eq!(
                a.totals(&docs).await.unwrap(),
                expected(&[&first, &second]),
                "round {round}"
            );
        }
    }

    /// Reading totals while a writer writes: each partition's document is one snapshot, so
    /// the countries always sum to the count and the statuses too.
    #[tokio::test]
    async fn totals_read_mid_write_are_consistent() {
        let (first, second) = batches();
        let docs = initialised(MemoryDocuments::interleaving());
        let (writer, reader) = (TotalsBook::new(""), TotalsBook::new(""));
        let write = async {
            apply(&docs, &writer, &first, Timestamp::now()).await?;
            apply(&docs, &writer, &second, Timestamp::now()).await
        };
        let read = async {
            let mut seen = 0;
            for _ in 0..400 {
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

    /// An order id stored with other content is named as a conflict, not stored or counted,
    /// and named again when redelivered below the stored offset (its dead letter may not
    /// have been sent); the batch's redelivery (same content) is no conflict.
    #[test]
    fn another_order_under_a_stored_id_is_a_conflict() {
        let (first, _) = batches();
        let docs = initialised(MemoryDocuments::new());
        run(&docs, &first).unwrap();
        let again = run(&docs, &first).unwrap();
        assert_eq!((again.new_orders, again.conflicts.len()), (0, 0));
        let mut other = first.orders[3].clone();
        other.order.amount = Cents(other.order.amount.0 + 1);
        other.order.status = if other.order.status == crate::domain::OrderStatus::Cancelled {
            crate::domain::OrderStatus::Created
        } else {
            crate::domain::OrderStatus::Cancelled
        };
        other.kafka_offset = 999;
        for delivery in ["first", "redelivered"] {
            let outcome = run(&docs, &one_order(&other)).unwrap();
            assert_eq!(outcome.new_orders, 0, "{delivery}");
            assert_eq!(
                outcome.conflicts.len(),
                1,
                "{delivery}: {:?}",
                outcome.conflicts
            );
            let c = &outcome.conflicts[0];
            assert_eq!((c.order_id, c.kafka_offset), (other.order.order_id, 999));
            assert_eq!(c.differing, vec!["amount", "status"]);
        }
        check(&docs, &[&first], "after the conflict");
    }

    /// Bug 1 of issue 22: the original of an order was stored but not counted (a crash after
    /// its insert) when another order under its id arrived; the totals must hold the stored
    /// order's figures, once, and the other order must count nowhere.
    #[test]
    fn a_conflicting_order_never_lends_its_amounts_to_the_totals() {
        let g = OrderGenerator::new(5);
        let now = Timestamp::now();
        let original = stored(&g.order(7, now), now);
        let mut other = original.clone();
        other.order.amount = Cents(original.order.amount.0 + 5_000);
        other.order.country = if original.order.country.as_str() == "DE" {
            "FR".parse().unwrap()
        } else {
            "DE".parse().unwrap()
        };
        // Read from another partition (another producer's key, or a repartitioned topic),
        // so it may come before the original is redelivered.
        other.kafka_partition += 1;
        let docs = initialised(MemoryDocuments::new());
        // The fewest calls after which the order is stored: the writer crashes right after
        // its insert, before the totals.
        let after_insert = (0..100)
            .find(|k| {
                let probe = initialised(MemoryDocuments::new());
                probe.crash_after(*k);
                let _ = run(&probe, &one_order(&original));
                probe.doc(Space::Records, "7").is_some()
            })
            .unwrap();
        docs.crash_after(after_insert);
        assert!(run(&docs, &one_order(&original)).is_err());
        docs.restart();
        assert!(docs.doc(Space::Records, "7").is_some(), "stored");
        assert_eq!(totals(&docs).order_count, 0, "not counted");
        let outcome = run(&docs, &one_order(&other)).unwrap();
        assert_eq!(outcome.conflicts.len(), 1, "{outcome:?}");
        assert_eq!(outcome.new_orders, 0);
        // Kafka redelivers the original (its offset was never committed), and in the same
        // partition another record of the other order after it.
        let mut again = other.clone();
        again.kafka_partition = original.kafka_partition;
        again.kafka_offset = original.kafka_offset + 3;
        let outcome = run(
            &docs,
            &StoreBatch {
                orders: vec![original.clone(), again],
                ..StoreBatch::default()
            },
        )
        .unwrap();
        assert_eq!((outcome.new_orders, outcome.conflicts.len()), (1, 1));
        let t = totals(&docs);
        assert_eq!((t.order_count, t.total_sales), (1, original.order.amount));
        assert_eq!(t.by_country[original.order.country.as_str()].count, 1);
        assert!(!t.by_country.contains_key(other.order.country.as_str()));
    }

    /// Bug 2 of issue 22: a second payment for an order (another status) must not change
    /// the status copied onto the order: the first stored payment wins everywhere.
    #[test]
    fn one_payment_status_wins_everywhere() {
        let g = OrderGenerator::new(5);
        let now = Timestamp::now();
        let o = g.order(7, now);
        let pay = |status| Payment {
            order_id: 7,
            status,
            amount: o.amount,
            country: o.country,
            timestamp: 1.0,
        };
        let docs = initialised(MemoryDocuments::new());
        let mut b = StoreBatch {
            orders: vec![stored(&o, now)],
            ..StoreBatch::default()
        };
        b.push_payment(pay(PaymentStatus::Paid), at(0, 1));
        run(&docs, &b).unwrap();
        let mut late = StoreBatch::default();
        late.push_payment(pay(PaymentStatus::Failed), at(0, 2));
        assert_eq!(run(&docs, &late).unwrap().new_payments, 0);
        assert_eq!(
            docs.doc(Space::Records, "payment::7").unwrap()["status"],
            json!("PAID")
        );
        assert_eq!(
            docs.doc(Space::Records, "7").unwrap()["payment_status"],
            json!("PAID")
        );
        let t = totals(&docs);
        assert_eq!((t.payment_count, t.paid_count), (1, 1));
        // And when the second payment arrives before the order.
        let docs = initialised(MemoryDocuments::new());
        let mut early = StoreBatch::default();
        early.push_payment(pay(PaymentStatus::Failed), at(1, 5));
        run(&docs, &early).unwrap();
        let mut rest = StoreBatch {
            orders: vec![stored(&o, now)],
            ..StoreBatch::default()
        };
        rest.push_payment(pay(PaymentStatus::Paid), at(1, 6));
        run(&docs, &rest).unwrap();
        assert_eq!(
            docs.doc(Space::Records, "7").unwrap()["payment_status"],
            json!("FAILED")
        );
        assert_eq!(totals(&docs).paid_count, 0);
    }

    /// Offsets that go back (a recreated topic) stop the writer with what happened, rather
    /// than leaving new orders out of the totals.
    #[test]
    fn an_order_below_the_offset_that_is_not_stored_stops_the_writer() {
        let (first, _) = batches();
        let docs = initialised(MemoryDocuments::new());
        run(&docs, &first).unwrap();
        let g = OrderGenerator::new(9);
        let mut fresh = stored(&g.order(500, Timestamp::now()), Timestamp::now());
        fresh.kafka_partition = 0;
        fresh.kafka_offset = 3;
        let err = run(&docs, &one_order(&fresh)).unwrap_err().to_string();
        assert!(err.contains("the topic was recreated"), "{err}");
        assert!(docs.doc(Space::Records, "500").is_none());
    }

    /// Alerts and payments must come with their positions.
    #[test]
    fn alerts_without_positions_are_refused() {
        let (mut first, _) = batches();
        first.alert_positions.clear();
        let docs = initialised(MemoryDocuments::new());
        let err = run(&docs, &first).unwrap_err().to_string();
        assert!(err.contains("Kafka positions"), "{err}");
        assert_eq!(docs.calls().total(), 0);
    }
}
