//! Running totals in counter documents, exact under redelivery, crashes and concurrent
//! writers, read with a handful of key lookups and never a query.
//!
//! ## Documents
//! - A record (order, alert, payment) is inserted once under its key, carrying `tally`:
//!   the key of the counter document that counts it. Chosen at insert, it changes only as
//!   said below, so every redelivery finds the same place.
//! - Counter documents are sharded: shard `s` = a hash of the order id mod [`SHARDS`],
//!   so concurrent writers spread over 32 documents. Each shard has *generations*
//!   `tally::s::g`, each holding the counters (`c`) and one marker per record counted
//!   there (`m.o123`, `m.a123`, `m.p123`), and a summary `tally::s` holding the sum of
//!   its closed generations and the number of the open one.
//!
//! ## Counting a record: one `mutate_in` on its generation
//! `[increment open.markers (its parent must exist), insert m.<marker>, increment c.<each
//! total>]`, applied together or not at all. On redelivery the marker insert fails (`PathExists`),
//! so nothing is added twice; a crash before the call is redone by the redelivery, a
//! crash after it finds the marker. The record's own insert comes first, so a redelivery
//! always learns where its marker lives.
//!
//! ## Bounded documents: generations roll over
//! A generation takes [`MARKERS_PER_GENERATION`] markers; the writer whose increment
//! passes that seals it (removes `open`: every later counting call on it fails with
//! `PathNotFound` as a whole, so a sealed generation never changes again) and folds it
//! into the summary (a CAS write of `c` = summary + generation, `generation` = g + 1).
//! Anyone meeting a sealed generation helps finish the fold. A record whose generation is
//! sealed without its marker was never counted, and never will be there: its `tally` is
//! moved (CAS on the record's document, so concurrent writers agree) to the summary's open
//! generation, and counted there. So a marker lands in exactly one generation, once.
//!
//! Sizes at 100 M orders (each order makes up to 3 markers, ~16 bytes each): a generation
//! is at most 10,000 markers (≈160 KB, plus the few writers in flight when it filled);
//! 300 M markers / 10,000 = 30,000 sealed generations in all, ~940 per shard; a summary is
//! a few hundred bytes. Reading the totals is 32 summary lookups and 32 open-generation
//! lookups, in two concurrent rounds; each document's counters change together, so every
//! shard's figures are one consistent snapshot (its countries sum to its count).

use super::documents::{Documents, Lookup, Mutated, Mutation};
use crate::money::Cents;
use crate::store::{CountAndSum, StoreError, Totals};
use futures::{StreamExt, TryStreamExt};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::Mutex;

/// Counter shards: writers spread over this many documents.
pub const SHARDS: u64 = 32;
/// Markers a generation takes before it is sealed.
pub const MARKERS_PER_GENERATION: i64 = 10_000;
/// The object of an open generation that a seal removes: its one field counts the markers
/// (`open.markers`). A counter whose *parent* is missing fails (`PathNotFound`); one whose
/// leaf alone is missing is created by the server, so the seal removes the parent.
const OPEN: &str = "open";
const OPEN_MARKERS: &str = "open.markers";
/// Records counted at once by one writer.
const CONCURRENCY: usize = 64;
/// Attempts at a CAS write before giving up (a retry of the batch starts over).
const CAS_ATTEMPTS: usize = 100;

/// How the counters are laid out (tests use tiny generations to exercise rollover).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub shards: u64,
    pub markers_per_generation: i64,
}

impl Default for Layout {
    fn default() -> Self {
        Layout {
            shards: SHARDS,
            markers_per_generation: MARKERS_PER_GENERATION,
        }
    }
}

/// The shard of an order id: a fixed mix of its bits (ids are often sequential, or
/// multiples of a client's step), so shards fill evenly.
pub fn shard_of(order_id: u64, shards: u64) -> u64 {
    // splitmix64's finaliser
    let mut z = order_id.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) % shards.max(1)
}

pub fn summary_key(ns: &str, shard: u64) -> String {
    format!("{ns}tally::{shard}")
}

pub fn generation_key(ns: &str, shard: u64, generation: u64) -> String {
    format!("{ns}tally::{shard}::{generation}")
}

/// One record to store and count.
#[derive(Debug, Clone, PartialEq)]
pub struct Counted {
    /// The record's document key and body (without `tally`, added here).
    pub key: String,
    pub doc: Value,
    pub order_id: u64,
    /// The marker's name in its generation (`o123`, `a123`, `p123`).
    pub marker: String,
    /// What it adds to the totals: paths under `c` and amounts (zero amounts are left
    /// out: the server refuses a zero delta).
    pub deltas: Vec<(String, i64)>,
}

/// The counting call of `record` on its generation.
fn counting_specs(record: &Counted) -> Vec<Mutation> {
    let mut specs = vec![
        Mutation::IncrementExisting(OPEN_MARKERS.into(), 1),
        Mutation::Insert(format!("m.{}", record.marker), json!(1)),
    ];
    specs.extend(
        record
            .deltas
            .iter()
            .filter(|(_, d)| *d != 0)
            .map(|(p, d)| Mutation::Increment(format!("c.{p}"), *d)),
    );
    specs
}

/// Writes and counts records; remembers each shard's open generation between batches.
#[derive(Debug, Default)]
pub struct Counters {
    pub ns: String,
    pub layout: Layout,
    open: Mutex<HashMap<u64, u64>>,
}

fn number(v: Option<&Value>) -> i64 {
    v.and_then(Value::as_i64).unwrap_or(0)
}

/// `into` += `add`, field by field, for nested objects of whole numbers.
fn add_into(into: &mut Map<String, Value>, add: &Map<String, Value>) {
    for (k, v) in add {
        match v {
            Value::Object(inner) => {
                let slot = into
                    .entry(k.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(slot) = slot {
                    add_into(slot, inner);
                }
            }
            _ => {
                let sum = number(into.get(k)) + number(Some(v));
                into.insert(k.clone(), Value::from(sum));
            }
        }
    }
}

impl Counters {
    pub fn new(ns: impl Into<String>, layout: Layout) -> Self {
        Counters {
            ns: ns.into(),
            layout,
            open: Mutex::new(HashMap::new()),
        }
    }

    fn cached(&self, shard: u64) -> Option<u64> {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&shard)
            .copied()
    }

    fn remember(&self, shard: u64, generation: u64) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let slot = open.entry(shard).or_insert(generation);
        *slot = (*slot).max(generation);
    }

    /// The open generation of `shard`, as its summary says (created at 0 when missing).
    async fn read_open(&self, docs: &dyn Documents, shard: u64) -> Result<u64, StoreError> {
        let key = summary_key(&self.ns, shard);
        loop {
            match docs
                .lookup_in(&key, &[Lookup::Get("generation".into())])
                .await?
            {
                Some(l) => {
                    let g = number(l.values.first().and_then(Option::as_ref)).max(0) as u64;
                    self.remember(shard, g);
                    return Ok(g);
                }
                None => {
                    let summary = json!({
                        "type": "tally_summary", "ns": self.ns, "shard": shard,
                        "generation": 0, "c": {},
                    });
                    docs.insert(&key, &summary).await?;
                }
            }
        }
    }

    async fn open_generation(&self, docs: &dyn Documents, shard: u64) -> Result<u64, StoreError> {
        match self.cached(shard) {
            Some(g) => Ok(g),
            None => self.read_open(docs, shard).await,
        }
    }

    /// Seals generation `g` of `shard` (idempotent) and folds it into the summary unless
    /// that is done already.
    async fn close(&self, docs: &dyn Documents, shard: u64, g: u64) -> Result<(), StoreError> {
        let gen_key = generation_key(&self.ns, shard, g);
        match docs
            .mutate_in(
                &gen_key,
                &[
                    Mutation::Remove(OPEN.into()),
                    Mutation::Upsert("sealed".into(), json!(true)),
                ],
                None,
            )
            .await?
        {
            Mutated::Done(_) | Mutated::PathNotFound => {}
            other => {
                return Err(StoreError::Query(format!(
                    "sealing counter document {gen_key}: {other:?}"
                )))
            }
        }
        let key = summary_key(&self.ns, shard);
        for _ in 0..CAS_ATTEMPTS {
            let Some(summary) = docs
                .lookup_in(
                    &key,
                    &[Lookup::Get("generation".into()), Lookup::Get("c".into())],
                )
                .await?
            else {
                self.read_open(docs, shard).await?;
                continue;
            };
            let open = number(summary.values.first().and_then(Option::as_ref)) as u64;
            if open != g {
                self.remember(shard, open);
                return Ok(());
            }
            let sealed = docs
                .lookup_in(&gen_key, &[Lookup::Get("c".into())])
                .await?
                .and_then(|l| l.values.into_iter().next().flatten())
                .unwrap_or_else(|| json!({}));
            let mut sum = match summary.values.get(1).cloned().flatten() {
                Some(Value::Object(m)) => m,
                _ => Map::new(),
            };
            if let Value::Object(add) = &sealed {
                add_into(&mut sum, add);
            }
            sum.remove("markers");
            match docs
                .mutate_in(
                    &key,
                    &[
                        Mutation::Upsert("c".into(), Value::Object(sum)),
                        Mutation::Upsert("generation".into(), json!(g + 1)),
                    ],
                    Some(summary.cas),
                )
                .await?
            {
                Mutated::Done(_) => {
                    self.remember(shard, g + 1);
                    return Ok(());
                }
                Mutated::CasMismatch => continue,
                other => {
                    return Err(StoreError::Query(format!(
                        "folding counter document {gen_key}: {other:?}"
                    )))
                }
            }
        }
        Err(StoreError::Unavailable(format!(
            "folding counter document {gen_key}: too much contention, retrying later"
        )))
    }

    /// Where `record`'s document says it is counted, with the document's CAS.
    async fn tally_of(
        &self,
        docs: &dyn Documents,
        key: &str,
    ) -> Result<(Option<String>, u64), StoreError> {
        let looked = docs
            .lookup_in(key, &[Lookup::Get("tally".into())])
            .await?
            .ok_or_else(|| StoreError::Query(format!("document {key} vanished")))?;
        let tally = looked
            .values
            .into_iter()
            .next()
            .flatten()
            .and_then(|v| v.as_str().map(str::to_owned));
        Ok((tally, looked.cas))
    }

    /// Stores `record` and counts it exactly once; `true` when its document is new.
    pub async fn write(&self, docs: &dyn Documents, record: &Counted) -> Result<bool, StoreError> {
        let shard = shard_of(record.order_id, self.layout.shards);
        let g = self.open_generation(docs, shard).await?;
        let mut doc = record.doc.clone();
        if let Value::Object(map) = &mut doc {
            map.insert("tally".into(), json!(generation_key(&self.ns, shard, g)));
        }
        let new = docs.insert(&record.key, &doc).await?;
        let tally = if new {
            Some(generation_key(&self.ns, shard, g))
        } else {
            self.tally_of(docs, &record.key).await?.0
        };
        self.count(docs, record, shard, tally).await?;
        Ok(new)
    }

    /// Counts `record`, whose document is stored already (by an earlier version that kept
    /// no counters, or an interrupted write), exactly once; `record.doc` is not used.
    pub async fn count_stored(
        &self,
        docs: &dyn Documents,
        record: &Counted,
    ) -> Result<(), StoreError> {
        let shard = shard_of(record.order_id, self.layout.shards);
        let tally = self.tally_of(docs, &record.key).await?.0;
        self.count(docs, record, shard, tally).await
    }

    /// The counting call of `record`, whose document says it is counted at `tally`, until
    /// it is counted there or found counted (moving `tally` as the generations roll over).
    async fn count(
        &self,
        docs: &dyn Documents,
        record: &Counted,
        shard: u64,
        mut tally: Option<String>,
    ) -> Result<(), StoreError> {
        let specs = counting_specs(record);
        for _ in 0..CAS_ATTEMPTS {
            let Some(at) = tally.clone() else {
                // A document stored before counters were kept: give it the open generation.
                tally = self.move_tally(docs, record, shard, None).await?;
                continue;
            };
            match docs.mutate_in(&at, &specs, None).await? {
                Mutated::Done(results) => {
                    let markers = results.first().copied().flatten().unwrap_or(0);
                    if markers >= self.layout.markers_per_generation {
                        if let Some(g) = generation_of(&at) {
                            self.close(docs, shard, g).await?;
                        }
                    }
                    return Ok(());
                }
                Mutated::PathExists => return Ok(()),
                Mutated::DocumentNotFound => {
                    let g = generation_of(&at).unwrap_or(0);
                    let fresh = json!({
                        "type": "tally", "ns": self.ns, "shard": shard, "generation": g,
                        "open": {"markers": 0}, "c": {}, "m": {},
                    });
                    docs.insert(&at, &fresh).await?;
                }
                Mutated::PathNotFound => {
                    // Sealed. Counted there before it was?
                    let counted = docs
                        .lookup_in(&at, &[Lookup::Exists(format!("m.{}", record.marker))])
                        .await?
                        .and_then(|l| l.values.into_iter().next().flatten())
                        == Some(Value::Bool(true));
                    if counted {
                        return Ok(());
                    }
                    if let Some(g) = generation_of(&at) {
                        self.close(docs, shard, g).await?;
                    }
                    tally = self.move_tally(docs, record, shard, Some(&at)).await?;
                }
                Mutated::CasMismatch => {
                    return Err(StoreError::Query(format!(
                        "counting {}: unexpected CAS mismatch",
                        record.key
                    )))
                }
            }
        }
        Err(StoreError::Unavailable(format!(
            "counting {}: too much contention, retrying later",
            record.key
        )))
    }

    /// Moves `record`'s `tally` from `from` (sealed without its marker, or none at all) to
    /// the shard's open generation, unless another writer changed it first: either way,
    /// returns where it now points.
    async fn move_tally(
        &self,
        docs: &dyn Documents,
        record: &Counted,
        shard: u64,
        from: Option<&str>,
    ) -> Result<Option<String>, StoreError> {
        for _ in 0..CAS_ATTEMPTS {
            let (now, cas) = self.tally_of(docs, &record.key).await?;
            if now.as_deref() != from {
                return Ok(now);
            }
            let open = self.read_open(docs, shard).await?;
            let to = generation_key(&self.ns, shard, open);
            if Some(to.as_str()) == from {
                // The summary has not moved past it yet: finish the fold first.
                self.close(docs, shard, open).await?;
                continue;
            }
            match docs
                .mutate_in(
                    &record.key,
                    &[Mutation::Upsert("tally".into(), json!(to))],
                    Some(cas),
                )
                .await?
            {
                Mutated::Done(_) => return Ok(Some(to)),
                Mutated::CasMismatch => continue,
                other => {
                    return Err(StoreError::Query(format!(
                        "moving the tally of {}: {other:?}",
                        record.key
                    )))
                }
            }
        }
        Err(StoreError::Unavailable(format!(
            "moving the tally of {}: too much contention, retrying later",
            record.key
        )))
    }

    /// Writes and counts every record, many at once; how many documents were new.
    pub async fn write_all(
        &self,
        docs: &dyn Documents,
        records: &[Counted],
    ) -> Result<usize, StoreError> {
        // By index: a stream of references trips the compiler's higher-ranked lifetime
        // check once boxed as `Send` by `async_trait`.
        futures::stream::iter(0..records.len())
            .map(|i| self.write(docs, &records[i]))
            .buffer_unordered(CONCURRENCY)
            .try_fold(0, |n, new| async move { Ok(n + usize::from(new)) })
            .await
    }

    /// [`Self::write_all`], saying for each record (in their order) whether it was new.
    pub async fn write_each(
        &self,
        docs: &dyn Documents,
        records: &[Counted],
    ) -> Result<Vec<bool>, StoreError> {
        futures::stream::iter(0..records.len())
            .map(|i| self.write(docs, &records[i]))
            .buffered(CONCURRENCY)
            .try_collect()
            .await
    }

    /// The totals: every shard's summary plus its open generation.
    pub async fn totals(&self, docs: &dyn Documents) -> Result<Totals, StoreError> {
        let shards: Vec<Map<String, Value>> = futures::stream::iter(0..self.layout.shards)
            .map(|s| self.shard_totals(docs, s))
            .buffered(CONCURRENCY)
            .try_collect()
            .await?;
        let mut all = Map::new();
        for s in &shards {
            add_into(&mut all, s);
        }
        Ok(totals_from(&all))
    }

    async fn shard_totals(
        &self,
        docs: &dyn Documents,
        shard: u64,
    ) -> Result<Map<String, Value>, StoreError> {
        let Some(summary) = docs
            .lookup_in(
                &summary_key(&self.ns, shard),
                &[Lookup::Get("generation".into()), Lookup::Get("c".into())],
            )
            .await?
        else {
            return Ok(Map::new());
        };
        let g = number(summary.values.first().and_then(Option::as_ref)) as u64;
        let mut sum = match summary.values.get(1).cloned().flatten() {
            Some(Value::Object(m)) => m,
            _ => Map::new(),
        };
        let open = docs
            .lookup_in(
                &generation_key(&self.ns, shard, g),
                &[Lookup::Get("c".into())],
            )
            .await?
            .and_then(|l| l.values.into_iter().next().flatten());
        if let Some(Value::Object(open)) = open {
            add_into(&mut sum, &open);
        }
        sum.remove("markers");
        Ok(sum)
    }
}

fn generation_of(key: &str) -> Option<u64> {
    key.rsplit("::").next()?.parse().ok()
}

/// The totals in counter form: `n`, `cents`, `country.XX.{n,cents}`, `status.S.{n,cents}`,
/// `fraud_n`, `fraud_cents`, `payments`, `paid`.
fn totals_from(c: &Map<String, Value>) -> Totals {
    let breakdown = |name: &str| {
        c.get(name)
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            CountAndSum {
                                count: number(v.get("n")).max(0) as u64,
                                sales: Cents(number(v.get("cents"))),
                            },
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    Totals {
        order_count: number(c.get("n")).max(0) as u64,
        total_sales: Cents(number(c.get("cents"))),
        by_country: breakdown("country"),
        by_status: breakdown("status"),
        fraud_count: number(c.get("fraud_n")).max(0) as u64,
        fraud_sales: Cents(number(c.get("fraud_cents"))),
        payment_count: number(c.get("payments")).max(0) as u64,
        paid_count: number(c.get("paid")).max(0) as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::super::documents::MemoryDocuments;
    use super::*;
    use futures::executor::block_on;

    fn record(id: u64) -> Counted {
        Counted {
            key: format!("order::{id}"),
            doc: json!({"type": "order"}),
            order_id: id,
            marker: format!("o{id}"),
            deltas: vec![("n".into(), 1), ("cents".into(), 100)],
        }
    }

    /// A sealed generation never changes again: a counting call on it fails as a whole
    /// (the server creates a missing counter under an existing parent, so the seal must
    /// remove the parent), and a writer that still believes it open counts elsewhere, once.
    #[test]
    fn a_sealed_generation_takes_no_more_counts() {
        let layout = Layout {
            shards: 1,
            markers_per_generation: 2,
        };
        let docs = MemoryDocuments::new();
        let stale = Counters::new("", layout);
        block_on(stale.write(&docs, &record(1))).unwrap();
        let writer = Counters::new("", layout);
        block_on(writer.write(&docs, &record(2))).unwrap();
        let sealed = docs.get("tally::0::0").unwrap();
        assert_eq!(sealed["sealed"], json!(true), "{sealed}");
        assert_eq!(docs.get("tally::0").unwrap()["generation"], json!(1));
        assert_eq!(
            block_on(docs.mutate_in("tally::0::0", &counting_specs(&record(3)), None)).unwrap(),
            Mutated::PathNotFound
        );
        assert_eq!(docs.get("tally::0::0").unwrap(), sealed);
        // `stale` still remembers generation 0 as open.
        assert_eq!(stale.cached(0), Some(0));
        block_on(stale.write(&docs, &record(3))).unwrap();
        block_on(stale.write(&docs, &record(3))).unwrap();
        assert_eq!(docs.get("tally::0::0").unwrap(), sealed);
        let totals = block_on(writer.totals(&docs)).unwrap();
        assert_eq!((totals.order_count, totals.total_sales), (3, Cents(300)));
    }

    /// A generation open in the layout before the seal moved (`c.markers`, no `open`) is
    /// taken as sealed: folded once, its records found counted, new ones counted elsewhere.
    #[test]
    fn a_generation_of_the_earlier_layout_is_folded_and_left() {
        let layout = Layout {
            shards: 1,
            markers_per_generation: 10,
        };
        let docs = MemoryDocuments::new();
        docs.put(
            "tally::0",
            json!({"type": "tally_summary", "ns": "", "shard": 0, "generation": 0, "c": {}}),
        );
        docs.put(
            "tally::0::0",
            json!({"type": "tally", "ns": "", "shard": 0, "generation": 0,
                   "c": {"markers": 1, "n": 1, "cents": 100}, "m": {"o1": 1}}),
        );
        docs.put("order::1", json!({"type": "order", "tally": "tally::0::0"}));
        let writer = Counters::new("", layout);
        block_on(writer.write(&docs, &record(2))).unwrap();
        block_on(writer.write(&docs, &record(1))).unwrap();
        block_on(Counters::new("", layout).write(&docs, &record(2))).unwrap();
        let totals = block_on(writer.totals(&docs)).unwrap();
        assert_eq!((totals.order_count, totals.total_sales), (2, Cents(200)));
        assert_eq!(docs.get("tally::0").unwrap()["generation"], json!(1));
        assert_eq!(docs.get("order::2").unwrap()["tally"], json!("tally::0::1"));
    }
}
