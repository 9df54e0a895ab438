//! Recounting the documents an earlier version stored, before totals were kept in counter
//! documents and before fraud and payment status were copied onto orders: `ordersctl store
//! init` finds them (through [`PENDING_INDEX`], which holds only them), counts each once,
//! copies what its alert and payment say onto each order, and sets `fraud: false` on orders
//! without an alert, so the fraud list holds them.
//!
//! ## Exactly once, however often it runs, crashes or meets a writer
//! A document is *pending* ([`PENDING_CONDITION`]) while it has no `tally`, or carries the
//! flag `recounting`, or is an order without `fraud`. Recounting one:
//! 1. sets `recounting` when it has no `tally` yet, so it stays pending until step 4;
//! 2. counts it with [`Counters::count_stored`]: its marker makes a second count a no-op,
//!    and a writer redelivering the same record at the same time meets the same marker;
//! 3. copies the learned fields (idempotent upserts; `fraud: false` only where nothing is);
//! 4. removes `recounting`: the document leaves the pending index.
//!
//! A crash anywhere before step 4 leaves the document pending, and the next run redoes
//! steps 2–4, which find what was done. A run reads the pending keys in key order, once
//! (a document it cannot read is reported and left, never retried in a loop).

use super::batch::{
    alert_counted, fraud_fields, learn, learn_from_effects, order_counted, payment_counted,
};
use super::counters::{Counted, Counters};
use super::documents::{Documents, Lookup, MemoryDocuments, Mutated, Mutation};
use super::{order_key, CouchbaseConfig};
use crate::domain::{Country, OrderStatus, PaymentStatus};
use crate::store::StoreError;
use ::couchbase::cluster::Cluster;
use ::couchbase::options::query_options::{QueryOptions, ScanConsistency};
use async_trait::async_trait;
use futures::StreamExt;
use serde_json::{json, Value};

/// The documents still to recount (the `WHERE` of [`PENDING_INDEX`]).
pub const PENDING_CONDITION: &str = "type IN [\"order\", \"alert\", \"payment\"] AND \
     (tally IS MISSING OR recounting IS VALUED OR (type = \"order\" AND fraud IS MISSING))";

/// The index holding exactly the pending documents, by run and key.
pub const PENDING_INDEX: &str = "idx_recount_pending";

/// The flag a document carries while it is being recounted.
const FLAG: &str = "recounting";

/// Documents recounted at once.
const CONCURRENCY: usize = 64;

/// Keys read per page of pending documents.
pub const PAGE: usize = 1_000;

/// [`PENDING_CONDITION`], on a document in memory.
pub fn is_pending(doc: &Value) -> bool {
    let kind = doc.get("type").and_then(Value::as_str);
    let has = |field: &str| doc.get(field).is_some();
    let valued = |field: &str| doc.get(field).is_some_and(|v| !v.is_null());
    matches!(kind, Some("order" | "alert" | "payment"))
        && (!has("tally") || valued(FLAG) || (kind == Some("order") && !has("fraud")))
}

/// Where the pending documents are found.
#[async_trait]
pub trait PendingKeys: Send + Sync {
    /// Keys of the pending documents of run `ns`, after `after` in key order, at most
    /// `limit`.
    async fn pending_after(
        &self,
        ns: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError>;
}

#[async_trait]
impl PendingKeys for MemoryDocuments {
    async fn pending_after(
        &self,
        ns: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        Ok(self.keys_where(after, limit, |doc| {
            doc.get("ns").and_then(Value::as_str) == Some(ns) && is_pending(doc)
        }))
    }
}

/// The statement behind [`PendingKeys`] on a cluster: one range of [`PENDING_INDEX`].
pub fn pending_statement(bucket: &str) -> String {
    format!(
        "SELECT RAW META().id FROM {} WHERE ns = $ns AND META().id > $after AND {} \
         ORDER BY META().id LIMIT $limit",
        super::keyspace(bucket),
        PENDING_CONDITION
    )
}

/// [`PendingKeys`] on a cluster: [`pending_statement`], seeing every write made before it
/// (`request_plus`), so a run finds what a writer stored just before.
pub struct QueryPending<'a> {
    pub cluster: &'a Cluster,
    pub config: &'a CouchbaseConfig,
}

#[async_trait]
impl PendingKeys for QueryPending<'_> {
    async fn pending_after(
        &self,
        ns: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let rows = super::indexes::rows(
            self.cluster,
            self.config,
            pending_statement(&self.config.bucket),
            vec![
                ("ns", json!(ns)),
                ("after", json!(after)),
                ("limit", json!(limit)),
            ],
            QueryOptions::new().scan_consistency(ScanConsistency::RequestPlus),
        )
        .await?;
        rows.into_iter()
            .map(|row| match row {
                Value::String(key) => Ok(key),
                other => Err(StoreError::Query(format!(
                    "a pending key that is not a string: {other}"
                ))),
            })
            .collect()
    }
}

/// What became of one pending document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recounted {
    Done,
    /// Deleted since it was listed.
    Vanished,
    /// Not a record this version can count (the reason); left as it is.
    Unreadable(String),
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecountReport {
    pub recounted: u64,
    pub vanished: u64,
    /// Documents left pending, with why.
    pub unreadable: Vec<(String, String)>,
}

/// What a pending document is, read from its fields.
enum Record {
    Order(Counted),
    Alert(Counted, Value),
    Payment(Counted, Value),
}

const FIELDS: [&str; 6] = [
    "type",
    "order_id",
    "amount_cents",
    "country",
    "status",
    "reason",
];

fn record_of(ns: &str, values: &[Option<Value>]) -> Result<Record, String> {
    let field = |name: &str| {
        FIELDS
            .iter()
            .position(|f| *f == name)
            .and_then(|i| values.get(i).cloned().flatten())
            .ok_or_else(|| format!("no {name}"))
    };
    let id = field("order_id")?
        .as_u64()
        .ok_or("order_id is not a whole number")?;
    let cents = || {
        field("amount_cents")?
            .as_i64()
            .ok_or_else(|| "amount_cents is not a whole number".to_owned())
    };
    match field("type")?.as_str() {
        Some("order") => {
            let country: Country =
                serde_json::from_value(field("country")?).map_err(|e| format!("country: {e}"))?;
            let status: OrderStatus =
                serde_json::from_value(field("status")?).map_err(|e| format!("status: {e}"))?;
            Ok(Record::Order(order_counted(
                ns,
                id,
                cents()?,
                country,
                status,
            )))
        }
        Some("alert") => Ok(Record::Alert(
            alert_counted(ns, id, cents()?),
            field("reason")?,
        )),
        Some("payment") => {
            let raw = field("status")?;
            let status: PaymentStatus =
                serde_json::from_value(raw.clone()).map_err(|e| format!("status: {e}"))?;
            Ok(Record::Payment(payment_counted(ns, id, status), raw))
        }
        other => Err(format!("type {other:?} is not counted")),
    }
}

/// Accepts the outcomes a step may meet again when it is redone.
fn expect(key: &str, what: &str, got: Mutated, fine: &[Mutated]) -> Result<(), StoreError> {
    match got {
        Mutated::Done(_) => Ok(()),
        other if fine.contains(&other) => Ok(()),
        other => Err(StoreError::Query(format!("{what} {key}: {other:?}"))),
    }
}

/// Recounts one pending document (see the module's doc for the steps).
pub async fn recount_document(
    docs: &dyn Documents,
    counters: &Counters,
    key: &str,
) -> Result<Recounted, StoreError> {
    let mut specs: Vec<Lookup> = FIELDS.iter().map(|f| Lookup::Get((*f).into())).collect();
    specs.extend(["tally", FLAG, "fraud"].map(|f| Lookup::Exists(f.into())));
    let Some(looked) = docs.lookup_in(key, &specs).await? else {
        return Ok(Recounted::Vanished);
    };
    let exists = |i: usize| looked.values.get(FIELDS.len() + i) == Some(&Some(json!(true)));
    let (tallied, flagged, has_fraud) = (exists(0), exists(1), exists(2));
    let record = match record_of(&counters.ns, &looked.values[..FIELDS.len()]) {
        Ok(record) => record,
        Err(why) => return Ok(Recounted::Unreadable(why)),
    };
    if !tallied && !flagged {
        let set = docs
            .mutate_in(key, &[Mutation::Insert(FLAG.into(), json!(true))], None)
            .await?;
        if set == Mutated::DocumentNotFound {
            return Ok(Recounted::Vanished);
        }
        expect(key, "flagging", set, &[Mutated::PathExists])?;
    }
    let ns = counters.ns.as_str();
    match &record {
        Record::Order(counted) => {
            counters.count_stored(docs, counted).await?;
            learn_from_effects(docs, ns, counted.order_id).await?;
            if !has_fraud {
                let set = docs
                    .mutate_in(key, &[Mutation::Insert("fraud".into(), json!(false))], None)
                    .await?;
                expect(key, "marking not fraudulent", set, &[Mutated::PathExists])?;
            }
        }
        Record::Alert(counted, reason) => {
            counters.count_stored(docs, counted).await?;
            learn(
                docs,
                order_key(ns, counted.order_id),
                fraud_fields(reason.clone()),
            )
            .await?;
        }
        Record::Payment(counted, status) => {
            counters.count_stored(docs, counted).await?;
            let fields = vec![Mutation::Upsert("payment_status".into(), status.clone())];
            learn(docs, order_key(ns, counted.order_id), fields).await?;
        }
    }
    if tallied && !flagged {
        return Ok(Recounted::Done);
    }
    let cleared = docs
        .mutate_in(key, &[Mutation::Remove(FLAG.into())], None)
        .await?;
    expect(key, "unflagging", cleared, &[Mutated::PathNotFound])?;
    Ok(Recounted::Done)
}

/// Recounts every pending document of the run, page by page in key order.
pub async fn recount_all(
    docs: &dyn Documents,
    counters: &Counters,
    pending: &dyn PendingKeys,
    page: usize,
) -> Result<RecountReport, StoreError> {
    let mut report = RecountReport::default();
    let mut after = String::new();
    loop {
        let keys = pending.pending_after(&counters.ns, &after, page).await?;
        let Some(last) = keys.last() else {
            return Ok(report);
        };
        after = last.clone();
        let mut done = futures::stream::iter(keys)
            .map(|key| async move {
                let outcome = recount_document(docs, counters, &key).await;
                (key, outcome)
            })
            .buffer_unordered(CONCURRENCY);
        while let Some((key, outcome)) = done.next().await {
            match outcome? {
                Recounted::Done => report.recounted += 1,
                Recounted::Vanished => report.vanished += 1,
                Recounted::Unreadable(why) => report.unreadable.push((key, why)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::batch::apply;
    use super::super::batch::tests::{batches, check, expected, LAYOUT};
    use super::super::{alert_document, alert_key, order_document, payment_document, payment_key};
    use super::*;
    use crate::domain::Timestamp;
    use crate::store::StoreBatch;

    /// What a version before the counters stored for `batch`: its documents as they were
    /// then (no `tally`, no `fraud`, nothing copied onto orders), nothing counted.
    fn stored_by_an_earlier_version(docs: &MemoryDocuments, batch: &StoreBatch) {
        let now = Timestamp::now();
        for s in &batch.orders {
            let mut doc = order_document("", s);
            doc.as_object_mut().unwrap().remove("fraud");
            docs.put(&order_key("", s.order.order_id), doc);
        }
        for a in &batch.alerts {
            docs.put(&alert_key("", a.order_id), alert_document("", a, now));
        }
        for p in &batch.payments {
            docs.put(&payment_key("", p.order_id), payment_document("", p, now));
        }
    }

    fn run(docs: &MemoryDocuments) -> Result<RecountReport, StoreError> {
        // A fresh process each time, reading small pages.
        let counters = Counters::new("", LAYOUT);
        futures::executor::block_on(recount_all(docs, &counters, docs, 7))
    }

    /// Everything a finished recount must leave: exact totals and learned fields
    /// ([`check`]), `fraud` on every order (true exactly when it has an alert), no flag and
    /// nothing pending.
    fn finished(docs: &MemoryDocuments, batches: &[&StoreBatch], what: &str) {
        check(docs, &Counters::new("", LAYOUT), batches, what);
        let alerted: std::collections::HashSet<u64> = batches
            .iter()
            .flat_map(|b| b.alerts.iter().map(|a| a.order_id))
            .collect();
        for b in batches {
            for s in &b.orders {
                let id = s.order.order_id;
                let doc = docs.get(&order_key("", id)).unwrap();
                assert_eq!(
                    doc["fraud"],
                    json!(alerted.contains(&id)),
                    "{what}: order {id}"
                );
            }
        }
        assert!(
            docs.keys_where("", usize::MAX, |d| d.get(FLAG).is_some())
                .is_empty(),
            "{what}"
        );
        assert_eq!(docs.pending_keys(), Vec::<String>::new(), "{what}");
    }

    impl MemoryDocuments {
        fn pending_keys(&self) -> Vec<String> {
            self.keys_where("", usize::MAX, is_pending)
        }
    }

    /// Documents the current write path stores are never pending: the index stays empty
    /// once the recount has run, and costs nothing.
    #[test]
    fn documents_written_now_are_never_pending() {
        let (first, second) = batches();
        let docs = MemoryDocuments::new();
        for b in [&first, &second] {
            let counters = Counters::new("", LAYOUT);
            futures::executor::block_on(apply(&docs, &counters, b, Timestamp::now())).unwrap();
        }
        assert_eq!(docs.pending_keys(), Vec::<String>::new());
        assert_eq!(run(&docs).unwrap(), RecountReport::default());
    }

    /// An earlier version's documents, with new ones stored after: the recount counts the
    /// old once and copies their learned fields; run again, it finds nothing.
    #[test]
    fn an_earlier_versions_documents_are_counted_once() {
        let (first, second) = batches();
        let docs = MemoryDocuments::new();
        stored_by_an_earlier_version(&docs, &first);
        assert_eq!(
            docs.pending_keys().len(),
            25 + 10 + 15,
            "every old document is pending"
        );
        // New records arrive, and with them some old ones again (orders 21 to 25): those
        // the writer has counted and marked are no longer pending.
        let counters = Counters::new("", LAYOUT);
        futures::executor::block_on(apply(&docs, &counters, &second, Timestamp::now())).unwrap();
        let pending = docs.pending_keys().len() as u64;
        assert!(pending < 50, "{pending}");
        let report = run(&docs).unwrap();
        assert_eq!(report.recounted, pending);
        assert!(report.unreadable.is_empty(), "{report:?}");
        finished(&docs, &[&first, &second], "recounted");
        assert_eq!(run(&docs).unwrap(), RecountReport::default());
        let totals = futures::executor::block_on(Counters::new("", LAYOUT).totals(&docs));
        assert_eq!(totals.unwrap(), expected(&[&first, &second]));
    }

    /// Crash the recount between every pair of its calls, then run it again: exact totals
    /// and fields every time (a redelivery of the old records by the writer too).
    #[test]
    fn a_crash_between_any_two_calls_neither_loses_nor_double_counts() {
        let (first, second) = batches();
        let clean = MemoryDocuments::new();
        stored_by_an_earlier_version(&clean, &first);
        run(&clean).unwrap();
        let calls = clean.calls().total();
        assert!(calls > 100, "{calls}");
        for k in 0..calls {
            let docs = MemoryDocuments::new();
            stored_by_an_earlier_version(&docs, &first);
            docs.crash_after(k);
            assert!(run(&docs).is_err(), "crash after {k} of {calls} calls");
            docs.restart();
            if k % 3 == 0 {
                // Analytics redelivers some old records meanwhile (a rewound group).
                let counters = Counters::new("", LAYOUT);
                futures::executor::block_on(apply(&docs, &counters, &first, Timestamp::now()))
                    .unwrap();
            }
            run(&docs).unwrap();
            finished(&docs, &[&first], &format!("crash after call {k}"));
            let counters = Counters::new("", LAYOUT);
            futures::executor::block_on(apply(&docs, &counters, &second, Timestamp::now()))
                .unwrap();
            finished(
                &docs,
                &[&first, &second],
                &format!("then the next batch, {k}"),
            );
        }
    }

    /// The recount and a writer redelivering the same old records at once, their calls
    /// interleaved one by one: each record is counted once.
    #[tokio::test]
    async fn a_recount_and_a_redelivering_writer_count_each_record_once() {
        let (first, _) = batches();
        for round in 0..10 {
            let docs = MemoryDocuments::interleaving();
            stored_by_an_earlier_version(&docs, &first);
            let (a, b) = (Counters::new("", LAYOUT), Counters::new("", LAYOUT));
            let mut redelivered = first.clone();
            redelivered.orders.rotate_left(round * 2);
            let (recount, written) = tokio::join!(
                recount_all(&docs, &a, &docs, 5),
                apply(&docs, &b, &redelivered, Timestamp::now())
            );
            recount.unwrap();
            written.unwrap();
            finished(&docs.snapshot(), &[&first], &format!("round {round}"));
        }
    }

    /// A document that is not a record this version can count is reported and left, and
    /// the others are recounted.
    #[test]
    fn an_unreadable_document_is_reported_and_left() {
        let (first, _) = batches();
        let docs = MemoryDocuments::new();
        stored_by_an_earlier_version(&docs, &first);
        let key = order_key("", 5);
        let mut broken = docs.get(&key).unwrap();
        broken.as_object_mut().unwrap().remove("amount_cents");
        docs.put(&key, broken);
        docs.put(
            "order::x",
            json!({"type": "order", "ns": "", "order_id": "x"}),
        );
        let report = run(&docs).unwrap();
        assert_eq!(
            report.unreadable,
            vec![
                (key.clone(), "no amount_cents".to_owned()),
                (
                    "order::x".to_owned(),
                    "order_id is not a whole number".to_owned()
                ),
            ]
        );
        assert_eq!(report.recounted, 25 + 10 + 15 - 1);
        assert_eq!(docs.pending_keys(), vec![key, "order::x".to_owned()]);
        let totals = futures::executor::block_on(Counters::new("", LAYOUT).totals(&docs)).unwrap();
        assert_eq!(totals.order_count, 24);
    }

    #[test]
    fn the_pending_statement_reads_the_pending_index() {
        let statement = pending_statement("order_analytics");
        assert_eq!(
            statement,
            format!(
                "SELECT RAW META().id FROM `order_analytics` WHERE ns = $ns AND META().id > \
                 $after AND {PENDING_CONDITION} ORDER BY META().id LIMIT $limit"
            )
        );
        let index = super::super::indexes::definition(PENDING_INDEX).unwrap();
        assert_eq!(index.condition, PENDING_CONDITION);
        assert_eq!(index.keys, ["ns", "META().id"]);
        // The condition in memory and in N1QL name the same fields.
        for field in ["tally", FLAG, "fraud", "type"] {
            assert!(PENDING_CONDITION.contains(field), "{field}");
        }
        assert!(is_pending(
            &json!({"type": "order", "tally": "t", "fraud": false, FLAG: true})
        ));
        assert!(is_pending(&json!({"type": "order", "tally": "t"})));
        assert!(!is_pending(&json!({"type": "alert", "tally": "t"})));
        assert!(is_pending(&json!({"type": "payment"})));
        assert!(!is_pending(&json!({"type": "canary_stage"})));
        assert!(!is_pending(
            &json!({"type": "order", "tally": "t", "fraud": true})
        ));
    }
}
