//! What a row of the table becomes on Kafka: an order record on the orders topic, or a dead
//! letter on its dead-letter topic that always fits (the row's value summarised, the error
//! cut), with what finds the row again (its key, table and log position, the reason). An
//! update or delete of a row is never an order record: it is a dead letter of its own
//! (`source-update`, `source-delete`) naming the order and what changed.

use super::pgoutput::{ChangedRow, InsertedRow, RowKind};
use super::{row, ROLE, SOURCE_ROW_HEADER};
use crate::confirmed_producer::{ConfirmedProducer, OutRecord, ProduceError};
use orders_core::dead_letters;
use orders_core::domain::DecodeError;
use orders_core::kafka::dlq_topic;
use orders_core::progress::IngestCounters;
use rdkafka::message::{Header, OwnedHeaders};
use std::sync::atomic::Ordering;
use tokio_util::sync::CancellationToken;

/// Most bytes of a dead letter's error header and key.
const HEADER_BYTES: usize = 1024;

/// A row that is not an order, on its way to the dead-letter topic.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub record: OutRecord,
    /// For the log line that finds the row when the dead letter itself is refused.
    pub table: String,
    pub lsn: String,
    pub reason: &'static str,
    /// Which counter it counts in once Kafka acknowledged it.
    pub counted: Counted,
}

/// The counter of a dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    /// A row that is not an order, by reason (an index into `DecodeError::CODES`).
    Row(usize),
    /// An update or delete, by kind (an index into `REFUSED_CHANGE_KINDS`).
    Change(usize),
}

impl Counted {
    pub fn count(self, ingest: &IngestCounters) {
        let counter = match self {
            Counted::Row(i) => ingest.dead_lettered_by_reason.get(i),
            Counted::Change(i) => ingest.refused_changes.get(i),
        };
        if let Some(c) = counter {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A row's record: an order, or a dead letter.
#[derive(Debug, Clone)]
pub enum RowRecord {
    Order(OutRecord),
    Dead(DeadLetter),
}

/// The record for an inserted (or, when published, updated) row.
pub fn for_row(orders_topic: &str, r: &InsertedRow) -> RowRecord {
    match row::to_order(r) {
        Ok(order) => RowRecord::Order(OutRecord {
            topic: orders_topic.to_owned(),
            key: order.key(),
            payload: order.to_json(),
            headers: None,
        }),
        Err(error) => RowRecord::Dead(dead_letter(orders_topic, r, &error)),
    }
}

/// The dead letter of `r`: key the order id (as the row printed it, cut), headers as the
/// pipeline's (docs/dlq.md) plus the row's table and log position.
pub fn dead_letter(orders_topic: &str, r: &InsertedRow, error: &DecodeError) -> DeadLetter {
    let detail = error.to_string();
    let detail = row::cut(&detail, HEADER_BYTES);
    let source = format!("postgres {} at {}", r.table, r.lsn);
    let key = row::cut(row::order_id_text(r).unwrap_or_default(), HEADER_BYTES).into_owned();
    tracing::warn!(
        table = %r.table,
        lsn = %r.lsn,
        order_id = %key,
        reason = error.code(),
        error = %detail,
        "row sent to the dead-letter topic"
    );
    DeadLetter {
        record: OutRecord {
            topic: dlq_topic(orders_topic),
            payload: row::dead_letter_value(r),
            headers: Some(headers(error.code(), &detail, &source)),
            key,
        },
        table: r.table.clone(),
        lsn: r.lsn.to_string(),
        reason: error.code(),
        counted: Counted::Row(error.code_index()),
    }
}

/// A dead letter's headers, as the pipeline's (docs/dlq.md) plus the row's table and log
/// position.
fn headers(reason: &str, error: &str, source: &str) -> OwnedHeaders {
    [
        (dead_letters::REASON, reason),
        (dead_letters::ERROR, error),
        (dead_letters::GROUP, ROLE),
        (SOURCE_ROW_HEADER, source),
    ]
    .into_iter()
    .fold(OwnedHeaders::new(), |h, (key, value)| {
        h.insert(Header {
            key,
            value: Some(value),
        })
    })
}

/// The dead letter of an update or delete of a row: never an order record (the orders topic
/// carries an order once, and the store keeps it as inserted; docs/ingest.md), but named
/// with its key, log position and what changed, so the operator sees which orders differ
/// from the table. `None` for an update that left every order column as it was (the whole
/// old row says so): nothing differs.
pub fn for_change(orders_topic: &str, c: &ChangedRow) -> Option<DeadLetter> {
    let change = row::describe_change(c)?;
    let (reason, kind) = match c.kind {
        RowKind::Delete => (dead_letters::SOURCE_DELETE, 1),
        _ => (dead_letters::SOURCE_UPDATE, 0),
    };
    let key = row::cut(&change.order_id, HEADER_BYTES).into_owned();
    let detail = row::cut(&change.summary, HEADER_BYTES);
    let source = format!("postgres {} at {}", c.table, c.lsn);
    tracing::warn!(
        table = %c.table,
        lsn = %c.lsn,
        order_id = %key,
        reason,
        change = %detail,
        "a published row changed in the table; not published, sent to the dead-letter topic"
    );
    Some(DeadLetter {
        record: OutRecord {
            topic: dlq_topic(orders_topic),
            payload: change.value,
            headers: Some(headers(reason, &detail, &source)),
            key,
        },
        table: c.table.clone(),
        lsn: c.lsn.to_string(),
        reason,
        counted: Counted::Change(kind),
    })
}

/// Sends the dead letters; one Kafka refuses for good is logged with what finds its row
/// (key, table, log position, reason) and counted, never fatal to the rows behind it.
pub async fn send_dead_letters(
    producer: &ConfirmedProducer,
    ingest: &IngestCounters,
    dead: &[DeadLetter],
    shutdown: &CancellationToken,
) -> Result<(), ProduceError> {
    if dead.is_empty() {
        return Ok(());
    }
    let all: Vec<OutRecord> = dead.iter().map(|d| d.record.clone()).collect();
    match producer.send_all(&all, shutdown).await {
        Err(ProduceError::Rejected { .. }) => {}
        other => return other,
    }
    // One by one, to find which were refused (sending one again is a redelivery).
    for d in dead {
        match producer
            .send_all(std::slice::from_ref(&d.record), shutdown)
            .await
        {
            Ok(()) => {}
            Err(ProduceError::Rejected { error, .. }) => {
                ingest.dead_letters_refused.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    order_id = %d.record.key,
                    table = %d.table,
                    lsn = %d.lsn,
                    reason = d.reason,
                    kafka_error = ?error,
                    "Kafka refused this row's dead letter; the row is not published \
                     (find it in the table by its id; docs/ingest.md)"
                );
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
