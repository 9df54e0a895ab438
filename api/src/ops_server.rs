//! The ops server every headless daemon runs beside its loop (`ORDERS_OPS_ADDR`, default
//! `0.0.0.0:9100`): `/healthz` (is the loop alive), `/readyz` (do its Kafka and its store
//! answer: one Kafka client for the process, an answer reused for
//! [`readiness::READY_TTL`]) and `/metrics` (the pipeline's metrics, rendered by
//! [`crate::metrics`]; for the api role everything its own `/metrics` has, without its
//! token, so a scraper reaches the lag, dead-letter and canary metrics on the same port as
//! every daemon's).
//!
//! `router(state)` builds it; `serve(listener, state, shutdown)` runs it until the token is
//! cancelled.

use crate::metrics::render_pipeline;
use crate::readiness::{self, CachedCheck, KafkaProbe};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use orders_core::kafka::KafkaSettings;
use orders_core::progress::Progress;
use orders_core::store::OrderStore;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The default ops address.
pub const DEFAULT_OPS_ADDR: &str = "0.0.0.0:9100";
/// How long a loop may go without turning, or a store write or produce may wait, before
/// `/healthz` calls the daemon wedged: above librdkafka's `message.timeout.ms` (60 s), so
/// a produce that is only being retried through a broker outage is not called wedged.
pub const DEFAULT_WEDGED_AFTER: Duration = Duration::from_secs(120);
/// What the ops endpoints look at. Cheap to clone.
#[derive(Clone)]
pub struct OpsState {
    progress: Arc<Progress>,
    kafka: Option<Arc<KafkaProbe>>,
    store: Option<Arc<dyn OrderStore>>,
    wedged_after: Duration,
    api: Option<crate::AppState>,
    /// The store's and Kafka's answers, reused for a moment.
    dependencies: Arc<CachedCheck<(&'static str, &'static str)>>,
}

impl OpsState {
    /// Over `progress`, checking no dependency and calling the loop wedged after
    /// [`DEFAULT_WEDGED_AFTER`].
    pub fn new(progress: Arc<Progress>) -> Self {
        OpsState {
            progress,
            kafka: None,
            store: None,
            wedged_after: DEFAULT_WEDGED_AFTER,
            api: None,
            dependencies: Arc::new(CachedCheck::new(readiness::READY_TTL)),
        }
    }

    /// Readiness asks this Kafka for the metadata of `topic`.
    pub fn with_kafka(mut self, settings: KafkaSettings, topic: impl Into<String>) -> Self {
        self.kafka = Some(Arc::new(KafkaProbe::new(settings, topic)));
        self
    }

    /// Kafka clients the readiness check made (one per process).
    pub fn kafka_clients_created(&self) -> usize {
        self.kafka.as_ref().map_or(0, |k| k.clients_created())
    }

    /// Times the dependencies were actually checked.
    pub fn dependency_checks(&self) -> usize {
        self.dependencies.runs()
    }

    /// Readiness pings this store (the roles that have one).
    pub fn with_store(mut self, store: Arc<dyn OrderStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// `/metrics` serves this api's whole exposition (the api role).
    pub fn with_api_metrics(mut self, api: crate::AppState) -> Self {
        self.api = Some(api);
        self
    }

    pub fn with_wedged_after(mut self, limit: Duration) -> Self {
        self.wedged_after = limit;
        self
    }
}

/// The ops router: `/healthz`, `/readyz`, `/metrics`.
pub fn router(state: OpsState) -> Router<()> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Serves [`router`] on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    state: OpsState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "ops server listening (/healthz, /readyz, /metrics)");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

/// Liveness: 200 while every loop turns and nothing has waited too long; else 503 naming
/// what is stuck.
async fn healthz(State(state): State<OpsState>) -> Response {
    match state.progress.liveness.check(state.wedged_after) {
        Ok(()) => Json(json!({"status": "ok"})).into_response(),
        Err(wedged) => {
            tracing::warn!(reasons = ?wedged.reasons, "healthz: wedged");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "wedged", "reasons": wedged.reasons})),
            )
                .into_response()
        }
    }
}

/// Readiness: Kafka answers a metadata request and the store (where the role has one)
/// answers a ping, and its writes are not failing.
async fn readyz(State(state): State<OpsState>) -> Response {
    let (store, kafka) = state.dependencies.get(|| check_dependencies(&state)).await;
    let mut ready = matches!(store, "ok" | "not_used") && kafka == "ok";
    let mut checks = json!({"store": store, "kafka": kafka});
    // The ingest role's database, as its loop last found it (it tries at least every 5 s).
    if state
        .progress
        .ingest
        .active
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        let (postgres, why) = state.progress.ingest.postgres_state();
        if let Some(why) = why {
            tracing::warn!(error = %why, "readiness: postgres unavailable");
        }
        ready &= postgres == "ok";
        checks["postgres"] = json!(postgres);
    }
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "checks": checks,
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// The store's and Kafka's answers, checked now (at most once per [`readiness::READY_TTL`]).
async fn check_dependencies(state: &OpsState) -> (&'static str, &'static str) {
    let store = async {
        match &state.store {
            Some(store) => readiness::store(store.as_ref(), Some(&state.progress)).await,
            None => "not_used",
        }
    };
    let kafka = async {
        match state.kafka.clone() {
            Some(probe) => readiness::kafka(move |timeout| probe.ping_blocking(timeout)).await,
            None => "not_configured",
        }
    };
    tokio::join!(store, kafka)
}

async fn metrics(State(state): State<OpsState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        match &state.api {
            Some(api) => crate::routes::exposition(api),
            None => render_pipeline(&state.progress),
        },
    )
        .into_response()
}
