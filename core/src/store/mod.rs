//! The order store: one trait, with an embedded SQLite adapter and a Couchbase one for production.
//!
//! Writes are idempotent by order id, so Kafka's redelivery never double counts; totals are
//! kept in integer cents and maintained as orders arrive, so reading them never scans.

pub mod couchbase;
pub mod sqlite;

use crate::canary::{CanaryJourney, CanaryStage};
use crate::domain::{Country, FraudAlert, Order, OrderStatus, Payment, PaymentStatus, Timestamp};
use crate::money::Cents;
use async_trait::async_trait;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;

pub use self::couchbase::{CouchbaseConfig, CouchbaseStore};
pub use sqlite::{SqliteStore, WriteLimit};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store query failed: {0}")]
    Query(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

/// An order as the analytics service stores it: the record plus where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredOrder {
    pub order: Order,
    pub kafka_partition: i32,
    pub kafka_offset: i64,
    pub processed_at: Timestamp,
}

/// Where a record was read: its topic's partition and its offset there.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KafkaPosition {
    pub partition: i32,
    pub offset: i64,
}

/// What the analytics service writes in one transaction.
#[derive(Debug, Clone, Default)]
pub struct StoreBatch {
    pub orders: Vec<StoredOrder>,
    pub alerts: Vec<FraudAlert>,
    pub payments: Vec<Payment>,
    /// Where each alert was read (`fraud-alerts`), one per alert in order, or none at all
    /// when unknown. The Couchbase store counts each record by its position (and refuses
    /// alerts without); SQLite needs none.
    pub alert_positions: Vec<KafkaPosition>,
    /// Where each payment was read (`payments`), like `alert_positions`.
    pub payment_positions: Vec<KafkaPosition>,
}

impl StoreBatch {
    pub fn is_empty(&self) -> bool {
        self.orders.is_empty() && self.alerts.is_empty() && self.payments.is_empty()
    }
    pub fn len(&self) -> usize {
        self.orders.len() + self.alerts.len() + self.payments.len()
    }
    /// Adds an alert read at `position`.
    pub fn push_alert(&mut self, alert: FraudAlert, position: KafkaPosition) {
        self.alerts.push(alert);
        self.alert_positions.push(position);
    }
    /// Adds a payment read at `position`.
    pub fn push_payment(&mut self, payment: Payment, position: KafkaPosition) {
        self.payments.push(payment);
        self.payment_positions.push(position);
    }
    /// Moves every record of `other` (with its position) to the end of this batch.
    /// One batch holding `parts` in order, each vector allocated once at its final size (a
    /// transaction gathers up to 50,000 records: growing by doubling copied them and asked
    /// the allocator for fresh, zeroed pages at every step).
    pub fn concat(mut parts: Vec<StoreBatch>) -> StoreBatch {
        if parts.len() == 1 {
            return parts.pop().unwrap_or_default();
        }
        let sum = |len: fn(&StoreBatch) -> usize| parts.iter().map(len).sum::<usize>();
        let mut all = StoreBatch {
            orders: Vec::with_capacity(sum(|b| b.orders.len())),
            alerts: Vec::with_capacity(sum(|b| b.alerts.len())),
            payments: Vec::with_capacity(sum(|b| b.payments.len())),
            alert_positions: Vec::with_capacity(sum(|b| b.alert_positions.len())),
            payment_positions: Vec::with_capacity(sum(|b| b.payment_positions.len())),
        };
        for part in parts {
            all.append(part);
        }
        all
    }
    pub fn append(&mut self, other: StoreBatch) {
        self.orders.extend(other.orders);
        self.alerts.extend(other.alerts);
        self.payments.extend(other.payments);
        self.alert_positions.extend(other.alert_positions);
        self.payment_positions.extend(other.payment_positions);
    }
}

/// How many records of a batch were new (the rest were redeliveries), and the orders that
/// were not stored because their id is stored with different content.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    pub new_orders: usize,
    pub new_alerts: usize,
    pub new_payments: usize,
    pub conflicts: Vec<OrderConflict>,
}

/// An order of a batch whose id is stored already with different content. The stored order
/// stays as it is; the new one is not stored and counts nowhere (the writer dead-letters it
/// with reason `id-conflict`). Same content is a redelivery, never a conflict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderConflict {
    pub order_id: u64,
    /// Where the refused record was read.
    pub kafka_partition: i32,
    pub kafka_offset: i64,
    /// Which fields differ from the stored order.
    pub differing: Vec<&'static str>,
}

impl OrderConflict {
    /// The conflict of `incoming` with `stored`, or `None` when they are the same order
    /// (times compared to the microsecond, the precision the stores keep).
    pub fn between(stored: &Order, incoming: &StoredOrder) -> Option<OrderConflict> {
        let o = &incoming.order;
        let differing: Vec<&'static str> = [
            ("customer_id", stored.customer_id != o.customer_id),
            ("amount", stored.amount != o.amount),
            ("currency", stored.currency != o.currency),
            ("country", stored.country != o.country),
            ("status", stored.status != o.status),
            (
                "created_at",
                stored.created_at.micros() != o.created_at.micros(),
            ),
            ("source", stored.source != o.source),
        ]
        .into_iter()
        .filter_map(|(name, differs)| differs.then_some(name))
        .collect();
        (!differing.is_empty()).then_some(OrderConflict {
            order_id: o.order_id,
            kafka_partition: incoming.kafka_partition,
            kafka_offset: incoming.kafka_offset,
            differing,
        })
    }

    /// The dead-letter message: which order, and what differs.
    pub fn describe(&self) -> String {
        format!(
            "order {} is stored already with a different {}; this record was not stored",
            self.order_id,
            self.differing.join(", ")
        )
    }
}

/// The stored order document: the order's fields, where it came from, and what the
/// pipeline learned about it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OrderDocument {
    #[serde(flatten)]
    pub order: Order,
    pub kafka_partition: i32,
    pub kafka_offset: i64,
    pub processed_at: Timestamp,
    pub fraud: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fraud_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_status: Option<PaymentStatus>,
}

/// A fraud alert as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredAlert {
    #[serde(flatten)]
    pub alert: FraudAlert,
    pub stored_at: Timestamp,
}

/// A payment as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredPayment {
    #[serde(flatten)]
    pub payment: Payment,
    pub stored_at: Timestamp,
}

/// Which orders to list, newest first by arrival: the time analytics stored them
/// (`processed_at`), ties by id, highest first. Not by id alone: ids are another client's
/// to choose, and one far above ours would hold the top of the list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OrderQuery {
    pub limit: usize,
    /// Only orders that arrived before the stored order with this id (cursor paging: the
    /// last id of the previous page). An id not stored lists nothing.
    pub before_id: Option<u64>,
    pub country: Option<Country>,
    pub status: Option<OrderStatus>,
    pub fraud: Option<bool>,
    pub payment_status: Option<PaymentStatus>,
}

/// A count and a sum.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CountAndSum {
    pub count: u64,
    pub sales: Cents,
}

/// Totals over every stored order, exact in cents.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub order_count: u64,
    pub total_sales: Cents,
    pub by_country: BTreeMap<String, CountAndSum>,
    pub by_status: BTreeMap<String, CountAndSum>,
    pub fraud_count: u64,
    pub fraud_sales: Cents,
    pub payment_count: u64,
    pub paid_count: u64,
}

/// One minute of orders by creation time (`created_at`): a tumbling window of the totals,
/// kept exact like them (an order counts once, in the minute it was created, when it is
/// first stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MinuteWindow {
    /// The minute's first instant (UTC, whole minute).
    pub minute: Timestamp,
    pub order_count: u64,
    pub total_sales: Cents,
    pub by_country: BTreeMap<String, CountAndSum>,
}

/// Microseconds in a window.
pub const WINDOW_MICROS: i64 = 60_000_000;

/// The start of the minute `t` falls in, in microseconds since the epoch.
pub fn minute_of(micros: i64) -> i64 {
    micros.div_euclid(WINDOW_MICROS) * WINDOW_MICROS
}

impl Totals {
    /// The average order value in cents, rounded down.
    pub fn average(&self) -> Cents {
        if self.order_count == 0 {
            Cents(0)
        } else {
            Cents(self.total_sales.0 / self.order_count as i64)
        }
    }
}

/// The store every reader and writer goes through.
#[async_trait]
pub trait OrderStore: Send + Sync {
    /// Writes a batch in one transaction. Records already present are left as they are.
    async fn apply(&self, batch: Arc<StoreBatch>) -> Result<BatchOutcome, StoreError>;
    async fn totals(&self) -> Result<Totals, StoreError>;
    /// The minutes whose first instant is in `[from, to)` (microseconds, whole minutes)
    /// and that hold at least one order, oldest first.
    async fn minute_windows(
        &self,
        from_us: i64,
        to_us: i64,
    ) -> Result<Vec<MinuteWindow>, StoreError>;
    /// The highest order id stored, so a restarted producer continues after it.
    async fn max_order_id(&self) -> Result<Option<u64>, StoreError>;
    /// Orders newest first by arrival, as [`OrderQuery`] says.
    async fn latest_orders(&self, query: &OrderQuery) -> Result<Vec<OrderDocument>, StoreError>;
    async fn order(&self, order_id: u64) -> Result<Option<OrderDocument>, StoreError>;
    async fn alert(&self, order_id: u64) -> Result<Option<StoredAlert>, StoreError>;
    async fn payment(&self, order_id: u64) -> Result<Option<StoredPayment>, StoreError>;
    /// The alerts stored last (by `stored_at`, ties by id), newest first.
    async fn latest_alerts(&self, limit: usize) -> Result<Vec<StoredAlert>, StoreError>;
    /// The payments stored last (by `stored_at`, ties by id), newest first.
    async fn latest_payments(&self, limit: usize) -> Result<Vec<StoredPayment>, StoreError>;
    /// One page of a full scan of the stored orders, as analytics stored them: at most
    /// `limit` orders with an id below `before_id` (every id when `None`), highest id
    /// first. The next page starts before the last id of this one; a page shorter than
    /// `limit` is the last. Highest first because that is the order the adapters' indexes
    /// keep (Couchbase's are `order_id DESC`), so each page is one index range.
    async fn orders_before(
        &self,
        before_id: Option<u64>,
        limit: usize,
    ) -> Result<Vec<StoredOrder>, StoreError>;
    /// One page of a full scan of the stored fraud alerts, like [`Self::orders_before`].
    async fn alerts_before(
        &self,
        before_id: Option<u64>,
        limit: usize,
    ) -> Result<Vec<StoredAlert>, StoreError>;
    /// One page of a full scan of the stored payments, like [`Self::orders_before`].
    async fn payments_before(
        &self,
        before_id: Option<u64>,
        limit: usize,
    ) -> Result<Vec<StoredPayment>, StoreError>;
    /// Answers when the store is reachable.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Records stages of canary journeys, apart from the orders, alerts and payments (a
    /// canary never counts in them). The first time recorded for a stage is kept, so a
    /// redelivery changes nothing.
    async fn record_canary_stages(&self, stages: Arc<Vec<CanaryStage>>) -> Result<(), StoreError>;
    /// One page of the canary journeys, like [`Self::orders_before`]: at most `limit` with
    /// an id below `before_id` (every id when `None`), highest id first.
    async fn canaries_before(
        &self,
        before_id: Option<u64>,
        limit: usize,
    ) -> Result<Vec<CanaryJourney>, StoreError>;
}
