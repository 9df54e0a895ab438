//! Redrive and discard from the console: the same [`Redriver`] as `ordersctl dlq`, straight
//! to Kafka. The API only reads dead letters (its HTTP surface never writes to Kafka), so the
//! console acts with its own Kafka settings — those of the task it runs in, or the broker of a
//! local `ordersctl up` — and records the operator's name in the dead-letter ledger.

use super::state::{DeadLetterActionKind, DeadLetterRequest};
use crate::dlq::redrive::{ActionResult, Outcome, Redriver};
use orders_core::dead_letters::{DeadLetter, DeadLetterReader, DEFAULT_REDRIVE_LIMIT};
use orders_core::kafka::KafkaSettings;
use orders_daemons::confirmed_producer::ProduceError;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long Kafka may stay silent during one action (reads, then each acknowledgement).
const ACTION_TIMEOUT: Duration = Duration::from_secs(15);

/// Carries out the operator's confirmed actions, or says why it cannot.
#[derive(Debug, Clone)]
pub enum DeadLetterActions {
    Kafka {
        kafka: KafkaSettings,
        orders_topic: String,
        operator: String,
    },
    /// No Kafka for this console: why, and what to do instead.
    Unavailable(String),
}

impl DeadLetterActions {
    pub fn new(kafka: KafkaSettings, orders_topic: &str, operator: &str) -> Self {
        let mut kafka = kafka;
        kafka.message_timeout_ms = u32::try_from(ACTION_TIMEOUT.as_millis()).unwrap_or(u32::MAX);
        DeadLetterActions::Kafka {
            kafka,
            orders_topic: orders_topic.to_owned(),
            operator: operator.to_owned(),
        }
    }

    /// Does what was asked; `Ok` says what happened, `Err` why nothing was.
    pub async fn act(&self, request: &DeadLetterRequest) -> Result<String, String> {
        let (kafka, orders_topic, operator) = match self {
            DeadLetterActions::Kafka {
                kafka,
                orders_topic,
                operator,
            } => (kafka, orders_topic, operator),
            DeadLetterActions::Unavailable(why) => {
                return Err(format!(
                    "cannot {} from this console: {why}; or run `ordersctl dlq {} {} {} {}` where \
                     Kafka is reachable",
                    request.kind.verb(),
                    request.kind.verb(),
                    request.at.topic,
                    request.at.partition,
                    request.at.offset
                ))
            }
        };
        let letter = read_again(kafka, orders_topic, request).await?;
        let redriver = Redriver::new(kafka, orders_topic, operator, DEFAULT_REDRIVE_LIMIT)
            .map_err(|e| e.to_string())?;
        let results = carry_out(&redriver, &letter, request.kind).await;
        redriver.flush();
        let results = results.map_err(|e| {
            format!(
                "{} {}: {e}; nothing is recorded as handled",
                request.kind.verb(),
                request.at
            )
        })?;
        let Some(result) = results.into_iter().next() else {
            return Err(format!(
                "{} {}: nothing to do",
                request.kind.verb(),
                request.at
            ));
        };
        describe(request, result.outcome)
    }
}

/// Reads the dead letter again from Kafka: the list may be old, and the ledger says whether
/// someone else handled it meanwhile.
async fn read_again(
    kafka: &KafkaSettings,
    orders_topic: &str,
    request: &DeadLetterRequest,
) -> Result<DeadLetter, String> {
    let (kafka, topic, at) = (kafka.clone(), orders_topic.to_owned(), request.at.clone());
    tokio::task::spawn_blocking(move || {
        DeadLetterReader::new(&kafka, &topic, ACTION_TIMEOUT)?.get(&at)
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("{} {}: {e}", request.kind.verb(), request.at))
}

/// Redrives or discards the one letter, giving up after twice the action timeout.
async fn carry_out(
    redriver: &Redriver,
    letter: &DeadLetter,
    kind: DeadLetterActionKind,
) -> Result<Vec<ActionResult>, ProduceError> {
    let deadline = CancellationToken::new();
    let _cancel = {
        let t = deadline.clone();
        tokio::spawn(async move {
            tokio::time::sleep(ACTION_TIMEOUT * 2).await;
            t.cancel();
        })
        .abort_handle()
    };
    let letters = std::slice::from_ref(letter);
    let results = match kind {
        DeadLetterActionKind::Redrive => redriver.redrive(letters, None, false, &deadline).await,
        DeadLetterActionKind::Discard => redriver.discard(letters, false, &deadline).await,
    };
    _cancel.abort();
    results
}

/// What the action came to, in a line for the operator: `Err` when nothing was done.
fn describe(request: &DeadLetterRequest, outcome: Outcome) -> Result<String, String> {
    match outcome {
        Outcome::Sent { to, redrive_count } => Ok(format!(
            "redrove {} to {to} (redrive {redrive_count} of at most {DEFAULT_REDRIVE_LIMIT})",
            request.at
        )),
        Outcome::Discarded => Ok(format!("discarded {}", request.at)),
        Outcome::Refused { detail, .. } => Err(format!(
            "{} {} refused: {detail}",
            request.kind.verb(),
            request.at
        )),
        Outcome::SameRecord { with } => Ok(format!("{} handled with {with}", request.at)),
        Outcome::WouldSend { .. } | Outcome::WouldDiscard => {
            Err("a dry run was done instead of the action".to_owned())
        }
    }
}
