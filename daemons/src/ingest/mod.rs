//! The ingest role: publishes the rows inserted into an orders table in PostgreSQL to the
//! orders topic, none missed, none twice but for a redelivery (after a crash, or a Kafka
//! outage; the pipeline absorbs both).
//!
//! It streams the table's changes from a logical replication slot (`pgoutput`) over a
//! replication connection: each change is decoded once, as the server sends it, in commit
//! order. Rows become order records (bad rows dead letters that always fit) and are
//! published in bounded batches; the slot is confirmed, by standby status updates, only up
//! to the last commit whose records Kafka acknowledged. A crash re-reads from the slot's
//! confirmed position. A watcher on its own connection measures the slot's log retention
//! every second and checks the setup again, whatever Kafka does. docs/ingest.md says why
//! this and not a query by id or time.

pub mod pgoutput;
pub mod postgres;
pub mod records;
pub mod recover;
pub mod replication;
pub mod row;
mod session;
pub mod setup;
pub mod wal_watch;

use crate::confirmed_producer::{ConfirmedProducer, ProduceError};
use crate::progress::Progress;
use crate::DaemonError;
use orders_core::kafka::KafkaSettings;
use orders_core::liveness::PollMark;
use postgres::PostgresSource;
use replication::ReplicationError;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_postgres::error::SqlState;
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
    /// Most records decoded and not yet acknowledged by Kafka (the ingest's memory is
    /// bounded by it, whatever the size of one transaction).
    pub chunk_changes: u32,
    /// How long a decoded record may wait for others before it is sent.
    pub linger: Duration,
    /// How often the server hears where the ingest stands (a standby status update), also
    /// while Kafka is slow; well under the server's `wal_sender_timeout` (60 s).
    pub status_interval: Duration,
    /// How often the slot's log retention is measured (the lag and WAL metrics).
    pub watch_interval: Duration,
    /// How often the setup (table, publication, slot) is checked again while running.
    pub setup_interval: Duration,
    /// librdkafka properties set over the pipeline's on the ingest's producer (none by
    /// default; the tests give it a small `message.max.bytes`, so that Kafka's client
    /// refuses a dead letter as a broker with a small record limit would).
    pub producer_properties: Vec<(String, String)>,
}

impl IngestConfig {
    pub fn new(orders_topic: &str) -> Self {
        IngestConfig {
            orders_topic: orders_topic.to_owned(),
            table: "orders".into(),
            slot: "orders_ingest".into(),
            publication: "orders_ingest".into(),
            chunk_changes: 5_000,
            linger: Duration::from_millis(10),
            status_interval: Duration::from_secs(10),
            watch_interval: Duration::from_secs(1),
            setup_interval: Duration::from_secs(10),
            producer_properties: Vec::new(),
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
pub enum SessionError {
    /// The database is unreachable or answered with an error that may pass: try again.
    #[error("{0}")]
    Transient(String),
    /// Waiting cannot help (a missing table or slot, refused credentials, wal_level).
    #[error("{0}")]
    Fatal(String),
    #[error(transparent)]
    Produce(#[from] ProduceError),
}

/// SQLSTATEs that waiting cannot change: a missing table, slot or database, refused
/// credentials or privileges, an invalidated slot or a wrong setting.
const SETTLED: [SqlState; 7] = [
    SqlState::UNDEFINED_TABLE,
    SqlState::UNDEFINED_OBJECT,
    SqlState::INSUFFICIENT_PRIVILEGE,
    SqlState::INVALID_PASSWORD,
    SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
    SqlState::INVALID_CATALOG_NAME,
    SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
];

/// A server error by its SQLSTATE: settled facts are fatal, the rest transient. A slot
/// the server invalidated gets the way back (docs/ingest.md).
fn by_code(code: Option<&str>, mut text: String) -> SessionError {
    let lost = [
        "can no longer get changes",
        "cannot read from logical replication slot",
    ];
    if lost.iter().any(|l| text.contains(l)) || text.contains("invalidated") {
        text.push_str(
            "; the slot lost the log it needed (max_slot_wal_keep_size): recreate it and \
             republish the gap with `ordersd ingest-recover` (docs/ingest.md, \"A lost slot\")",
        );
    }
    match code {
        Some(code) if SETTLED.iter().any(|s| s.code() == code) => SessionError::Fatal(text),
        _ => SessionError::Transient(text),
    }
}

/// Reads a Postgres error: settled facts are fatal, the rest transient. The message is
/// the server's (never the connection settings, so never the password).
fn classify(context: &str, e: &tokio_postgres::Error) -> SessionError {
    let text = match e.as_db_error() {
        Some(db) => format!("{context}: {} ({})", db.message(), db.code().code()),
        None => format!("{context}: {e}"),
    };
    by_code(e.code().map(SqlState::code), text)
}

/// [`classify`] for the replication connection.
fn classify_replication(context: &str, e: &ReplicationError) -> SessionError {
    by_code(e.code(), format!("{context}: {e}"))
}

/// Runs the ingest role until `shutdown`.
pub async fn run(
    config: IngestConfig,
    deps: IngestDeps,
    shutdown: CancellationToken,
) -> Result<(), DaemonError> {
    config.validate().map_err(DaemonError::Task)?;
    let producer = ConfirmedProducer::with_properties(
        &deps.kafka,
        "orders-ingest",
        &config.producer_properties,
    )?
    .with_progress(deps.progress.clone());
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
    let (setup_lost, lost_seen) = tokio::sync::watch::channel(None);
    let watching = shutdown.child_token();
    let watcher = tokio::spawn(wal_watch::run(
        config.clone(),
        deps.postgres.clone(),
        deps.progress.clone(),
        setup_lost,
        watching.clone(),
    ));
    let _stop_watching = watching.drop_guard();
    let sessions = Sessions {
        config: &config,
        deps: &deps,
        producer: &producer,
        mark: &mark,
        shutdown: &shutdown,
        setup_lost: lost_seen,
    };
    sessions.run().await?;
    producer.flush(Duration::from_secs(5));
    drop(_stop_watching);
    let _ = watcher.await;
    tracing::info!(
        rows = ingest.rows_published.load(Ordering::Relaxed),
        dead_lettered = ingest.dead_lettered(),
        "ingest stopped"
    );
    Ok(())
}

/// What each session with the database is started with.
struct Sessions<'a> {
    config: &'a IngestConfig,
    deps: &'a IngestDeps,
    producer: &'a ConfirmedProducer,
    mark: &'a PollMark,
    shutdown: &'a CancellationToken,
    setup_lost: tokio::sync::watch::Receiver<Option<String>>,
}

/// A run of failed sessions: since when the database is down, when that was last logged,
/// and the pause before the next session.
struct Outage {
    down_since: Option<Instant>,
    logged: Option<Instant>,
    backoff: Duration,
}

impl Sessions<'_> {
    /// Runs one session after another until shutdown, waiting with backoff after one that
    /// failed for a reason that may pass; an error when waiting cannot help.
    async fn run(&self) -> Result<(), DaemonError> {
        let mut outage = Outage {
            down_since: None,
            logged: None,
            backoff: Duration::from_millis(200),
        };
        loop {
            if self.shutdown.is_cancelled() {
                break;
            }
            let mut connected = false;
            let mut session = session::Session {
                config: self.config,
                deps: self.deps,
                producer: self.producer,
                mark: self.mark,
                shutdown: self.shutdown,
                setup_lost: self.setup_lost.clone(),
            };
            let ended = session.run(&mut connected, &mut outage.down_since).await;
            match ended {
                Ok(()) => break,
                Err(SessionError::Fatal(why)) => {
                    self.deps
                        .progress
                        .ingest
                        .set_postgres_failing(Some(why.clone()));
                    return Err(DaemonError::Task(why));
                }
                Err(SessionError::Produce(ProduceError::Cancelled)) => break,
                Err(SessionError::Produce(e)) => return Err(e.into()),
                Err(SessionError::Transient(why)) => self.failed(&mut outage, why, connected),
            }
            self.mark.polled();
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                _ = tokio::time::sleep(outage.backoff) => {}
            }
            outage.backoff = (outage.backoff * 2).min(Duration::from_secs(5));
        }
        Ok(())
    }

    /// A session failed for a reason that may pass: shown in the metrics, logged when the
    /// outage starts, every 30 s while it lasts, and after each session that connected.
    fn failed(&self, outage: &mut Outage, why: String, connected: bool) {
        self.deps
            .progress
            .ingest
            .set_postgres_failing(Some(why.clone()));
        if connected {
            outage.backoff = Duration::from_millis(200);
        }
        let since = *outage.down_since.get_or_insert_with(Instant::now);
        if outage
            .logged
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(30))
            || connected
        {
            outage.logged = Some(Instant::now());
            tracing::warn!(
                database = self.deps.postgres.describe(),
                error = %why,
                down_seconds = since.elapsed().as_secs(),
                "postgres unavailable; ingest waits and tries again (logged every 30 s)"
            );
        }
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
