//! Acting on dead letters: a redrive sends a record back to its source topic, a discard
//! only marks it handled; either writes a ledger entry (who, what, when) to the compacted
//! ledger topic, after the broker has acknowledged the record it records.
//!
//! One record at a time, each step confirmed by the broker (the pipeline's confirmed
//! producer): the record, then its ledger entry. A crash between the two leaves a record
//! sent but not recorded, and a later redrive sends it once more — harmless, as every
//! effect of the pipeline is idempotent by order id (docs/dlq.md).

use orders_core::dead_letters::{Action, Coordinates, DeadLetter, Handling, Refusal};
use orders_core::kafka::{dlq_handled_topic, KafkaSettings};
use orders_daemons::confirmed_producer::{ConfirmedProducer, OutRecord, ProduceError};
use rdkafka::message::{Header, OwnedHeaders};
use serde::Serialize;
use std::collections::BTreeMap;
use tokio_util::sync::CancellationToken;

/// What happened to one dead letter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Outcome {
    /// Sent back to `to` and recorded.
    Sent { to: String, redrive_count: u32 },
    /// A dry run: would have been sent.
    WouldSend { to: String, redrive_count: u32 },
    /// Marked handled without sending.
    Discarded,
    /// A dry run: would have been discarded.
    WouldDiscard,
    /// Not acted on (already handled, loop guard, truncated, no source).
    Refused { reason: String, detail: String },
    /// Another dead letter of the same source record, handled together with `with`.
    SameRecord { with: String },
}

impl Outcome {
    fn refused(r: Refusal) -> Self {
        Outcome::Refused {
            reason: r.code().to_owned(),
            detail: r.to_string(),
        }
    }

    /// A refusal other than the idempotent "already handled".
    pub fn is_failure(&self) -> bool {
        match self {
            Outcome::Refused { reason, .. } => ![
                Refusal::AlreadyHandled(Action::Redriven).code(),
                Refusal::AlreadyHandled(Action::Discarded).code(),
            ]
            .contains(&reason.as_str()),
            _ => false,
        }
    }
}

/// One dead letter and what happened to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActionResult {
    pub dead_letter: String,
    pub source: Option<String>,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// Redrives and discards dead letters as one operator.
pub struct Redriver {
    producer: ConfirmedProducer,
    ledger_topic: String,
    operator: String,
    /// Redrives allowed per record (the loop guard).
    limit: u32,
}

impl Redriver {
    pub fn new(
        kafka: &KafkaSettings,
        orders_topic: &str,
        operator: &str,
        limit: u32,
    ) -> Result<Self, ProduceError> {
        Ok(Redriver {
            producer: ConfirmedProducer::new(kafka, "orders-dlq-redrive")?,
            ledger_topic: dlq_handled_topic(orders_topic),
            operator: operator.to_owned(),
            limit,
        })
    }

    /// Sends each dead letter that may be sent back to its source topic (`value`, when
    /// given, replaces its value: a corrected record), and records it.
    pub async fn redrive(
        &self,
        letters: &[DeadLetter],
        value: Option<&[u8]>,
        dry_run: bool,
        shutdown: &CancellationToken,
    ) -> Result<Vec<ActionResult>, ProduceError> {
        let mut out = Vec::new();
        let mut seen: BTreeMap<String, Coordinates> = BTreeMap::new();
        for d in letters {
            let outcome = if let Some(with) = seen.get(&d.ledger_key()) {
                Outcome::SameRecord {
                    with: with.to_string(),
                }
            } else if let Some(refusal) = d.redrive_refusal(self.limit) {
                Outcome::refused(refusal)
            } else {
                match d.redrive_record(value.map(<[u8]>::to_vec)) {
                    None => Outcome::refused(Refusal::NoSource),
                    Some(record) if dry_run => {
                        seen.insert(d.ledger_key(), d.at.clone());
                        Outcome::WouldSend {
                            to: record.topic,
                            redrive_count: record.redrive_count,
                        }
                    }
                    Some(record) => {
                        let to = record.topic.clone();
                        let redrive_count = record.redrive_count;
                        let headers =
                            record
                                .headers
                                .iter()
                                .fold(OwnedHeaders::new(), |h, (key, v)| {
                                    h.insert(Header {
                                        key: key.as_str(),
                                        value: Some(v.as_slice()),
                                    })
                                });
                        let sent = OutRecord {
                            topic: record.topic,
                            key: record.key.unwrap_or_default(),
                            payload: record.value,
                            headers: Some(headers),
                        };
                        self.producer
                            .send_all(std::slice::from_ref(&sent), shutdown)
                            .await?;
                        let mut handling = Handling::new(Action::Redriven, &self.operator, &d.at);
                        handling.sent_to = Some(to.clone());
                        handling.redrive_count = Some(redrive_count);
                        handling.corrected = value.is_some();
                        self.record(d, &handling, shutdown).await?;
                        seen.insert(d.ledger_key(), d.at.clone());
                        tracing::info!(
                            operator = %self.operator,
                            dead_letter = %d.at,
                            source = %d.ledger_key(),
                            to = %to,
                            redrive_count,
                            corrected = value.is_some(),
                            "dead letter redriven"
                        );
                        Outcome::Sent { to, redrive_count }
                    }
                }
            };
            out.push(ActionResult {
                dead_letter: d.at.to_string(),
                source: d.source.as_ref().map(Coordinates::to_string),
                outcome,
            });
        }
        Ok(out)
    }

    /// Marks each dead letter not yet handled as handled, without sending it.
    pub async fn discard(
        &self,
        letters: &[DeadLetter],
        dry_run: bool,
        shutdown: &CancellationToken,
    ) -> Result<Vec<ActionResult>, ProduceError> {
        let mut out = Vec::new();
        let mut seen: BTreeMap<String, Coordinates> = BTreeMap::new();
        for d in letters {
            let outcome = if let Some(with) = seen.get(&d.ledger_key()) {
                Outcome::SameRecord {
                    with: with.to_string(),
                }
            } else if let Some(h) = &d.handled {
                Outcome::refused(Refusal::AlreadyHandled(h.action))
            } else if dry_run {
                seen.insert(d.ledger_key(), d.at.clone());
                Outcome::WouldDiscard
            } else {
                let handling = Handling::new(Action::Discarded, &self.operator, &d.at);
                self.record(d, &handling, shutdown).await?;
                seen.insert(d.ledger_key(), d.at.clone());
                tracing::info!(
                    operator = %self.operator,
                    dead_letter = %d.at,
                    source = %d.ledger_key(),
                    reason = %d.reason,
                    "dead letter discarded"
                );
                Outcome::Discarded
            };
            out.push(ActionResult {
                dead_letter: d.at.to_string(),
                source: d.source.as_ref().map(Coordinates::to_string),
                outcome,
            });
        }
        Ok(out)
    }

    /// Writes the ledger entry; returns once the broker has acknowledged it.
    async fn record(
        &self,
        d: &DeadLetter,
        handling: &Handling,
        shutdown: &CancellationToken,
    ) -> Result<(), ProduceError> {
        let entry = OutRecord {
            topic: self.ledger_topic.clone(),
            key: d.ledger_key(),
            payload: handling.encode(),
            headers: None,
        };
        self.producer
            .send_all(std::slice::from_ref(&entry), shutdown)
            .await
    }

    /// Waits (bounded) for anything still queued.
    pub fn flush(&self) {
        self.producer.flush(std::time::Duration::from_secs(10));
    }
}
