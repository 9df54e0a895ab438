//! `ordersd ingest-recover`: publishes the rows of an id range from the table itself, for
//! the gap a lost slot leaves (docs/ingest.md, "A lost slot"). Rows are read in id order,
//! a page at a time, and published as the stream would (orders, or dead letters); a row
//! published already is a redelivery the pipeline absorbs, so a range too wide costs time,
//! never a wrong total.

use super::pgoutput::{InsertedRow, Lsn};
use super::postgres::PostgresSource;
use super::records::{self, RowRecord};
use super::{row, IngestConfig};
use crate::confirmed_producer::ConfirmedProducer;
use crate::DaemonError;
use orders_core::kafka::KafkaSettings;
use orders_core::progress::Progress;
use std::ops::RangeInclusive;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Rows read and published per page.
const PAGE: i64 = 5_000;

/// What a recovery did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Recovered {
    /// Rows of the range found in the table.
    pub rows: u64,
    pub published: u64,
    pub dead_lettered: u64,
    /// The highest id published, when any.
    pub last_id: Option<u64>,
}

/// Publishes every row whose id is in `ids`, in id order.
pub async fn run(
    config: &IngestConfig,
    postgres: &PostgresSource,
    kafka: &KafkaSettings,
    ids: RangeInclusive<u64>,
    shutdown: &CancellationToken,
) -> Result<Recovered, DaemonError> {
    config.validate().map_err(DaemonError::Task)?;
    let fail = |what: &str, e: tokio_postgres::Error| {
        DaemonError::Task(format!("ingest-recover: {}", super::classify(what, &e)))
    };
    let client = postgres
        .connect()
        .await
        .map_err(|e| fail("connecting", e))?;
    client
        .batch_execute("SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'")
        .await
        .map_err(|e| fail("setting up the session", e))?;
    let progress = Arc::new(Progress::default());
    let producer =
        ConfirmedProducer::new(kafka, "orders-ingest-recover")?.with_progress(progress.clone());
    // The table name is checked to be identifiers (IngestConfig::validate).
    let query = format!(
        "SELECT {} FROM {} WHERE order_id >= $1 AND order_id <= $2 ORDER BY order_id LIMIT $3",
        row::COLUMNS
            .iter()
            .map(|c| format!("{c}::text"))
            .collect::<Vec<_>>()
            .join(", "),
        config.table
    );
    let last = i64::try_from(*ids.end()).unwrap_or(i64::MAX);
    let mut next = i64::try_from(*ids.start()).unwrap_or(i64::MAX);
    let mut done = Recovered::default();
    while next <= last {
        let rows = client
            .query(&query, &[&next, &last, &PAGE])
            .await
            .map_err(|e| fail("reading the table", e))?;
        let (mut orders, mut dead) = (Vec::new(), Vec::new());
        for r in &rows {
            let columns: Vec<(String, Option<String>)> = row::COLUMNS
                .iter()
                .enumerate()
                .map(|(i, c)| ((*c).to_owned(), r.get::<_, Option<String>>(i)))
                .collect();
            let inserted = InsertedRow {
                table: config.table.clone(),
                lsn: Lsn(0),
                columns,
            };
            match records::for_row(&config.orders_topic, &inserted) {
                RowRecord::Order(o) => orders.push(o),
                RowRecord::Dead(d) => dead.push(d),
            }
        }
        producer.send_all(&orders, shutdown).await?;
        records::send_dead_letters(&producer, &progress.ingest, &dead, shutdown).await?;
        done.rows += rows.len() as u64;
        done.published += orders.len() as u64;
        done.dead_lettered += dead.len() as u64;
        let Some(page_last) = rows.last().and_then(|r| r.get::<_, Option<String>>(0)) else {
            break;
        };
        let page_last: i64 = page_last
            .parse()
            .map_err(|_| DaemonError::Task(format!("order_id {page_last:?} is not an id")))?;
        done.last_id = u64::try_from(page_last).ok();
        tracing::info!(rows = done.rows, last_id = page_last, "recovered a page");
        if (rows.len() as i64) < PAGE {
            break;
        }
        next = page_last.saturating_add(1);
    }
    producer.flush(std::time::Duration::from_secs(5));
    Ok(done)
}
