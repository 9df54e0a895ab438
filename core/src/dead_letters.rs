//! Dead letters: the records a reader could not use, as the `<topic>.dlq` topics hold them,
//! and the ledger of those an operator has handled (redriven or discarded), kept in the
//! compacted topic `<orders topic>.dlq.handled` so every operator, the API and the audit see
//! the same answer, across restarts (docs/dlq.md).
//!
//! Reading blocks: call it from a blocking context. Sending lives with the producers
//! (`ordersctl dlq`); this module says what to send and whether it may be sent.

use crate::domain::Timestamp;
use crate::kafka::{
    dlq_handled_topic, dlq_topic, KafkaSettings, KafkaSetupError, LagReader, RangeReadError,
    RangeReader, FRAUD_ALERTS_TOPIC, PAYMENTS_TOPIC,
};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::Message;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The reason code (`not-json`, `schema`, `invalid-value`, `empty`, `oversized`,
/// `id-conflict`).
pub const REASON: &str = "dlq.reason";
/// The reader's error message.
pub const ERROR: &str = "dlq.error";
/// Where the record was read: its topic, partition and offset.
pub const SOURCE_TOPIC: &str = "dlq.topic";
pub const SOURCE_PARTITION: &str = "dlq.partition";
pub const SOURCE_OFFSET: &str = "dlq.offset";
/// The consumer group that could not use it.
pub const GROUP: &str = "dlq.group";
/// `true` when the value was cut to fit the dead-letter topic.
pub const TRUNCATED: &str = "dlq.truncated";
/// On a redriven record: the dead letter it came from, as `topic/partition/offset`.
pub const REDRIVEN_FROM: &str = "dlq.redriven-from";
/// On a redriven record: how often this record has been redriven (the loop guard).
pub const REDRIVE_COUNT: &str = "dlq.redrive-count";

/// The headers a reader adds when it dead-letters a record: dropped again on redrive.
pub const DIAGNOSTIC_HEADERS: [&str; 7] = [
    REASON,
    ERROR,
    SOURCE_TOPIC,
    SOURCE_PARTITION,
    SOURCE_OFFSET,
    GROUP,
    TRUNCATED,
];

/// The reasons of the ingest's dead letters for a row updated or deleted in its source table
/// after the insert was read (docs/ingest.md): a change of the table, not a record of a
/// topic, so a redrive has nothing to send.
pub const SOURCE_UPDATE: &str = "source-update";
pub const SOURCE_DELETE: &str = "source-delete";

/// How often one record may be redriven before a redrive is refused.
pub const DEFAULT_REDRIVE_LIMIT: u32 = 3;

/// The dead-letter topics of the pipeline whose orders topic is `orders_topic`.
pub fn dead_letter_topics(orders_topic: &str) -> [String; 3] {
    [
        dlq_topic(orders_topic),
        dlq_topic(FRAUD_ALERTS_TOPIC),
        dlq_topic(PAYMENTS_TOPIC),
    ]
}

#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error("kafka cannot be reached: {0}")]
    Unreachable(String),
    #[error("topic {0:?} does not exist on the cluster; create it first (docs/dlq.md says how)")]
    MissingTopic(String),
    #[error("{0} is not a dead-letter topic of this pipeline (one of {1})")]
    NotADeadLetterTopic(String, String),
    #[error("no dead letter at {0}")]
    NotFound(Coordinates),
    #[error("the ledger holds an entry that cannot be read at {0}: {1}")]
    Ledger(Coordinates, String),
}

impl DeadLetterError {
    /// Kafka could not be reached, or lacks a topic: trying again later may work.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            DeadLetterError::Unreachable(_) | DeadLetterError::MissingTopic(_)
        )
    }
}

impl From<RangeReadError> for DeadLetterError {
    fn from(e: RangeReadError) -> Self {
        DeadLetterError::Unreachable(e.to_string())
    }
}

impl From<KafkaError> for DeadLetterError {
    fn from(e: KafkaError) -> Self {
        DeadLetterError::Unreachable(e.to_string())
    }
}

impl From<KafkaSetupError> for DeadLetterError {
    fn from(e: KafkaSetupError) -> Self {
        match e {
            KafkaSetupError::MissingTopic(t) => DeadLetterError::MissingTopic(t),
            other => DeadLetterError::Unreachable(other.to_string()),
        }
    }
}

/// Where a record is: `topic/partition/offset`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Coordinates {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

impl fmt::Display for Coordinates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.topic, self.partition, self.offset)
    }
}

impl FromStr for Coordinates {
    type Err = String;
    /// `topic/partition/offset`; the topic may itself hold `/`? Kafka forbids it.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.rsplitn(3, '/');
        let (offset, partition, topic) = (parts.next(), parts.next(), parts.next());
        match (topic, partition, offset) {
            (Some(topic), Some(p), Some(o)) if !topic.is_empty() => Ok(Coordinates {
                topic: topic.to_owned(),
                partition: p.parse().map_err(|_| format!("bad partition in {s:?}"))?,
                offset: o.parse().map_err(|_| format!("bad offset in {s:?}"))?,
            }),
            _ => Err(format!("{s:?} is not topic/partition/offset")),
        }
    }
}

/// One header of a record; the value as text (lossy), absent for a null header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordHeader {
    pub key: String,
    pub value: Option<String>,
    #[serde(skip)]
    pub raw: Option<Vec<u8>>,
}

/// What an operator did with a dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Sent back to its source topic.
    Redriven,
    /// Marked as handled without sending it anywhere.
    Discarded,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Redriven => "redriven",
            Action::Discarded => "discarded",
        })
    }
}

/// A ledger entry: who did what to which dead letter, and when. Keyed in the ledger topic
/// by [`DeadLetter::ledger_key`], so the copies of one source record that each group
/// dead-lettered are handled once, together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handling {
    pub action: Action,
    /// The operator (`--operator`, `ORDERS_OPERATOR`, else the login name).
    pub by: String,
    /// RFC 3339.
    pub at: String,
    /// The dead letter acted on.
    pub dead_letter: Coordinates,
    /// Where a redriven record was sent (its topic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_to: Option<String>,
    /// The redrive count the sent record carries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redrive_count: Option<u32>,
    /// The value was replaced by a corrected one before sending.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub corrected: bool,
}

impl Handling {
    pub fn new(action: Action, by: &str, dead_letter: &Coordinates) -> Self {
        Handling {
            action,
            by: by.to_owned(),
            at: Timestamp::now().to_rfc3339(),
            dead_letter: dead_letter.clone(),
            sent_to: None,
            redrive_count: None,
            corrected: false,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        // A struct of strings and integers always serialises.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// A record of a dead-letter topic, with what its headers say and what the ledger says.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadLetter {
    /// Where the dead letter is.
    #[serde(flatten)]
    pub at: Coordinates,
    /// When it was dead-lettered (RFC 3339), from the record's timestamp.
    pub timestamp: Option<String>,
    #[serde(skip)]
    pub timestamp_ms: Option<i64>,
    pub key: Option<String>,
    /// The value as text (invalid UTF-8 replaced); `value_bytes` is the count of raw bytes.
    pub value: String,
    pub value_bytes: usize,
    #[serde(skip)]
    pub payload: Vec<u8>,
    /// `dlq.reason`, `unknown` when absent.
    pub reason: String,
    pub error: Option<String>,
    pub group: Option<String>,
    /// Where the record was read before it was dead-lettered.
    pub source: Option<Coordinates>,
    pub truncated: bool,
    /// Times the record was already redriven (`dlq.redrive-count`, 0 when absent).
    pub redrive_count: u32,
    pub redriven_from: Option<String>,
    pub headers: Vec<RecordHeader>,
    /// What an operator did with it, if anything.
    pub handled: Option<Handling>,
}

impl DeadLetter {
    pub(crate) fn from_message(m: &BorrowedMessage<'_>) -> Self {
        let headers: Vec<RecordHeader> = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| RecordHeader {
                        key: h.key.to_owned(),
                        value: h.value.map(|v| String::from_utf8_lossy(v).into_owned()),
                        raw: h.value.map(<[u8]>::to_vec),
                    })
                    .collect()
            })
            .unwrap_or_default();
        // The last of a repeated header wins, as a header map would have it.
        let header = |key: &str| {
            headers
                .iter()
                .rev()
                .find(|h| h.key == key)
                .and_then(|h| h.value.clone())
        };
        let source = match (
            header(SOURCE_TOPIC),
            header(SOURCE_PARTITION).and_then(|p| p.parse().ok()),
            header(SOURCE_OFFSET).and_then(|o| o.parse().ok()),
        ) {
            (Some(topic), Some(partition), Some(offset)) => Some(Coordinates {
                topic,
                partition,
                offset,
            }),
            _ => None,
        };
        let payload = m.payload().map(<[u8]>::to_vec).unwrap_or_default();
        let timestamp_ms = m.timestamp().to_millis();
        DeadLetter {
            at: Coordinates {
                topic: m.topic().to_owned(),
                partition: m.partition(),
                offset: m.offset(),
            },
            timestamp: timestamp_ms
                .and_then(|ms| Timestamp::from_micros(ms.saturating_mul(1000)))
                .map(|t| t.to_rfc3339()),
            timestamp_ms,
            key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
            value: String::from_utf8_lossy(&payload).into_owned(),
            value_bytes: payload.len(),
            payload,
            reason: header(REASON).unwrap_or_else(|| "unknown".to_owned()),
            error: header(ERROR),
            group: header(GROUP),
            source,
            truncated: header(TRUNCATED).as_deref() == Some("true"),
            redrive_count: header(REDRIVE_COUNT)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0),
            redriven_from: header(REDRIVEN_FROM),
            headers,
            handled: None,
        }
    }

    /// The ledger's key: the source record, so the copies of one record that several
    /// groups dead-lettered are handled once; the dead letter itself when its source is
    /// unknown.
    pub fn ledger_key(&self) -> String {
        match &self.source {
            Some(source) => source.to_string(),
            None => format!("dead-letter:{}", self.at),
        }
    }

    /// Why this dead letter may not be redriven, if it may not.
    pub fn redrive_refusal(&self, limit: u32) -> Option<Refusal> {
        if let Some(h) = &self.handled {
            return Some(Refusal::AlreadyHandled(h.action));
        }
        if [SOURCE_UPDATE, SOURCE_DELETE].contains(&self.reason.as_str()) {
            return Some(Refusal::SourceChange);
        }
        if self.source.is_none() {
            return Some(Refusal::NoSource);
        }
        if self.redrive_count >= limit {
            return Some(Refusal::LoopGuard {
                count: self.redrive_count,
                limit,
            });
        }
        if self.truncated {
            return Some(Refusal::Truncated);
        }
        None
    }

    /// The record a redrive sends: to the source topic, with the key and value and the
    /// record's own headers, without the reader's diagnostics, with the provenance headers
    /// (`dlq.redriven-from`, `dlq.redrive-count` one higher). `value` replaces the value
    /// (a corrected record).
    pub fn redrive_record(&self, value: Option<Vec<u8>>) -> Option<RedriveRecord> {
        let source = self.source.as_ref()?;
        let count = self.redrive_count.saturating_add(1);
        let mut headers: Vec<(String, Vec<u8>)> = self
            .headers
            .iter()
            .filter(|h| {
                !DIAGNOSTIC_HEADERS.contains(&h.key.as_str())
                    && h.key != REDRIVEN_FROM
                    && h.key != REDRIVE_COUNT
            })
            .filter_map(|h| h.raw.clone().map(|v| (h.key.clone(), v)))
            .collect();
        headers.push((REDRIVEN_FROM.to_owned(), self.at.to_string().into_bytes()));
        headers.push((REDRIVE_COUNT.to_owned(), count.to_string().into_bytes()));
        Some(RedriveRecord {
            topic: source.topic.clone(),
            key: self.key.clone(),
            value: value.unwrap_or_else(|| self.payload.clone()),
            headers,
            redrive_count: count,
        })
    }
}

/// Why a redrive was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Already redriven or discarded (by anyone): a redrive is sent once.
    AlreadyHandled(Action),
    /// Redriven `count` times already, at or past the limit: it keeps failing.
    LoopGuard { count: u32, limit: u32 },
    /// Its value was cut to fit the dead-letter topic: sending it would lose data.
    Truncated,
    /// No `dlq.topic`/`dlq.partition`/`dlq.offset` headers: no topic to send it to.
    NoSource,
    /// An update or delete of the ingest's source table (`source-update`,
    /// `source-delete`): nothing the pipeline can take again.
    SourceChange,
}

impl Refusal {
    /// A stable code for the JSON output.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::AlreadyHandled(Action::Redriven) => "already-redriven",
            Refusal::AlreadyHandled(Action::Discarded) => "already-discarded",
            Refusal::LoopGuard { .. } => "loop-guard",
            Refusal::Truncated => "truncated",
            Refusal::NoSource => "no-source",
            Refusal::SourceChange => "source-change",
        }
    }

    /// An already-handled record is the idempotent answer, not a failure.
    pub fn is_failure(&self) -> bool {
        !matches!(self, Refusal::AlreadyHandled(_))
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::AlreadyHandled(a) => write!(f, "already {a}"),
            Refusal::LoopGuard { count, limit } => write!(
                f,
                "redriven {count} times already (limit {limit}): fix the record or discard it"
            ),
            Refusal::Truncated => f.write_str("its value was truncated in the dead-letter topic"),
            Refusal::NoSource => f.write_str("no source topic in its headers"),
            Refusal::SourceChange => f.write_str(
                "a row updated or deleted in the ingest's table: no record to send again; act \
                 on the order, then discard it (docs/ingest.md)",
            ),
        }
    }
}

/// What a redrive sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedriveRecord {
    pub topic: String,
    pub key: Option<String>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
    pub redrive_count: u32,
}

/// Which dead letters to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadLetterFilter {
    /// A dead-letter topic (`orders.dlq`) or a source topic (`orders`).
    pub topic: Option<String>,
    pub reason: Option<String>,
    /// Dead-lettered at or after (milliseconds since the epoch).
    pub since_ms: Option<i64>,
    /// Most records returned, the oldest first; `None`: all.
    pub limit: Option<usize>,
    /// Include those already redriven or discarded.
    pub include_handled: bool,
}

impl DeadLetterFilter {
    pub fn matches(&self, d: &DeadLetter) -> bool {
        let topic_ok = self
            .topic
            .as_ref()
            .is_none_or(|t| *t == d.at.topic || d.source.as_ref().is_some_and(|s| s.topic == *t));
        let reason_ok = self.reason.as_ref().is_none_or(|r| *r == d.reason);
        let since_ok = self
            .since_ms
            .is_none_or(|since| d.timestamp_ms.is_some_and(|t| t >= since));
        topic_ok && reason_ok && since_ok && (self.include_handled || d.handled.is_none())
    }
}

/// `--since`: an RFC 3339 time, or an age such as `90s`, `30m`, `6h`, `2d` before `now_ms`.
pub fn parse_since(s: &str, now_ms: i64) -> Result<i64, String> {
    if let Ok(t) = Timestamp::from_str(s) {
        return Ok(t.0.timestamp_millis());
    }
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: i64 = n
        .parse()
        .map_err(|_| format!("{s:?} is neither an RFC 3339 time nor an age like 30m"))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(format!("{s:?}: an age ends in s, m, h or d")),
    };
    Ok(now_ms.saturating_sub(n.saturating_mul(seconds).saturating_mul(1000)))
}

/// Reads dead letters and the ledger. Every method blocks.
pub struct DeadLetterReader {
    reader: RangeReader,
    lag: LagReader,
    orders_topic: String,
    timeout: Duration,
}

impl DeadLetterReader {
    pub fn new(
        settings: &KafkaSettings,
        orders_topic: &str,
        timeout: Duration,
    ) -> Result<Self, DeadLetterError> {
        Ok(DeadLetterReader {
            reader: RangeReader::new(settings, "orders-dlq-reader"),
            lag: LagReader::new(settings)?,
            orders_topic: orders_topic.to_owned(),
            timeout,
        })
    }

    /// The dead-letter topics of this pipeline.
    pub fn topics(&self) -> [String; 3] {
        dead_letter_topics(&self.orders_topic)
    }

    /// The ledger topic.
    pub fn ledger_topic(&self) -> String {
        dlq_handled_topic(&self.orders_topic)
    }

    /// The dead letters that pass `filter`, the oldest first, each with its ledger entry.
    pub fn list(&self, filter: &DeadLetterFilter) -> Result<Vec<DeadLetter>, DeadLetterError> {
        let ledger = self.ledger()?;
        let topics = self.topics();
        let mut out = Vec::new();
        for topic in &topics {
            // A filter on one topic reads only that one.
            if let Some(t) = &filter.topic {
                if *t != *topic && dlq_topic(t) != *topic {
                    continue;
                }
            }
            let partitions = self.lag.partitions(&[topic.as_str()], self.timeout)?;
            let marks = self.lag.watermarks(&partitions, self.timeout)?;
            let ranges: Vec<(i32, i64, i64)> = marks
                .iter()
                .map(|((_, p), (low, high))| (*p, *low, *high))
                .collect();
            self.reader.read(topic, &ranges, self.timeout, |m| {
                let mut d = DeadLetter::from_message(m);
                d.handled = ledger.get(&d.ledger_key()).cloned();
                if filter.matches(&d) {
                    out.push(d);
                }
            })?;
        }
        out.sort_by(|a, b| (a.timestamp_ms, &a.at).cmp(&(b.timestamp_ms, &b.at)));
        if let Some(limit) = filter.limit {
            out.truncate(limit);
        }
        Ok(out)
    }

    /// The dead letter at `at`, with its ledger entry.
    pub fn get(&self, at: &Coordinates) -> Result<DeadLetter, DeadLetterError> {
        let topics = self.topics();
        if !topics.contains(&at.topic) {
            return Err(DeadLetterError::NotADeadLetterTopic(
                at.topic.clone(),
                topics.join(", "),
            ));
        }
        let partitions = self.lag.partitions(&[at.topic.as_str()], self.timeout)?;
        if !partitions.contains(&(at.topic.clone(), at.partition)) {
            return Err(DeadLetterError::NotFound(at.clone()));
        }
        let marks = self.lag.watermarks(&partitions, self.timeout)?;
        let in_range = marks
            .get(&(at.topic.clone(), at.partition))
            .is_some_and(|(low, high)| at.offset >= *low && at.offset < *high);
        if !in_range {
            return Err(DeadLetterError::NotFound(at.clone()));
        }
        let mut found = None;
        self.reader.read(
            &at.topic,
            &[(at.partition, at.offset, at.offset + 1)],
            self.timeout,
            |m| {
                if m.offset() == at.offset {
                    found = Some(DeadLetter::from_message(m));
                }
            },
        )?;
        let mut d = found.ok_or_else(|| DeadLetterError::NotFound(at.clone()))?;
        d.handled = self.ledger()?.get(&d.ledger_key()).cloned();
        Ok(d)
    }

    /// The ledger: the last entry of every key. A missing ledger topic is an error: without
    /// it nobody can tell what was handled.
    pub fn ledger(&self) -> Result<BTreeMap<String, Handling>, DeadLetterError> {
        let topic = self.ledger_topic();
        let partitions = self.lag.partitions(&[topic.as_str()], self.timeout)?;
        let marks = self.lag.watermarks(&partitions, self.timeout)?;
        let ranges: Vec<(i32, i64, i64)> = marks
            .iter()
            .map(|((_, p), (low, high))| (*p, *low, *high))
            .collect();
        let mut ledger = BTreeMap::new();
        let mut bad = None;
        self.reader.read(&topic, &ranges, self.timeout, |m| {
            let Some(key) = m.key().map(|k| String::from_utf8_lossy(k).into_owned()) else {
                return;
            };
            match m.payload() {
                // A tombstone forgets the entry (compaction will too).
                None => {
                    ledger.remove(&key);
                }
                Some(v) => match serde_json::from_slice::<Handling>(v) {
                    Ok(h) => {
                        ledger.insert(key, h);
                    }
                    Err(e) => {
                        bad.get_or_insert_with(|| {
                            (
                                Coordinates {
                                    topic: m.topic().to_owned(),
                                    partition: m.partition(),
                                    offset: m.offset(),
                                },
                                e.to_string(),
                            )
                        });
                    }
                },
            }
        })?;
        match bad {
            Some((at, e)) => Err(DeadLetterError::Ledger(at, e)),
            None => Ok(ledger),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(headers: &[(&str, &str)]) -> DeadLetter {
        let headers: Vec<RecordHeader> = headers
            .iter()
            .map(|(k, v)| RecordHeader {
                key: (*k).to_owned(),
                value: Some((*v).to_owned()),
                raw: Some(v.as_bytes().to_vec()),
            })
            .collect();
        let header = |key: &str| {
            headers
                .iter()
                .rev()
                .find(|h| h.key == key)
                .and_then(|h| h.value.clone())
        };
        DeadLetter {
            at: Coordinates {
                topic: "orders.dlq".into(),
                partition: 0,
                offset: 7,
            },
            timestamp: None,
            timestamp_ms: Some(1_000),
            key: Some("42".into()),
            value: "{bad".into(),
            value_bytes: 4,
            payload: b"{bad".to_vec(),
            reason: header(REASON).unwrap_or_else(|| "unknown".into()),
            error: None,
            group: header(GROUP),
            source: Some(Coordinates {
                topic: "orders".into(),
                partition: 3,
                offset: 17,
            }),
            truncated: header(TRUNCATED).as_deref() == Some("true"),
            redrive_count: header(REDRIVE_COUNT)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0),
            redriven_from: header(REDRIVEN_FROM),
            headers,
            handled: None,
        }
    }

    #[test]
    fn redrive_keeps_own_headers_drops_diagnostics_and_counts() {
        let d = letter(&[
            ("trace-id", "abc"),
            (REASON, "not-json"),
            (GROUP, "fraud-group"),
            (REDRIVE_COUNT, "1"),
            (REDRIVEN_FROM, "orders.dlq/0/2"),
        ]);
        let r = d.redrive_record(None).unwrap();
        assert_eq!(r.topic, "orders");
        assert_eq!(r.key.as_deref(), Some("42"));
        assert_eq!(r.value, b"{bad");
        assert_eq!(r.redrive_count, 2);
        let keys: Vec<(&str, &[u8])> = r
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect();
        assert_eq!(
            keys,
            vec![
                ("trace-id", b"abc".as_slice()),
                (REDRIVEN_FROM, b"orders.dlq/0/7".as_slice()),
                (REDRIVE_COUNT, b"2".as_slice()),
            ]
        );
        let fixed = d.redrive_record(Some(b"{}".to_vec())).unwrap();
        assert_eq!(fixed.value, b"{}");
    }

    #[test]
    fn refusals_in_order_handled_source_loop_guard_truncated() {
        let mut d = letter(&[(REDRIVE_COUNT, "3"), (TRUNCATED, "true")]);
        assert_eq!(
            d.redrive_refusal(3),
            Some(Refusal::LoopGuard { count: 3, limit: 3 })
        );
        assert_eq!(d.redrive_refusal(4), Some(Refusal::Truncated));
        d.handled = Some(Handling::new(Action::Discarded, "ops", &d.at));
        assert_eq!(
            d.redrive_refusal(4),
            Some(Refusal::AlreadyHandled(Action::Discarded))
        );
        assert!(!Refusal::AlreadyHandled(Action::Redriven).is_failure());
        let mut unknown = letter(&[]);
        unknown.source = None;
        assert_eq!(unknown.redrive_refusal(3), Some(Refusal::NoSource));
        assert!(unknown.ledger_key().starts_with("dead-letter:"));
        assert_eq!(letter(&[]).redrive_refusal(3), None);
        assert_eq!(letter(&[]).ledger_key(), "orders/3/17");
        // A change of the ingest's table is never sent anywhere, even with a source.
        for reason in [SOURCE_UPDATE, SOURCE_DELETE] {
            let mut change = letter(&[]);
            change.reason = reason.to_owned();
            assert_eq!(change.redrive_refusal(3), Some(Refusal::SourceChange));
            assert!(Refusal::SourceChange.is_failure());
        }
    }

    #[test]
    fn filter_by_topic_reason_time_and_handled() {
        let d = letter(&[(REASON, "schema")]);
        let all = DeadLetterFilter::default();
        assert!(all.matches(&d));
        let by = |f: DeadLetterFilter| f.matches(&d);
        assert!(by(DeadLetterFilter {
            topic: Some("orders".into()),
            ..all.clone()
        }));
        assert!(by(DeadLetterFilter {
            topic: Some("orders.dlq".into()),
            ..all.clone()
        }));
        assert!(!by(DeadLetterFilter {
            topic: Some("payments".into()),
            ..all.clone()
        }));
        assert!(!by(DeadLetterFilter {
            reason: Some("not-json".into()),
            ..all.clone()
        }));
        assert!(by(DeadLetterFilter {
            since_ms: Some(1_000),
            ..all.clone()
        }));
        assert!(!by(DeadLetterFilter {
            since_ms: Some(1_001),
            ..all.clone()
        }));
        let mut handled = d.clone();
        handled.handled = Some(Handling::new(Action::Redriven, "ops", &d.at));
        assert!(!all.matches(&handled));
        assert!(DeadLetterFilter {
            include_handled: true,
            ..all
        }
        .matches(&handled));
    }

    #[test]
    fn since_takes_times_and_ages() {
        let now = 10_000_000;
        assert_eq!(parse_since("90s", now), Ok(now - 90_000));
        assert_eq!(parse_since("2m", now), Ok(now - 120_000));
        assert_eq!(parse_since("1h", now), Ok(now - 3_600_000));
        assert_eq!(parse_since("1d", now), Ok(now - 86_400_000));
        assert_eq!(
            parse_since("2024-01-15T10:30:00Z", now),
            Ok(1_705_314_600_000)
        );
        assert!(parse_since("soon", now).is_err());
        assert!(parse_since("5w", now).is_err());
    }

    #[test]
    fn coordinates_round_trip_and_ledger_entries_decode() {
        let c: Coordinates = "orders.dlq/0/12".parse().unwrap();
        assert_eq!(c.to_string(), "orders.dlq/0/12");
        assert!("orders.dlq/x/1".parse::<Coordinates>().is_err());
        assert!("12".parse::<Coordinates>().is_err());
        let mut h = Handling::new(Action::Redriven, "ana", &c);
        h.sent_to = Some("orders".into());
        h.redrive_count = Some(1);
        let back: Handling = serde_json::from_slice(&h.encode()).unwrap();
        assert_eq!(back, h);
        let json = serde_json::to_value(&h).unwrap();
        assert_eq!(json["action"], "redriven");
        assert_eq!(json["dead_letter"]["topic"], "orders.dlq");
    }
}
