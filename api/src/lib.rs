//! The read side of `orders`: an HTTP API over the order store and Kafka's consumer
//! offsets (JSON endpoints, a web view, Prometheus metrics, an OpenAPI document), and the
//! JSON client that scripts use (`ordersctl json`).
//!
//! `app(state)` builds the router; `serve(listener, state, shutdown)` runs it until the
//! token is cancelled, with the lag sampler and the canary monitor beside it. Who may call which route: [`auth`]
//! and `docs/security.md`; how much: [`limits`].

pub mod alb_oidc;
pub mod auth;
pub mod auth_throttle;
pub mod cache;
pub mod canary;
pub mod client;
pub mod client_addr;
pub mod dead_letters;
pub mod endpoints;
pub mod error;
pub mod json_cli;
pub mod lag;
pub mod lag_status;
pub mod limited_store;
pub mod limits;
pub mod local_host;
pub mod metrics;
pub mod model;
pub mod openapi;
pub mod ops_server;
pub mod query;
pub mod readiness;
pub mod routes;
pub mod sample_data;
pub mod schemas;
pub mod web;

pub use error::AppError;
pub use lag::{LagMonitor, LagOptions};

use auth::Access;
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::Router;
use cache::ResponseCache;
use endpoints::Exposure;
use limited_store::LimitedStore;
use limits::ClientLimits;
use metrics::Metrics;
use orders_core::kafka::KafkaSettings;
use orders_core::progress::Progress;
use orders_core::store::OrderStore;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower_http::set_header::SetResponseHeaderLayer;

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
    access: Access,
    limits: ClientLimits,
    dead_letter_metrics: Arc<dead_letters::DeadLetterMetrics>,
    canary: Arc<canary::CanaryMonitor>,
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
            access: Access::default(),
            limits: ClientLimits::default(),
            dead_letter_metrics: Arc::default(),
            canary: Arc::default(),
        }
    }

    /// Canaries not complete within `sla` are lost (default
    /// [`canary::DEFAULT_CANARY_SLA`]).
    pub fn with_canary_sla(mut self, sla: Duration) -> Self {
        self.canary = Arc::new(canary::CanaryMonitor::new(sla));
        self
    }

    pub fn canary_monitor(&self) -> &Arc<canary::CanaryMonitor> {
        &self.canary
    }

    /// Starts polling the canary journeys; it stops with `shutdown`. [`serve`] does this
    /// itself; tests that drive [`app`] directly call it.
    pub fn spawn_canary_monitor(&self, shutdown: CancellationToken) -> JoinHandle<()> {
        tokio::spawn(self.canary.clone().run(self.store.clone(), shutdown))
    }

    /// Who may call (default [`Access::Local`]: anyone, and [`serve`] then only listens on
    /// loopback).
    pub fn with_access(mut self, access: Access) -> Self {
        self.access = access;
        self
    }

    /// Per-client rate and requests in flight (default: neither limited).
    pub fn with_limits(mut self, limits: ClientLimits) -> Self {
        self.limits = limits;
        self
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

/// `Strict-Transport-Security` on answers to requests that came over HTTPS through the load
/// balancer (`X-Forwarded-Proto: https`). Browsers ignore the header on plain HTTP, so local
/// mode never sends it; a client that writes the header itself only pins its own browser.
async fn hsts_behind_https(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let https = request
        .headers()
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"));
    let mut response = next.run(request).await;
    if https {
        response.headers_mut().insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static(HSTS),
        );
    }
    response
}

/// A year; no `includeSubDomains`: the api does not speak for its domain's other hosts.
pub const HSTS: &str = "max-age=31536000";

/// The headers every answer carries: no framing, no sniffing, no referrer, no caching (the
/// answers hold customers' orders: no browser or proxy keeps them), and a content security
/// policy that allows no script and only the web view's own stylesheet.
fn hardening_headers(router: Router<()>) -> Router<()> {
    let csp = HeaderValue::from_str(&web::content_security_policy())
        .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"));
    [
        (header::CONTENT_SECURITY_POLICY, csp),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
    ]
    .into_iter()
    .fold(router, |r, (name, value): (HeaderName, HeaderValue)| {
        r.layer(SetResponseHeaderLayer::if_not_present(name, value))
    })
    .layer(axum::middleware::from_fn(hsts_behind_https))
}

/// The router with every endpoint ([`endpoints::endpoints`]) and layer: outermost the metrics,
/// the hardening headers and the size checks; then, on every route but `/healthz`, the
/// bound on requests in flight and the per-client rate, and on every route but the probes,
/// between the two, the throttle on failed authentication and authentication itself.
pub fn app(state: AppState) -> Router<()> {
    let metrics = state.metrics.clone();
    metrics.set_auth_mode(state.access.mode());
    let limits = state.limits.clone();
    let (mut public, mut probes, mut private, mut cached) =
        (Router::new(), Router::new(), Router::new(), Router::new());
    for (endpoint, handler) in endpoints::endpoints() {
        let group = match (endpoint.exposure, endpoint.cached) {
            (Exposure::Public, _) => &mut public,
            (Exposure::Probe, _) => &mut probes,
            (Exposure::Private, false) => &mut private,
            (Exposure::Private, true) => &mut cached,
        };
        *group = std::mem::take(group).route(endpoint.path, handler);
    }
    let cached = cached.route_layer(from_fn_with_state(state.cache.clone(), cache::layer));
    let mut private = private
        .merge(cached)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(from_fn_with_state(limits.clone(), limits::limit_rate))
        .layer(from_fn_with_state(state.access.clone(), auth::require))
        .layer(from_fn_with_state(
            limits.clone(),
            limits::throttle_failed_auth,
        ))
        .layer(from_fn_with_state(limits.clone(), limits::limit_in_flight));
    let mut probes = probes
        .method_not_allowed_fallback(method_not_allowed)
        .layer(from_fn_with_state(limits.clone(), limits::limit_rate))
        .layer(from_fn_with_state(limits.clone(), limits::limit_in_flight));
    if matches!(state.access, Access::Local) {
        // Everything but the liveness check, which says nothing and must always answer.
        let host_check = axum::middleware::from_fn(local_host::require_loopback_host);
        private = private.layer(host_check.clone());
        probes = probes.layer(host_check);
    }
    let router = public
        .method_not_allowed_fallback(method_not_allowed)
        .merge(probes)
        .merge(private)
        .with_state(state)
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_response,
        ))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(
            limits::MAX_BODY_BYTES,
        ))
        .layer(from_fn_with_state(limits, limits::check_request));
    hardening_headers(router).layer(from_fn_with_state(metrics, metrics::track))
}

/// Why [`serve`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("http server: {0}")]
    Io(#[from] std::io::Error),
    /// [`auth::Access::Local`] on an address that is not loopback.
    #[error("{}", auth::AuthConfigError::Unprotected(*.0))]
    Unprotected(std::net::SocketAddr),
}

/// Serves `app(state)` on `listener` until `shutdown` is cancelled, then lets requests
/// in flight finish. Runs the lag sampler meanwhile.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> Result<(), ApiError> {
    let addr = listener.local_addr()?;
    if !state.access.allows(addr) {
        return Err(ApiError::Unprotected(addr));
    }
    let sampler_stop = shutdown.child_token();
    let sampler = state.spawn_lag_sampler(sampler_stop.clone());
    let canaries = state.spawn_canary_monitor(sampler_stop.clone());
    tracing::info!(%addr, "api listening");
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        // Small responses go out at once rather than waiting on Nagle.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    let service = app(state).into_make_service_with_connect_info::<SocketAddr>();
    let result = axum::serve(listener, service)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await;
    sampler_stop.cancel();
    if let Some(s) = sampler {
        let _ = s.await;
    }
    let _ = canaries.await;
    tracing::info!(%addr, "api stopped");
    result.map_err(ApiError::Io)
}
