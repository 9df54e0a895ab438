//! Fixtures: stores filled with known data, a store that is down, a running server, and
//! helpers to send requests through the router.

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use orders_api::{app, serve, AppState};
use orders_core::store::*;
use orders_core::Timestamp;
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

pub const SEED: u64 = 7;

/// A temporary SQLite store with orders 1..=n (and their alerts and payments), plus the
/// batch that was written, to compute expectations from.
pub struct Filled {
    pub _dir: tempfile::TempDir,
    pub store: Arc<SqliteStore>,
    pub batch: StoreBatch,
}

pub async fn filled_store(n: u64) -> Filled {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("orders.db")).unwrap());
    let start = Timestamp::from_micros(1_705_314_600_000_000).unwrap();
    let batch = orders_api::sample_data::batch(SEED, 1..=n, start);
    let outcome = store.apply(Arc::new(batch.clone())).await.unwrap();
    assert_eq!(outcome.new_orders as u64, n);
    Filled {
        _dir: dir,
        store,
        batch,
    }
}

/// A store whose every call fails as unavailable.
pub struct DownStore;

fn down<T>() -> Result<T, StoreError> {
    Err(StoreError::Unavailable(
        "connection refused by db-7.internal".into(),
    ))
}

#[async_trait]
impl OrderStore for DownStore {
    async fn apply(&self, _: Arc<StoreBatch>) -> Result<BatchOutcome, StoreError> {
        down()
    }
    async fn totals(&self) -> Result<Totals, StoreError> {
        down()
    }
    async fn minute_windows(&self, _: i64, _: i64) -> Result<Vec<MinuteWindow>, StoreError> {
        down()
    }
    async fn max_order_id(&self) -> Result<Option<u64>, StoreError> {
        down()
    }
    async fn latest_orders(&self, _: &OrderQuery) -> Result<Vec<OrderDocument>, StoreError> {
        down()
    }
    async fn order(&self, _: u64) -> Result<Option<OrderDocument>, StoreError> {
        down()
    }
    async fn alert(&self, _: u64) -> Result<Option<StoredAlert>, StoreError> {
        down()
    }
    async fn payment(&self, _: u64) -> Result<Option<StoredPayment>, StoreError> {
        down()
    }
    async fn latest_alerts(&self, _: usize) -> Result<Vec<StoredAlert>, StoreError> {
        down()
    }
    async fn latest_payments(&self, _: usize) -> Result<Vec<StoredPayment>, StoreError> {
        down()
    }
    async fn orders_before(
        &self,
        _: Option<u64>,
        _: usize,
    ) -> Result<Vec<StoredOrder>, StoreError> {
        down()
    }
    async fn alerts_before(
        &self,
        _: Option<u64>,
        _: usize,
    ) -> Result<Vec<StoredAlert>, StoreError> {
        down()
    }
    async fn payments_before(
        &self,
        _: Option<u64>,
        _: usize,
    ) -> Result<Vec<StoredPayment>, StoreError> {
        down()
    }
    async fn ping(&self) -> Result<(), StoreError> {
        down()
    }
    async fn record_canary_stages(
        &self,
        _: Arc<Vec<orders_core::canary::CanaryStage>>,
    ) -> Result<(), StoreError> {
        down()
    }
    async fn canaries_before(
        &self,
        _: Option<u64>,
        _: usize,
    ) -> Result<Vec<orders_core::canary::CanaryJourney>, StoreError> {
        down()
    }
}

/// An answer read whole.
pub struct Answer {
    pub status: StatusCode,
    pub content_type: String,
    pub headers: axum::http::HeaderMap,
    pub text: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }
}

pub async fn send(app: &Router, method: &str, uri: &str) -> Answer {
    send_with(app, method, uri, &[]).await
}

/// Sends a request with extra headers.
pub async fn send_with(app: &Router, method: &str, uri: &str, headers: &[(&str, &str)]) -> Answer {
    let mut request = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Body::empty()).unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let bytes = axum::body::to_bytes(response.into_body(), 16 << 20)
        .await
        .unwrap();
    Answer {
        status,
        content_type,
        headers,
        text: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

pub async fn get(app: &Router, uri: &str) -> Answer {
    send(app, "GET", uri).await
}

/// GETs `uri` and expects 200 with JSON.
pub async fn get_ok(app: &Router, uri: &str) -> Value {
    let a = get(app, uri).await;
    assert_eq!(a.status, StatusCode::OK, "{uri}: {}", a.text);
    assert!(a.content_type.starts_with("application/json"), "{uri}");
    a.json()
}

/// Asserts an error answer: status, JSON content type, and the error body's shape.
pub fn assert_error(a: &Answer, status: u16, code: &str, context: &str) {
    assert_eq!(a.status.as_u16(), status, "{context}: {}", a.text);
    assert!(
        a.content_type.starts_with("application/json"),
        "{context}: content type {:?}",
        a.content_type
    );
    let v = a.json();
    assert_eq!(v["error"]["code"], code, "{context}: {v}");
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "{context}: {v}");
}

/// A server started with `serve` on 127.0.0.1:0.
pub struct RunningServer {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub handle: JoinHandle<Result<(), orders_api::ApiError>>,
}

impl RunningServer {
    pub async fn start(state: AppState) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(serve(listener, state, shutdown.clone()));
        RunningServer {
            addr,
            shutdown,
            handle,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.handle)
            .await
            .expect("the server stops after shutdown")
            .unwrap()
            .unwrap();
    }
}

pub fn router(store: Arc<dyn OrderStore>) -> Router {
    app(AppState::new(store))
}

/// Waits (bounded) until `cond` holds; panics with `what` otherwise.
pub async fn eventually<F, Fut>(what: &str, limit: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !cond().await {
        assert!(start.elapsed() < limit, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Everything this test binary logged at any level from the project's crates (and the HTTP
/// layers under them), once [`init_logs`] ran: what `access` searches for secrets.
pub fn captured_logs() -> String {
    String::from_utf8_lossy(&CAPTURED.lock().unwrap()).into_owned()
}

static CAPTURED: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());

struct Capture;

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        CAPTURED.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Logs to the test's output (shown for failing tests; `RUST_LOG` filters, default warn),
/// and everything at every level to [`captured_logs`]. One subscriber for the whole binary:
/// a per-test one would miss events whose interest another thread's subscriber cached.
pub fn init_logs() {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::Layer as _;
    let shown = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let captured = tracing_subscriber::EnvFilter::new(
        "orders_api=trace,orders_core=trace,orders_daemons=trace,tower_http=trace,axum=trace",
    );
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_test_writer()
                .with_filter(shown),
        )
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(|| Capture)
                .with_filter(captured),
        )
        .try_init();
}
