//! The ingest role: publishes the rows inserted into an orders table in PostgreSQL to the
//! orders topic, none missed and none twice but for a redelivery after a crash.
//!
//! It reads the table's changes through logical decoding: a replication slot with the
//! `pgoutput` plugin, read with `pg_logical_slot_peek_binary_changes` in bounded chunks of
//! whole transactions, in commit order. Each chunk's rows are published (bad rows to the
//! dead-letter topic), and only once Kafka has acknowledged every record is the slot
//! advanced, to the end of the chunk's last commit: the slot's confirmed position is the
//! ingest's position, and it moves only past what Kafka holds. A crash between the two
//! reads the chunk again. docs/ingest.md says why this and not a query by id or time.

pub mod pgoutput;
pub mod postgres;
pub mod row;

use crate::confirmed_producer::{ConfirmedProducer, OutRecord, ProduceError};
use crate::progress::Progress;
use crate::DaemonError;
use orders_core::dead_letters;
use orders_core::domain::DecodeError;
use orders_core::kafka::{dlq_topic, KafkaSettings};
use pgoutput::{Lsn, Transaction, TransactionAssembler};
use postgres::PostgresSource;
use rdkafka::message::{Header, OwnedHeaders};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

/// The name the ingest role's liveness mark and dead letters carry.
pub const ROLE: &str = "ingest";
/// Header of an ingest dead letter: the table and log position of the row.
pub const SOURCE_ROW_HEADER: &str = "dlq.source-row";

#[derive(Debug, Clone)]
pub struct IngestConfig {
    pub orders_topic: String,
    /// The table, `name` or `schema.name`.
    pub table: String,
    pub slot: String,
    pub publication: String,
    /// Most changes decoded per chunk; a chunk always ends at a commit, so one large
    /// transaction makes one larger chunk.
    pub chunk_changes: u32,
    /// How long to wait before looking again when nothing was new.
    pub idle_wait: Duration,
    /// How often, while the table is idle, a heartbeat is written to the log so the slot
    /// can move past other tables' changes (the server keeps the log from the slot's
    /// position on).
    pub heartbeat: Duration,
}

impl IngestConfig {
    pub fn new(orders_topic: &str) -> Self {
        IngestConfig {
            orders_topic: orders_topic.to_owned(),
            table: "orders".into(),
            slot: "orders_ingest".into(),
            publication: "orders_ingest".into(),
            chunk_changes: 5_000,
            idle_wait: Duration::from_millis(200),
            heartbeat: Duration::from_secs(10),
        }
    }

    /// Slot and publication names as PostgreSQL takes them unquoted (slots allow nothing
    /// else), and a table name of identifiers.
    pub fn validate(&self) -> Result<(), String> {
        let ident = |s: &str| {
            !s.is_empty()
                && s.len() <= 63
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        };
        if !ident(&self.slot) {
            return Err(format!(
                "slot name {:?}: lower-case letters, digits and _ only",
                self.slot
            ));
        }
        if !ident(&self.publication) {
            return Err(format!(
                "publication name {:?}: lower-case letters, digits and _ only",
                self.publication
            ));
        }
        let parts: Vec<&str> = self.table.split('.').collect();
        if parts.len() > 2 || !parts.iter().all(|p| ident(p)) {
            return Err(format!(
                "table {:?}: name or schema.name, lower-case letters, digits and _ only",
                self.table
            ));
        }
        if self.chunk_changes == 0 {
            return Err("the chunk size must be at least 1".into());
        }
        Ok(())
    }
}

pub struct IngestDeps {
    pub postgres: PostgresSource,
    pub kafka: KafkaSettings,
    pub progress: Arc<Progress>,
}

/// Why a session with the database ended.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    /// The database is unreachable or answered with an error that may pass: try again.
    #[error("{0}")]
    Transient(String),
    /// Waiting cannot help (a missing table or slot, refused credentials, wal_level).
    #[error("{0}")]
    Fatal(String),
    #[error(transparent)]
    Produce(#[from] ProduceError),
}

/// Reads a Postgres error: settled facts are fatal, the rest transient. The message is
/// the server's (never the connection settings, so never the password).
fn classify(context: &str, e: &tokio_postgres::Error) -> SessionError {
    let text = match e.as_db_error() {
        Some(db) => format!("{context}: {} ({})", db.message(), db.code().code()),
        None => format!("{context}: {e}"),
    };
    match e.code() {
        Some(code)
            if *code == SqlState::UNDEFINED_TABLE
                || *code == SqlState::UNDEFINED_OBJECT
                || *code == SqlState::INSUFFICIENT_PRIVILEGE
                || *code == SqlState::INVALID_PASSWORD
                || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
                || *code == SqlState::INVALID_CATALOG_NAME
                || *code == SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE =>
        {
            SessionError::Fatal(text)
        }
        _ => SessionError::Transient(text),
    }
}

/// Runs the ingest role until `shutdown`.
pub async fn run(
    config: IngestConfig,
    deps: IngestDeps,
    shutdown: CancellationToken,
) -> Result<(), DaemonError> {
    config.validate().map_err(DaemonError::Task)?;
    let producer =
        ConfirmedProducer::new(&deps.kafka, "orders-ingest")?.with_progress(deps.progress.clone());
    let ingest = &deps.progress.ingest;
    ingest.active.store(true, Ordering::Relaxed);
    let mark = deps.progress.liveness.poll_mark(ROLE);
    tracing::info!(
        database = deps.postgres.describe(),
        table = %config.table,
        slot = %config.slot,
        publication = %config.publication,
        topic = %config.orders_topic,
        "ingesting orders from postgres"
    );
    let mut down_since: Option<Instant> = None;
    let mut logged: Option<Instant> = None;
    let mut backoff = Duration::from_millis(200);
    loop {
        if shutdown.is_cancelled() {
            break;
        }
        let mut connected = false;
        let session = Session {
            config: &config,
            deps: &deps,
            producer: &producer,
            mark: &mark,
            shutdown: &shutdown,
        };
        let ended = session.run(&mut connected, &mut down_since).await;
        match ended {
            Ok(()) => break,
            Err(SessionError::Fatal(why)) => {
                ingest.set_postgres_failing(Some(why.clone()));
                return Err(DaemonError::Task(why));
            }
            Err(SessionError::Produce(ProduceError::Cancelled)) => break,
            Err(SessionError::Produce(e)) => return Err(e.into()),
            Err(SessionError::Transient(why)) => {
                ingest.set_postgres_failing(Some(why.clone()));
                if connected {
                    backoff = Duration::from_millis(200);
                }
                let since = *down_since.get_or_insert_with(Instant::now);
                if logged.is_none_or(|at| at.elapsed() >= Duration::from_secs(30)) || connected {
                    logged = Some(Instant::now());
                    tracing::warn!(
                        database = deps.postgres.describe(),
                        error = %why,
                        down_seconds = since.elapsed().as_secs(),
                        "postgres unavailable; ingest waits and tries again (logged every 30 s)"
                    );
                }
            }
        }
        mark.polled();
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
    producer.flush(Duration::from_secs(5));
    tracing::info!(
        rows = ingest.rows_published.load(Ordering::Relaxed),
        dead_lettered = ingest.dead_lettered(),
        "ingest stopped"
    );
    Ok(())
}

/// One connection's life: check the setup, then chunk after chunk until shutdown or an
/// error.
struct Session<'a> {
    config: &'a IngestConfig,
    deps: &'a IngestDeps,
    producer: &'a ConfirmedProducer,
    mark: &'a orders_core::liveness::PollMark,
    shutdown: &'a CancellationToken,
}

impl Session<'_> {
    async fn run(
        &self,
        connected: &mut bool,
        down_since: &mut Option<Instant>,
    ) -> Result<(), SessionError> {
        let ingest = &self.deps.progress.ingest;
        let client = tokio::select! {
            _ = self.shutdown.cancelled() => return Ok(()),
            c = self.deps.postgres.connect() => c.map_err(|e| classify("connecting", &e))?,
        };
        // Times print as UTC in ISO style, the form the row reader expects.
        client
            .batch_execute("SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'")
            .await
            .map_err(|e| classify("setting up the session", &e))?;
        self.check_setup(&client).await?;
        *connected = true;
        ingest.set_postgres_failing(None);
        if let Some(since) = down_since.take() {
            tracing::info!(
                database = self.deps.postgres.describe(),
                down_seconds = since.elapsed().as_secs_f64(),
                "postgres is back; ingest resumes from the slot's position"
            );
        }
        let mut last_heartbeat = Instant::now();
        let mut last_lag = Instant::now() - Duration::from_secs(60);
        loop {
            self.mark.polled();
            if self.shutdown.is_cancelled() {
                return Ok(());
            }
            if last_lag.elapsed() >= Duration::from_secs(1) {
                last_lag = Instant::now();
                self.measure_lag(&client).await?;
            }
            let transactions = self.peek(&client).await?;
            let rows: usize = transactions.iter().map(|t| t.rows.len()).sum();
            let Some(end) = transactions.last().map(|t| t.end_lsn) else {
                if last_heartbeat.elapsed() >= self.config.heartbeat {
                    last_heartbeat = Instant::now();
                    // A transaction of its own with nothing but a message: decoded as an
                    // empty transaction, it lets the slot move past other tables' changes.
                    client
                        .execute(
                            "SELECT pg_logical_emit_message(true, 'orders_ingest', 'heartbeat')",
                            &[],
                        )
                        .await
                        .map_err(|e| classify("writing a heartbeat", &e))?;
                }
                tokio::select! {
                    _ = self.shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(self.config.idle_wait) => {}
                }
                continue;
            };
            if rows > 0 {
                last_heartbeat = Instant::now();
            }
            let (records, dead) = self.records(&transactions);
            // Until every record is acknowledged nothing moves; a refused one is sent
            // again, and on shutdown the chunk is simply read again next time.
            self.producer.send_all(&records, self.shutdown).await?;
            self.advance(&client, end).await?;
            ingest.rows_published.fetch_add(
                (rows - dead.iter().sum::<u64>() as usize) as u64,
                Ordering::Relaxed,
            );
            for (n, counter) in dead.iter().zip(&ingest.dead_lettered_by_reason) {
                counter.fetch_add(*n, Ordering::Relaxed);
            }
            ingest
                .transactions
                .fetch_add(transactions.len() as u64, Ordering::Relaxed);
            tracing::debug!(rows, transactions = transactions.len(), lsn = %end, "chunk published");
        }
    }

    /// The table, its columns, the publication and the slot must be there: the SQL under
    /// ops/ creates them, in the order that captures every row (docs/ingest.md).
    async fn check_setup(&self, client: &Client) -> Result<(), SessionError> {
        let c = self.config;
        let columns: Vec<String> = client
            .query(
                "SELECT attname::text FROM pg_attribute WHERE attrelid = $1::text::regclass \
                 AND attnum > 0 AND NOT attisdropped",
                &[&c.table],
            )
            .await
            .map_err(|e| classify(&format!("reading the columns of table {}", c.table), &e))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let missing: Vec<&str> = row::COLUMNS
            .iter()
            .copied()
            .filter(|name| !columns.iter().any(|c| c == name))
            .collect();
        if !missing.is_empty() {
            return Err(SessionError::Fatal(format!(
                "table {} lacks the order columns {} (docs/ingest.md)",
                c.table,
                missing.join(", ")
            )));
        }
        let wal_level: String = client
            .query_one("SELECT current_setting('wal_level')", &[])
            .await
            .map_err(|e| classify("reading wal_level", &e))?
            .get(0);
        if wal_level != "logical" {
            return Err(SessionError::Fatal(format!(
                "the server's wal_level is {wal_level}, logical decoding needs wal_level = logical \
                 (on RDS: rds.logical_replication = 1; docs/deploy.md)"
            )));
        }
        let published = client
            .query_opt(
                "SELECT 1 FROM pg_publication_tables p JOIN pg_class c ON c.relname = p.tablename \
                 JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = p.schemaname \
                 WHERE p.pubname = $1 AND c.oid = $2::text::regclass",
                &[&c.publication, &c.table],
            )
            .await
            .map_err(|e| classify("reading the publication", &e))?;
        if published.is_none() {
            return Err(SessionError::Fatal(format!(
                "publication {} does not publish table {}: create it with the SQL under ops/postgres \
                 (docs/ingest.md)",
                c.publication, c.table
            )));
        }
        let slot = client
            .query_opt(
                "SELECT plugin::text, database::text FROM pg_replication_slots WHERE slot_name = $1",
                &[&c.slot],
            )
            .await
            .map_err(|e| classify("reading the replication slot", &e))?;
        let Some(slot) = slot else {
            return Err(SessionError::Fatal(format!(
                "replication slot {} does not exist: create it with the SQL under ops/postgres, \
                 before the first order is written (docs/ingest.md)",
                c.slot
            )));
        };
        let plugin: Option<String> = slot.get(0);
        if plugin.as_deref() != Some("pgoutput") {
            return Err(SessionError::Fatal(format!(
                "replication slot {} uses plugin {}, not pgoutput",
                c.slot,
                plugin.as_deref().unwrap_or("(none: a physical slot)")
            )));
        }
        let database: Option<String> = slot.get(1);
        let current: String = client
            .query_one("SELECT current_database()::text", &[])
            .await
            .map_err(|e| classify("reading the database name", &e))?
            .get(0);
        if database.as_deref() != Some(current.as_str()) {
            return Err(SessionError::Fatal(format!(
                "replication slot {} belongs to database {}, not {current}",
                c.slot,
                database.as_deref().unwrap_or("?")
            )));
        }
        Ok(())
    }

    /// The next chunk: whole transactions in commit order, from the slot's position.
    async fn peek(&self, client: &Client) -> Result<Vec<Transaction>, SessionError> {
        let c = self.config;
        let limit = i32::try_from(c.chunk_changes).unwrap_or(i32::MAX);
        let rows = client
            .query(
                "SELECT lsn::text, data FROM pg_logical_slot_peek_binary_changes($1, NULL, $2, \
                 'proto_version', '1', 'publication_names', $3, 'messages', 'true')",
                &[&c.slot, &limit, &c.publication],
            )
            .await
            .map_err(|e| classify("reading the slot", &e))?;
        let mut assembler = TransactionAssembler::default();
        let mut transactions = Vec::new();
        for r in &rows {
            let lsn: String = r.get(0);
            let lsn: Lsn = lsn.parse().map_err(SessionError::Fatal)?;
            let data: &[u8] = r.get(1);
            if let Some(tx) = assembler
                .push(lsn, data)
                .map_err(|e| SessionError::Fatal(format!("at {lsn}: {e}")))?
            {
                transactions.push(tx);
            }
        }
        Ok(transactions)
    }

    /// The chunk's records: orders to the orders topic, the rows that are not orders to its
    /// dead-letter topic. Also the dead letters by reason.
    fn records(
        &self,
        transactions: &[Transaction],
    ) -> (Vec<OutRecord>, [u64; DecodeError::CODES.len()]) {
        let mut dead = [0u64; DecodeError::CODES.len()];
        let mut records = Vec::new();
        for r in transactions.iter().flat_map(|t| &t.rows) {
            match row::to_order(r) {
                Ok(order) => records.push(OutRecord {
                    topic: self.config.orders_topic.clone(),
                    key: order.key(),
                    payload: order.to_json(),
                    headers: None,
                }),
                Err(error) => {
                    dead[error.code_index()] += 1;
                    records.push(self.dead_letter(r, &error));
                }
            }
        }
        (records, dead)
    }

    fn dead_letter(&self, r: &pgoutput::InsertedRow, error: &DecodeError) -> OutRecord {
        let detail = error.to_string();
        let source = format!("postgres {} at {}", r.table, r.lsn);
        let key = row::order_id_text(r).unwrap_or_default().to_owned();
        tracing::warn!(
            table = %r.table,
            lsn = %r.lsn,
            order_id = %key,
            reason = error.code(),
            error = %error,
            "row sent to the dead-letter topic"
        );
        let headers = [
            (dead_letters::REASON, error.code()),
            (dead_letters::ERROR, detail.as_str()),
            (dead_letters::GROUP, ROLE),
            (SOURCE_ROW_HEADER, source.as_str()),
        ]
        .into_iter()
        .fold(OwnedHeaders::new(), |h, (key, value)| {
            h.insert(Header {
                key,
                value: Some(value),
            })
        });
        OutRecord {
            topic: dlq_topic(&self.config.orders_topic),
            key,
            payload: row::dead_letter_value(r),
            headers: Some(headers),
        }
    }

    /// Confirms everything up to `end` on the slot: only after Kafka acknowledged it.
    async fn advance(&self, client: &Client, end: Lsn) -> Result<(), SessionError> {
        client
            .execute(
                "SELECT pg_replication_slot_advance($1, $2::text::pg_lsn)",
                &[&self.config.slot, &end.to_string()],
            )
            .await
            .map_err(|e| classify("advancing the slot", &e))?;
        Ok(())
    }

    async fn measure_lag(&self, client: &Client) -> Result<(), SessionError> {
        let lag: Option<i64> = client
            .query_opt(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint \
                 FROM pg_replication_slots WHERE slot_name = $1",
                &[&self.config.slot],
            )
            .await
            .map_err(|e| classify("measuring the slot's lag", &e))?
            .and_then(|r| r.get(0));
        if let Some(lag) = lag {
            self.deps
                .progress
                .ingest
                .lag_bytes
                .store(lag.max(0), Ordering::Relaxed);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names_are_checked_before_any_connection() {
        let mut c = IngestConfig::new("orders");
        assert_eq!(c.validate(), Ok(()));
        c.table = "shop.orders".into();
        assert_eq!(c.validate(), Ok(()));
        c.table = "orders; drop table x".into();
        assert!(c.validate().unwrap_err().contains("table"));
        let mut c = IngestConfig::new("orders");
        c.slot = "Orders-Slot".into();
        assert!(c.validate().unwrap_err().contains("slot"));
        let mut c = IngestConfig::new("orders");
        c.publication = String::new();
        assert!(c.validate().unwrap_err().contains("publication"));
    }
}
