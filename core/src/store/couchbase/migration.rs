//! Moving a bucket written by an earlier layout (sharded counter documents, or no totals
//! at all) to the partition totals: `ordersctl store init` sums the records that carry no
//! `position` — every record an earlier version wrote, and only those, since this one writes
//! `position` into every record it inserts — and stores the sum as the directory's `base`.
//!
//! Exact, and safe to run again: a record without `position` is never counted by a
//! partition (no record owns it), so the base and the partitions count disjoint records,
//! and each run replaces the base with a fresh sum. An old writer still running while it
//! runs may add records it misses: run it once more after the rollout (docs/deploy.md).
//! The earlier layout's counter documents (`tally::*`) are no longer read.

use super::documents::{Documents, MemoryDocuments, Space};
use super::totals::{change_directory, Figures};
use super::{keyspace, whole, CouchbaseConfig};
use crate::store::StoreError;
use ::couchbase::cluster::Cluster;
use ::couchbase::options::query_options::{QueryOptions, ScanConsistency};
use async_trait::async_trait;
use serde_json::{json, Value};

/// The records an earlier layout wrote (the `WHERE` of [`BASE_INDEX`]).
pub const BASE_CONDITION: &str =
    "type IN [\"order\", \"alert\", \"payment\"] AND position IS MISSING";

/// The index holding exactly the records an earlier layout wrote, with what they add up to
/// (covering).
pub const BASE_INDEX: &str = "idx_totals_base";

/// The figures of the earlier layout's records of run `ns`, one row per type, country and
/// status: one covering scan of [`BASE_INDEX`], seeing every write made before it.
pub fn base_statement(bucket: &str) -> String {
    format!(
        "SELECT l.type AS t, l.country AS c, l.status AS s, COUNT(1) AS n, \
         SUM(l.amount_cents) AS cents FROM {} AS l USE INDEX ({BASE_INDEX} USING GSI) \
         WHERE l.ns = $ns AND l.type IN [\"order\", \"alert\", \"payment\"] \
         AND l.position IS MISSING GROUP BY l.type, l.country, l.status",
        keyspace(bucket)
    )
}

/// Adds `n` records of type `t` (country `c`, status `s`, `cents` in all) to `figures`.
fn add_group(figures: &mut Figures, t: &str, c: &str, s: &str, n: u64, cents: i64) {
    match t {
        "order" => figures.add_orders(n, cents, c, s),
        "alert" => figures.add_alerts(n, cents),
        "payment" => figures.add_payments(n, if s == "PAID" { n } else { 0 }),
        _ => {}
    }
}

/// Where the earlier layout's records are summed.
#[async_trait]
pub trait EarlierRecords: Send + Sync {
    /// The figures of run `ns`'s records without `position`, and how many there are.
    async fn figures(&self, ns: &str) -> Result<(Figures, u64), StoreError>;
}

#[async_trait]
impl EarlierRecords for MemoryDocuments {
    async fn figures(&self, ns: &str) -> Result<(Figures, u64), StoreError> {
        let docs = self.docs_where(Space::Records, |d| {
            d.get("ns").and_then(Value::as_str) == Some(ns)
                && matches!(
                    d.get("type").and_then(Value::as_str),
                    Some("order" | "alert" | "payment")
                )
                && d.get("position").is_none()
        });
        let mut figures = Figures::default();
        let text = |d: &Value, f: &str| d.get(f).and_then(Value::as_str).unwrap_or("").to_owned();
        for d in &docs {
            let cents = d.get("amount_cents").and_then(Value::as_i64).unwrap_or(0);
            let (t, c, s) = (text(d, "type"), text(d, "country"), text(d, "status"));
            add_group(&mut figures, &t, &c, &s, 1, cents);
        }
        Ok((figures, docs.len() as u64))
    }
}

/// [`EarlierRecords`] on a cluster: [`base_statement`] at `request_plus`.
pub struct QueryEarlier<'a> {
    pub cluster: &'a Cluster,
    pub config: &'a CouchbaseConfig,
}

#[async_trait]
impl EarlierRecords for QueryEarlier<'_> {
    async fn figures(&self, ns: &str) -> Result<(Figures, u64), StoreError> {
        let rows = super::indexes::rows(
            self.cluster,
            self.config,
            base_statement(&self.config.bucket),
            vec![("ns", json!(ns))],
            QueryOptions::new().scan_consistency(ScanConsistency::RequestPlus),
        )
        .await?;
        let mut figures = Figures::default();
        let mut records = 0;
        for row in &rows {
            let text = |f: &str| row.get(f).and_then(Value::as_str).unwrap_or("");
            let n = u64::try_from(whole(row.get("n"))?).unwrap_or(0);
            let cents = whole(row.get("cents"))?;
            add_group(&mut figures, text("t"), text("c"), text("s"), n, cents);
            records += n;
        }
        Ok((figures, records))
    }
}

/// What the migration found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationReport {
    /// Records of an earlier layout summed into the base.
    pub earlier_records: u64,
    /// Whether the base changed (a first run on an old bucket, or an old writer's records
    /// added since the last run).
    pub changed: bool,
}

/// Creates the totals directory when missing, and sets its base to the earlier layout's
/// records (see the module's doc).
pub async fn migrate(
    docs: &dyn Documents,
    ns: &str,
    earlier: &dyn EarlierRecords,
) -> Result<MigrationReport, StoreError> {
    let (figures, records) = earlier.figures(ns).await?;
    let changed = std::sync::atomic::AtomicBool::new(false);
    change_directory(docs, ns, true, |dir| {
        let differs = dir.base != figures || dir.base_records != records;
        if differs {
            dir.base = figures.clone();
            dir.base_records = records;
        }
        changed.store(differs, std::sync::atomic::Ordering::Relaxed);
        differs
    })
    .await?;
    Ok(MigrationReport {
        earlier_records: records,
        changed: changed.into_inner(),
    })
}

#[cfg(test)]
mod tests {
    use super::super::batch::apply;
    use super::super::batch::tests::{batches, check, expected, totals};
    use super::super::totals::TotalsBook;
    use super::*;
    use crate::domain::Timestamp;
    use crate::store::StoreBatch;

    /// A record as the counter layout stored it: no `position`, a `tally`.
    fn as_earlier_layout(doc: &Value) -> Value {
        let mut doc = doc.clone();
        if let Some(map) = doc.as_object_mut() {
            map.remove("position");
            map.insert("tally".into(), json!("tally::3::0"));
        }
        doc
    }

    /// Stores `batch` the way the counter layout did (its records without `position`, plus
    /// a counter document, which is never read again).
    fn write_earlier(docs: &MemoryDocuments, batch: &StoreBatch) {
        let scratch = super::super::batch::tests::initialised(MemoryDocuments::new());
        futures::executor::block_on(apply(
            &scratch,
            &TotalsBook::new(""),
            batch,
            Timestamp::now(),
        ))
        .unwrap();
        for doc in scratch.docs_where(Space::Records, |_| true) {
            let key = match doc["type"].as_str() {
                Some("alert") => format!("alert::{}", doc["order_id"]),
                Some("payment") => format!("payment::{}", doc["order_id"]),
                _ => doc["order_id"].to_string(),
            };
            if docs.doc(Space::Records, &key).is_none() {
                docs.put(Space::Records, &key, as_earlier_layout(&doc));
            }
        }
        docs.put(
            Space::Records,
            "tally::3",
            json!({"type": "tally_summary", "ns": "", "generation": 0, "c": {"n": 999}}),
        );
    }

    /// A bucket the counter layout wrote, then `store init`, then the new writer
    /// redelivering some of the same records and adding new ones; an old writer still
    /// running adds more, and a second `store init` takes them in.
    #[test]
    fn store_init_carries_an_earlier_layouts_records_into_the_totals_once() {
        let (first, second) = batches();
        let docs = MemoryDocuments::new();
        write_earlier(&docs, &first);
        let report = futures::executor::block_on(migrate(&docs, "", &docs)).unwrap();
        assert_eq!(report.earlier_records, 25 + 10 + 15);
        assert!(report.changed);
        assert_eq!(totals(&docs), expected(&[&first]), "the base alone");
        // Kafka redelivers the first batch to the new writer, then the second arrives.
        let book = TotalsBook::new("");
        let again =
            futures::executor::block_on(apply(&docs, &book, &first, Timestamp::now())).unwrap();
        assert_eq!(
            (again.new_orders, again.new_alerts, again.new_payments),
            (0, 0, 0)
        );
        futures::executor::block_on(apply(&docs, &book, &second, Timestamp::now())).unwrap();
        check(&docs, &[&first, &second], "after the new writer");
        let report = futures::executor::block_on(migrate(&docs, "", &docs)).unwrap();
        assert!(!report.changed, "a second run finds nothing to change");
        assert_eq!(totals(&docs), expected(&[&first, &second]));
        // An old writer, still running during the rollout, stores an order of its own.
        let g = crate::generator::OrderGenerator::new(3);
        let late = StoreBatch {
            orders: vec![super::super::batch::tests::stored(
                &g.order(400, Timestamp::now()),
                Timestamp::now(),
            )],
            ..StoreBatch::default()
        };
        write_earlier(&docs, &late);
        let report = futures::executor::block_on(migrate(&docs, "", &docs)).unwrap();
        assert!(report.changed);
        assert_eq!(report.earlier_records, 51);
        assert_eq!(totals(&docs), expected(&[&first, &second, &late]));
    }

    /// On a new bucket it only creates the empty directory.
    #[test]
    fn store_init_on_a_new_bucket_makes_an_empty_directory() {
        let docs = MemoryDocuments::new();
        let report = futures::executor::block_on(migrate(&docs, "run:", &docs)).unwrap();
        assert_eq!(report, MigrationReport::default());
        let t = futures::executor::block_on(TotalsBook::new("run:").totals(&docs)).unwrap();
        assert_eq!(t, crate::store::Totals::default());
    }

    #[test]
    fn the_base_statement_reads_its_partial_index_alone() {
        let s = base_statement("order_analytics");
        assert!(s.contains("USE INDEX (idx_totals_base USING GSI)"), "{s}");
        assert!(s.contains("AND l.position IS MISSING GROUP BY"), "{s}");
        let index = super::super::indexes::definition(BASE_INDEX).unwrap();
        assert_eq!(index.condition, BASE_CONDITION);
        for field in ["ns", "type", "country", "status", "amount_cents"] {
            assert!(index.keys.contains(&field), "{field}");
        }
    }
}
