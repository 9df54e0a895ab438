//! Reconciliation of the topics against the store: the engine of `ordersctl audit`.
//!
//! An audit takes a snapshot of Kafka (each consumer group's committed offsets, then each
//! partition's watermarks), reads every record up to it into compact entries sorted by
//! order id, and merges them with full scans of the store, one order id at a time. A
//! record the pipeline has not finished with — at or beyond the committed offset of the
//! group that handles it — is in flight, not missing; so is a stored record that arrived
//! after the snapshot. It works against any [`OrderStore`] and any Kafka, and while the
//! pipeline runs.

mod reconcile;
mod report;
mod topics;

pub use report::{
    AuditReport, CanarySummary, DeadLetterTopic, DeadLetters, Discrepancies, Finding, FraudSummary,
    InFlight, OrdersSummary, PartitionSnapshot, PaymentsSummary, SnapshotReport, TotalsCheck,
    TotalsMismatch, Undecodable,
};

use crate::canary;
use crate::domain::{Order, Timestamp};
use crate::fraud::FraudRules;
use crate::kafka::KafkaSettings;
use crate::store::{OrderStore, StoreError};
use std::collections::{BTreeMap, HashSet};
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

/// How an audit runs.
#[derive(Debug, Clone)]
pub struct AuditOptions {
    /// The orders topic (`TOPIC_NAME`); its dead-letter topic is named after it.
    pub orders_topic: String,
    /// Order ids listed per kind of discrepancy, the lowest first (counts are complete).
    pub max_ids: usize,
    /// Records per page of the store's scans.
    pub page_size: usize,
    /// How long Kafka may stay silent, and how long to wait for the store to answer.
    pub timeout: Duration,
}

impl Default for AuditOptions {
    fn default() -> Self {
        AuditOptions {
            orders_topic: "orders".to_owned(),
            max_ids: 20,
            page_size: 5_000,
            timeout: Duration::from_secs(30),
        }
    }
}

/// Why an audit could not finish.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("kafka cannot be reached: {0}")]
    KafkaUnreachable(String),
    #[error("topic {0:?} does not exist on the cluster")]
    MissingTopic(String),
    #[error("the store cannot be reached: {0}")]
    StoreUnreachable(String),
    #[error("the store failed: {0}")]
    Store(StoreError),
    #[error("audit task failed: {0}")]
    Task(String),
}

impl From<crate::kafka::RangeReadError> for AuditError {
    fn from(e: crate::kafka::RangeReadError) -> Self {
        match e {
            crate::kafka::RangeReadError::Kafka(e) => e.into(),
            idle @ crate::kafka::RangeReadError::Idle { .. } => {
                AuditError::KafkaUnreachable(idle.to_string())
            }
        }
    }
}

impl AuditError {
    /// Kafka or the store could not be reached (or lacks a pipeline topic): nothing was
    /// audited, and trying again later may work.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            AuditError::KafkaUnreachable(_)
                | AuditError::MissingTopic(_)
                | AuditError::StoreUnreachable(_)
        )
    }
}

impl From<StoreError> for AuditError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(m) => AuditError::StoreUnreachable(m),
            other => AuditError::Store(other),
        }
    }
}

/// The content of an order as one number: equal orders, equal fingerprints. Times count
/// to the microsecond, as the store keeps them.
pub(crate) fn fingerprint(o: &Order) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (
        o.order_id,
        o.customer_id,
        o.amount.0,
        &o.currency,
        o.country,
        o.status,
        o.created_at.micros(),
        &o.source,
    )
        .hash(&mut h);
    h.finish()
}

/// Runs `f` on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AuditError> + Send + 'static,
) -> Result<T, AuditError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AuditError::Task(e.to_string()))?
}

/// Waits until the store answers (a Couchbase store connects in the background).
async fn wait_for_store(store: &dyn OrderStore, limit: Duration) -> Result<(), AuditError> {
    let start = Instant::now();
    loop {
        match store.ping().await {
            Ok(()) => return Ok(()),
            Err(StoreError::Unavailable(_)) if start.elapsed() < limit => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Audits the topics on `kafka` against `store`, judging fraud decisions by `rules`.
pub async fn audit(
    kafka: &KafkaSettings,
    store: &dyn OrderStore,
    rules: &FraudRules,
    options: &AuditOptions,
) -> Result<AuditReport, AuditError> {
    let started = Instant::now();
    let started_at = Timestamp::now();
    wait_for_store(store, options.timeout).await?;
    let names = topics::TopicNames::new(&options.orders_topic);
    let (clients, read) = {
        let (kafka, rules, names) = (kafka.clone(), rules.clone(), names.clone());
        let timeout = options.timeout;
        blocking(move || topics::read_all(&kafka, &rules, &names, timeout)).await?
    };
    let totals_at_start = store.totals().await?;
    let mut ledger = reconcile::Ledger::new(rules, &read, options.max_ids);
    ledger.run(store, &read, options.page_size).await?;
    let totals_at_end = store.totals().await?;
    let canaries = canary_summary(store, &read, options).await?;

    let wanted: HashSet<u64> = ledger
        .unknown_alert_orders
        .iter()
        .chain(&ledger.unknown_payment_orders)
        .copied()
        .collect();
    let arrived_late = if wanted.is_empty() {
        HashSet::new()
    } else {
        let snapshot = read.snapshot.clone();
        let topic = names.orders.clone();
        blocking(move || topics::orders_after_snapshot(&clients, &snapshot, &topic, &wanted))
            .await?
    };
    ledger.settle_unknown(&arrived_late);

    let counted = ledger.counted_totals();
    let mismatches = reconcile::compare_totals(&totals_at_start, &totals_at_end, &counted);
    let mut discrepancies = ledger.discrepancies;
    discrepancies.totals_differ.count = mismatches.len() as u64;
    discrepancies.dead_letters.count = read.dead_letters.records - read.dead_letters.handled;
    for id in &read.dead_letter_ids {
        discrepancies.dead_letters.list(*id, options.max_ids);
    }
    let discrepancy_count = discrepancies.total();
    Ok(AuditReport {
        consistent: discrepancy_count == 0,
        discrepancy_count,
        started_at,
        seconds: (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
        discrepancies,
        in_flight: ledger.in_flight,
        orders: ledger.orders,
        fraud: ledger.fraud,
        payments: ledger.payments,
        totals: TotalsCheck {
            changed_during_audit: totals_at_start != totals_at_end,
            stored: totals_at_start,
            counted,
            mismatches,
        },
        dead_letters: read.dead_letters.clone(),
        canaries,
        snapshot: snapshot_report(&read.snapshot),
    })
}

/// The canaries on the orders topic against the store's journeys: each one analytics has
/// committed past must have its stored stage recorded.
async fn canary_summary(
    store: &dyn OrderStore,
    read: &topics::KafkaRead,
    options: &AuditOptions,
) -> Result<CanarySummary, AuditError> {
    let mut summary = CanarySummary {
        fraud_verdicts_on_topic: read.alerts.canary_records,
        payments_on_topic: read.payments.canary_records,
        ..CanarySummary::default()
    };
    let on_topic: BTreeMap<u64, &topics::TopicRecord> = read
        .orders
        .canaries
        .iter()
        .map(|c| (c.order_id, c))
        .collect();
    summary.on_topic = on_topic.len() as u64;
    summary.in_order_range = on_topic
        .keys()
        .filter(|id| !canary::is_canary_id(**id))
        .count() as u64;
    if on_topic.is_empty() {
        return Ok(summary);
    }
    let mut recorded = HashSet::new();
    let mut before = None;
    loop {
        let page = store.canaries_before(before, options.page_size).await?;
        before = page.last().map(|j| j.order_id);
        let done = page.len() < options.page_size;
        recorded.extend(
            page.into_iter()
                .filter(|j| j.stored_at.is_some())
                .map(|j| j.order_id),
        );
        if done || before.is_none() {
            break;
        }
    }
    for (id, c) in on_topic {
        if recorded.contains(&id) {
            summary.journeys += 1;
        } else if c.offset >= read.snapshot.analytics_orders.at(c.partition) {
            summary.not_yet_recorded += 1;
        } else {
            summary.journeys_missing.add(id, options.max_ids);
        }
    }
    Ok(summary)
}

fn snapshot_report(snapshot: &topics::Snapshot) -> SnapshotReport {
    let partitions = snapshot
        .marks
        .iter()
        .map(|(tp, (low, high))| {
            let committed: BTreeMap<String, Option<i64>> = snapshot
                .committed
                .iter()
                .filter_map(|(group, offsets)| offsets.get(tp).map(|o| ((*group).to_owned(), *o)))
                .collect();
            PartitionSnapshot {
                topic: tp.0.clone(),
                partition: tp.1,
                low_watermark: *low,
                high_watermark: *high,
                committed,
            }
        })
        .collect();
    SnapshotReport {
        taken_at: snapshot.taken_at,
        partitions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generator::OrderGenerator;

    #[test]
    fn fingerprints_tell_any_field_apart_and_ignore_sub_microseconds() {
        let o = OrderGenerator::new(3).order(9, Timestamp::now());
        let same = o.clone();
        assert_eq!(fingerprint(&o), fingerprint(&same));
        use crate::domain::OrderStatus;
        let changes: [fn(&mut Order); 7] = [
            |o| o.customer_id += 1,
            |o| o.amount.0 += 1,
            |o| o.currency.push('X'),
            |o| {
                let other = if o.country.as_str() == "FR" {
                    "DE"
                } else {
                    "FR"
                };
                o.country = other.parse().unwrap();
            },
            |o| {
                o.status = match o.status {
                    OrderStatus::Cancelled => OrderStatus::Created,
                    _ => OrderStatus::Cancelled,
                }
            },
            |o| o.created_at = Timestamp::from_micros(o.created_at.micros() + 1).unwrap(),
            |o| o.source = Some(format!("{:?}-other", o.source)),
        ];
        for change in changes {
            let mut other = o.clone();
            change(&mut other);
            assert_ne!(other, o);
            assert_ne!(fingerprint(&o), fingerprint(&other), "{other:?}");
        }
        let nanos: Timestamp = "2024-01-15T10:30:00.123456789Z".parse().unwrap();
        let micros: Timestamp = "2024-01-15T10:30:00.123456Z".parse().unwrap();
        let (mut a, mut b) = (o.clone(), o);
        a.created_at = nanos;
        b.created_at = micros;
        assert_eq!(
            fingerprint(&a),
            fingerprint(&b),
            "the store keeps microseconds"
        );
    }

    #[test]
    fn unreachable_means_kafka_or_the_store_is_not_there() {
        assert!(AuditError::from(StoreError::Unavailable("x".into())).is_unreachable());
        assert!(!AuditError::from(StoreError::Corrupt("x".into())).is_unreachable());
        assert!(AuditError::MissingTopic("orders".into()).is_unreachable());
        assert!(AuditError::KafkaUnreachable("x".into()).is_unreachable());
    }
}
