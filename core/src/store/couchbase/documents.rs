//! The three key-value operations the write path and the totals use (insert, get, replace
//! with CAS), as a trait with two implementations: the SDK's collections, and an in-memory
//! stand-in with the server's semantics that counts calls and can be made to fail from a
//! given call on (a crash) or to apply a write and then report a failure (an ambiguous
//! write), so the write algorithm is proved offline.
//!
//! Every write here is a whole-document insert or replace: the SDK (1.1) sends the
//! durability level with those, and drops it from sub-document writes, which the store
//! therefore never makes.

use crate::store::StoreError;
use ::couchbase::collection::Collection;
use ::couchbase::durability_level::DurabilityLevel;
use ::couchbase::error::ErrorKind;
use ::couchbase::options::kv_options::{InsertOptions, ReplaceOptions};
use async_trait::async_trait;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// The collection a document lives in: the records (orders, alerts, payments, canary
/// stages) in the bucket's default collection, with its indexes; the totals in a
/// collection of their own ([`TOTALS_COLLECTION`]), which no index watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Space {
    Records,
    Totals,
}

/// The collection of the totals documents, in the bucket's default scope.
pub const TOTALS_COLLECTION: &str = "totals";

/// A document as read: its CAS and its body.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub cas: u64,
    pub doc: Value,
}

/// How a replace ended, besides failures of the store itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replaced {
    Done,
    /// The document changed since it was read (another writer).
    CasMismatch,
    NotFound,
}

/// The key-value operations of the store.
#[async_trait]
pub trait Documents: Send + Sync {
    /// Inserts `doc` under `key`, durably: `true` when new, `false` when the key exists.
    async fn insert(&self, space: Space, key: &str, doc: &Value) -> Result<bool, StoreError>;
    /// Reads one document; `None` when it does not exist.
    async fn get(&self, space: Space, key: &str) -> Result<Option<Stored>, StoreError>;
    /// Replaces a document durably, only if its CAS is still `cas`.
    async fn replace(
        &self,
        space: Space,
        key: &str,
        doc: &Value,
        cas: u64,
    ) -> Result<Replaced, StoreError>;
}

/// The SDK's collections with the store's deadlines and durability.
pub struct SdkDocuments<'a> {
    pub records: &'a Collection,
    pub totals: &'a Collection,
    pub kv_timeout: Duration,
    pub durability: DurabilityLevel,
    pub map_error: &'a (dyn Fn(&::couchbase::error::Error) -> StoreError + Send + Sync),
}

impl SdkDocuments<'_> {
    fn collection(&self, space: Space) -> &Collection {
        match space {
            Space::Records => self.records,
            Space::Totals => self.totals,
        }
    }
}

#[async_trait]
impl Documents for SdkDocuments<'_> {
    async fn insert(&self, space: Space, key: &str, doc: &Value) -> Result<bool, StoreError> {
        let options = InsertOptions::new().durability_level(self.durability.clone());
        let inserted = super::deadline(
            "insert",
            self.kv_timeout,
            self.collection(space).insert(key, doc, options),
        )
        .await?;
        match inserted {
            Ok(_) => Ok(true),
            Err(e) if matches!(e.kind(), ErrorKind::DocumentExists) => Ok(false),
            Err(e) => Err((self.map_error)(&e)),
        }
    }

    async fn get(&self, space: Space, key: &str) -> Result<Option<Stored>, StoreError> {
        let got = super::deadline(
            "get",
            self.kv_timeout,
            self.collection(space).get(key, None),
        )
        .await?;
        match got {
            Ok(r) => {
                let doc = r
                    .content_as::<Value>()
                    .map_err(|e| StoreError::Corrupt(format!("document {key}: {e}")))?;
                Ok(Some(Stored { cas: r.cas(), doc }))
            }
            Err(e) if matches!(e.kind(), ErrorKind::DocumentNotFound) => Ok(None),
            Err(e) => Err((self.map_error)(&e)),
        }
    }

    async fn replace(
        &self,
        space: Space,
        key: &str,
        doc: &Value,
        cas: u64,
    ) -> Result<Replaced, StoreError> {
        let options = ReplaceOptions::new()
            .durability_level(self.durability.clone())
            .cas(cas);
        let replaced = super::deadline(
            "replace",
            self.kv_timeout,
            self.collection(space).replace(key, doc, options),
        )
        .await?;
        match replaced {
            Ok(_) => Ok(Replaced::Done),
            Err(e) => match e.kind() {
                ErrorKind::CasMismatch | ErrorKind::DocumentExists => Ok(Replaced::CasMismatch),
                ErrorKind::DocumentNotFound => Ok(Replaced::NotFound),
                _ => Err((self.map_error)(&e)),
            },
        }
    }
}

/// Calls made, by operation. Inserts and replaces are the durable writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallCounts {
    pub inserts: u64,
    pub gets: u64,
    pub replaces: u64,
}

impl CallCounts {
    pub fn total(&self) -> u64 {
        self.inserts + self.gets + self.replaces
    }

    /// The writes, each made at `COUCHBASE_DURABILITY`.
    pub fn durable_writes(&self) -> u64 {
        self.inserts + self.replaces
    }
}

type Bucket = HashMap<(Space, String), (u64, Value)>;

/// An in-memory bucket with the semantics of [`Documents`]: per-document CAS, insert-once,
/// replace only at the CAS read. It can be told to fail every call from the n-th on, as a
/// writer that crashed there would never make them (what earlier calls stored stays), or to
/// apply the n-th call's write and report a failure anyway (an ambiguous durable write).
#[derive(Debug, Default)]
pub struct MemoryDocuments {
    docs: Mutex<Bucket>,
    next_cas: AtomicU64,
    inserts: AtomicU64,
    gets: AtomicU64,
    replaces: AtomicU64,
    /// Calls still allowed before the crash; negative: no crash planned.
    allowed: AtomicI64,
    /// Calls before the one whose write applies but reports a failure; negative: none.
    ambiguous: AtomicI64,
    /// Yield to the runtime inside every call, so concurrent writers interleave.
    interleave: bool,
}

impl MemoryDocuments {
    pub fn new() -> Self {
        MemoryDocuments {
            allowed: AtomicI64::new(-1),
            ambiguous: AtomicI64::new(-1),
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

    /// Lets `calls` more calls through, then fails every later one (a crash).
    pub fn crash_after(&self, calls: u64) {
        self.allowed
            .store(i64::try_from(calls).unwrap_or(i64::MAX), Ordering::SeqCst);
    }

    /// The call after the next `calls` applies its write (if any) but reports a failure, as
    /// a durable write whose acknowledgement was lost.
    pub fn ambiguous_after(&self, calls: u64) {
        self.ambiguous
            .store(i64::try_from(calls).unwrap_or(i64::MAX), Ordering::SeqCst);
    }

    /// Lets every call through again (the restarted writer).
    pub fn restart(&self) {
        self.allowed.store(-1, Ordering::SeqCst);
        self.ambiguous.store(-1, Ordering::SeqCst);
    }

    pub fn calls(&self) -> CallCounts {
        CallCounts {
            inserts: self.inserts.load(Ordering::SeqCst),
            gets: self.gets.load(Ordering::SeqCst),
            replaces: self.replaces.load(Ordering::SeqCst),
        }
    }

    /// A copy of one document.
    pub fn doc(&self, space: Space, key: &str) -> Option<Value> {
        self.lock()
            .get(&(space, key.to_owned()))
            .map(|(_, v)| v.clone())
    }

    /// Stores `doc` as it is, outside the calls counted (a fixture: documents an earlier
    /// version wrote).
    pub fn put(&self, space: Space, key: &str, doc: Value) {
        let cas = self.cas();
        self.lock().insert((space, key.to_owned()), (cas, doc));
    }

    /// Every document of `space` that `matches`, in key order.
    pub fn docs_where(&self, space: Space, matches: impl Fn(&Value) -> bool) -> Vec<Value> {
        let docs = self.lock();
        let mut found: Vec<(&String, &Value)> = docs
            .iter()
            .filter(|((s, _), (_, doc))| *s == space && matches(doc))
            .map(|((_, k), (_, doc))| (k, doc))
            .collect();
        found.sort_by(|a, b| a.0.cmp(b.0));
        found.into_iter().map(|(_, d)| d.clone()).collect()
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

    fn lock(&self) -> std::sync::MutexGuard<'_, Bucket> {
        self.docs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a call; `Err` when the writer has crashed, `Ok(true)` when this call's write
    /// is to apply and then fail.
    async fn enter(&self, counter: &AtomicU64) -> Result<bool, StoreError> {
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
        let ambiguous = self.ambiguous.fetch_sub(1, Ordering::SeqCst);
        if ambiguous < 0 {
            self.ambiguous.store(-1, Ordering::SeqCst);
        }
        Ok(ambiguous == 0)
    }

    fn cas(&self) -> u64 {
        self.next_cas.fetch_add(1, Ordering::SeqCst)
    }
}

fn ambiguous() -> StoreError {
    StoreError::Unavailable("couchbase: durability ambiguous (the stand-in applied it)".into())
}

#[async_trait]
impl Documents for MemoryDocuments {
    async fn insert(&self, space: Space, key: &str, doc: &Value) -> Result<bool, StoreError> {
        let fail = self.enter(&self.inserts).await?;
        let cas = self.cas();
        let inserted = {
            let mut docs = self.lock();
            match docs.entry((space, key.to_owned())) {
                std::collections::hash_map::Entry::Occupied(_) => false,
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert((cas, doc.clone()));
                    true
                }
            }
        };
        if fail {
            return Err(ambiguous());
        }
        Ok(inserted)
    }

    async fn get(&self, space: Space, key: &str) -> Result<Option<Stored>, StoreError> {
        self.enter(&self.gets).await?;
        Ok(self
            .lock()
            .get(&(space, key.to_owned()))
            .map(|(cas, doc)| Stored {
                cas: *cas,
                doc: doc.clone(),
            }))
    }

    async fn replace(
        &self,
        space: Space,
        key: &str,
        doc: &Value,
        cas: u64,
    ) -> Result<Replaced, StoreError> {
        let fail = self.enter(&self.replaces).await?;
        let new_cas = self.cas();
        let replaced = {
            let mut docs = self.lock();
            match docs.get_mut(&(space, key.to_owned())) {
                None => Replaced::NotFound,
                Some((c, _)) if *c != cas => Replaced::CasMismatch,
                Some(slot) => {
                    *slot = (new_cas, doc.clone());
                    Replaced::Done
                }
            }
        };
        if fail {
            return Err(ambiguous());
        }
        Ok(replaced)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn the_stand_in_inserts_once_and_replaces_only_at_the_cas_read() {
        let d = MemoryDocuments::new();
        assert!(d
            .insert(Space::Records, "k", &json!({"a": 1}))
            .await
            .unwrap());
        assert!(!d
            .insert(Space::Records, "k", &json!({"a": 2}))
            .await
            .unwrap());
        // The same key in another collection is another document.
        assert!(d.get(Space::Totals, "k").await.unwrap().is_none());
        let read = d.get(Space::Records, "k").await.unwrap().unwrap();
        assert_eq!(read.doc, json!({"a": 1}));
        assert_eq!(
            d.replace(Space::Records, "k", &json!({"a": 3}), read.cas)
                .await
                .unwrap(),
            Replaced::Done
        );
        assert_eq!(
            d.replace(Space::Records, "k", &json!({"a": 4}), read.cas)
                .await
                .unwrap(),
            Replaced::CasMismatch,
            "a writer that read before the last write"
        );
        assert_eq!(
            d.replace(Space::Records, "nope", &json!({}), 1)
                .await
                .unwrap(),
            Replaced::NotFound
        );
        assert_eq!(d.doc(Space::Records, "k"), Some(json!({"a": 3})));
        d.crash_after(1);
        assert!(d.get(Space::Records, "k").await.is_ok());
        assert!(d.get(Space::Records, "k").await.is_err());
        d.restart();
        // An ambiguous write: applied, reported failed.
        d.ambiguous_after(1);
        let read = d.get(Space::Records, "k").await.unwrap().unwrap();
        assert!(d
            .replace(Space::Records, "k", &json!({"a": 5}), read.cas)
            .await
            .is_err());
        assert_eq!(d.doc(Space::Records, "k"), Some(json!({"a": 5})));
        assert!(
            d.get(Space::Records, "k").await.is_ok(),
            "only one call fails"
        );
        let calls = d.calls();
        assert_eq!((calls.inserts, calls.gets, calls.replaces), (2, 5, 4));
        assert_eq!(calls.durable_writes(), 6);
    }
}
