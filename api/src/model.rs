//! The JSON the API answers with: one type per response, documented for OpenAPI. Money is
//! float dollars as on the wire (exact in cents inside); times are RFC 3339 UTC.
//!
//! Optional fields are always present (as `null` when unknown), so scripts see one shape.

use crate::lag::{GroupLagSample, LagSnapshot};
use crate::lag_status::LagStatus;
use orders_core::lag::PartitionLag;
use orders_core::store::{CountAndSum, OrderDocument, StoredAlert, StoredPayment, Totals};
use orders_core::Timestamp;
use serde::Serialize;
use std::collections::BTreeMap;
use utoipa::ToSchema;

#[derive(Debug, Serialize, ToSchema)]
pub struct HealthBody {
    /// Always `ok`.
    #[schema(example = "ok")]
    pub status: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReadyBody {
    /// `ready`, or `not_ready` (with status 503).
    #[schema(example = "ready")]
    pub status: &'static str,
    pub checks: ReadyChecks,
    /// Null when ready; else names what failed.
    pub error: Option<crate::error::ErrorDetail>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReadyChecks {
    /// `ok`, `unavailable`, or `write_failing` (the store answers, but the analytics
    /// writer of this process cannot write to it).
    pub store: &'static str,
    /// `ok`, `unavailable`, or `not_configured` (no Kafka given to this server, which is
    /// then not ready).
    pub kafka: &'static str,
}

/// A stored order: the SPEC's order fields at the top level, where it came from, and what
/// the pipeline learned about it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct OrderJson {
    pub order_id: u64,
    pub customer_id: u32,
    /// Dollars, two decimals.
    #[schema(example = 249.99)]
    pub amount: f64,
    pub currency: String,
    /// Two upper-case letters.
    #[schema(example = "US")]
    pub country: String,
    #[schema(example = "CREATED")]
    pub status: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    pub source: Option<String>,
    pub kafka_partition: i32,
    pub kafka_offset: i64,
    /// When the analytics service stored it.
    #[schema(format = DateTime)]
    pub processed_at: String,
    /// Whether a fraud alert is stored for it.
    pub fraud: bool,
    pub fraud_reason: Option<String>,
    /// `PAID`, `FAILED`, or null while no payment result is stored.
    pub payment_status: Option<String>,
}

impl From<&OrderDocument> for OrderJson {
    fn from(d: &OrderDocument) -> Self {
        let o = &d.order;
        OrderJson {
            order_id: o.order_id,
            customer_id: o.customer_id,
            amount: o.amount.dollars(),
            currency: o.currency.clone(),
            country: o.country.as_str().to_owned(),
            status: o.status.as_str().to_owned(),
            created_at: o.created_at.to_rfc3339(),
            source: o.source.clone(),
            kafka_partition: d.kafka_partition,
            kafka_offset: d.kafka_offset,
            processed_at: d.processed_at.to_rfc3339(),
            fraud: d.fraud,
            fraud_reason: d.fraud_reason.clone(),
            payment_status: d.payment_status.map(|s| s.as_str().to_owned()),
        }
    }
}

/// The old React page's shape.
#[derive(Debug, Serialize, ToSchema)]
pub struct AnalyticsBody {
    #[schema(example = "ok")]
    pub status: &'static str,
    pub orders: Vec<OrderJson>,
}

/// A page of orders, newest first by arrival (stored time, then id).
#[derive(Debug, Serialize, ToSchema)]
pub struct OrdersPage {
    pub orders: Vec<OrderJson>,
    /// The last order id of this page: pass as `before` for the next page; null on the
    /// last page.
    pub next_before: Option<u64>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AlertJson {
    pub order_id: u64,
    #[schema(example = "HIGH_AMOUNT_RISKY_COUNTRY")]
    pub reason: String,
    pub amount: f64,
    pub country: String,
    pub rule_id: Option<String>,
    /// When the fraud service decided, when it said.
    #[schema(format = DateTime)]
    pub detected_at: Option<String>,
    #[schema(format = DateTime)]
    pub stored_at: String,
}

impl From<&StoredAlert> for AlertJson {
    fn from(s: &StoredAlert) -> Self {
        let a = &s.alert;
        AlertJson {
            order_id: a.order_id,
            reason: a.reason.clone(),
            amount: a.amount.dollars(),
            country: a.country.as_str().to_owned(),
            rule_id: a.rule_id.clone(),
            detected_at: a.detected_at.map(|t| t.to_rfc3339()),
            stored_at: s.stored_at.to_rfc3339(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AlertsBody {
    pub alerts: Vec<AlertJson>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PaymentJson {
    pub order_id: u64,
    /// `PAID` or `FAILED`.
    pub status: String,
    pub amount: f64,
    pub country: String,
    /// Unix seconds, as on the `payments` topic.
    pub timestamp: f64,
    #[schema(format = DateTime)]
    pub stored_at: String,
}

impl From<&StoredPayment> for PaymentJson {
    fn from(s: &StoredPayment) -> Self {
        let p = &s.payment;
        PaymentJson {
            order_id: p.order_id,
            status: p.status.as_str().to_owned(),
            amount: p.amount.dollars(),
            country: p.country.as_str().to_owned(),
            timestamp: p.timestamp,
            stored_at: s.stored_at.to_rfc3339(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentsBody {
    pub payments: Vec<PaymentJson>,
}

/// One minute of orders by creation time (a tumbling window).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MinuteWindowBody {
    /// The minute's first instant, RFC 3339 UTC.
    #[schema(example = "2024-01-15T10:30:00Z")]
    pub minute: String,
    pub order_count: u64,
    pub total_sales: f64,
    /// Only the countries with orders in that minute.
    pub by_country: BTreeMap<String, CountSales>,
}

/// `GET /api/totals/windows`: every minute of the span, oldest first, empty ones included.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WindowsBody {
    pub minutes: usize,
    pub windows: Vec<MinuteWindowBody>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CountSales {
    pub order_count: u64,
    pub total_sales: f64,
}

impl From<&CountAndSum> for CountSales {
    fn from(c: &CountAndSum) -> Self {
        CountSales {
            order_count: c.count,
            total_sales: c.sales.dollars(),
        }
    }
}

/// Totals over every stored order, kept exact in cents by the store as orders arrive.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TotalsBody {
    pub order_count: u64,
    pub total_sales: f64,
    /// Rounded down to the cent; 0 without orders.
    pub average_order_value: f64,
    pub by_country: BTreeMap<String, CountSales>,
    pub by_status: BTreeMap<String, CountSales>,
    pub fraud_count: u64,
    pub fraud_sales: f64,
    /// fraud_count / order_count (0 without orders).
    pub fraud_rate_by_count: f64,
    /// fraud_sales / total_sales (0 without sales).
    pub fraud_rate_by_sales: f64,
    pub payment_count: u64,
    pub paid_count: u64,
    pub failed_count: u64,
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

impl From<&Totals> for TotalsBody {
    fn from(t: &Totals) -> Self {
        TotalsBody {
            order_count: t.order_count,
            total_sales: t.total_sales.dollars(),
            average_order_value: t.average().dollars(),
            by_country: t
                .by_country
                .iter()
                .map(|(k, v)| (k.clone(), v.into()))
                .collect(),
            by_status: t
                .by_status
                .iter()
                .map(|(k, v)| (k.clone(), v.into()))
                .collect(),
            fraud_count: t.fraud_count,
            fraud_sales: t.fraud_sales.dollars(),
            fraud_rate_by_count: ratio(t.fraud_count as f64, t.order_count as f64),
            fraud_rate_by_sales: ratio(t.fraud_sales.0 as f64, t.total_sales.0 as f64),
            payment_count: t.payment_count,
            paid_count: t.paid_count,
            failed_count: t.payment_count.saturating_sub(t.paid_count),
        }
    }
}

/// The OpenAPI schema of a partition's lag, which is [`PartitionLag`] serialized as it is.
/// `orders_core` knows nothing of OpenAPI, so its schema is written here, under the name
/// the document has always given it.
pub struct PartitionLagJson;

impl utoipa::PartialSchema for PartitionLagJson {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, SchemaType, Type};
        fn field(
            types: impl Into<SchemaType>,
            format: Option<KnownFormat>,
            description: Option<&str>,
        ) -> ObjectBuilder {
            ObjectBuilder::new()
                .schema_type(types)
                .format(format.map(SchemaFormat::KnownFormat))
                .description(description)
        }
        let nullable = |t: Type| SchemaType::from_iter([t, Type::Null]);
        ObjectBuilder::new()
            .property("topic", field(Type::String, None, None))
            .required("topic")
            .property("partition", field(Type::Integer, Some(KnownFormat::Int32), None))
            .required("partition")
            .property(
                "committed",
                field(
                    nullable(Type::Integer),
                    Some(KnownFormat::Int64),
                    Some("Null when the group has committed nothing on this partition."),
                ),
            )
            .property("low_watermark", field(Type::Integer, Some(KnownFormat::Int64), None))
            .required("low_watermark")
            .property("high_watermark", field(Type::Integer, Some(KnownFormat::Int64), None))
            .required("high_watermark")
            .property(
                "lag",
                field(
                    Type::Integer,
                    Some(KnownFormat::Int64),
                    Some("Records not yet consumed."),
                ),
            )
            .required("lag")
            .property(
                "lag_seconds",
                field(
                    nullable(Type::Number),
                    Some(KnownFormat::Double),
                    Some(
                        "Age of the oldest unconsumed record (from its Kafka timestamp); 0 without lag,\n\
                         null when it could not be read in time.",
                    ),
                ),
            )
            .into()
    }
}

impl ToSchema for PartitionLagJson {}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct GroupLagJson {
    #[schema(example = "fraud-group")]
    pub group: String,
    pub topics: Vec<String>,
    /// Judged over the sliding window of samples (Burrow-style).
    pub status: LagStatus,
    /// Why, in words.
    pub reason: String,
    pub total_lag: i64,
    pub max_lag_seconds: Option<f64>,
    #[schema(value_type = Vec<PartitionLagJson>)]
    pub partitions: Vec<PartitionLag>,
}

impl From<&GroupLagSample> for GroupLagJson {
    fn from(g: &GroupLagSample) -> Self {
        GroupLagJson {
            group: g.lag.group.clone(),
            topics: g.lag.topics.clone(),
            status: g.verdict.status,
            reason: g.verdict.reason.clone(),
            total_lag: g.lag.total(),
            max_lag_seconds: g.lag.max_lag_seconds(),
            partitions: g.lag.partitions.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LagWindowJson {
    pub samples: usize,
    pub span_seconds: f64,
    pub interval_seconds: f64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LagBody {
    #[schema(format = DateTime)]
    pub sampled_at: String,
    pub window: LagWindowJson,
    pub groups: Vec<GroupLagJson>,
}

impl LagBody {
    pub fn new(s: &LagSnapshot, interval: std::time::Duration) -> Self {
        LagBody {
            sampled_at: s.taken_at.to_rfc3339(),
            window: LagWindowJson {
                samples: s.window_samples,
                span_seconds: s.window_span_seconds,
                interval_seconds: interval.as_secs_f64(),
            },
            groups: s.groups.iter().map(Into::into).collect(),
        }
    }
}

/// The fraud decision on an order.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FraudStep {
    /// `alert` (an alert is stored), `clear` (the fraud service passed the order and no
    /// alert was raised), `pending` (not decided yet), or `unknown` (no Kafka offsets to
    /// tell `clear` from `pending`).
    #[schema(example = "clear")]
    pub decision: &'static str,
    pub reason: Option<String>,
    pub rule_id: Option<String>,
    #[schema(format = DateTime)]
    pub at: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PaymentStep {
    /// `PAID`, `FAILED`, or `PENDING` while no payment result is stored.
    pub status: String,
    #[schema(format = DateTime)]
    pub at: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TimeStep {
    #[schema(format = DateTime)]
    pub at: String,
}

/// Where an order is in the pipeline.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Journey {
    pub created: TimeStep,
    pub fraud: FraudStep,
    pub payment: PaymentStep,
    pub stored: TimeStep,
    /// Consumer groups whose committed offset has not yet passed the order's offset on
    /// its partition; null when offsets are unknown (no Kafka configured or reachable).
    pub groups_behind: Option<Vec<String>>,
    /// When those offsets were read.
    #[schema(format = DateTime)]
    pub offsets_sampled_at: Option<String>,
}

/// One order with its journey.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderDetail {
    #[serde(flatten)]
    pub order: OrderJson,
    pub journey: Journey,
}

/// One canary's journey: when it was created and reached each stage, the seconds each
/// leg took from creation, and its state under the SLA.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct CanaryJson {
    pub order_id: u64,
    /// `complete` (every stage within the SLA), `pending` (not yet, SLA not passed) or
    /// `lost` (not complete within the SLA); null when nothing dates it yet.
    #[schema(example = "complete")]
    pub state: Option<&'static str>,
    /// The canary order's `created_at`; null until analytics has read the order.
    #[schema(format = DateTime)]
    pub created_at: Option<String>,
    /// When the fraud service decided.
    #[schema(format = DateTime)]
    pub decided_at: Option<String>,
    /// The fraud verdict: whether a rule matched.
    pub flagged: Option<bool>,
    /// The payment's `timestamp`.
    #[schema(format = DateTime)]
    pub paid_at: Option<String>,
    /// When analytics recorded the canary.
    #[schema(format = DateTime)]
    pub stored_at: Option<String>,
    pub decision_seconds: Option<f64>,
    pub paid_seconds: Option<f64>,
    pub stored_seconds: Option<f64>,
}

/// The median and 99th percentile (nearest rank) of one leg; null without samples.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct LegPercentiles {
    pub p50: Option<f64>,
    pub p99: Option<f64>,
}

/// Percentiles of each leg, in seconds from creation, over the complete canaries among
/// the last `window`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct CanaryPercentiles {
    pub decision: LegPercentiles,
    pub paid: LegPercentiles,
    pub stored: LegPercentiles,
}

/// `/api/canary`: the canary orders' journeys through the pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct CanaryBody {
    /// `ORDERS_CANARY_SLA_SECONDS`.
    pub sla_seconds: f64,
    /// How many of the newest canaries are read (and the percentiles cover).
    pub window: usize,
    /// When the store was last read.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub polled_at: Option<Timestamp>,
    /// The newest canary that is complete or lost; null when there is none.
    pub last: Option<CanaryJson>,
    /// Canaries on their way, within the SLA.
    pub pending: usize,
    /// Lost canaries among the window.
    pub lost_in_window: usize,
    /// Canaries this api process counted lost (`orders_canary_lost_total`).
    pub lost_total: u64,
    /// Complete canaries the percentiles are over.
    pub samples: usize,
    pub percentiles: CanaryPercentiles,
    /// The newest canaries (at most 20), highest id first.
    pub canaries: Vec<CanaryJson>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use orders_core::store::OrderDocument;
    use orders_core::{Cents, Order, OrderStatus, PaymentStatus};

    #[test]
    fn order_json_keeps_the_store_document_fields_and_values() {
        let doc = OrderDocument {
            order: Order {
                order_id: 123,
                customer_id: 5678,
                amount: Cents(24999),
                currency: "USD".into(),
                country: "US".parse().unwrap(),
                status: OrderStatus::Created,
                created_at: "2024-01-15T10:30:00Z".parse().unwrap(),
                source: Some("order-service".into()),
            },
            kafka_partition: 3,
            kafka_offset: 77,
            processed_at: Timestamp::from_micros(1_705_314_600_123_456).unwrap(),
            fraud: true,
            fraud_reason: Some("HIGH_AMOUNT_RISKY_COUNTRY".into()),
            payment_status: Some(PaymentStatus::Paid),
        };
        let core = serde_json::to_value(&doc).unwrap();
        let api = serde_json::to_value(OrderJson::from(&doc)).unwrap();
        let core = core.as_object().unwrap();
        let api = api.as_object().unwrap();
        for (k, v) in core {
            assert_eq!(api.get(k), Some(v), "field {k}");
        }
        assert_eq!(api["amount"], serde_json::json!(249.99));
        assert_eq!(api["created_at"], "2024-01-15T10:30:00Z");
    }

    /// `/api/lag` as docs/json.md fixes it: names, order, numbers and nulls.
    #[test]
    fn lag_body_keeps_its_wire_shape() {
        use crate::lag::{GroupLagSample, LagSnapshot};
        use crate::lag_status::Verdict;
        use orders_core::lag::ConsumerLag;
        let mut behind = PartitionLag::new("orders", 0, Some(40), 0, 42);
        behind.lag_seconds = Some(1.25);
        let snapshot = LagSnapshot {
            taken_at: Timestamp::from_micros(1_705_314_600_123_456).unwrap(),
            groups: vec![GroupLagSample {
                lag: ConsumerLag {
                    group: "fraud-group".into(),
                    topics: vec!["orders".into()],
                    partitions: vec![
                        behind,
                        PartitionLag::new("orders", 1, None, 5, 9),
                        PartitionLag::new("orders", 2, Some(7), 0, 7),
                    ],
                },
                verdict: Verdict {
                    status: LagStatus::Stall,
                    reason: "offsets not moving".into(),
                },
            }],
            window_samples: 3,
            window_span_seconds: 3.0,
        };
        let body = LagBody::new(&snapshot, std::time::Duration::from_millis(1500));
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            concat!(
                r#"{"sampled_at":"2024-01-15T10:30:00.123456Z","#,
                r#""window":{"samples":3,"span_seconds":3.0,"interval_seconds":1.5},"#,
                r#""groups":[{"group":"fraud-group","topics":["orders"],"status":"STALL","#,
                r#""reason":"offsets not moving","total_lag":6,"max_lag_seconds":1.25,"#,
                r#""partitions":["#,
                r#"{"topic":"orders","partition":0,"committed":40,"low_watermark":0,"#,
                r#""high_watermark":42,"lag":2,"lag_seconds":1.25},"#,
                r#"{"topic":"orders","partition":1,"committed":null,"low_watermark":5,"#,
                r#""high_watermark":9,"lag":4,"lag_seconds":null},"#,
                r#"{"topic":"orders","partition":2,"committed":7,"low_watermark":0,"#,
                r#""high_watermark":7,"lag":0,"lag_seconds":0.0}]}]}"#
            )
        );
    }

    #[test]
    fn totals_rates_and_average() {
        let mut t = Totals {
            order_count: 4,
            total_sales: Cents(1001),
            fraud_count: 1,
            fraud_sales: Cents(500),
            payment_count: 3,
            paid_count: 2,
            ..Totals::default()
        };
        let b = TotalsBody::from(&t);
        assert_eq!(b.average_order_value, 2.5);
        assert_eq!(b.fraud_rate_by_count, 0.25);
        assert!((b.fraud_rate_by_sales - 500.0 / 1001.0).abs() < 1e-12);
        assert_eq!(b.failed_count, 1);
        t = Totals::default();
        let b = TotalsBody::from(&t);
        assert_eq!(
            (
                b.average_order_value,
                b.fraud_rate_by_count,
                b.fraud_rate_by_sales
            ),
            (0.0, 0.0, 0.0)
        );
    }
}
