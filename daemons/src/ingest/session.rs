//! One connection's life: check the setup, stream the slot, publish each change as it is
//! decoded, and confirm on the slot only what Kafka acknowledged, up to the last commit.
//!
//! Records wait in an outbox of at most `chunk_changes` records; it is handed to Kafka when
//! full or when its first record has waited `linger`, and up to three batches wait for
//! Kafka's answers while the next is decoded. They are settled in order: a batch's last
//! commit is confirmed once it and every batch before it are acknowledged. While Kafka takes
//! its time the loop keeps telling the server where it stands (a standby status update every
//! `status_interval`), so a slow or absent Kafka never looks like a dead client; memory is
//! bounded by the batches in flight, whatever the size of one transaction.

use super::pgoutput::{Change, ChangeReader, Lsn};
use super::records::{self, Counted, DeadLetter, RowRecord};
use super::replication::{ReplicationStream, StreamMessage};
use super::{classify, classify_replication, setup, IngestConfig, IngestDeps, SessionError};
use crate::confirmed_producer::{ConfirmedProducer, OutRecord, ProduceError};
use std::collections::VecDeque;
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
        setup::check(&client, self.config).await?.log();
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
        let mut in_flight: VecDeque<Sent> = VecDeque::new();
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
                    self.flush(stream, &mut outbox, &mut in_flight, &mut confirmed).await?;
                }
                answer = next_answer(&mut in_flight), if !in_flight.is_empty() => {
                    self.settle(stream, &mut in_flight, answer, &mut confirmed).await?;
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
                        let idle = outbox.is_idle() && in_flight.is_empty();
                        if idle && !reader.in_transaction() && wal_end > confirmed {
                            confirmed = wal_end;
                        }
                        if reply {
                            stream.confirm(confirmed).await.map_err(replication)?;
                        }
                    }
                }
            }
            if outbox.len() >= self.config.chunk_changes as usize {
                self.flush(stream, &mut outbox, &mut in_flight, &mut confirmed)
                    .await?;
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
            Change::Insert(row) => outbox.push(records::for_row(&self.config.orders_topic, &row)),
            Change::Changed(row) => match records::for_change(&self.config.orders_topic, &row) {
                Some(dead) => outbox.push(RowRecord::Dead(dead)),
                None => tracing::debug!(
                    table = %row.table,
                    lsn = %row.lsn,
                    "an update left the order's columns as they were: nothing to refuse"
                ),
            },
            Change::Commit { end_lsn } => outbox.committed(end_lsn),
            Change::Relation {
                table,
                changed: true,
            } => {
                tracing::info!(%table, "the table changed; its setup is checked again");
                setup::check(client, self.config).await?.log();
            }
            Change::Begin | Change::Relation { .. } | Change::Other => {}
        }
        Ok(())
    }

    /// Hands the outbox to Kafka (its dead letters first, acknowledged before anything else
    /// moves: they are rare), and settles the oldest batches while more than
    /// [`BATCHES_IN_FLIGHT`] wait for their answers.
    async fn flush(
        &self,
        stream: &mut ReplicationStream,
        outbox: &mut Outbox,
        in_flight: &mut VecDeque<Sent>,
        confirmed: &mut Lsn,
    ) -> Result<(), SessionError> {
        let batch = std::mem::take(outbox);
        let ingest = &self.deps.progress.ingest;
        let dead = records::send_dead_letters(self.producer, ingest, &batch.dead, self.shutdown);
        self.with_status(stream, *confirmed, dead).await??;
        let answers = if batch.orders.is_empty() {
            None
        } else {
            let pending = self.producer.send(&batch.orders, self.shutdown).await?;
            Some(tokio::spawn(pending.refused()))
        };
        in_flight.push_back(Sent {
            answers,
            orders: batch.orders.len() as u64,
            dead: batch.dead.iter().map(|d| d.counted).collect(),
            commit: batch.commit,
            commits: batch.commits,
        });
        while in_flight.len() > BATCHES_IN_FLIGHT {
            let answer = self
                .with_status(stream, *confirmed, next_answer(in_flight))
                .await?;
            self.settle(stream, in_flight, answer, confirmed).await?;
        }
        Ok(())
    }

    /// Takes the oldest batch off `in_flight` once Kafka answered for it: records refused
    /// for a while are sent again until acknowledged; then its rows are counted and its
    /// last commit confirmed to the server.
    async fn settle(
        &self,
        stream: &mut ReplicationStream,
        in_flight: &mut VecDeque<Sent>,
        answer: Answer,
        confirmed: &mut Lsn,
    ) -> Result<(), SessionError> {
        let Some(sent) = in_flight.pop_front() else {
            return Ok(());
        };
        let refused = answer
            .map_err(|e| SessionError::Fatal(format!("waiting for Kafka's answers: {e}")))??;
        if !refused.is_empty() {
            let again = self.producer.send_all(&refused, self.shutdown);
            self.with_status(stream, *confirmed, again).await??;
        }
        let ingest = &self.deps.progress.ingest;
        ingest
            .rows_published
            .fetch_add(sent.orders, Ordering::Relaxed);
        for counted in &sent.dead {
            counted.count(ingest);
        }
        ingest
            .transactions
            .fetch_add(sent.commits, Ordering::Relaxed);
        if let Some(end) = sent.commit {
            *confirmed = end.max(*confirmed);
            stream
                .confirm(*confirmed)
                .await
                .map_err(|e| classify_replication("reporting to the server", &e))?;
            tracing::debug!(
                orders = sent.orders,
                transactions = sent.commits,
                lsn = %end,
                "published and confirmed"
            );
        }
        Ok(())
    }

    /// Runs `work`, telling the server every `status_interval` meanwhile that the ingest
    /// still stands at `at` (so a slow Kafka never looks like a dead client).
    async fn with_status<T>(
        &self,
        stream: &mut ReplicationStream,
        at: Lsn,
        work: impl std::future::Future<Output = T>,
    ) -> Result<T, SessionError> {
        let mut status = tokio::time::interval(self.config.status_interval);
        status.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        status.tick().await;
        tokio::pin!(work);
        loop {
            tokio::select! {
                done = &mut work => return Ok(done),
                _ = status.tick() => stream
                    .confirm(at)
                    .await
                    .map_err(|e| classify_replication("reporting to the server", &e))?,
            }
        }
    }
}

/// Batches handed to Kafka whose answers may still be awaited: with one decoded ahead, the
/// ingest reads while Kafka acknowledges (memory: this many batches of `chunk_changes`).
const BATCHES_IN_FLIGHT: usize = 3;

/// Kafka's answers for one batch: the records to send again, or why not.
type Answer = Result<Result<Vec<OutRecord>, ProduceError>, tokio::task::JoinError>;

/// A batch handed to Kafka.
struct Sent {
    /// The batch's answers, awaited on a task of its own; `None` for a batch of no orders.
    answers: Option<tokio::task::JoinHandle<Result<Vec<OutRecord>, ProduceError>>>,
    orders: u64,
    /// The counters of its dead letters, acknowledged already.
    dead: Vec<Counted>,
    commit: Option<Lsn>,
    commits: u64,
}

/// The answers of the oldest batch in flight; cancel-safe (the task keeps them).
async fn next_answer(in_flight: &mut VecDeque<Sent>) -> Answer {
    match in_flight.front_mut().and_then(|s| s.answers.as_mut()) {
        Some(answers) => answers.await,
        None => Ok(Ok(Vec::new())),
    }
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
