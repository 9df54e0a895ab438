//! One connection's life: check the setup, stream the slot, publish each change as it is
//! decoded, and confirm on the slot only what Kafka acknowledged, up to the last commit.
//!
//! Records wait in an outbox of at most `chunk_changes` records; it is sent when full, when
//! its first record has waited `linger`, or at a commit once nothing more has arrived. While
//! Kafka takes its time the loop keeps telling the server where it stands (a standby status
//! update every `status_interval`), so a slow or absent Kafka never looks like a dead
//! client; memory is bounded by the outbox, whatever the size of one transaction.

use super::pgoutput::{Change, ChangeReader, Lsn, RowKind};
use super::records::{self, DeadLetter, RowRecord};
use super::replication::{ReplicationStream, StreamMessage};
use super::{classify, classify_replication, setup, IngestConfig, IngestDeps, SessionError};
use crate::confirmed_producer::{ConfirmedProducer, OutRecord};
use std::sync::atomic::Ordering;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

/// One connection's life.
pub(super) struct Session<'a> {
    pub config: &'a IngestConfig,
    pub deps: &'a IngestDeps,
    pub producer: &'a ConfirmedProducer,
    pub mark: &'a orders_core::liveness::PollMark,
    pub shutdown: &'a CancellationToken,
    /// Set by the WAL watcher when the setup is gone mid-run.
    pub setup_lost: watch::Receiver<Option<String>>,
}

/// Records decoded and not yet acknowledged, and the commit they complete.
#[derive(Default)]
struct Outbox {
    orders: Vec<OutRecord>,
    dead: Vec<DeadLetter>,
    /// The end of the last commit whose records are all in here (or acknowledged).
    commit: Option<Lsn>,
    commits: u64,
    since: Option<Instant>,
}

impl Outbox {
    fn len(&self) -> usize {
        self.orders.len() + self.dead.len()
    }
    /// Nothing to send and nothing to confirm.
    fn is_idle(&self) -> bool {
        self.len() == 0 && self.commit.is_none()
    }
    fn push(&mut self, record: RowRecord) {
        self.since.get_or_insert_with(Instant::now);
        match record {
            RowRecord::Order(r) => self.orders.push(r),
            RowRecord::Dead(d) => self.dead.push(d),
        }
    }
    fn committed(&mut self, end: Lsn) {
        self.since.get_or_insert_with(Instant::now);
        self.commit = Some(end);
        self.commits += 1;
    }
}

impl Session<'_> {
    pub async fn run(
        &mut self,
        connected: &mut bool,
        down_since: &mut Option<Instant>,
    ) -> Result<(), SessionError> {
        let client = tokio::select! {
            _ = self.shutdown.cancelled() => return Ok(()),
            c = self.deps.postgres.connect() => c.map_err(|e| classify("connecting", &e))?,
        };
        // Times print as UTC in ISO style, the form the row reader expects; the stream
        // prints them as the server's defaults say, so its session is set alike below.
        client
            .batch_execute("SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'")
            .await
            .map_err(|e| classify("setting up the session", &e))?;
        setup::check(&client, self.config).await?;
        let mut stream = tokio::select! {
            _ = self.shutdown.cancelled() => return Ok(()),
            s = self.deps.postgres.replicate(&self.config.slot, &self.config.publication) => {
                s.map_err(|e| classify_replication("starting the replication stream", &e))?
            }
        };
        *connected = true;
        let ingest = &self.deps.progress.ingest;
        ingest.set_postgres_failing(None);
        if let Some(since) = down_since.take() {
            tracing::info!(
                database = self.deps.postgres.describe(),
                down_seconds = since.elapsed().as_secs_f64(),
                "postgres is back; ingest resumes from the slot's position"
            );
        }
        self.stream(&mut stream, &client).await
    }

    /// Reads the stream until shutdown or an error.
    async fn stream(
        &mut self,
        stream: &mut ReplicationStream,
        client: &Client,
    ) -> Result<(), SessionError> {
        let mut reader = ChangeReader::default();
        let mut outbox = Outbox::default();
        // Nothing confirmed by this session yet: the server ignores a position behind the
        // slot's.
        let mut confirmed = Lsn(0);
        let mut status = tokio::time::interval(self.config.status_interval);
        status.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let replication = |e| classify_replication("reading the replication stream", &e);
        loop {
            self.mark.polled();
            let linger = outbox.since.map(|t| t + self.config.linger);
            tokio::select! {
                _ = self.shutdown.cancelled() => return Ok(()),
                Ok(()) = self.setup_lost.changed() => {
                    if let Some(why) = self.setup_lost.borrow().clone() {
                        return Err(SessionError::Fatal(why));
                    }
                }
                _ = status.tick() => stream.confirm(confirmed).await.map_err(replication)?,
                _ = sleep_until(linger) => {
                    self.flush(stream, &mut outbox, &mut confirmed).await?;
                }
                message = stream.next() => match message.map_err(replication)? {
                    StreamMessage::XLogData { wal_start, data } => {
                        let change = reader.read(wal_start, &data).map_err(|e| {
                            SessionError::Fatal(format!("at {wal_start}: {e}"))
                        })?;
                        self.take(change, &mut outbox, client).await?;
                    }
                    StreamMessage::Keepalive { wal_end, reply } => {
                        // Everything sent before this is read and acknowledged: the slot may
                        // move past other tables' changes and skipped transactions.
                        if outbox.is_idle() && !reader.in_transaction() && wal_end > confirmed {
                            confirmed = wal_end;
                        }
                        if reply {
                            stream.confirm(confirmed).await.map_err(replication)?;
                        }
                    }
                }
            }
            if outbox.len() >= self.config.chunk_changes as usize {
                self.flush(stream, &mut outbox, &mut confirmed).await?;
            }
        }
    }

    /// Acts on one decoded change.
    async fn take(
        &self,
        change: Change,
        outbox: &mut Outbox,
        client: &Client,
    ) -> Result<(), SessionError> {
        match change {
            Change::Row {
                kind: RowKind::Insert,
                row,
            } => outbox.push(records::for_row(&self.config.orders_topic, &row)),
            Change::Row { kind, row } => {
                tracing::debug!(?kind, table = %row.table, lsn = %row.lsn, "change not published");
            }
            Change::Commit { end_lsn } => outbox.committed(end_lsn),
            Change::Relation {
                table,
                changed: true,
            } => {
                tracing::info!(%table, "the table changed; its setup is checked again");
                setup::check(client, self.config).await?;
            }
            Change::Begin | Change::Relation { .. } | Change::Other => {}
        }
        Ok(())
    }

    /// Sends the outbox and, once Kafka acknowledged every order, confirms its last commit.
    /// The server hears from the loop every `status_interval` meanwhile.
    async fn flush(
        &self,
        stream: &mut ReplicationStream,
        outbox: &mut Outbox,
        confirmed: &mut Lsn,
    ) -> Result<(), SessionError> {
        let mut status = tokio::time::interval(self.config.status_interval);
        status.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        status.tick().await;
        let at = *confirmed;
        let replication = |e| classify_replication("reporting to the server", &e);
        {
            let send = async {
                self.producer
                    .send_all(&outbox.orders, self.shutdown)
                    .await?;
                records::send_dead_letters(
                    self.producer,
                    &self.deps.progress.ingest,
                    &outbox.dead,
                    self.shutdown,
                )
                .await
            };
            tokio::pin!(send);
            loop {
                tokio::select! {
                    sent = &mut send => { sent?; break; }
                    _ = status.tick() => stream.confirm(at).await.map_err(replication)?,
                }
            }
        }
        let ingest = &self.deps.progress.ingest;
        ingest
            .rows_published
            .fetch_add(outbox.orders.len() as u64, Ordering::Relaxed);
        for d in &outbox.dead {
            ingest.dead_lettered_by_reason[d.reason_index].fetch_add(1, Ordering::Relaxed);
        }
        ingest
            .transactions
            .fetch_add(outbox.commits, Ordering::Relaxed);
        if let Some(end) = outbox.commit {
            *confirmed = end.max(*confirmed);
            stream.confirm(*confirmed).await.map_err(replication)?;
            tracing::debug!(
                records = outbox.len(),
                transactions = outbox.commits,
                lsn = %end,
                "published and confirmed"
            );
        }
        *outbox = Outbox::default();
        Ok(())
    }
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
