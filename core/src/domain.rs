//! The business records that travel on the topics: orders, fraud alerts, payments, totals
//! and per-country figures.
//!
//! Field names and types follow the SPEC exactly; readers accept unknown extra fields.

use crate::money::Cents;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// The largest record a reader accepts; anything bigger goes to the dead-letter topic.
pub const MAX_RECORD_BYTES: usize = 1_000_000;

/// An ISO 3166 alpha-2 style country code: two ASCII capital letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Country([u8; 2]);

impl Country {
    pub fn as_str(&self) -> &str {
        // Constructed only from two ASCII capitals, so always valid UTF-8.
        std::str::from_utf8(&self.0).unwrap_or("??")
    }
}

impl FromStr for Country {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        if b.len() == 2 && b.iter().all(u8::is_ascii_uppercase) {
            Ok(Country([b[0], b[1]]))
        } else {
            Err(format!("country {s:?} is not a two-letter upper-case code"))
        }
    }
}

impl fmt::Display for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Country {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Country {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The countries the producer draws from.
pub const COUNTRIES: [&str; 8] = ["US", "CA", "DE", "IN", "GB", "FR", "CN", "BR"];

/// An instant, written as RFC 3339 UTC with `Z` (`2024-01-15T10:30:00Z`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub DateTime<Utc>);

impl Timestamp {
    /// The current time, to the microsecond (what the wire and the store keep).
    pub fn now() -> Self {
        let now = Utc::now();
        Timestamp(DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now))
    }
    pub fn to_rfc3339(&self) -> String {
        self.0.to_rfc3339_opts(SecondsFormat::AutoSi, true)
    }
    /// Microseconds since the Unix epoch.
    pub fn micros(&self) -> i64 {
        self.0.timestamp_micros()
    }
    pub fn from_micros(us: i64) -> Option<Self> {
        DateTime::from_timestamp_micros(us).map(Timestamp)
    }
}

impl FromStr for Timestamp {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| Timestamp(t.with_timezone(&Utc)))
            .map_err(|e| format!("{s:?} is not an RFC 3339 time: {e}"))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Where an order is in its own life (not in the pipeline).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    Created,
    Confirmed,
    Cancelled,
}

impl OrderStatus {
    pub const ALL: [OrderStatus; 3] = [
        OrderStatus::Created,
        OrderStatus::Confirmed,
        OrderStatus::Cancelled,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Created => "CREATED",
            OrderStatus::Confirmed => "CONFIRMED",
            OrderStatus::Cancelled => "CANCELLED",
        }
    }
}

impl FromStr for OrderStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        OrderStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown order status {s:?}"))
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An order as it travels on the `orders` topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub order_id: u64,
    pub customer_id: u32,
    pub amount: Cents,
    pub currency: String,
    pub country: Country,
    pub status: OrderStatus,
    pub created_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// Why a record could not be used; the code goes into the dead-letter header.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("record of {0} bytes exceeds the {MAX_RECORD_BYTES} byte limit")]
    Oversized(usize),
    #[error("record has no value")]
    Empty,
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("schema: {0}")]
    Schema(String),
    #[error("invalid value: {0}")]
    Invalid(String),
    /// The order id is stored already with different content: two sources gave one id to
    /// two orders. Never a redelivery (a redelivered record has the same content).
    #[error("id conflict: {0}")]
    IdConflict(String),
}

impl DecodeError {
    /// Every [`code`](Self::code), in a fixed order: the reasons metrics count by.
    pub const CODES: [&'static str; 6] = [
        "oversized",
        "empty",
        "not-json",
        "schema",
        "invalid-value",
        "id-conflict",
    ];

    /// A short stable code for headers and metrics.
    pub fn code(&self) -> &'static str {
        Self::CODES[self.code_index()]
    }

    /// The position of this error's code in [`Self::CODES`].
    pub fn code_index(&self) -> usize {
        match self {
            DecodeError::Oversized(_) => 0,
            DecodeError::Empty => 1,
            DecodeError::NotJson(_) => 2,
            DecodeError::Schema(_) => 3,
            DecodeError::Invalid(_) => 4,
            DecodeError::IdConflict(_) => 5,
        }
    }
}

/// The largest order id a record may carry: 2^53 − 1, the largest integer that every
/// JSON reader (JavaScript, SQL++ numbers, any f64) holds exactly, and well inside SQLite's
/// i64. A larger id would be stored wrapped or rounded, so such a record is dead-lettered.
pub const MAX_ORDER_ID: u64 = (1 << 53) - 1;

/// Every order id a record may carry: positive, at most [`MAX_ORDER_ID`].
pub const ORDER_IDS: std::ops::RangeInclusive<u64> = 1..=MAX_ORDER_ID;

/// The first id of the database's range: 2^52. Orders come from two sources that share one
/// id space, and each keeps to its own half of it, so they can never collide: the producer
/// daemon's ids ([`PRODUCER_ORDER_IDS`], continuing after the highest it finds there, and
/// its canaries' [`CANARY_ORDER_IDS`]) and the ids a database assigns to rows the ingest
/// role publishes ([`DATABASE_ORDER_IDS`], an identity column starting here;
/// docs/ingest.md).
pub const DATABASE_ORDER_ID_BASE: u64 = 1 << 52;

/// The first id of the canary orders' range: 2^51, the upper half of the producer's. Canaries
/// never take an id from the orders' sequence, so the ids of real orders run without gaps.
pub const CANARY_ORDER_ID_BASE: u64 = 1 << 51;

/// The producer daemon's order ids: 1 up to [`CANARY_ORDER_ID_BASE`] (2.25 × 10^15 of them).
pub const PRODUCER_ORDER_IDS: std::ops::Range<u64> = 1..CANARY_ORDER_ID_BASE;

/// The producer daemon's canary ids (`crate::canary::CanaryIds`): 2^51 up to
/// [`DATABASE_ORDER_ID_BASE`].
pub const CANARY_ORDER_IDS: std::ops::Range<u64> = CANARY_ORDER_ID_BASE..DATABASE_ORDER_ID_BASE;

/// The ids of orders published from a database by the ingest role.
pub const DATABASE_ORDER_IDS: std::ops::RangeInclusive<u64> = DATABASE_ORDER_ID_BASE..=MAX_ORDER_ID;

/// The largest amount a record may carry: $10,000,000.00, far above any real order, and
/// small enough that the totals (i64 cents) of nearly a billion of them cannot overflow.
/// Without a bound, one absurd amount would make every later total fail to add up.
pub const MAX_AMOUNT: Cents = Cents(1_000_000_000);

/// The checks every record that names an order shares.
fn check_order_id_and_amount(order_id: u64, amount: Cents) -> Result<(), DecodeError> {
    if order_id == 0 {
        return Err(DecodeError::Invalid("order_id must be positive".into()));
    }
    if !ORDER_IDS.contains(&order_id) {
        return Err(DecodeError::Invalid(format!(
            "order_id {order_id} is above the largest accepted id {MAX_ORDER_ID}"
        )));
    }
    if amount.is_negative() {
        return Err(DecodeError::Invalid(format!("negative amount {amount}")));
    }
    if amount > MAX_AMOUNT {
        return Err(DecodeError::Invalid(format!(
            "amount {amount} is above the largest accepted amount {MAX_AMOUNT}"
        )));
    }
    Ok(())
}

fn decode_json<T: serde::de::DeserializeOwned>(payload: Option<&[u8]>) -> Result<T, DecodeError> {
    let bytes = payload.ok_or(DecodeError::Empty)?;
    if bytes.len() > MAX_RECORD_BYTES {
        return Err(DecodeError::Oversized(bytes.len()));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Data => DecodeError::Schema(e.to_string()),
            Category::Syntax | Category::Eof | Category::Io => DecodeError::NotJson(e.to_string()),
        }
    })
}

impl Order {
    /// Decodes and validates one record value from the `orders` topic.
    pub fn decode(payload: Option<&[u8]>) -> Result<Order, DecodeError> {
        let order: Order = decode_json(payload)?;
        order.validate()?;
        Ok(order)
    }

    pub fn validate(&self) -> Result<(), DecodeError> {
        check_order_id_and_amount(self.order_id, self.amount)
    }

    /// The record key: the order id as a decimal string.
    pub fn key(&self) -> String {
        self.order_id.to_string()
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain data with string keys cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// A fraud alert on the `fraud-alerts` topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FraudAlert {
    pub order_id: u64,
    pub reason: String,
    pub amount: Cents,
    pub country: Country,
    /// The id of the rule that fired (an extra field the SPEC allows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_id: Option<String>,
    /// When the fraud service decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detected_at: Option<Timestamp>,
}

impl FraudAlert {
    pub fn decode(payload: Option<&[u8]>) -> Result<FraudAlert, DecodeError> {
        let alert: FraudAlert = decode_json(payload)?;
        check_order_id_and_amount(alert.order_id, alert.amount)?;
        Ok(alert)
    }
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// The outcome of payment processing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PaymentStatus {
    Paid,
    Failed,
}

impl PaymentStatus {
    pub const ALL: [PaymentStatus; 2] = [PaymentStatus::Paid, PaymentStatus::Failed];
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Paid => "PAID",
            PaymentStatus::Failed => "FAILED",
        }
    }
}

impl FromStr for PaymentStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PaymentStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown payment status {s:?}"))
    }
}

impl fmt::Display for PaymentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A payment result on the `payments` topic. `timestamp` is Unix seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Payment {
    pub order_id: u64,
    pub status: PaymentStatus,
    pub amount: Cents,
    pub country: Country,
    pub timestamp: f64,
}

impl Payment {
    pub fn decode(payload: Option<&[u8]>) -> Result<Payment, DecodeError> {
        let payment: Payment = decode_json(payload)?;
        check_order_id_and_amount(payment.order_id, payment.amount)?;
        if !payment.timestamp.is_finite() {
            return Err(DecodeError::Invalid("timestamp is not finite".into()));
        }
        Ok(payment)
    }
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// The running totals on the `order-analytics` topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnalyticsTotals {
    pub total_sales: Cents,
    pub order_count: u64,
}

impl AnalyticsTotals {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// One country's running figures on the `order-analytics` topic, keyed by the country
/// code (the totals record has no key): the table the seed's ksqlDB `GROUP BY country`
/// kept. The latest record per key is the country's current figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountryTotals {
    pub country: Country,
    pub order_count: u64,
    pub total_sales: Cents,
}

impl CountryTotals {
    /// The record key: the country code.
    pub fn key(&self) -> String {
        self.country.to_string()
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}
