//! The checks behind `/readyz`, shared by the api and every daemon's ops server: each
//! answers "ok" or a word saying why not, and logs the cause. A daemon asks Kafka through
//! one client for its whole life ([`KafkaProbe`]) and reuses an answer for a moment
//! ([`CachedCheck`]), so a probe costs no new client, no thread and no request of its own.

use orders_core::kafka::{KafkaSettings, KafkaSetupError, LagReader};
use orders_core::progress::Progress;
use orders_core::store::OrderStore;
use std::fmt::Display;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long one dependency may take to answer a readiness check.
pub const READY_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a readiness answer is reused: probes more often than this share one check.
pub const READY_TTL: Duration = Duration::from_secs(2);

/// Kafka's readiness through one client, made at the first check (and again only when
/// making it failed), then kept.
pub struct KafkaProbe {
    settings: KafkaSettings,
    topic: String,
    reader: Mutex<Option<Arc<LagReader>>>,
    created: AtomicUsize,
}

impl KafkaProbe {
    /// Asks `settings`' cluster for the metadata of `topic`.
    pub fn new(settings: KafkaSettings, topic: impl Into<String>) -> Self {
        KafkaProbe {
            settings,
            topic: topic.into(),
            reader: Mutex::new(None),
            created: AtomicUsize::new(0),
        }
    }

    /// Whether the cluster answers a metadata request for the topic within `timeout`.
    /// Blocking.
    pub fn ping_blocking(&self, timeout: Duration) -> Result<(), KafkaSetupError> {
        let reader = {
            let mut guard = self.reader.lock().unwrap_or_else(|e| e.into_inner());
            match guard.as_ref() {
                Some(r) => r.clone(),
                None => {
                    let r = Arc::new(LagReader::new(&self.settings)?);
                    self.created.fetch_add(1, Ordering::Relaxed);
                    *guard = Some(r.clone());
                    r
                }
            }
        };
        reader.ping(&self.topic, timeout)
    }

    /// Kafka clients this probe made (one for a process's life, unless making one failed).
    pub fn clients_created(&self) -> usize {
        self.created.load(Ordering::Relaxed)
    }
}

/// The last answer of a check, reused for its time to live; one check runs at a time, and
/// probes that arrive meanwhile wait for it rather than starting their own.
pub struct CachedCheck<T> {
    ttl: Duration,
    last: tokio::sync::Mutex<Option<(Instant, T)>>,
    runs: AtomicUsize,
}

impl<T: Clone> CachedCheck<T> {
    pub fn new(ttl: Duration) -> Self {
        CachedCheck {
            ttl,
            last: tokio::sync::Mutex::new(None),
            runs: AtomicUsize::new(0),
        }
    }

    /// The last answer while it is fresh, else the answer of `check`, run now.
    pub async fn get<F, Fut>(&self, check: F) -> T
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        let mut last = self.last.lock().await;
        if let Some((at, answer)) = last.as_ref() {
            if at.elapsed() < self.ttl {
                return answer.clone();
            }
        }
        self.runs.fetch_add(1, Ordering::Relaxed);
        let answer = check().await;
        *last = Some((Instant::now(), answer.clone()));
        answer
    }

    /// How many times the check ran.
    pub fn runs(&self) -> usize {
        self.runs.load(Ordering::Relaxed)
    }
}

/// The store: `write_failing` when this process's writes are failing (reads may still
/// answer), else whether it answers a ping in time.
pub async fn store(store: &dyn OrderStore, progress: Option<&Progress>) -> &'static str {
    if let Some(why) = progress.and_then(Progress::store_failing) {
        tracing::warn!(error = %why, "readiness: store writes failing");
        return "write_failing";
    }
    match tokio::time::timeout(READY_TIMEOUT, store.ping()).await {
        Ok(Ok(())) => "ok",
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: store failed");
            "unavailable"
        }
        Err(_) => {
            tracing::warn!("readiness: store timed out");
            "unavailable"
        }
    }
}

/// Kafka: whether the blocking `ping` (given [`READY_TIMEOUT`]) succeeds in time.
pub async fn kafka<E: Display + Send + 'static>(
    ping: impl FnOnce(Duration) -> Result<(), E> + Send + 'static,
) -> &'static str {
    let check = tokio::task::spawn_blocking(move || ping(READY_TIMEOUT));
    match tokio::time::timeout(READY_TIMEOUT + Duration::from_secs(1), check).await {
        Ok(Ok(Ok(()))) => "ok",
        Ok(Ok(Err(e))) => {
            tracing::warn!(error = %e, "readiness: kafka failed");
            "unavailable"
        }
        _ => {
            tracing::warn!("readiness: kafka check timed out");
            "unavailable"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn probes_at_once_and_within_the_ttl_share_one_check() {
        let cache = Arc::new(CachedCheck::new(Duration::from_millis(300)));
        let probes: Vec<_> = (0..50)
            .map(|_| {
                let cache = cache.clone();
                tokio::spawn(async move {
                    cache
                        .get(|| async {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            "ok"
                        })
                        .await
                })
            })
            .collect();
        for p in probes {
            assert_eq!(p.await.unwrap(), "ok");
        }
        assert_eq!(cache.runs(), 1);
        assert_eq!(cache.get(|| async { "unavailable" }).await, "ok");
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert_eq!(cache.get(|| async { "unavailable" }).await, "unavailable");
        assert_eq!(cache.runs(), 2);
    }
}
