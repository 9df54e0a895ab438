//! The Kafka side of the audit: a snapshot of the groups' committed offsets and the
//! partitions' watermarks, then every record up to that snapshot, kept as small fixed-size
//! entries sorted by order id (32 bytes per order, 24 per alert or payment). Every
//! function here blocks: the caller runs it on the blocking pool.

use super::report::{DeadLetterTopic, DeadLetters, Undecodable};
use super::{fingerprint, AuditError};
use crate::canary::{self, CanaryMark};
use crate::dead_letters::{DeadLetter, DeadLetterError, DeadLetterReader};
use crate::domain::{FraudAlert, Order, Payment, Timestamp};
use crate::fraud::FraudRules;
use crate::kafka::{
    dlq_topic, KafkaSettings, KafkaSetupError, LagReader, RangeReader, TopicPartition,
    ANALYTICS_GROUP, FRAUD_ALERTS_TOPIC, FRAUD_GROUP, PAYMENTS_GROUP, PAYMENTS_TOPIC,
};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::Message;
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

/// No rule matches the order.
pub(super) const NO_RULE: u32 = u32::MAX;

/// An order record on the topic: its content as a fingerprint, where it is, and which rule
/// (if any) it matches. 32 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TopicOrder {
    pub order_id: u64,
    pub fingerprint: u64,
    pub offset: i64,
    pub partition: i32,
    /// Index of the first matching rule, or [`NO_RULE`].
    pub rule: u32,
}

impl TopicOrder {
    pub fn rule(&self) -> Option<usize> {
        (self.rule != NO_RULE).then_some(self.rule as usize)
    }
}

/// An alert or payment record on its topic: which order, and where. 24 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TopicRecord {
    pub order_id: u64,
    pub offset: i64,
    pub partition: i32,
}

/// The topics an audit reads.
#[derive(Debug, Clone)]
pub(super) struct TopicNames {
    pub orders: String,
    pub alerts: String,
    pub payments: String,
    pub dead_letters: [String; 3],
}

impl TopicNames {
    pub fn new(orders_topic: &str) -> Self {
        TopicNames {
            orders: orders_topic.to_owned(),
            alerts: FRAUD_ALERTS_TOPIC.to_owned(),
            payments: PAYMENTS_TOPIC.to_owned(),
            dead_letters: [
                dlq_topic(orders_topic),
                dlq_topic(FRAUD_ALERTS_TOPIC),
                dlq_topic(PAYMENTS_TOPIC),
            ],
        }
    }

    fn all(&self) -> Vec<&str> {
        let mut all = vec![
            self.orders.as_str(),
            self.alerts.as_str(),
            self.payments.as_str(),
        ];
        all.extend(self.dead_letters.iter().map(String::as_str));
        all
    }
}

/// A group's committed offsets on one topic, by partition: `i64::MIN` where it has
/// committed nothing, so that every record counts as still ahead of it.
#[derive(Debug, Clone, Default)]
pub(super) struct CommittedOffsets(Vec<i64>);

impl CommittedOffsets {
    fn of(topic: &str, committed: &BTreeMap<TopicPartition, Option<i64>>) -> Self {
        let mut offsets = Vec::new();
        for ((t, partition), offset) in committed {
            let Ok(i) = usize::try_from(*partition) else {
                continue;
            };
            if t == topic {
                if offsets.len() <= i {
                    offsets.resize(i + 1, i64::MIN);
                }
                offsets[i] = offset.unwrap_or(i64::MIN);
            }
        }
        CommittedOffsets(offsets)
    }

    /// The committed offset on `partition` (`i64::MIN` if none).
    pub fn at(&self, partition: i32) -> i64 {
        usize::try_from(partition)
            .ok()
            .and_then(|i| self.0.get(i))
            .copied()
            .unwrap_or(i64::MIN)
    }
}

/// Where each group stood, and where each partition ended, when the audit began.
#[derive(Debug, Clone)]
pub(super) struct Snapshot {
    pub taken_at: Timestamp,
    /// Low and high watermark of every partition of every audited topic.
    pub marks: BTreeMap<TopicPartition, (i64, i64)>,
    /// Every committed offset read, by group, for the report.
    pub committed: BTreeMap<&'static str, BTreeMap<TopicPartition, Option<i64>>>,
    /// fraud-group on the orders topic.
    pub fraud: CommittedOffsets,
    /// payments-group on the orders topic.
    pub payment: CommittedOffsets,
    /// analytics-group on each of the topics it stores.
    pub analytics_orders: CommittedOffsets,
    pub analytics_alerts: CommittedOffsets,
    pub analytics_payments: CommittedOffsets,
}

impl Snapshot {
    /// `(partition, low, high)` of each partition of `topic`.
    pub fn ranges(&self, topic: &str) -> Vec<(i32, i64, i64)> {
        self.marks
            .iter()
            .filter(|((t, _), _)| t == topic)
            .map(|((_, p), (low, high))| (*p, *low, *high))
            .collect()
    }

    /// Takes the snapshot in the order that makes the reads consistent with a running
    /// pipeline: committed offsets first (so each is at most the high watermark read
    /// after it), and the alert and payment topics' watermarks before the orders topic's
    /// (so an alert or payment in the snapshot has its order in the snapshot too).
    fn take(
        lag: &LagReader,
        names: &TopicNames,
        timeout: Duration,
    ) -> Result<Snapshot, AuditError> {
        let taken_at = Timestamp::now();
        let partitions = lag.partitions(&names.all(), timeout).map_err(setup_error)?;
        let of = |topics: &[&str]| -> Vec<TopicPartition> {
            partitions
                .iter()
                .filter(|(t, _)| topics.contains(&t.as_str()))
                .cloned()
                .collect()
        };
        let (orders, alerts, payments) = (
            names.orders.as_str(),
            names.alerts.as_str(),
            names.payments.as_str(),
        );
        let analytics = lag
            .committed(ANALYTICS_GROUP, &of(&[orders, alerts, payments]), timeout)
            .map_err(setup_error)?;
        let fraud = lag
            .committed(FRAUD_GROUP, &of(&[orders]), timeout)
            .map_err(setup_error)?;
        let payment = lag
            .committed(PAYMENTS_GROUP, &of(&[orders]), timeout)
            .map_err(setup_error)?;
        let mut downstream = vec![alerts, payments];
        downstream.extend(names.dead_letters.iter().map(String::as_str));
        let mut marks = lag
            .watermarks(&of(&downstream), timeout)
            .map_err(setup_error)?;
        marks.extend(
            lag.watermarks(&of(&[orders]), timeout)
                .map_err(setup_error)?,
        );
        Ok(Snapshot {
            taken_at,
            fraud: CommittedOffsets::of(orders, &fraud),
            payment: CommittedOffsets::of(orders, &payment),
            analytics_orders: CommittedOffsets::of(orders, &analytics),
            analytics_alerts: CommittedOffsets::of(alerts, &analytics),
            analytics_payments: CommittedOffsets::of(payments, &analytics),
            committed: BTreeMap::from([
                (ANALYTICS_GROUP, analytics),
                (FRAUD_GROUP, fraud),
                (PAYMENTS_GROUP, payment),
            ]),
            marks,
        })
    }
}

fn setup_error(e: KafkaSetupError) -> AuditError {
    match e {
        KafkaSetupError::MissingTopic(t) => AuditError::MissingTopic(t),
        other => AuditError::KafkaUnreachable(other.to_string()),
    }
}

impl From<KafkaError> for AuditError {
    fn from(e: KafkaError) -> Self {
        AuditError::KafkaUnreachable(e.to_string())
    }
}

/// A partition of the orders topic as the audit read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct OrdersPartition {
    /// The first offset actually read, or `high` when none was: anything below it is
    /// gone from the topic (retention may move on while the audit reads).
    pub low: i64,
    /// The high watermark of the snapshot.
    pub high: i64,
    /// The timestamp (ms) of the first record read: the oldest the topic still holds.
    pub first_timestamp_ms: Option<i64>,
}

/// The orders topic up to the snapshot.
#[derive(Debug, Default)]
pub(super) struct OrdersTopic {
    /// Sorted by order id, highest first.
    pub entries: Vec<TopicOrder>,
    /// The canary orders (never stored as orders), apart from the entries and the records.
    pub canaries: Vec<TopicRecord>,
    pub records: u64,
    pub undecodable: Undecodable,
    pub partitions: BTreeMap<i32, OrdersPartition>,
}

/// The alerts or payments topic up to the snapshot.
#[derive(Debug, Default)]
pub(super) struct RecordsTopic {
    /// Sorted by order id, highest first.
    pub entries: Vec<TopicRecord>,
    pub records: u64,
    /// Records about canaries (marked `"canary": true`), apart from the entries and records.
    pub canary_records: u64,
    pub undecodable: Undecodable,
}

/// Everything read from Kafka at the start of an audit.
pub(super) struct KafkaRead {
    pub snapshot: Snapshot,
    pub orders: OrdersTopic,
    pub alerts: RecordsTopic,
    pub payments: RecordsTopic,
    pub dead_letters: DeadLetters,
    /// Order ids among the dead letters' keys.
    pub dead_letter_ids: Vec<u64>,
}

/// The clients an audit keeps for its second look at the orders topic.
pub(super) struct KafkaClients {
    lag: LagReader,
    reader: RangeReader,
    timeout: Duration,
}

/// The order id a record's key names, if it is one (keys are order ids as decimal text).
fn key_order_id(m: &BorrowedMessage<'_>) -> Option<u64> {
    m.key()
        .and_then(|k| std::str::from_utf8(k).ok())
        .and_then(|k| k.parse().ok())
}

/// Takes the snapshot and reads every audited topic up to it.
pub(super) fn read_all(
    settings: &KafkaSettings,
    rules: &FraudRules,
    names: &TopicNames,
    timeout: Duration,
) -> Result<(KafkaClients, KafkaRead), AuditError> {
    let lag = LagReader::new(settings).map_err(setup_error)?;
    let reader = RangeReader::new(settings, "orders-audit");
    let snapshot = Snapshot::take(&lag, names, timeout)?;
    let orders = read_orders(&reader, &snapshot, &names.orders, rules, timeout)?;
    let alerts = read_records(&reader, &snapshot, &names.alerts, timeout, |p| {
        FraudAlert::decode(p).map(|a| a.order_id)
    })?;
    let payments = read_records(&reader, &snapshot, &names.payments, timeout, |p| {
        Payment::decode(p).map(|p| p.order_id)
    })?;
    let handled = handled_dead_letters(settings, &names.orders, timeout)?;
    let mut dead_letters = DeadLetters::default();
    let mut dead_letter_ids = Vec::new();
    for topic in &names.dead_letters {
        let mut counts = DeadLetterTopic::default();
        reader.read(topic, &snapshot.ranges(topic), timeout, |m| {
            let header = |key: &str| {
                m.headers()
                    .and_then(|h| h.iter().find(|h| h.key == key))
                    .and_then(|h| h.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .unwrap_or_else(|| "unknown".to_owned())
            };
            counts.records += 1;
            *counts.by_reason.entry(header("dlq.reason")).or_default() += 1;
            *counts.by_group.entry(header("dlq.group")).or_default() += 1;
            if handled.contains(&DeadLetter::from_message(m).ledger_key()) {
                dead_letters.handled += 1;
            } else {
                dead_letter_ids.extend(key_order_id(m));
            }
        })?;
        dead_letters.records += counts.records;
        dead_letters.topics.insert(topic.clone(), counts);
    }
    let clients = KafkaClients {
        lag,
        reader,
        timeout,
    };
    let read = KafkaRead {
        snapshot,
        orders,
        alerts,
        payments,
        dead_letters,
        dead_letter_ids,
    };
    Ok((clients, read))
}

/// The ledger keys of the dead letters an operator has handled; none when the ledger
/// topic does not exist (nobody has handled any).
fn handled_dead_letters(
    settings: &KafkaSettings,
    orders_topic: &str,
    timeout: Duration,
) -> Result<HashSet<String>, AuditError> {
    let ledger = DeadLetterReader::new(settings, orders_topic, timeout).and_then(|r| r.ledger());
    match ledger {
        Ok(ledger) => Ok(ledger.into_keys().collect()),
        Err(DeadLetterError::MissingTopic(_)) => Ok(HashSet::new()),
        Err(e) => Err(AuditError::KafkaUnreachable(e.to_string())),
    }
}

/// Records between the low and high watermarks of a snapshot, summed over `topic`.
fn records_in(snapshot: &Snapshot, topic: &str) -> usize {
    snapshot
        .ranges(topic)
        .iter()
        .map(|(_, low, high)| usize::try_from(high - low).unwrap_or(0))
        .sum()
}

fn read_orders(
    reader: &RangeReader,
    snapshot: &Snapshot,
    topic: &str,
    rules: &FraudRules,
    timeout: Duration,
) -> Result<OrdersTopic, AuditError> {
    let ranges = snapshot.ranges(topic);
    let mut read = OrdersTopic {
        entries: Vec::with_capacity(records_in(snapshot, topic)),
        partitions: ranges
            .iter()
            .map(|&(partition, _, high)| {
                let p = OrdersPartition {
                    low: high,
                    high,
                    first_timestamp_ms: None,
                };
                (partition, p)
            })
            .collect(),
        ..OrdersTopic::default()
    };
    reader.read(topic, &ranges, timeout, |m| {
        if let Some(p) = read.partitions.get_mut(&m.partition()) {
            if m.offset() < p.low {
                p.low = m.offset();
                p.first_timestamp_ms = m.timestamp().to_millis();
            }
        }
        let decoded = Order::decode(m.payload());
        if let Some(order) = decoded.as_ref().ok().filter(|o| canary::is_canary(o)) {
            read.canaries.push(TopicRecord {
                order_id: order.order_id,
                offset: m.offset(),
                partition: m.partition(),
            });
            return;
        }
        read.records += 1;
        match decoded {
            Ok(order) => read.entries.push(TopicOrder {
                order_id: order.order_id,
                fingerprint: fingerprint(&order),
                offset: m.offset(),
                partition: m.partition(),
                rule: rules
                    .first_match(&order)
                    .and_then(|(i, _)| u32::try_from(i).ok())
                    .unwrap_or(NO_RULE),
            }),
            Err(e) => read.undecodable.add(e.code()),
        }
    })?;
    read.entries
        .sort_unstable_by_key(|e| std::cmp::Reverse(e.order_id));
    Ok(read)
}

fn read_records(
    reader: &RangeReader,
    snapshot: &Snapshot,
    topic: &str,
    timeout: Duration,
    decode: impl Fn(Option<&[u8]>) -> Result<u64, crate::domain::DecodeError>,
) -> Result<RecordsTopic, AuditError> {
    let mut read = RecordsTopic {
        entries: Vec::with_capacity(records_in(snapshot, topic)),
        ..RecordsTopic::default()
    };
    reader.read(topic, &snapshot.ranges(topic), timeout, |m| {
        if CanaryMark::of(m.payload()).is_some() {
            read.canary_records += 1;
            return;
        }
        read.records += 1;
        match decode(m.payload()) {
            Ok(order_id) => read.entries.push(TopicRecord {
                order_id,
                offset: m.offset(),
                partition: m.partition(),
            }),
            Err(e) => read.undecodable.add(e.code()),
        }
    })?;
    read.entries
        .sort_unstable_by_key(|e| std::cmp::Reverse(e.order_id));
    Ok(read)
}

/// Which of `wanted` are orders that reached the topic after the snapshot, up to its end
/// now: an alert or payment stored for one of them is new, not one for an unknown order.
pub(super) fn orders_after_snapshot(
    clients: &KafkaClients,
    snapshot: &Snapshot,
    topic: &str,
    wanted: &HashSet<u64>,
) -> Result<HashSet<u64>, AuditError> {
    let partitions: Vec<TopicPartition> = snapshot
        .ranges(topic)
        .iter()
        .map(|(p, _, _)| (topic.to_owned(), *p))
        .collect();
    let now = clients
        .lag
        .watermarks(&partitions, clients.timeout)
        .map_err(setup_error)?;
    let ranges: Vec<(i32, i64, i64)> = snapshot
        .ranges(topic)
        .iter()
        .map(|&(p, _, high)| {
            let end = now.get(&(topic.to_owned(), p)).map_or(high, |m| m.1);
            (p, high, end)
        })
        .collect();
    let mut found = HashSet::new();
    clients.reader.read(topic, &ranges, clients.timeout, |m| {
        let id = key_order_id(m).or_else(|| Order::decode(m.payload()).ok().map(|o| o.order_id));
        if let Some(id) = id.filter(|id| wanted.contains(id)) {
            found.insert(id);
        }
    })?;
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_stay_small() {
        assert_eq!(std::mem::size_of::<TopicOrder>(), 32);
        assert_eq!(std::mem::size_of::<TopicRecord>(), 24);
    }

    #[test]
    fn committed_offsets_default_to_everything_ahead() {
        let committed = BTreeMap::from([
            (("orders".to_owned(), 0), Some(10)),
            (("orders".to_owned(), 2), None),
            (("payments".to_owned(), 1), Some(5)),
        ]);
        let c = CommittedOffsets::of("orders", &committed);
        assert_eq!(c.at(0), 10);
        assert_eq!(c.at(1), i64::MIN, "not read");
        assert_eq!(c.at(2), i64::MIN, "never committed");
        assert_eq!(c.at(-1), i64::MIN);
        assert_eq!(CommittedOffsets::of("payments", &committed).at(1), 5);
    }
}
