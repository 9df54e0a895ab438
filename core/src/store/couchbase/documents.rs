//! The few key-value operations the write path uses (insert, sub-document lookup and
//! mutation), as a trait with two implementations: the SDK's collection, and an in-memory
//! stand-in with the same semantics that counts calls and can be made to fail from a
//! given call on (a crash), so the write algorithm is proved offline.

use crate::store::StoreError;
use ::couchbase::collection::Collection;
use ::couchbase::durability_level::DurabilityLevel;
use ::couchbase::error::ErrorKind;
use ::couchbase::options::kv_options::{InsertOptions, MutateInOptions};
use ::couchbase::subdoc::lookup_in_specs::LookupInSpec;
use ::couchbase::subdoc::mutate_in_specs::{
    IncrementSpecOptions, InsertSpecOptions, MutateInSpec, UpsertSpecOptions,
};
use async_trait::async_trait;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// One read of a sub-document lookup (paths are dot-separated object keys).
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    Get(String),
    Exists(String),
}

/// One change of a sub-document mutation; all of a call's changes apply together or none.
#[derive(Debug, Clone, PartialEq)]
pub enum Mutation {
    /// Fails the whole call with `PathExists` when the path is there (parents created).
    Insert(String, Value),
    /// Sets the path (parents created).
    Upsert(String, Value),
    /// Adds to a number, creating it (and its parents) at 0 first.
    Increment(String, i64),
    /// Adds to a number whose parent object must exist: `PathNotFound` fails the whole call
    /// otherwise. As the server does, a missing number under an existing parent is
    /// created (at the delta): only a missing parent fails.
    IncrementExisting(String, i64),
    /// Removes the path; `PathNotFound` fails the whole call when it is not there.
    Remove(String),
}

/// What a lookup found: the document's CAS and one value per spec (`Exists` gives a bool,
/// a missing path `None`).
#[derive(Debug, Clone, PartialEq)]
pub struct Looked {
    pub cas: u64,
    pub values: Vec<Option<Value>>,
}

/// How a mutation ended, besides failures of the store itself.
#[derive(Debug, Clone, PartialEq)]
pub enum Mutated {
    /// Applied; the new value of each increment, in spec order (`None` for other specs).
    Done(Vec<Option<i64>>),
    PathExists,
    PathNotFound,
    DocumentNotFound,
    CasMismatch,
}

/// The key-value operations of the write path.
#[async_trait]
pub trait Documents: Send + Sync {
    /// Inserts `doc` under `key`: `true` when new, `false` when the key exists.
    async fn insert(&self, key: &str, doc: &Value) -> Result<bool, StoreError>;
    /// Reads paths of one document; `None` when the document does not exist.
    async fn lookup_in(&self, key: &str, specs: &[Lookup]) -> Result<Option<Looked>, StoreError>;
    /// Changes one document atomically, only if its CAS is still `cas` when given.
    async fn mutate_in(
        &self,
        key: &str,
        specs: &[Mutation],
        cas: Option<u64>,
    ) -> Result<Mutated, StoreError>;
}

/// The SDK's collection with the store's deadlines and durability.
pub struct SdkDocuments<'a> {
    pub collection: &'a Collection,
    pub kv_timeout: Duration,
    pub durability: DurabilityLevel,
    pub map_error: &'a (dyn Fn(&::couchbase::error::Error) -> StoreError + Send + Sync),
}

#[async_trait]
impl Documents for SdkDocuments<'_> {
    async fn insert(&self, key: &str, doc: &Value) -> Result<bool, StoreError> {
        let options = InsertOptions::new().durability_level(self.durability.clone());
        let inserted = super::deadline(
            "insert",
            self.kv_timeout,
            self.collection.insert(key, doc, options),
        )
        .await?;
        match inserted {
            Ok(_) => Ok(true),
            Err(e) if matches!(e.kind(), ErrorKind::DocumentExists) => Ok(false),
            Err(e) => Err((self.map_error)(&e)),
        }
    }

    async fn lookup_in(&self, key: &str, specs: &[Lookup]) -> Result<Option<Looked>, StoreError> {
        let sdk: Vec<LookupInSpec> = specs
            .iter()
            .map(|s| match s {
                Lookup::Get(p) => LookupInSpec::get(p.clone(), None),
                Lookup::Exists(p) => LookupInSpec::exists(p.clone(), None),
            })
            .collect();
        let looked = super::deadline(
            "lookup_in",
            self.kv_timeout,
            self.collection.lookup_in(key, &sdk, None),
        )
        .await?;
        let result = match looked {
            Ok(r) => r,
            Err(e) if matches!(e.kind(), ErrorKind::DocumentNotFound) => return Ok(None),
            Err(e) => return Err((self.map_error)(&e)),
        };
        let mut values = Vec::with_capacity(specs.len());
        for (i, spec) in specs.iter().enumerate() {
            values.push(match spec {
                Lookup::Exists(_) => Some(Value::Bool(
                    result.exists(i).map_err(|e| (self.map_error)(&e))?,
                )),
                Lookup::Get(_) => match result.content_as::<Value>(i) {
                    Ok(v) => Some(v),
                    Err(e) if matches!(e.kind(), ErrorKind::PathNotFound) => None,
                    Err(e) => return Err((self.map_error)(&e)),
                },
            });
        }
        Ok(Some(Looked {
            cas: result.cas(),
            values,
        }))
    }

    async fn mutate_in(
        &self,
        key: &str,
        specs: &[Mutation],
        cas: Option<u64>,
    ) -> Result<Mutated, StoreError> {
        let mut sdk = Vec::with_capacity(specs.len());
        for s in specs {
            let spec = match s {
                Mutation::Insert(p, v) => {
                    MutateInSpec::insert(p.clone(), v, InsertSpecOptions::new().create_path(true))
                }
                Mutation::Upsert(p, v) => {
                    MutateInSpec::upsert(p.clone(), v, UpsertSpecOptions::new().create_path(true))
                }
                Mutation::Increment(p, d) => MutateInSpec::increment(
                    p.clone(),
                    *d,
                    IncrementSpecOptions::new().create_path(true),
                ),
                Mutation::IncrementExisting(p, d) => MutateInSpec::increment(p.clone(), *d, None),
                Mutation::Remove(p) => Ok(MutateInSpec::remove(p.clone(), None)),
            };
            sdk.push(spec.map_err(|e| (self.map_error)(&e))?);
        }
        let mut options = MutateInOptions::new().durability_level(self.durability.clone());
        if let Some(cas) = cas {
            options = options.cas(cas);
        }
        let mutated = super::deadline(
            "mutate_in",
            self.kv_timeout,
            self.collection.mutate_in(key, &sdk, options),
        )
        .await?;
        match mutated {
            Ok(r) => {
                let mut results = Vec::with_capacity(specs.len());
                for (i, s) in specs.iter().enumerate() {
                    results.push(match s {
                        // A counter the server answered without its new value would read
                        // as 0 and never seal its generation: say so instead.
                        Mutation::Increment(..) | Mutation::IncrementExisting(..) => {
                            Some(r.content_as::<i64>(i).map_err(|e| {
                                StoreError::Corrupt(format!(
                                    "the new value of counter {i} of {key}: {e}"
                                ))
                            })?)
                        }
                        _ => None,
                    });
                }
                Ok(Mutated::Done(results))
            }
            Err(e) => match e.kind() {
                ErrorKind::PathExists => Ok(Mutated::PathExists),
                ErrorKind::PathNotFound => Ok(Mutated::PathNotFound),
                ErrorKind::DocumentNotFound => Ok(Mutated::DocumentNotFound),
                ErrorKind::CasMismatch | ErrorKind::DocumentExists => Ok(Mutated::CasMismatch),
                _ => Err((self.map_error)(&e)),
            },
        }
    }
}

/// Calls made, by operation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallCounts {
    pub inserts: u64,
    pub lookups: u64,
    pub mutations: u64,
}

impl CallCounts {
    pub fn total(&self) -> u64 {
        self.inserts + self.lookups + self.mutations
    }
}

/// An in-memory bucket with the semantics of [`Documents`]: per-document CAS, atomic
/// multi-path mutations, `PathExists` / `PathNotFound` as the server answers them.
/// It can be told to fail every call from the n-th on, as a writer that crashed there
/// would never make them; what earlier calls stored stays.
#[derive(Debug, Default)]
pub struct MemoryDocuments {
    docs: Mutex<HashMap<String, (u64, Value)>>,
    next_cas: AtomicU64,
    inserts: AtomicU64,
    lookups: AtomicU64,
    mutations: AtomicU64,
    /// Calls still allowed before the crash; negative: no crash planned.
    allowed: AtomicI64,
    /// Yield to the runtime inside every call, so concurrent writers interleave.
    interleave: bool,
}

impl MemoryDocuments {
    pub fn new() -> Self {
        MemoryDocuments {
            allowed: AtomicI64::new(-1),
            next_cas: AtomicU64::new(1),
            ..MemoryDocuments::default()
        }
    }

    /// One where every call yields once, so concurrent writers interleave call by call.
    pub fn interleaving() -> Self {
        MemoryDocuments {
            interleave: true,
            ..MemoryDocuments::new()
        }
    }

    /// A copy of every document, in a stand-in of its own that does not interleave (to read
    /// from outside an async runtime).
    pub fn snapshot(&self) -> Self {
        let copy = MemoryDocuments::new();
        *copy.lock() = self.lock().clone();
        copy.next_cas
            .store(self.next_cas.load(Ordering::SeqCst), Ordering::SeqCst);
        copy
    }

    /// Lets `calls` more calls through, then fails every later one (a crash).
    pub fn crash_after(&self, calls: u64) {
        self.allowed
            .store(i64::try_from(calls).unwrap_or(i64::MAX), Ordering::SeqCst);
    }

    /// Lets every call through again (the restarted writer).
    pub fn restart(&self) {
        self.allowed.store(-1, Ordering::SeqCst);
    }

    pub fn calls(&self) -> CallCounts {
        CallCounts {
            inserts: self.inserts.load(Ordering::SeqCst),
            lookups: self.lookups.load(Ordering::SeqCst),
            mutations: self.mutations.load(Ordering::SeqCst),
        }
    }

    /// A copy of one document.
    pub fn get(&self, key: &str) -> Option<Value> {
        self.lock().get(key).map(|(_, v)| v.clone())
    }

    /// Keys after `after`, in key order, of documents that `matches` (at most `limit`), as
    /// a query over an index of them would list them.
    pub fn keys_where(
        &self,
        after: &str,
        limit: usize,
        matches: impl Fn(&Value) -> bool,
    ) -> Vec<String> {
        let docs = self.lock();
        let mut keys: Vec<&String> = docs
            .iter()
            .filter(|(k, (_, doc))| k.as_str() > after && matches(doc))
            .map(|(k, _)| k)
            .collect();
        keys.sort();
        keys.into_iter().take(limit).cloned().collect()
    }

    /// Stores `doc` under `key` as it is, outside the calls counted (a fixture: documents an
    /// earlier version wrote).
    pub fn put(&self, key: &str, doc: Value) {
        let cas = self.cas();
        self.lock().insert(key.to_owned(), (cas, doc));
    }

    /// How many documents, and the largest one's size in bytes.
    pub fn sizes(&self) -> (usize, usize) {
        let docs = self.lock();
        let largest = docs
            .values()
            .map(|(_, v)| v.to_string().len())
            .max()
            .unwrap_or(0);
        (docs.len(), largest)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, Value)>> {
        self.docs.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn enter(&self, counter: &AtomicU64) -> Result<(), StoreError> {
        if self.interleave {
            tokio::task::yield_now().await;
        }
        let allowed = self.allowed.load(Ordering::SeqCst);
        if allowed == 0 {
            return Err(StoreError::Unavailable("the writer crashed here".into()));
        }
        if allowed > 0 {
            self.allowed.fetch_sub(1, Ordering::SeqCst);
        }
        counter.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn cas(&self) -> u64 {
        self.next_cas.fetch_add(1, Ordering::SeqCst)
    }
}

fn path_of(path: &str) -> Vec<&str> {
    path.split('.').collect()
}

fn find<'v>(doc: &'v Value, path: &str) -> Option<&'v Value> {
    path_of(path)
        .into_iter()
        .try_fold(doc, |v, key| v.as_object()?.get(key))
}

/// The parent object of `path` (created when `create`), and the last key.
fn parent<'v>(
    doc: &'v mut Value,
    path: &str,
    create: bool,
) -> Result<(&'v mut Map<String, Value>, String), Mutated> {
    let keys = path_of(path);
    let (last, parents) = keys.split_last().ok_or(Mutated::PathNotFound)?;
    let mut at = doc;
    for key in parents {
        let map = at.as_object_mut().ok_or(Mutated::PathNotFound)?;
        if !map.contains_key(*key) {
            if !create {
                return Err(Mutated::PathNotFound);
            }
            map.insert((*key).to_owned(), Value::Object(Map::new()));
        }
        at = map.get_mut(*key).ok_or(Mutated::PathNotFound)?;
    }
    let map = at.as_object_mut().ok_or(Mutated::PathNotFound)?;
    Ok((map, (*last).to_owned()))
}

fn apply(doc: &mut Value, m: &Mutation) -> Result<Option<i64>, Mutated> {
    match m {
        Mutation::Insert(p, v) => {
            let (map, key) = parent(doc, p, true)?;
            if map.contains_key(&key) {
                return Err(Mutated::PathExists);
            }
            map.insert(key, v.clone());
            Ok(None)
        }
        Mutation::Upsert(p, v) => {
            let (map, key) = parent(doc, p, true)?;
            map.insert(key, v.clone());
            Ok(None)
        }
        Mutation::Increment(p, d) | Mutation::IncrementExisting(p, d) => {
            let create = matches!(m, Mutation::Increment(..));
            let (map, key) = parent(doc, p, create)?;
            let now = match map.get(&key) {
                Some(v) => v.as_i64().ok_or(Mutated::PathNotFound)?,
                None => 0,
            };
            map.insert(key, Value::from(now + d));
            Ok(Some(now + d))
        }
        Mutation::Remove(p) => {
            let (map, key) = parent(doc, p, false)?;
            map.remove(&key).ok_or(Mutated::PathNotFound)?;
            Ok(None)
        }
    }
}

#[async_trait]
impl Documents for MemoryDocuments {
    async fn insert(&self, key: &str, doc: &Value) -> Result<bool, StoreError> {
        self.enter(&self.inserts).await?;
        let cas = self.cas();
        let mut docs = self.lock();
        if docs.contains_key(key) {
            return Ok(false);
        }
        docs.insert(key.to_owned(), (cas, doc.clone()));
        Ok(true)
    }

    async fn lookup_in(&self, key: &str, specs: &[Lookup]) -> Result<Option<Looked>, StoreError> {
        self.enter(&self.lookups).await?;
        let docs = self.lock();
        Ok(docs.get(key).map(|(cas, doc)| Looked {
            cas: *cas,
            values: specs
                .iter()
                .map(|s| match s {
                    Lookup::Get(p) => find(doc, p).cloned(),
                    Lookup::Exists(p) => Some(Value::Bool(find(doc, p).is_some())),
                })
                .collect(),
        }))
    }

    async fn mutate_in(
        &self,
        key: &str,
        specs: &[Mutation],
        cas: Option<u64>,
    ) -> Result<Mutated, StoreError> {
        self.enter(&self.mutations).await?;
        let new_cas = self.cas();
        let mut docs = self.lock();
        let Some((doc_cas, doc)) = docs.get_mut(key) else {
            return Ok(Mutated::DocumentNotFound);
        };
        if cas.is_some_and(|c| c != *doc_cas) {
            return Ok(Mutated::CasMismatch);
        }
        let mut changed = doc.clone();
        let mut results = Vec::with_capacity(specs.len());
        for m in specs {
            match apply(&mut changed, m) {
                Ok(r) => results.push(r),
                Err(outcome) => return Ok(outcome),
            }
        }
        *doc = changed;
        *doc_cas = new_cas;
        Ok(Mutated::Done(results))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn the_stand_in_applies_all_of_a_mutation_or_nothing() {
        let d = MemoryDocuments::new();
        assert!(d
            .insert("k", &json!({"c": {"n": 1}, "m": {}}))
            .await
            .unwrap());
        assert!(!d.insert("k", &json!({})).await.unwrap());
        let done = d
            .mutate_in(
                "k",
                &[
                    Mutation::IncrementExisting("c.n".into(), 2),
                    Mutation::Insert("m.o1".into(), json!(1)),
                    Mutation::Increment("c.country.DE.n".into(), 1),
                ],
                None,
            )
            .await
            .unwrap();
        assert_eq!(done, Mutated::Done(vec![Some(3), None, Some(1)]));
        // The marker exists: nothing of the call applies.
        let again = d
            .mutate_in(
                "k",
                &[
                    Mutation::IncrementExisting("c.n".into(), 2),
                    Mutation::Insert("m.o1".into(), json!(1)),
                ],
                None,
            )
            .await
            .unwrap();
        assert_eq!(again, Mutated::PathExists);
        assert_eq!(d.get("k").unwrap()["c"]["n"], 3);
        let looked = d
            .lookup_in(
                "k",
                &[Lookup::Get("c.n".into()), Lookup::Exists("m.o2".into())],
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(looked.values, vec![Some(json!(3)), Some(json!(false))]);
        let stale = looked.cas;
        d.mutate_in("k", &[Mutation::Remove("c.n".into())], Some(stale))
            .await
            .unwrap();
        assert_eq!(
            d.mutate_in("k", &[Mutation::Upsert("x".into(), json!(1))], Some(stale))
                .await
                .unwrap(),
            Mutated::CasMismatch
        );
        // A counter without create_path: the server creates a missing number when its
        // parent exists, and fails only when the parent is missing.
        assert_eq!(
            d.mutate_in("k", &[Mutation::IncrementExisting("c.n".into(), 1)], None)
                .await
                .unwrap(),
            Mutated::Done(vec![Some(1)])
        );
        d.mutate_in("k", &[Mutation::Remove("c".into())], None)
            .await
            .unwrap();
        assert_eq!(
            d.mutate_in("k", &[Mutation::IncrementExisting("c.n".into(), 1)], None)
                .await
                .unwrap(),
            Mutated::PathNotFound
        );
        assert_eq!(
            d.mutate_in("nope", &[], None).await.unwrap(),
            Mutated::DocumentNotFound
        );
        d.crash_after(1);
        assert!(d.lookup_in("k", &[]).await.is_ok());
        assert!(d.lookup_in("k", &[]).await.is_err());
        d.restart();
        assert!(d.lookup_in("k", &[]).await.is_ok());
        assert_eq!(d.calls().total(), 13);
    }
}
