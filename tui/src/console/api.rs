//! The HTTP API as the console reads it: lenient wire types and a small reqwest client.
//!
//! Every field the console can do without has a default, and unknown fields are ignored, so
//! an API that grows (or a slightly older one) does not blank the screen.

use orders_api::client::with_token;
use orders_core::config::Secret;
use orders_core::lag::PartitionLag;
use orders_core::{Cents, Timestamp};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// An order count and its sales (`by_country`, `by_status`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct CountSales {
    #[serde(alias = "count")]
    pub order_count: u64,
    #[serde(alias = "sales")]
    pub total_sales: Cents,
}

/// `GET /api/totals`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Totals {
    pub order_count: u64,
    pub total_sales: Cents,
    #[serde(alias = "average")]
    pub average_order_value: Cents,
    pub by_country: BTreeMap<String, CountSales>,
    pub by_status: BTreeMap<String, CountSales>,
    pub fraud_count: u64,
    pub fraud_sales: Cents,
    /// Share of orders flagged, 0..1; computed from the counts when absent.
    #[serde(alias = "fraud_rate")]
    pub fraud_rate_by_count: Option<f64>,
    /// Share of sales flagged, 0..1; computed from the sums when absent.
    #[serde(alias = "fraud_rate_by_amount", alias = "fraud_rate_by_dollars")]
    pub fraud_rate_by_sales: Option<f64>,
    pub payment_count: u64,
    pub paid_count: u64,
    /// Computed from the other two when absent.
    pub failed_count: Option<u64>,
}

impl Totals {
    /// Share of orders flagged as fraud, 0..1.
    pub fn fraud_share_by_count(&self) -> f64 {
        self.fraud_rate_by_count.unwrap_or_else(|| {
            if self.order_count == 0 {
                0.0
            } else {
                self.fraud_count as f64 / self.order_count as f64
            }
        })
    }

    /// Share of sales (in dollars) flagged as fraud, 0..1.
    pub fn fraud_share_by_sales(&self) -> f64 {
        self.fraud_rate_by_sales.unwrap_or_else(|| {
            if self.total_sales.0 == 0 {
                0.0
            } else {
                self.fraud_sales.0 as f64 / self.total_sales.0 as f64
            }
        })
    }

    pub fn failed(&self) -> u64 {
        self.failed_count
            .unwrap_or_else(|| self.payment_count.saturating_sub(self.paid_count))
    }
}

/// A stored order document (`GET /api/orders`, `GET /api/orders/{id}`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct OrderDocument {
    pub order_id: u64,
    pub customer_id: u64,
    pub amount: Cents,
    pub currency: String,
    pub country: String,
    pub status: String,
    pub created_at: Option<Timestamp>,
    pub source: Option<String>,
    pub kafka_partition: Option<i32>,
    pub kafka_offset: Option<i64>,
    pub processed_at: Option<Timestamp>,
    pub fraud: bool,
    pub fraud_reason: Option<String>,
    /// `PAID` or `FAILED`; absent until the payment is known.
    pub payment_status: Option<String>,
}

/// Where an order stands in the API's "newest first": when it was stored, then its id.
/// An order without a stored time sorts before every one that has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Arrival {
    pub processed_at: Option<Timestamp>,
    pub order_id: u64,
}

impl OrderDocument {
    pub fn arrival(&self) -> Arrival {
        Arrival {
            processed_at: self.processed_at,
            order_id: self.order_id,
        }
    }
}

/// `GET /api/orders?limit=N`: one page, newest first.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct OrdersPage {
    pub orders: Vec<OrderDocument>,
    /// The cursor of the next (older) page, when there is one.
    pub next_before: Option<u64>,
}

/// A stored fraud alert (`GET /api/alerts`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Alert {
    pub order_id: u64,
    pub reason: String,
    pub amount: Cents,
    pub country: String,
    pub rule_id: Option<String>,
    pub detected_at: Option<Timestamp>,
    pub stored_at: Option<Timestamp>,
}

/// One minute of orders by creation time (`GET /api/totals/windows`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct MinuteWindow {
    pub minute: Option<Timestamp>,
    pub order_count: u64,
    pub total_sales: Cents,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct WindowsBody {
    windows: Vec<MinuteWindow>,
}

/// A header of a dead letter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct DeadLetterHeader {
    pub key: String,
    pub value: Option<String>,
}

/// What an operator did with a dead letter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct DeadLetterHandling {
    pub action: String,
    pub by: String,
    pub at: String,
    pub sent_to: Option<String>,
}

/// Where a dead letter was read before it was dead-lettered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct SourceCoordinates {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// A dead letter (`GET /api/dlq`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct DeadLetter {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub timestamp: Option<String>,
    pub key: Option<String>,
    pub value: String,
    pub value_bytes: usize,
    pub reason: String,
    pub error: Option<String>,
    pub group: Option<String>,
    pub source: Option<SourceCoordinates>,
    pub truncated: bool,
    pub redrive_count: u32,
    pub redriven_from: Option<String>,
    pub headers: Vec<DeadLetterHeader>,
    pub handled: Option<DeadLetterHandling>,
}

impl DeadLetter {
    /// Where it is: printed `topic/partition/offset`, as `ordersctl dlq` prints it.
    pub fn coordinates(&self) -> orders_core::dead_letters::Coordinates {
        orders_core::dead_letters::Coordinates {
            topic: self.topic.clone(),
            partition: self.partition,
            offset: self.offset,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct DeadLetters {
    dead_letters: Vec<DeadLetter>,
}

/// One canary's journey (`GET /api/canary`), as much as the status line shows.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct CanaryJourney {
    pub order_id: u64,
    /// `complete`, `pending` or `lost`.
    pub state: Option<String>,
    pub decision_seconds: Option<f64>,
    pub paid_seconds: Option<f64>,
    pub stored_seconds: Option<f64>,
}

impl CanaryJourney {
    /// The slowest leg: the whole journey, once complete.
    pub fn seconds(&self) -> Option<f64> {
        [
            self.decision_seconds,
            self.paid_seconds,
            self.stored_seconds,
        ]
        .into_iter()
        .flatten()
        .reduce(f64::max)
    }

    pub fn is_lost(&self) -> bool {
        self.state.as_deref() == Some("lost")
    }
}

/// The median and 99th percentile of one leg.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct LegPercentiles {
    pub p50: Option<f64>,
    pub p99: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct CanaryPercentiles {
    pub decision: LegPercentiles,
    pub paid: LegPercentiles,
    pub stored: LegPercentiles,
}

impl CanaryPercentiles {
    /// The slowest leg's percentile `pick`.
    pub fn slowest(&self, pick: fn(&LegPercentiles) -> Option<f64>) -> Option<f64> {
        [&self.decision, &self.paid, &self.stored]
            .into_iter()
            .filter_map(pick)
            .reduce(f64::max)
    }
}

/// `GET /api/canary`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct CanaryStatus {
    pub last: Option<CanaryJourney>,
    pub pending: u64,
    pub lost_in_window: u64,
    pub samples: u64,
    pub window: u64,
    pub percentiles: CanaryPercentiles,
}

/// How a consumer group is doing, as the API judges it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LagStatus {
    Ok,
    Warn,
    Stall,
    Stop,
    #[default]
    Unknown,
}

impl LagStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            LagStatus::Ok => "OK",
            LagStatus::Warn => "WARN",
            LagStatus::Stall => "STALL",
            LagStatus::Stop => "STOP",
            LagStatus::Unknown => "?",
        }
    }
}

impl<'de> Deserialize<'de> for LagStatus {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(match s.to_ascii_uppercase().as_str() {
            "OK" => LagStatus::Ok,
            "WARN" | "WARNING" => LagStatus::Warn,
            "STALL" | "STALLED" => LagStatus::Stall,
            "STOP" | "STOPPED" => LagStatus::Stop,
            _ => LagStatus::Unknown,
        })
    }
}

/// Lag of one consumer group (`GET /api/lag` → `groups`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct GroupLag {
    pub group: String,
    pub topics: Vec<String>,
    pub status: LagStatus,
    /// Why the status, in words.
    pub reason: String,
    /// Records the group has yet to consume, over all partitions.
    #[serde(alias = "lag", alias = "total")]
    pub total_lag: i64,
    /// How far behind the group is, in seconds (its worst partition).
    #[serde(alias = "seconds_behind")]
    pub max_lag_seconds: Option<f64>,
    /// Read as leniently as the rest: [`PartitionLag`] defaults what is missing.
    pub partitions: Vec<PartitionLag>,
}

impl GroupLag {
    /// Whether this group has consumed the record at `offset` of `partition` of the topic
    /// it reads. `None` when its lag does not cover that partition.
    pub fn has_passed(&self, partition: i32, offset: i64) -> Option<bool> {
        let topic = self.topics.first();
        self.partitions
            .iter()
            .find(|p| p.partition == partition && topic.is_none_or(|t| *t == p.topic))
            .map(|p| p.has_passed(offset))
    }
}

/// A step of the journey that only has a time.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct TimeStep {
    pub at: Option<Timestamp>,
}

/// What the fraud service made of an order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FraudDecision {
    /// An alert is stored.
    Alert,
    /// The fraud group is past the order and raised nothing.
    Clear,
    /// The fraud group has not reached the order yet.
    Pending,
    /// No offsets to tell clear from pending.
    #[default]
    Unknown,
}

impl<'de> Deserialize<'de> for FraudDecision {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(match s.to_ascii_lowercase().as_str() {
            "alert" | "flagged" => FraudDecision::Alert,
            "clear" | "clean" => FraudDecision::Clear,
            "pending" => FraudDecision::Pending,
            _ => FraudDecision::Unknown,
        })
    }
}

/// The fraud step of an order's journey.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct FraudStep {
    pub decision: FraudDecision,
    pub reason: Option<String>,
    pub rule_id: Option<String>,
    pub at: Option<Timestamp>,
}

/// The payment step of an order's journey.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct PaymentStep {
    /// `PAID`, `FAILED`, or `PENDING` while no result is stored.
    pub status: Option<String>,
    pub at: Option<Timestamp>,
}

/// Where an order has been: created, judged for fraud, paid, stored, and which consumer
/// groups have not yet passed its offset.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Journey {
    pub created: TimeStep,
    pub fraud: FraudStep,
    pub payment: PaymentStep,
    pub stored: TimeStep,
    /// Groups whose committed offset is not yet past the order's record; `None` when the
    /// API cannot read offsets.
    pub groups_behind: Option<Vec<String>>,
    /// When those offsets were read.
    pub offsets_sampled_at: Option<Timestamp>,
}

/// `GET /api/orders/{id}`: the document and its journey.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct OrderDetail {
    #[serde(flatten)]
    pub order: OrderDocument,
    pub journey: Journey,
}

/// Lists come either bare or wrapped in an object (`{"alerts": [...]}`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ListOr<T> {
    List(Vec<T>),
    Wrapped {
        #[serde(alias = "alerts", alias = "groups")]
        items: Vec<T>,
    },
}

impl<T> ListOr<T> {
    fn into_vec(self) -> Vec<T> {
        match self {
            ListOr::List(v) | ListOr::Wrapped { items: v } => v,
        }
    }
}

/// Why a request failed, in words short enough for a status line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// No HTTP answer at all: refused, timed out, reset. The API is away.
    Unreachable(String),
    /// An HTTP answer, but not a usable one.
    Bad(String),
    /// The API refused the credentials (401, 403): asking again changes nothing.
    Unauthorised(String),
}

impl ApiError {
    pub fn is_unreachable(&self) -> bool {
        matches!(self, ApiError::Unreachable(_))
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::Unreachable(m) | ApiError::Bad(m) | ApiError::Unauthorised(m) => {
                f.write_str(m)
            }
        }
    }
}

impl std::error::Error for ApiError {}

/// "Connection refused" → "connection refused", to read on after a colon; an acronym
/// ("URL scheme is not allowed") keeps its capitals.
fn lower_initial(text: &str) -> String {
    let mut chars = text.chars();
    match (chars.next(), chars.next()) {
        (Some(first), second) if !second.is_some_and(char::is_uppercase) => {
            first.to_lowercase().chain(text.chars().skip(1)).collect()
        }
        _ => text.to_owned(),
    }
}

fn describe(e: &reqwest::Error) -> ApiError {
    // The innermost cause says the most ("Connection refused"), the outer layers only repeat
    // the URL, which the status line already shows.
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    // "Connection refused (os error 111)" → "connection refused".
    let detail = cause.to_string();
    let detail = match detail.find(" (os error") {
        Some(i) => detail[..i].to_owned(),
        None => detail,
    };
    let detail = lower_initial(&detail);
    if e.is_timeout() {
        ApiError::Unreachable("timed out".to_owned())
    } else if e.is_connect() {
        ApiError::Unreachable(format!("cannot connect: {detail}"))
    } else if e.is_decode() {
        ApiError::Bad(format!("unexpected response: {detail}"))
    } else if e.is_request() || e.is_body() {
        ApiError::Unreachable(detail)
    } else {
        ApiError::Bad(detail)
    }
}

/// A client of one API base URL.
#[derive(Debug, Clone)]
pub struct ApiClient {
    base: String,
    http: reqwest::Client,
    token: Option<Secret>,
}

impl ApiClient {
    /// A client with short timeouts: a slow API shows as unreachable rather than freezing
    /// data. It sends `token`, when given, as a bearer token.
    pub fn new(base: &str, token: Option<Secret>) -> anyhow::Result<Self> {
        // TLS (for an API behind HTTPS) through the system OpenSSL that rdkafka links
        // already: one TLS stack in the binary.
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(5))
            .user_agent(concat!("ordersctl/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let base = orders_api::client::api_base_url(base)?;
        Ok(ApiClient {
            base: base.as_str().trim_end_matches('/').to_owned(),
            http,
            token,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<Option<T>, ApiError> {
        let url = format!("{}{path}", self.base);
        let response = with_token(self.http.get(&url), self.token.as_ref())
            .send()
            .await
            .map_err(|e| describe(&e))?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if matches!(status.as_u16(), 401 | 403) {
            return Err(ApiError::Unauthorised(format!(
                "HTTP {}: the API refused the {}",
                status.as_u16(),
                if self.token.is_some() {
                    "token"
                } else {
                    "request without a token"
                }
            )));
        }
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            // The API's error body: {"error": {"code": "...", "message": "..."}}.
            let message = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| {
                    let e = v.get("error")?;
                    e.get("message").unwrap_or(e).as_str().map(str::to_owned)
                })
                .unwrap_or_default();
            return Err(ApiError::Bad(
                format!("HTTP {} {message}", status.as_u16())
                    .trim_end()
                    .to_owned(),
            ));
        }
        response.json().await.map(Some).map_err(|e| describe(&e))
    }

    async fn get_found<T: DeserializeOwned>(&self, path: &str) -> Result<T, ApiError> {
        self.get(path)
            .await?
            .ok_or_else(|| ApiError::Bad(format!("{path} not found (HTTP 404)")))
    }

    pub async fn totals(&self) -> Result<Totals, ApiError> {
        self.get_found("/api/totals").await
    }

    /// The newest `limit` orders, or those older than `before`.
    pub async fn orders(&self, limit: usize, before: Option<u64>) -> Result<OrdersPage, ApiError> {
        let path = match before {
            Some(b) => format!("/api/orders?limit={limit}&before={b}"),
            None => format!("/api/orders?limit={limit}"),
        };
        self.get_found(&path).await
    }

    /// One order and its journey; `None` when the API does not know it.
    pub async fn order(&self, id: u64) -> Result<Option<OrderDetail>, ApiError> {
        self.get(&format!("/api/orders/{id}")).await
    }

    pub async fn alerts(&self, limit: usize) -> Result<Vec<Alert>, ApiError> {
        self.get_found::<ListOr<Alert>>(&format!("/api/alerts?limit={limit}"))
            .await
            .map(ListOr::into_vec)
    }

    /// Orders per minute over the last `minutes`, oldest first (empty minutes included).
    pub async fn windows(&self, minutes: usize) -> Result<Vec<MinuteWindow>, ApiError> {
        self.get_found::<WindowsBody>(&format!("/api/totals/windows?minutes={minutes}"))
            .await
            .map(|b| b.windows)
    }

    /// Dead letters not yet handled, the oldest first.
    pub async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, ApiError> {
        self.get_found::<DeadLetters>(&format!("/api/dlq?limit={limit}"))
            .await
            .map(|d| d.dead_letters)
    }

    /// The canaries' journeys; `None` from an API without them.
    pub async fn canary(&self) -> Result<Option<CanaryStatus>, ApiError> {
        self.get("/api/canary").await
    }

    pub async fn lag(&self) -> Result<Vec<GroupLag>, ApiError> {
        self.get_found::<ListOr<GroupLag>>("/api/lag")
            .await
            .map(ListOr::into_vec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_read_on_after_a_colon_keeping_acronyms() {
        assert_eq!(lower_initial("Connection refused"), "connection refused");
        assert_eq!(
            lower_initial("URL scheme is not allowed"),
            "URL scheme is not allowed"
        );
        assert_eq!(lower_initial("A"), "a");
        assert_eq!(lower_initial(""), "");
    }

    #[test]
    fn order_document_reads_the_spec_shape_and_ignores_extras() {
        let doc: OrderDocument = serde_json::from_str(
            r#"{"order_id": 123, "customer_id": 5678, "amount": 249.99, "currency": "USD",
                "country": "US", "status": "CREATED", "created_at": "2024-01-15T10:30:00Z",
                "source": "order-service", "kafka_partition": 3, "kafka_offset": 41,
                "processed_at": "2024-01-15T10:30:00.020Z", "fraud": false,
                "payment_status": "PAID", "something_new": [1, 2]}"#,
        )
        .unwrap();
        assert_eq!(doc.order_id, 123);
        assert_eq!(doc.amount, Cents(24999));
        assert_eq!(doc.kafka_partition, Some(3));
        assert_eq!(doc.payment_status.as_deref(), Some("PAID"));
        assert!(!doc.fraud);
    }

    #[test]
    fn totals_compute_fraud_rates_when_the_api_leaves_them_out() {
        let t: Totals = serde_json::from_str(
            r#"{"order_count": 4, "total_sales": 1000.0, "fraud_count": 1, "fraud_sales": 400.0,
                "payment_count": 3, "paid_count": 2}"#,
        )
        .unwrap();
        assert!((t.fraud_share_by_count() - 0.25).abs() < 1e-9);
        assert!((t.fraud_share_by_sales() - 0.4).abs() < 1e-9);
        assert_eq!(t.failed(), 1);
    }

    #[test]
    fn totals_read_the_api_shape() {
        let t: Totals = serde_json::from_str(
            r#"{"order_count": 4, "total_sales": 1001.0, "average_order_value": 250.25,
                "by_country": {"DE": {"order_count": 3, "total_sales": 900.5}},
                "by_status": {"CREATED": {"order_count": 4, "total_sales": 1001.0}},
                "fraud_count": 1, "fraud_sales": 500.0, "fraud_rate_by_count": 0.25,
                "fraud_rate_by_sales": 0.4995, "payment_count": 3, "paid_count": 2,
                "failed_count": 1}"#,
        )
        .unwrap();
        assert_eq!(t.average_order_value, Cents(25025));
        assert_eq!(t.by_country["DE"].order_count, 3);
        assert_eq!(t.by_country["DE"].total_sales, Cents(90050));
        assert_eq!(t.fraud_share_by_sales(), 0.4995);
    }

    #[test]
    fn order_detail_reads_the_document_and_its_journey() {
        let d: OrderDetail = serde_json::from_str(
            r#"{"order_id": 7, "customer_id": 1234, "amount": 350.0, "currency": "USD",
                "country": "DE", "status": "CREATED", "created_at": "2024-01-15T10:30:00Z",
                "source": null, "kafka_partition": 1, "kafka_offset": 9,
                "processed_at": "2024-01-15T10:30:00.020Z", "fraud": true,
                "fraud_reason": "HIGH_AMOUNT_RISKY_COUNTRY", "payment_status": null,
                "journey": {"created": {"at": "2024-01-15T10:30:00Z"},
                            "fraud": {"decision": "alert", "reason": "HIGH_AMOUNT_RISKY_COUNTRY",
                                      "rule_id": "high-amount", "at": "2024-01-15T10:30:00.005Z"},
                            "payment": {"status": "PENDING", "at": null},
                            "stored": {"at": "2024-01-15T10:30:00.020Z"},
                            "groups_behind": ["payments-group"],
                            "offsets_sampled_at": "2024-01-15T10:30:01Z"}}"#,
        )
        .unwrap();
        assert_eq!(d.order.order_id, 7);
        assert!(d.order.fraud);
        assert_eq!(d.journey.fraud.decision, FraudDecision::Alert);
        assert_eq!(d.journey.payment.status.as_deref(), Some("PENDING"));
        assert_eq!(
            d.journey.groups_behind,
            Some(vec!["payments-group".to_owned()])
        );
    }

    #[test]
    fn lists_are_read_bare_or_wrapped() {
        let bare: ListOr<Alert> =
            serde_json::from_str(r#"[{"order_id": 1, "reason": "X"}]"#).unwrap();
        let wrapped: ListOr<Alert> =
            serde_json::from_str(r#"{"alerts": [{"order_id": 2, "reason": "Y"}]}"#).unwrap();
        assert_eq!(bare.into_vec()[0].order_id, 1);
        assert_eq!(wrapped.into_vec()[0].order_id, 2);
    }

    #[test]
    fn lag_status_is_read_leniently() {
        let g: GroupLag = serde_json::from_str(
            r#"{"group": "fraud-group", "topics": ["orders"], "total_lag": 5,
                "max_lag_seconds": 1.5, "status": "stall", "reason": "offsets not moving",
                "partitions": [{"topic": "orders", "partition": 2, "committed": 10,
                                "low_watermark": 0, "high_watermark": 15, "lag": 5,
                                "lag_seconds": 1.5}]}"#,
        )
        .unwrap();
        assert_eq!(g.status, LagStatus::Stall);
        assert_eq!(g.total_lag, 5);
        assert_eq!(g.max_lag_seconds, Some(1.5));
        assert_eq!(g.has_passed(2, 9), Some(true));
        assert_eq!(g.has_passed(2, 10), Some(false));
        assert_eq!(g.has_passed(4, 1), None);
    }
}
