//! The load balancer's public keys, fetched by key id (`<keys_url>/<kid>`) and kept. A fetch
//! is what a forged identity header can make the API do, so every fetch is bounded:
//!
//! - one fetch per key id at a time: requests that need the same key wait for that one
//!   fetch (single flight), and a request that gives up does not cancel it for the others;
//! - a short timeout (connect and whole answer), and an answer of at most 8 KiB;
//! - a key id that has no key is remembered, and a failed fetch (timeout, error status) for
//!   [`FetchPolicy::failure_ttl`], so neither is fetched again at once;
//! - a bound on fetches overall (a burst, then a few a minute), so new random key ids from
//!   anyone who knows the load balancer's ARN cannot turn into a stream of outbound fetches;
//! - memory: at most [`MAX_ENTRIES`] key ids remembered.
//!
//! Requests waiting on a fetch hold their place in the API's bound on requests in flight
//! ([`crate::limits::limit_in_flight`]), so they are counted and bounded too.

use super::{AlbConfigError, IdentityRejected};
use governor::{DefaultDirectRateLimiter, Quota};
use p256::ecdsa::VerifyingKey;
use p256::pkcs8::DecodePublicKey as _;
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

/// Key ids remembered (keys, missing ones, recent failures, fetches under way).
pub const MAX_ENTRIES: usize = 1024;
/// Keys kept: the load balancer signs with a handful at most.
const MAX_KEYS: usize = 64;
/// A longer answer is not a PEM public key.
const MAX_KEY_BYTES: usize = 8 * 1024;

/// How keys are fetched.
#[derive(Debug, Clone, Copy)]
pub struct FetchPolicy {
    /// The whole fetch, connection included.
    pub timeout: Duration,
    /// How long a failed fetch is remembered before that key id is fetched again.
    pub failure_ttl: Duration,
    /// Fetches at once above the sustained rate.
    pub burst: u32,
    /// Fetches a minute, sustained.
    pub per_minute: u32,
}

impl Default for FetchPolicy {
    fn default() -> Self {
        FetchPolicy {
            timeout: Duration::from_secs(2),
            failure_ttl: Duration::from_secs(10),
            burst: 10,
            per_minute: 10,
        }
    }
}

/// What the endpoint answered for a key id.
#[derive(Debug, Clone, Copy)]
enum Fetched {
    Key(VerifyingKey),
    /// No such key (404/403, or not a P-256 key): remembered.
    Missing,
    /// No answer, or an error: remembered for the failure TTL.
    Failed,
}

#[derive(Debug, Clone)]
enum Entry {
    Known(VerifyingKey),
    Missing,
    Failed {
        until: Instant,
    },
    /// A fetch under way; whoever needs the key waits on (or takes over) this one.
    Fetching(Arc<OnceCell<Fetched>>),
}

enum Lookup {
    Known(VerifyingKey),
    Wait(Arc<OnceCell<Fetched>>),
}

/// The keys, and the bounds on fetching them.
pub struct KeyCache {
    base_url: String,
    http: reqwest::Client,
    policy: FetchPolicy,
    entries: Mutex<HashMap<String, Entry>>,
    budget: DefaultDirectRateLimiter,
}

impl std::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyCache")
            .field("base_url", &self.base_url)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl KeyCache {
    pub fn new(base_url: &str, policy: FetchPolicy) -> Result<Self, AlbConfigError> {
        let http = reqwest::Client::builder()
            .connect_timeout(policy.timeout)
            .timeout(policy.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| AlbConfigError::Client(e.to_string()))?;
        let per_minute = NonZeroU32::new(policy.per_minute).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(policy.burst).unwrap_or(NonZeroU32::MIN);
        Ok(KeyCache {
            base_url: base_url.to_owned(),
            http,
            policy,
            entries: Mutex::new(HashMap::new()),
            budget: DefaultDirectRateLimiter::direct(
                Quota::per_minute(per_minute).allow_burst(burst),
            ),
        })
    }

    /// The key `kid` (already checked to be a plain path segment): cached, or fetched once
    /// for everyone who needs it, within the bounds above.
    pub async fn key(&self, kid: &str) -> Result<VerifyingKey, IdentityRejected> {
        let cell = match self.lookup(kid)? {
            Lookup::Known(k) => return Ok(k),
            Lookup::Wait(cell) => cell,
        };
        let fetched = *cell.get_or_init(|| self.fetch(kid)).await;
        self.settle(kid, &cell, fetched);
        match fetched {
            Fetched::Key(k) => Ok(k),
            Fetched::Missing | Fetched::Failed => Err(IdentityRejected::KeyUnavailable),
        }
    }

    /// The key when known; else the fetch to wait on, started here when there is none and
    /// the overall budget allows one.
    fn lookup(&self, kid: &str) -> Result<Lookup, IdentityRejected> {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        match entries.get(kid) {
            Some(Entry::Known(k)) => return Ok(Lookup::Known(*k)),
            Some(Entry::Missing) => return Err(IdentityRejected::KeyUnavailable),
            Some(Entry::Failed { until }) if now < *until => {
                return Err(IdentityRejected::KeyUnavailable)
            }
            Some(Entry::Fetching(cell)) => return Ok(Lookup::Wait(cell.clone())),
            Some(Entry::Failed { .. }) | None => {}
        }
        if self.budget.check().is_err() {
            tracing::warn!(
                "load balancer key fetches over their rate: key id refused without a fetch"
            );
            return Err(IdentityRejected::KeyUnavailable);
        }
        if entries.len() >= MAX_ENTRIES {
            // Forget what is cheapest to learn again: failures and missing key ids.
            entries.retain(|_, e| matches!(e, Entry::Known(_) | Entry::Fetching(_)));
            if entries.len() >= MAX_ENTRIES {
                return Err(IdentityRejected::KeyUnavailable);
            }
        }
        let cell = Arc::new(OnceCell::new());
        entries.insert(kid.to_owned(), Entry::Fetching(cell.clone()));
        Ok(Lookup::Wait(cell))
    }

    /// Records what the fetch behind `cell` found, unless someone recorded it already.
    fn settle(&self, kid: &str, cell: &Arc<OnceCell<Fetched>>, fetched: Fetched) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let ours = matches!(entries.get(kid), Some(Entry::Fetching(c)) if Arc::ptr_eq(c, cell));
        if !ours {
            return;
        }
        let entry = match fetched {
            Fetched::Key(k) => {
                let keys = entries
                    .values()
                    .filter(|e| matches!(e, Entry::Known(_)))
                    .count();
                if keys >= MAX_KEYS {
                    entries.retain(|_, e| !matches!(e, Entry::Known(_)));
                }
                Entry::Known(k)
            }
            Fetched::Missing => Entry::Missing,
            Fetched::Failed => Entry::Failed {
                until: Instant::now() + self.policy.failure_ttl,
            },
        };
        entries.insert(kid.to_owned(), entry);
    }

    /// One GET of `<base>/<kid>`, bounded in time and size.
    async fn fetch(&self, kid: &str) -> Fetched {
        let url = format!("{}/{kid}", self.base_url);
        let started = Instant::now();
        let fetched = match tokio::time::timeout(self.policy.timeout, self.get_pem(&url)).await {
            Ok(f) => f,
            Err(_) => {
                tracing::warn!("the load balancer's key endpoint did not answer in time");
                Fetched::Failed
            }
        };
        let outcome = match fetched {
            Fetched::Key(_) => "key",
            Fetched::Missing => "missing",
            Fetched::Failed => "failed",
        };
        tracing::info!(
            kid,
            outcome,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "load balancer key fetch"
        );
        fetched
    }

    async fn get_pem(&self, url: &str) -> Fetched {
        let mut response = match self.http.get(url).send().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e.without_url(), "cannot fetch the load balancer's signing key");
                return Fetched::Failed;
            }
        };
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND || status == reqwest::StatusCode::FORBIDDEN {
            return Fetched::Missing;
        }
        if !status.is_success() {
            tracing::warn!(%status, "the load balancer's key endpoint answered an error");
            return Fetched::Failed;
        }
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) if body.len() + chunk.len() <= MAX_KEY_BYTES => {
                    body.extend_from_slice(&chunk)
                }
                Ok(Some(_)) => return Fetched::Missing,
                Ok(None) => break,
                Err(_) => return Fetched::Failed,
            }
        }
        let key = std::str::from_utf8(&body)
            .ok()
            .and_then(|pem| p256::PublicKey::from_public_key_pem(pem.trim()).ok());
        match key {
            Some(key) => Fetched::Key(VerifyingKey::from(key)),
            None => {
                tracing::warn!(
                    "the load balancer's key endpoint answered something not a P-256 key"
                );
                Fetched::Missing
            }
        }
    }
}
