//! The read side of `orders`: an HTTP API over the order store and Kafka's consumer
//! offsets (JSON endpoints, a web view, Prometheus metrics, an OpenAPI document), and the
//! JSON client that scripts use (`ordersctl json`).
//!
//! `app(state)` builds the router; `serve(listener, state, shutdown)` runs it until the
//! token is cancelled, with the lag sampler beside it.

pub mod cache;
pub mod client;
pub mod error;
pub mod json_cli;
pub mod lag;
pub mod lag_status;
pub mod limited_store;
pub mod metrics;
pub mod model;
pub mod openapi;
pub mod query;
pub mod routes;
pub mod sample_data;
pub mod web;

pub use error::{ApiError, AppError};
pub use lag::{LagMonitor, LagOptions};

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use cache::ResponseCache;
use limited_store::LimitedStore;
use metrics::Metrics;
use orders_core::kafka::KafkaSettings;
use orders_core::progress::Progress;
use orders_core::store::OrderStore;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// What every handler can reach. Cheap to clone. Built with [`AppState::new`] and the
/// `with_*` methods, so the Kafka settings and the lag monitor always go together.
#[derive(Clone)]
pub struct AppState {
    /// The store behind a bound on concurrent calls ([`limited_store`]).
    store: Arc<dyn OrderStore>,
    /// The store as given.
    raw_store: Arc<dyn OrderStore>,
    /// How to reach Kafka for lag and readiness; `None`: this server watches no Kafka.
    kafka: Option<KafkaSettings>,
    /// The pipeline counters, when the pipeline runs in this process.
    progress: Option<Arc<Progress>>,
    lag: Option<Arc<LagMonitor>>,
    metrics: Arc<Metrics>,
    cache: Arc<ResponseCache>,
}

impl AppState {
    /// A server over `store` alone: no Kafka (lag answers 503), no pipeline counters.
    pub fn new(store: Arc<dyn OrderStore>) -> Self {
        AppState {
            store: Arc::new(LimitedStore::new(
                store.clone(),
                limited_store::DEFAULT_STORE_CONCURRENCY,
            )),
            raw_store: store,
            kafka: None,
            progress: None,
            lag: None,
            metrics: Arc::new(Metrics::default()),
            cache: Arc::new(ResponseCache::new(cache::DEFAULT_TTL)),
        }
    }

    /// Watches the consumer groups of the pipeline whose orders topic is `orders_topic`.
    pub fn with_kafka(self, settings: KafkaSettings, orders_topic: impl Into<String>) -> Self {
        self.with_kafka_options(settings, orders_topic, LagOptions::default())
    }

    pub fn with_kafka_options(
        mut self,
        settings: KafkaSettings,
        orders_topic: impl Into<String>,
        options: LagOptions,
    ) -> Self {
        self.lag = Some(Arc::new(LagMonitor::new(
            settings.clone(),
            orders_topic.into(),
            options,
        )));
        self.kafka = Some(settings);
        self
    }

    /// At most `n` store calls at once (default [`limited_store::DEFAULT_STORE_CONCURRENCY`]).
    pub fn with_store_concurrency(mut self, n: usize) -> Self {
        self.store = Arc::new(LimitedStore::new(self.raw_store.clone(), n));
        self
    }

    /// Reuses answers of the list endpoints for `ttl` (default [`cache::DEFAULT_TTL`];
    /// zero: every request reads the store).
    pub fn with_response_cache(mut self, ttl: Duration) -> Self {
        self.cache = Arc::new(ResponseCache::new(ttl));
        self
    }

    pub fn with_progress(mut self, progress: Arc<Progress>) -> Self {
        self.progress = Some(progress);
        self
    }

    /// The store, behind the API's bound on concurrent calls.
    pub fn store(&self) -> &Arc<dyn OrderStore> {
        &self.store
    }

    pub fn kafka(&self) -> Option<&KafkaSettings> {
        self.kafka.as_ref()
    }

    pub fn progress(&self) -> Option<&Arc<Progress>> {
        self.progress.as_ref()
    }

    pub fn lag_monitor(&self) -> Option<&Arc<LagMonitor>> {
        self.lag.as_ref()
    }

    /// Starts the lag sampler (when Kafka is configured); it stops with `shutdown`.
    /// [`serve`] does this itself; tests that drive [`app`] directly call it.
    pub fn spawn_lag_sampler(&self, shutdown: CancellationToken) -> Option<JoinHandle<()>> {
        self.lag.clone().map(|m| tokio::spawn(m.run(shutdown)))
    }
}

/// Rejects over-long query strings before anything parses them.
async fn limit_uri(request: Request, next: Next) -> Response {
    let len = request.uri().query().map_or(0, str::len);
    if len > query::MAX_QUERY_BYTES {
        return AppError::UriTooLong(query::MAX_QUERY_BYTES).into_response();
    }
    next.run(request).await
}

async fn not_found(uri: axum::http::Uri) -> AppError {
    let path: String = uri.path().chars().take(100).collect();
    AppError::NotFound(format!("no endpoint at {path}"))
}

async fn method_not_allowed() -> AppError {
    AppError::MethodNotAllowed
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("handler panicked");
    let e = AppError::Internal("handler panicked".into());
    (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(e.body())).into_response()
}

/// The router with every endpoint and layer.
pub fn app(state: AppState) -> Router<()> {
    let metrics = state.metrics.clone();
    // Store-backed lists and pages that many clients poll: answered from a short cache.
    let cached = Router::new()
        .route("/", get(routes::index))
        .route("/api/analytics", get(routes::analytics))
        .route("/api/orders", get(routes::orders))
        .route("/api/alerts", get(routes::alerts))
        .route("/api/payments", get(routes::payments))
        .route("/api/totals", get(routes::totals))
        .route_layer(axum::middleware::from_fn_with_state(
            state.cache.clone(),
            cache::layer,
        ));
    Router::new()
        .route("/healthz", get(routes::healthz))
        .route("/readyz", get(routes::readyz))
        .route("/metrics", get(routes::metrics))
        .route("/api/openapi.json", get(routes::openapi))
        .route("/api/orders/{id}", get(routes::order))
        .route("/api/lag", get(routes::lag))
        .merge(cached)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_response,
        ))
        .layer(axum::middleware::from_fn(limit_uri))
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            metrics::track,
        ))
}

/// Serves `app(state)` on `listener` until `shutdown` is cancelled, then lets requests
/// in flight finish. Runs the lag sampler meanwhile.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> Result<(), ApiError> {
    let sampler_stop = shutdown.child_token();
    let sampler = state.spawn_lag_sampler(sampler_stop.clone());
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "api listening");
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        // Small responses go out at once rather than waiting on Nagle.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    let result = axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await;
    sampler_stop.cancel();
    if let Some(s) = sampler {
        let _ = s.await;
    }
    tracing::info!(%addr, "api stopped");
    result.map_err(ApiError::Io)
}
