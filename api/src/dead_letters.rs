//! `GET /api/dlq`: the dead letters with their reason headers and what an operator did with
//! them. Read-only by design: redriving writes to Kafka, and is done with the operator's
//! own Kafka credentials (`ordersctl dlq`, the console's dead-letter pane), so an API token
//! never grants write access to the topics (docs/dlq.md).

use crate::error::AppError;
use crate::query::{self, StrictQuery};
use crate::AppState;
use axum::extract::State;
use axum::Json;
use orders_core::dead_letters::{
    dead_letter_topics, parse_since, DeadLetter, DeadLetterError, DeadLetterFilter,
    DeadLetterReader,
};
use orders_core::kafka::KafkaSettings;
use orders_core::Timestamp;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use utoipa::{IntoParams, ToSchema};

/// How long a read of the dead-letter topics may wait on a silent Kafka.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Dead letters answered when `limit` is not given.
const DEFAULT_LIMIT: usize = 100;

/// The reason codes the readers write into `dlq.reason`.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    NotJson,
    Schema,
    InvalidValue,
    Empty,
    Oversized,
    /// An order id stored already with different content (analytics).
    IdConflict,
    /// No `dlq.reason` header.
    Unknown,
}

impl Reason {
    fn code(self) -> &'static str {
        match self {
            Reason::NotJson => "not-json",
            Reason::Schema => "schema",
            Reason::InvalidValue => "invalid-value",
            Reason::Empty => "empty",
            Reason::Oversized => "oversized",
            Reason::IdConflict => "id-conflict",
            Reason::Unknown => "unknown",
        }
    }
}

/// The topics `/api/dlq` filters by, as the OpenAPI document declares them (for the
/// default `TOPIC_NAME`); the filter itself is a plain string checked against the running
/// pipeline's topics.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub enum DeadLetterTopicName {
    #[schema(rename = "orders.dlq")]
    OrdersDlq,
    #[schema(rename = "fraud-alerts.dlq")]
    FraudAlertsDlq,
    #[schema(rename = "payments.dlq")]
    PaymentsDlq,
    #[schema(rename = "orders")]
    Orders,
    #[schema(rename = "fraud-alerts")]
    FraudAlerts,
    #[schema(rename = "payments")]
    Payments,
}

/// Filters of `/api/dlq`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeadLetterParams {
    /// A dead-letter topic (`orders.dlq`) or a source topic (`orders`). The document lists
    /// the names for the default `TOPIC_NAME`; with another orders topic, its name and
    /// `<name>.dlq` are accepted instead of `orders` and `orders.dlq`.
    #[param(value_type = Option<DeadLetterTopicName>, inline)]
    pub topic: Option<String>,
    /// A reason code.
    #[param(inline)]
    pub reason: Option<Reason>,
    /// Dead-lettered at or after: an RFC 3339 time (declared), or an age (`90s`, `30m`,
    /// `6h`, `2d`; accepted as well).
    #[param(value_type = Option<String>, format = DateTime)]
    pub since: Option<String>,
    /// How many, 1–1000, the oldest first (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub limit: Option<String>,
    /// Include those already redriven or discarded (default false).
    #[param(value_type = Option<bool>)]
    pub handled: Option<String>,
}

/// A header of a dead letter.
#[derive(Debug, Serialize, ToSchema)]
pub struct HeaderJson {
    pub key: String,
    /// Null for a null header; invalid UTF-8 replaced.
    pub value: Option<String>,
}

/// Where a record is.
#[derive(Debug, Serialize, ToSchema)]
pub struct CoordinatesJson {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// What an operator did with a dead letter.
#[derive(Debug, Serialize, ToSchema)]
pub struct HandlingJson {
    /// `redriven` or `discarded`.
    #[schema(example = "redriven")]
    pub action: String,
    pub by: String,
    pub at: String,
    /// The topic a redriven record was sent to.
    pub sent_to: Option<String>,
}

/// One dead letter.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterJson {
    /// The dead-letter topic, partition and offset.
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// When it was dead-lettered.
    pub timestamp: Option<String>,
    pub key: Option<String>,
    /// The value as text (invalid UTF-8 replaced).
    pub value: String,
    pub value_bytes: usize,
    /// `dlq.reason`.
    #[schema(example = "not-json")]
    pub reason: String,
    /// `dlq.error`: the reader's message.
    pub error: Option<String>,
    /// `dlq.group`: the consumer group that could not use it.
    pub group: Option<String>,
    /// `dlq.topic`/`dlq.partition`/`dlq.offset`: where it was read.
    pub source: Option<CoordinatesJson>,
    /// The value was cut to fit the dead-letter topic.
    pub truncated: bool,
    /// `dlq.redrive-count`: times already redriven.
    pub redrive_count: u32,
    /// `dlq.redriven-from`: the dead letter it was last redriven from.
    pub redriven_from: Option<String>,
    /// Every header, in order.
    pub headers: Vec<HeaderJson>,
    /// Null while no operator has handled it.
    pub handled: Option<HandlingJson>,
}

impl From<&DeadLetter> for DeadLetterJson {
    fn from(d: &DeadLetter) -> Self {
        DeadLetterJson {
            topic: d.at.topic.clone(),
            partition: d.at.partition,
            offset: d.at.offset,
            timestamp: d.timestamp.clone(),
            key: d.key.clone(),
            value: d.value.clone(),
            value_bytes: d.value_bytes,
            reason: d.reason.clone(),
            error: d.error.clone(),
            group: d.group.clone(),
            source: d.source.as_ref().map(|s| CoordinatesJson {
                topic: s.topic.clone(),
                partition: s.partition,
                offset: s.offset,
            }),
            truncated: d.truncated,
            redrive_count: d.redrive_count,
            redriven_from: d.redriven_from.clone(),
            headers: d
                .headers
                .iter()
                .map(|h| HeaderJson {
                    key: h.key.clone(),
                    value: h.value.clone(),
                })
                .collect(),
            handled: d.handled.as_ref().map(|h| HandlingJson {
                action: h.action.to_string(),
                by: h.by.clone(),
                at: h.at.clone(),
                sent_to: h.sent_to.clone(),
            }),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLettersBody {
    pub dead_letters: Vec<DeadLetterJson>,
}

/// Dead letters, the oldest first, with their reason headers (read-only: redrive with
/// `ordersctl dlq redrive`).
#[utoipa::path(get, path = "/api/dlq", tag = "dead letters", params(DeadLetterParams),
    responses(
        (status = 200, body = DeadLettersBody),
        (status = 400, description = "Bad or unknown parameter", body = crate::error::ErrorBody),
        (status = 503, description = "Kafka not configured or not answering, or a dead-letter topic missing", body = crate::error::ErrorBody),
    ))]
pub async fn dead_letters(
    State(state): State<AppState>,
    StrictQuery(p): StrictQuery<DeadLetterParams>,
) -> Result<Json<DeadLettersBody>, AppError> {
    let (kafka, orders_topic) = match (state.kafka(), state.lag.as_ref()) {
        (Some(kafka), Some(lag)) => (kafka.clone(), lag.orders_topic().to_owned()),
        _ => return Err(AppError::KafkaUnavailable("no Kafka configured".into())),
    };
    let limit = query::limit(p.limit.as_deref(), DEFAULT_LIMIT)?;
    let include_handled = match p.handled.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(AppError::invalid(format!(
                "handled must be true or false, not {other:?}"
            )))
        }
    };
    if let Some(topic) = &p.topic {
        let dead = dead_letter_topics(&orders_topic);
        let known = dead.iter().any(|t| t == topic)
            || dead
                .iter()
                .any(|t| t.strip_suffix(".dlq") == Some(topic.as_str()));
        if !known {
            return Err(AppError::invalid(format!(
                "topic must be one of {} or their source topics",
                dead.join(", ")
            )));
        }
    }
    let now_ms = Timestamp::now().0.timestamp_millis();
    let since_ms = p
        .since
        .as_deref()
        .map(|s| parse_since(s, now_ms))
        .transpose()
        .map_err(|e| AppError::invalid(format!("since: {e}")))?;
    let filter = DeadLetterFilter {
        topic: p.topic,
        reason: p.reason.map(|r| r.code().to_owned()),
        since_ms,
        limit: Some(limit),
        include_handled,
    };
    let letters = tokio::task::spawn_blocking(move || {
        DeadLetterReader::new(&kafka, &orders_topic, READ_TIMEOUT)?.list(&filter)
    })
    .await
    .map_err(|e| AppError::Internal(e.to_string()))?
    .map_err(|e: DeadLetterError| AppError::KafkaUnavailable(e.to_string()))?;
    Ok(Json(DeadLettersBody {
        dead_letters: letters.iter().map(Into::into).collect(),
    }))
}

/// How old the dead-letter figures in `/metrics` may get before a scrape starts a refresh.
const METRICS_REFRESH: Duration = Duration::from_secs(30);

/// The dead-letter figures `/metrics` exports, from the ledger topic (every operator's
/// redrives and discards, so they survive restarts and count every `ordersctl dlq`) and
/// the dead-letter topics. A scrape renders the latest sample and, when it is older than
/// [`METRICS_REFRESH`], starts one refresh in the background: a scrape never waits on Kafka.
#[derive(Debug, Default)]
pub struct DeadLetterMetrics {
    latest: std::sync::Mutex<Option<MetricsSample>>,
    refreshing: std::sync::atomic::AtomicBool,
}

#[derive(Debug, Clone)]
struct MetricsSample {
    at: std::time::Instant,
    redriven: u64,
    discarded: u64,
    /// Not yet handled, by dead-letter topic and reason.
    pending: std::collections::BTreeMap<(String, String), u64>,
}

impl DeadLetterMetrics {
    fn latest(&self) -> Option<MetricsSample> {
        // Plain data: usable even if a holder panicked.
        self.latest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The Prometheus text of the latest sample (nothing before the first), starting a
    /// refresh when due.
    pub fn render(self: &std::sync::Arc<Self>, kafka: Option<(KafkaSettings, String)>) -> String {
        use std::fmt::Write as _;
        use std::sync::atomic::Ordering;
        let latest = self.latest();
        let due = latest
            .as_ref()
            .is_none_or(|s| s.at.elapsed() >= METRICS_REFRESH);
        if let Some((kafka, orders_topic)) = kafka.filter(|_| due) {
            if !self.refreshing.swap(true, Ordering::AcqRel) {
                let this = self.clone();
                tokio::task::spawn_blocking(move || {
                    match sample(&kafka, &orders_topic) {
                        Ok(s) => *this.latest.lock().unwrap_or_else(|e| e.into_inner()) = Some(s),
                        Err(e) => tracing::warn!(error = %e, "dead-letter metrics: not sampled"),
                    }
                    this.refreshing.store(false, Ordering::Release);
                });
            }
        }
        let Some(s) = latest else {
            return String::new();
        };
        let mut t = String::new();
        let _ = writeln!(
            t,
            "# HELP orders_dlq_redriven_total Dead-letter records sent back to their source topic (the ledger topic).\n\
             # TYPE orders_dlq_redriven_total counter\norders_dlq_redriven_total {}",
            s.redriven
        );
        let _ = writeln!(
            t,
            "# HELP orders_dlq_discarded_total Dead-letter records marked handled without sending.\n\
             # TYPE orders_dlq_discarded_total counter\norders_dlq_discarded_total {}",
            s.discarded
        );
        let _ = writeln!(
            t,
            "# HELP orders_dlq_pending Dead letters no operator has handled yet.\n# TYPE orders_dlq_pending gauge"
        );
        for ((topic, reason), n) in &s.pending {
            let _ = writeln!(
                t,
                "orders_dlq_pending{{topic=\"{topic}\",reason=\"{reason}\"}} {n}"
            );
        }
        t
    }
}

/// Reads the ledger and the dead letters. Blocking.
fn sample(kafka: &KafkaSettings, orders_topic: &str) -> Result<MetricsSample, DeadLetterError> {
    use orders_core::dead_letters::Action;
    let reader = DeadLetterReader::new(kafka, orders_topic, READ_TIMEOUT)?;
    let ledger = reader.ledger()?;
    let count = |a: Action| ledger.values().filter(|h| h.action == a).count() as u64;
    let mut pending = std::collections::BTreeMap::new();
    for d in reader.list(&DeadLetterFilter::default())? {
        *pending
            .entry((d.at.topic.clone(), d.reason.clone()))
            .or_default() += 1;
    }
    Ok(MetricsSample {
        at: std::time::Instant::now(),
        redriven: count(Action::Redriven),
        discarded: count(Action::Discarded),
        pending,
    })
}
