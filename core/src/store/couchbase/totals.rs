//! The totals: one document per (stream, Kafka partition) holding the last offset applied
//! and that partition's figures, and one directory listing them with the figures carried
//! over from an earlier layout; reading the totals is key lookups only, never a query.
//!
//! ## Documents (collection `totals`, apart from the records and their indexes)
//! - `totals::<stream>::<partition>` (`stream` = `orders`, `fraud-alerts`, `payments`):
//!   `offset`, the last offset whose record is in `figures`. The writer updates it once per
//!   batch and partition: read it, add the records above `offset` that the partition owns
//!   (see `batch`), and replace it with the CAS it read, at `COUCHBASE_DURABILITY`. A
//!   writer that lost its partition (a zombie) gets a CAS mismatch, reads again and finds
//!   its records below the offset: it adds nothing. A write whose result is unknown is
//!   settled the same way, by reading the offset again when the batch is retried.
//! - `totals` (the directory): which partition documents exist (a writer lists a partition
//!   before its first write to it), and `base`, the figures of the records written before
//!   this layout (summed by `ordersctl store init`, see `migration`).
//!
//! Reading: the directory, then every partition it lists, all at once (1 + P lookups: 18 for
//! 6 partitions of each topic). Each document is one consistent snapshot (its countries
//! sum to its count); a reader may see one partition before and another after a write.

use super::documents::{Documents, Replaced, Space};
use crate::money::Cents;
use crate::store::{CountAndSum, StoreError, Totals};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Mutex;

/// Attempts at a CAS write before the batch fails (and is retried whole by the writer).
pub const CAS_ATTEMPTS: usize = 100;

/// The topic a record was read from, by what it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stream {
    Orders,
    Alerts,
    Payments,
}

impl Stream {
    pub const ALL: [Stream; 3] = [Stream::Orders, Stream::Alerts, Stream::Payments];

    pub fn name(self) -> &'static str {
        match self {
            Stream::Orders => "orders",
            Stream::Alerts => "fraud-alerts",
            Stream::Payments => "payments",
        }
    }
}

/// A count and a sum in cents, as stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pair {
    #[serde(default)]
    pub n: u64,
    #[serde(default)]
    pub cents: i64,
}

/// The figures of a set of records, in the totals documents.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Figures {
    #[serde(default)]
    pub orders: Pair,
    #[serde(default)]
    pub country: BTreeMap<String, Pair>,
    #[serde(default)]
    pub status: BTreeMap<String, Pair>,
    #[serde(default)]
    pub fraud: Pair,
    #[serde(default)]
    pub payments: u64,
    #[serde(default)]
    pub paid: u64,
}

fn add_pair(p: &mut Pair, n: u64, cents: i64) {
    p.n += n;
    p.cents += cents;
}

impl Figures {
    pub fn add_orders(&mut self, n: u64, cents: i64, country: &str, status: &str) {
        add_pair(&mut self.orders, n, cents);
        add_pair(
            self.country.entry(country.to_owned()).or_default(),
            n,
            cents,
        );
        add_pair(self.status.entry(status.to_owned()).or_default(), n, cents);
    }

    pub fn add_alerts(&mut self, n: u64, cents: i64) {
        add_pair(&mut self.fraud, n, cents);
    }

    pub fn add_payments(&mut self, n: u64, paid: u64) {
        self.payments += n;
        self.paid += paid;
    }

    pub fn add(&mut self, other: &Figures) {
        add_pair(&mut self.orders, other.orders.n, other.orders.cents);
        for (k, p) in &other.country {
            add_pair(self.country.entry(k.clone()).or_default(), p.n, p.cents);
        }
        for (k, p) in &other.status {
            add_pair(self.status.entry(k.clone()).or_default(), p.n, p.cents);
        }
        add_pair(&mut self.fraud, other.fraud.n, other.fraud.cents);
        self.add_payments(other.payments, other.paid);
    }

    pub fn totals(&self) -> Totals {
        let pairs = |m: &BTreeMap<String, Pair>| {
            m.iter()
                .map(|(k, p)| {
                    let cs = CountAndSum {
                        count: p.n,
                        sales: Cents(p.cents),
                    };
                    (k.clone(), cs)
                })
                .collect()
        };
        Totals {
            order_count: self.orders.n,
            total_sales: Cents(self.orders.cents),
            by_country: pairs(&self.country),
            by_status: pairs(&self.status),
            fraud_count: self.fraud.n,
            fraud_sales: Cents(self.fraud.cents),
            payment_count: self.payments,
            paid_count: self.paid,
        }
    }
}

pub fn partition_key(ns: &str, stream: Stream, partition: i32) -> String {
    format!("{ns}totals::{}::{partition}", stream.name())
}

pub fn directory_key(ns: &str) -> String {
    format!("{ns}totals")
}

/// One partition's totals document.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionTotals {
    /// The last offset applied; -1 before the first.
    pub offset: i64,
    #[serde(default)]
    pub figures: Figures,
}

impl PartitionTotals {
    pub fn empty() -> Self {
        PartitionTotals {
            offset: -1,
            figures: Figures::default(),
        }
    }

    fn document(&self, ns: &str, stream: Stream, partition: i32) -> Value {
        json!({
            "type": "totals", "ns": ns, "stream": stream.name(), "partition": partition,
            "offset": self.offset, "figures": self.figures,
        })
    }
}

/// The directory document.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Directory {
    /// Partitions with a totals document, by stream name.
    #[serde(default)]
    pub partitions: BTreeMap<String, BTreeSet<i32>>,
    /// The figures of the records written before this layout.
    #[serde(default)]
    pub base: Figures,
    /// How many records `base` sums.
    #[serde(default)]
    pub base_records: u64,
}

impl Directory {
    fn document(&self, ns: &str) -> Value {
        json!({
            "type": "totals_directory", "ns": ns, "partitions": self.partitions,
            "base": self.base, "base_records": self.base_records,
        })
    }

    fn lists(&self, stream: Stream, partition: i32) -> bool {
        self.partitions
            .get(stream.name())
            .is_some_and(|p| p.contains(&partition))
    }
}

fn decode<T: serde::de::DeserializeOwned>(key: &str, doc: Value) -> Result<T, StoreError> {
    serde_json::from_value(doc)
        .map_err(|e| StoreError::Corrupt(format!("totals document {key}: {e}")))
}

fn not_initialised(key: &str) -> StoreError {
    StoreError::Unavailable(format!(
        "the totals directory {key} is missing: run `ordersctl store init` once per deploy"
    ))
}

/// The directory and its CAS; `Unavailable` when `store init` has not made it.
pub async fn read_directory(
    docs: &dyn Documents,
    ns: &str,
) -> Result<(u64, Directory), StoreError> {
    let key = directory_key(ns);
    let stored = docs
        .get(Space::Totals, &key)
        .await?
        .ok_or_else(|| not_initialised(&key))?;
    Ok((stored.cas, decode(&key, stored.doc)?))
}

/// Changes the directory with `change` (CAS, durable), creating it empty first when
/// `create` and it is missing. `change` returns `false` when there is nothing to write.
pub async fn change_directory(
    docs: &dyn Documents,
    ns: &str,
    create: bool,
    change: impl Fn(&mut Directory) -> bool + Send + Sync,
) -> Result<Directory, StoreError> {
    let key = directory_key(ns);
    for _ in 0..CAS_ATTEMPTS {
        let Some(stored) = docs.get(Space::Totals, &key).await? else {
            if !create {
                return Err(not_initialised(&key));
            }
            docs.insert(Space::Totals, &key, &Directory::default().document(ns))
                .await?;
            continue;
        };
        let mut dir: Directory = decode(&key, stored.doc)?;
        if !change(&mut dir) {
            return Ok(dir);
        }
        match docs
            .replace(Space::Totals, &key, &dir.document(ns), stored.cas)
            .await?
        {
            Replaced::Done => return Ok(dir),
            Replaced::CasMismatch | Replaced::NotFound => continue,
        }
    }
    Err(StoreError::Unavailable(format!(
        "{key}: {CAS_ATTEMPTS} writers in a row changed it first"
    )))
}

/// The totals documents a store reads and writes, with the partitions it knows are listed.
#[derive(Debug, Default)]
pub struct TotalsBook {
    pub ns: String,
    listed: Mutex<HashSet<(Stream, i32)>>,
}

impl TotalsBook {
    pub fn new(ns: impl Into<String>) -> Self {
        TotalsBook {
            ns: ns.into(),
            listed: Mutex::new(HashSet::new()),
        }
    }

    fn known(&self) -> std::sync::MutexGuard<'_, HashSet<(Stream, i32)>> {
        self.listed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lists in the directory every partition of `wanted` not listed yet (one CAS write for
    /// all), before anything is written to their documents, so a reader never misses one.
    pub async fn list(
        &self,
        docs: &dyn Documents,
        wanted: &BTreeSet<(Stream, i32)>,
    ) -> Result<(), StoreError> {
        let missing: Vec<(Stream, i32)> = {
            let known = self.known();
            wanted
                .iter()
                .filter(|w| !known.contains(w))
                .copied()
                .collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        change_directory(docs, &self.ns, false, |dir| {
            let mut changed = false;
            for (stream, partition) in &missing {
                if !dir.lists(*stream, *partition) {
                    dir.partitions
                        .entry(stream.name().to_owned())
                        .or_default()
                        .insert(*partition);
                    changed = true;
                }
            }
            changed
        })
        .await?;
        self.known().extend(missing);
        Ok(())
    }

    /// One partition's totals and their CAS (`None`: no document yet).
    pub async fn read(
        &self,
        docs: &dyn Documents,
        stream: Stream,
        partition: i32,
    ) -> Result<(Option<u64>, PartitionTotals), StoreError> {
        let key = partition_key(&self.ns, stream, partition);
        match docs.get(Space::Totals, &key).await? {
            Some(stored) => Ok((Some(stored.cas), decode(&key, stored.doc)?)),
            None => Ok((None, PartitionTotals::empty())),
        }
    }

    /// Writes one partition's totals if it still is as read (`cas`; `None`: absent):
    /// `false` when another writer changed it first.
    pub async fn write(
        &self,
        docs: &dyn Documents,
        stream: Stream,
        partition: i32,
        cas: Option<u64>,
        totals: &PartitionTotals,
    ) -> Result<bool, StoreError> {
        let key = partition_key(&self.ns, stream, partition);
        let doc = totals.document(&self.ns, stream, partition);
        match cas {
            None => docs.insert(Space::Totals, &key, &doc).await,
            Some(cas) => Ok(docs.replace(Space::Totals, &key, &doc, cas).await? == Replaced::Done),
        }
    }

    /// The totals: the directory's base plus every partition it lists.
    pub async fn totals(&self, docs: &dyn Documents) -> Result<Totals, StoreError> {
        let (_, dir) = read_directory(docs, &self.ns).await?;
        let listed: Vec<(Stream, i32)> = Stream::ALL
            .iter()
            .flat_map(|s| {
                dir.partitions
                    .get(s.name())
                    .into_iter()
                    .flatten()
                    .map(move |p| (*s, *p))
            })
            .collect();
        let parts =
            futures::future::try_join_all(listed.iter().map(|(s, p)| self.read(docs, *s, *p)))
                .await?;
        let mut figures = dir.base.clone();
        for (_, part) in &parts {
            figures.add(&part.figures);
        }
        Ok(figures.totals())
    }
}

#[cfg(test)]
mod tests {
    use super::super::documents::MemoryDocuments;
    use super::*;

    #[tokio::test]
    async fn totals_are_the_base_plus_every_listed_partition() {
        let docs = MemoryDocuments::new();
        let book = TotalsBook::new("run:");
        let err = book.totals(&docs).await.unwrap_err().to_string();
        assert!(err.contains("ordersctl store init"), "{err}");
        change_directory(&docs, "run:", true, |dir| {
            dir.base.add_orders(2, 500, "DE", "CREATED");
            true
        })
        .await
        .unwrap();
        let wanted: BTreeSet<_> = [(Stream::Orders, 3), (Stream::Payments, 0)].into();
        book.list(&docs, &wanted).await.unwrap();
        let before = docs.calls();
        book.list(&docs, &wanted).await.unwrap();
        assert_eq!(docs.calls(), before, "known partitions cost nothing");
        let (cas, mut part) = book.read(&docs, Stream::Orders, 3).await.unwrap();
        assert_eq!((cas, part.offset), (None, -1));
        part.offset = 41;
        part.figures.add_orders(1, 250, "US", "CREATED");
        assert!(book
            .write(&docs, Stream::Orders, 3, cas, &part)
            .await
            .unwrap());
        assert!(
            !book
                .write(&docs, Stream::Orders, 3, cas, &part)
                .await
                .unwrap(),
            "a second writer from the same read"
        );
        let (cas, _) = book.read(&docs, Stream::Payments, 0).await.unwrap();
        let mut paid = PartitionTotals::empty();
        paid.figures.add_payments(3, 2);
        book.write(&docs, Stream::Payments, 0, cas, &paid)
            .await
            .unwrap();
        let t = book.totals(&docs).await.unwrap();
        assert_eq!((t.order_count, t.total_sales), (3, Cents(750)));
        assert_eq!(t.by_country["DE"].count, 2);
        assert_eq!(t.by_status["CREATED"].sales, Cents(750));
        assert_eq!((t.payment_count, t.paid_count), (3, 2));
        let stored = docs.doc(Space::Totals, "run:totals::orders::3").unwrap();
        assert_eq!(stored["offset"], 41);
        assert_eq!(stored["figures"]["country"]["US"]["cents"], 250);
    }
}
