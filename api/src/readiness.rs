//! The checks behind `/readyz`, shared by the api and every daemon's ops server: each
//! answers "ok" or a word saying why not, and logs the cause.

use orders_core::progress::Progress;
use orders_core::store::OrderStore;
use std::fmt::Display;
use std::time::Duration;

/// How long one dependency may take to answer a readiness check.
pub const READY_TIMEOUT: Duration = Duration::from_secs(2);

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
