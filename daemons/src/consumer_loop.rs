//! The consumer loop every consuming daemon runs: receive, process in chunks, and store an
//! offset only once the chunk's effects are durable; a final synchronous commit on shutdown.
//!
//! Chunks are processed concurrently up to a bound on in-flight records, and complete in
//! the order they were received, so stored offsets only move forward.

use crate::confirmed_producer::{OutRecord, ProduceError};
use crate::progress::Progress;
use futures::future::{join, ready, BoxFuture, Join, Ready};
use futures::stream::FuturesOrdered;
use futures::{FutureExt, StreamExt};
use orders_core::client_log::ClientLog;
use orders_core::dead_letters;
use orders_core::domain::{DecodeError, MAX_RECORD_BYTES};
use orders_core::kafka::{dlq_topic, KafkaSettings};
use orders_core::liveness::PollMark;
use orders_core::progress::GroupCounters;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, MessageStream, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::{Message, Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// A record received from Kafka, detached from the consumer.
#[derive(Debug, Clone)]
pub struct Record {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub timestamp_ms: Option<i64>,
    /// The record's headers, when it has any (the pipeline's own records have none, so
    /// this costs nothing per order): a dead letter keeps them, so a redrive sends them
    /// back and the redrive count survives another round (the loop guard).
    pub headers: Option<OwnedHeaders>,
}

impl Record {
    fn from_message<M: Message>(m: &M, topics: &mut Vec<Arc<str>>) -> Record {
        // One shared name per topic instead of an allocation per record.
        let topic = match topics.iter().find(|t| ***t == *m.topic()) {
            Some(t) => t.clone(),
            None => {
                let t: Arc<str> = Arc::from(m.topic());
                topics.push(t.clone());
                t
            }
        };
        Record {
            topic,
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().map(<[u8]>::to_vec),
            timestamp_ms: m.timestamp().to_millis(),
            headers: m
                .headers()
                .map(|h| h.iter().fold(OwnedHeaders::new(), |o, h| o.insert(h))),
        }
    }
}

/// What processing a chunk did, for the counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct ChunkOutcome {
    /// Dead-lettered records by reason, in the order of [`DecodeError::CODES`].
    pub dead_lettered: [u64; DecodeError::CODES.len()],
    pub produced: u64,
}

impl ChunkOutcome {
    /// Counts a record dead-lettered for `error`.
    pub fn dead_letter(&mut self, error: &DecodeError) {
        if let Some(n) = self.dead_lettered.get_mut(error.code_index()) {
            *n += 1;
        }
    }
}

/// Why a chunk's effects did not become durable.
#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    #[error(transparent)]
    Produce(#[from] ProduceError),
    /// A part of the daemon the chunk depends on (the analytics store writer, say) is gone.
    #[error("{0}")]
    Stopped(String),
}

/// Turns a chunk of records into durable effects.
pub trait ChunkProcessor: Send + 'static {
    /// Starts processing; the future resolves once every effect of the chunk is durable.
    fn process(
        &mut self,
        chunk: Vec<Record>,
    ) -> BoxFuture<'static, Result<ChunkOutcome, ChunkError>>;
}

/// Why a consumer loop ended other than by shutdown.
#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Chunk(#[from] ChunkError),
}

/// How a consumer loop runs.
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    pub group: String,
    pub client_id: String,
    pub topics: Vec<String>,
    /// The topic whose records count as orders in the progress counters.
    pub orders_topic: String,
    /// Most records handed to the processor at once.
    pub max_chunk: usize,
    /// Most records received but not yet durable.
    pub max_in_flight: usize,
    /// How long in-flight work may take to finish on shutdown.
    pub shutdown_grace: Duration,
}

impl ConsumerOptions {
    pub fn new(group: &str, topics: &[&str], orders_topic: &str) -> Self {
        ConsumerOptions {
            group: group.to_owned(),
            client_id: format!("orders-{group}"),
            topics: topics.iter().map(|t| (*t).to_owned()).collect(),
            orders_topic: orders_topic.to_owned(),
            max_chunk: 2_000,
            max_in_flight: 20_000,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// The record that carries an unusable record to `<topic>.dlq`, with the reason in headers.
pub fn dead_letter(group: &str, record: &Record, error: &DecodeError) -> OutRecord {
    let partition = record.partition.to_string();
    let offset = record.offset.to_string();
    let detail = error.to_string();
    let mut payload = record.payload.clone().unwrap_or_default();
    let truncated = payload.len() > MAX_RECORD_BYTES / 2;
    payload.truncate(MAX_RECORD_BYTES / 2);
    // The record's own headers first (without an earlier round's diagnostics), then this
    // round's: a redrive sends the record back with its headers and provenance.
    let own = record
        .headers
        .iter()
        .flat_map(|h| h.iter())
        .filter(|h| !dead_letters::DIAGNOSTIC_HEADERS.contains(&h.key));
    let own = own.fold(OwnedHeaders::new(), |hs, h| hs.insert(h));
    let headers = [
        (dead_letters::REASON, error.code()),
        (dead_letters::ERROR, detail.as_str()),
        (dead_letters::SOURCE_TOPIC, &*record.topic),
        (dead_letters::SOURCE_PARTITION, partition.as_str()),
        (dead_letters::SOURCE_OFFSET, offset.as_str()),
        (dead_letters::GROUP, group),
        (
            dead_letters::TRUNCATED,
            if truncated { "true" } else { "false" },
        ),
    ]
    .into_iter()
    .fold(own, |h, (key, value)| {
        h.insert(Header {
            key,
            value: Some(value),
        })
    });
    tracing::warn!(
        group,
        topic = %record.topic,
        partition = record.partition,
        offset = record.offset,
        reason = error.code(),
        error = %error,
        "record sent to the dead-letter topic"
    );
    OutRecord {
        topic: dlq_topic(&record.topic),
        key: record
            .key
            .as_deref()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_default(),
        payload,
        headers: Some(headers),
    }
}

/// A partition this member owns: since which assignment, and the offset last stored.
#[derive(Debug, Clone, Copy)]
struct Owned {
    epoch: u64,
    stored: i64,
}

/// The partitions this member owns, as the rebalance callbacks tell it. Every assignment of
/// a partition gets a new epoch; a chunk remembers the epoch its records were received in,
/// and its offsets are stored only while that same assignment holds. So a chunk that
/// finishes after its partition was revoked stores nothing (the new owner reads those
/// records again, and every effect is idempotent by order id), and one that finishes after
/// the partition came back cannot move the stored offset backwards.
#[derive(Debug, Default)]
pub struct Assignment {
    owned: Mutex<HashMap<(String, i32), Owned>>,
    next_epoch: AtomicU64,
    /// Rebalances this member took part in (assignments and revocations).
    pub rebalances: AtomicU64,
    /// Per partition, librdkafka's last measure of this member's lag
    /// (`consumer_lag_stored`; -1 while unknown).
    measured_lag: Mutex<BTreeMap<(String, i32), i64>>,
}

impl Assignment {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, i32), Owned>> {
        // Plain data: usable even if a holder panicked.
        self.owned.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn epoch(&self, topic: &str, partition: i32) -> Option<u64> {
        self.lock()
            .get(&(topic.to_owned(), partition))
            .map(|o| o.epoch)
    }

    /// The partitions owned now, sorted.
    pub fn partitions(&self) -> Vec<(String, i32)> {
        let mut v: Vec<_> = self.lock().keys().cloned().collect();
        v.sort();
        v
    }

    fn assign(&self, tpl: &TopicPartitionList) {
        let epoch = self.next_epoch.fetch_add(1, Ordering::Relaxed) + 1;
        let mut owned = self.lock();
        for e in tpl.elements() {
            owned.insert(
                (e.topic().to_owned(), e.partition()),
                Owned { epoch, stored: -1 },
            );
        }
    }

    fn revoke(&self, tpl: &TopicPartitionList) {
        let mut owned = self.lock();
        for e in tpl.elements() {
            owned.remove(&(e.topic().to_owned(), e.partition()));
        }
    }

    /// The offsets of `offsets` that may be stored now, each recorded as stored.
    fn admit(&self, offsets: &BTreeMap<(Arc<str>, i32), (i64, u64)>) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        let mut owned = self.lock();
        for ((topic, partition), (next, epoch)) in offsets {
            let Some(o) = owned.get_mut(&(topic.to_string(), *partition)) else {
                continue; // revoked: the new owner reads these records again
            };
            if o.epoch != *epoch || *next <= o.stored {
                continue; // received under an earlier assignment, or not forward
            }
            if let Err(e) = tpl.add_partition_offset(topic, *partition, Offset::Offset(*next)) {
                tracing::warn!(error = %e, "bad offset");
                continue;
            }
            o.stored = *next;
        }
        tpl
    }
}

fn partition_names(tpl: &TopicPartitionList) -> String {
    tpl.elements()
        .iter()
        .map(|e| format!("{}/{}", e.topic(), e.partition()))
        .collect::<Vec<_>>()
        .join(",")
}

/// A member of a consumer group: follows its assignment through rebalances.
pub struct GroupMember {
    group: String,
    assignment: Arc<Assignment>,
    log: ClientLog,
}

impl ClientContext for GroupMember {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        self.log.log(level, fac, message);
    }
    fn error(&self, error: KafkaError, reason: &str) {
        self.log.error(error, reason);
    }
    fn stats(&self, statistics: rdkafka::Statistics) {
        let lag = statistics
            .topics
            .iter()
            .flat_map(|(topic, t)| {
                t.partitions
                    .iter()
                    .filter(|(p, _)| **p >= 0)
                    .filter(|(_, s)| s.consumer_lag_stored >= 0)
                    .map(move |(p, s)| ((topic.clone(), *p), s.consumer_lag_stored))
            })
            .collect();
        *self
            .assignment
            .measured_lag
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = lag;
    }
}

impl ConsumerContext for GroupMember {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                // Fence first: no chunk stores an offset for these partitions from now on.
                self.assignment.revoke(tpl);
                self.assignment.rebalances.fetch_add(1, Ordering::Relaxed);
                // Hand over what is stored, so the next owner starts after it.
                if let Err(e) = consumer.commit_consumer_state(CommitMode::Async) {
                    if !matches!(e, KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) {
                        tracing::warn!(group = %self.group, error = %e, "commit on revoke failed");
                    }
                }
                tracing::info!(group = %self.group, partitions = %partition_names(tpl), "partitions revoked");
            }
            Rebalance::Assign(tpl) => {
                self.assignment.assign(tpl);
                self.assignment.rebalances.fetch_add(1, Ordering::Relaxed);
                tracing::info!(group = %self.group, partitions = %partition_names(tpl), "partitions assigned");
            }
            Rebalance::Error(e) => {
                tracing::warn!(group = %self.group, error = %e, "rebalance failed");
            }
        }
    }
}

struct Dispatched {
    received: Instant,
    records: usize,
    orders: u64,
    /// Per partition: the next offset to store, and the assignment it was received under.
    offsets: BTreeMap<(Arc<str>, i32), (i64, u64)>,
}

/// How often a consumer loop marks its heartbeat and publishes its own lag.
const MEMBER_SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// How often librdkafka measures the member's lag.
const STATISTICS_INTERVAL_MS: &str = "5000";

/// Records between the offset this member last stored (or, before it stored one, its
/// committed position) and the high watermark, per assigned partition, from librdkafka's
/// statistics (no request of its own). A partition not measured yet is left out.
fn member_lag(assignment: &Assignment) -> BTreeMap<(String, i32), i64> {
    let measured = assignment
        .measured_lag
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    assignment
        .partitions()
        .into_iter()
        .filter_map(|tp| measured.get(&tp).map(|lag| (tp, *lag)))
        .collect()
}

/// Runs one consumer loop until `shutdown`.
pub async fn run_consumer<P: ChunkProcessor>(
    settings: &KafkaSettings,
    options: ConsumerOptions,
    mut processor: P,
    progress: Arc<Progress>,
    shutdown: CancellationToken,
) -> Result<(), ConsumeError> {
    let assignment = Arc::new(Assignment::default());
    let consumer = subscribe(settings, &options, &assignment)?;
    let mut receiving = ConsumerLoop::new(&consumer, &options, &assignment, &progress);
    let failure = receiving.receive(&mut processor, &shutdown).await;
    let failure = receiving.drain(failure).await;
    // What is still in flight, then the processor, go before the final commit.
    let mut stream = receiving.into_stream();
    drop(processor);
    final_commit(&consumer, &mut stream, &options.group).await;
    consumer.unsubscribe();
    match failure {
        None => Ok(()),
        // Cancelled by the shutdown this loop was asked for: not a failure.
        Some(ChunkError::Produce(ProduceError::Cancelled)) if shutdown.is_cancelled() => Ok(()),
        Some(e) => Err(e.into()),
    }
}

/// The member of `options.group`, subscribed to `options.topics`.
fn subscribe(
    settings: &KafkaSettings,
    options: &ConsumerOptions,
    assignment: &Arc<Assignment>,
) -> Result<StreamConsumer<GroupMember>, KafkaError> {
    let consumer: StreamConsumer<GroupMember> = settings
        .consumer_config(&options.client_id, &options.group)
        // Statistics carry each partition's lag, measured against the high watermark
        // librdkafka already fetches with the records.
        .set("statistics.interval.ms", STATISTICS_INTERVAL_MS)
        .create_with_context(GroupMember {
            group: options.group.clone(),
            assignment: assignment.clone(),
            log: ClientLog::new(&options.client_id),
        })?;
    let topics: Vec<&str> = options.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    tracing::info!(group = %options.group, topics = ?options.topics, "consuming");
    Ok(consumer)
}

/// A chunk in flight: what it was dispatched with, and the work that makes it durable.
type InFlight = Join<Ready<Dispatched>, BoxFuture<'static, Result<ChunkOutcome, ChunkError>>>;

/// A consumer loop's state: the stream it receives from, the chunks in flight, and what
/// their completion stores and counts.
struct ConsumerLoop<'c> {
    consumer: &'c StreamConsumer<GroupMember>,
    options: &'c ConsumerOptions,
    assignment: &'c Assignment,
    progress: &'c Progress,
    counters: Option<&'c GroupCounters>,
    in_flight: FuturesOrdered<InFlight>,
    in_flight_records: usize,
    topic_names: Vec<Arc<str>>,
    /// Records in the last chunk gathered: the next one's starting capacity.
    last_chunk: usize,
    orders_topic: Arc<str>,
    /// One stream for the loop's life: `recv()` would register and drop a waker slot (two
    /// lock round trips) for every record.
    stream: MessageStream<'c, GroupMember>,
    /// The loop's heartbeat: it marks each turn, and measures its own lag, once a second
    /// even when no record arrives; a loop that stops turning fails /healthz.
    poll_mark: PollMark,
    heartbeat: tokio::time::Interval,
}

impl<'c> ConsumerLoop<'c> {
    fn new(
        consumer: &'c StreamConsumer<GroupMember>,
        options: &'c ConsumerOptions,
        assignment: &'c Assignment,
        progress: &'c Progress,
    ) -> Self {
        let counters = progress.group(&options.group);
        let in_flight = FuturesOrdered::new();
        let orders_topic: Arc<str> = Arc::from(options.orders_topic.as_str());
        let stream = consumer.stream();
        let poll_mark = progress.liveness.poll_mark(&options.group);
        let mut heartbeat = tokio::time::interval(MEMBER_SAMPLE_INTERVAL);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ConsumerLoop {
            consumer,
            options,
            assignment,
            progress,
            counters,
            in_flight,
            in_flight_records: 0,
            // The orders topic's name interned first: a record is an order when its
            // topic is that very name.
            topic_names: vec![orders_topic.clone()],
            last_chunk: 1,
            orders_topic,
            stream,
            poll_mark,
            heartbeat,
        }
    }

    /// Receives chunks and hands them to `processor`, and completes them in the order
    /// received, until shutdown or until a chunk fails (its error returned).
    async fn receive<P: ChunkProcessor>(
        &mut self,
        processor: &mut P,
        shutdown: &CancellationToken,
    ) -> Option<ChunkError> {
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return None,
                Some((done, result)) = self.in_flight.next(), if !self.in_flight.is_empty() => {
                    if let Err(e) = self.complete(done, result) {
                        return Some(e);
                    }
                }
                _ = self.heartbeat.tick() => self.beat(),
                Some(received) = self.stream.next(), if self.in_flight_records < self.options.max_in_flight => {
                    self.poll_mark.polled();
                    let first = match received {
                        Ok(m) => Record::from_message(&m, &mut self.topic_names),
                        Err(e) => {
                            self.consume_error(&e);
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    };
                    let chunk = self.gather(first);
                    self.dispatch(chunk, processor);
                }
            }
        }
    }

    /// The heartbeat: the loop turned; this member's rebalances and lag.
    fn beat(&self) {
        self.poll_mark.polled();
        if let Some(c) = self.counters {
            c.rebalances.store(
                self.assignment.rebalances.load(Ordering::Relaxed),
                Ordering::Relaxed,
            );
            c.set_lag(member_lag(self.assignment));
        }
    }

    /// Logs a consumer error; repeats of the same error are folded into one line.
    fn consume_error(&self, e: &KafkaError) {
        let log = &self.consumer.context().log;
        if let Some(repeated) = log.admit(&format!("consume:{e}")) {
            tracing::warn!(group = %self.options.group, error = %e, repeated, "consumer error");
        }
    }

    /// A chunk: `first`, and the records already waiting behind it, up to `max_chunk`.
    fn gather(&mut self, first: Record) -> Vec<Record> {
        // Room for as many as the last chunk held: a chunk grown from one record by
        // doubling copied itself a dozen times and faulted in fresh pages for each copy
        // (about 2% of the pipeline's CPU, BENCHMARKS.md).
        let mut chunk = Vec::with_capacity(self.last_chunk.clamp(1, self.options.max_chunk));
        chunk.push(first);
        while chunk.len() < self.options.max_chunk {
            match self.stream.next().now_or_never().flatten() {
                Some(Ok(m)) => chunk.push(Record::from_message(&m, &mut self.topic_names)),
                Some(Err(e)) => {
                    self.consume_error(&e);
                    break;
                }
                None => break,
            }
        }
        self.last_chunk = chunk.len();
        chunk
    }

    /// Hands `chunk` to `processor`, with the offsets to store once its effects are
    /// durable, each under the assignment it was received in.
    fn dispatch<P: ChunkProcessor>(&mut self, chunk: Vec<Record>, processor: &mut P) {
        // Per partition: the topic, the partition, the next offset and the epoch. A chunk
        // holds a few partitions and every record's topic name is one of `topic_names`, so
        // a pointer comparison finds its partition: no string comparison and no reference
        // count taken per record.
        let mut partitions: Vec<(&Arc<str>, i32, i64, u64)> = Vec::new();
        let mut orders = 0;
        for r in &chunk {
            let at = partitions
                .iter()
                .position(|(t, p, ..)| Arc::ptr_eq(t, &r.topic) && *p == r.partition);
            let entry = match at {
                Some(i) => &mut partitions[i],
                None => {
                    // A record of a partition not (or no longer) assigned gets an
                    // epoch no assignment has: its offset is never stored.
                    let epoch = self.assignment.epoch(&r.topic, r.partition).unwrap_or(0);
                    partitions.push((&r.topic, r.partition, 0, epoch));
                    let last = partitions.len() - 1;
                    &mut partitions[last]
                }
            };
            entry.2 = entry.2.max(r.offset + 1);
            if Arc::ptr_eq(&r.topic, &self.orders_topic) {
                orders += 1;
            }
        }
        let offsets: BTreeMap<(Arc<str>, i32), (i64, u64)> = partitions
            .into_iter()
            .map(|(t, p, next, epoch)| ((t.clone(), p), (next, epoch)))
            .collect();
        if let Some(c) = self.counters {
            c.consumed.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        let dispatched = Dispatched {
            received: Instant::now(),
            records: chunk.len(),
            orders,
            offsets,
        };
        self.in_flight_records += dispatched.records;
        let work = processor.process(chunk);
        self.in_flight.push_back(join(ready(dispatched), work));
    }

    /// A chunk that finished: its offsets stored and its counts taken when its effects are
    /// durable; its error otherwise.
    fn complete(
        &mut self,
        done: Dispatched,
        result: Result<ChunkOutcome, ChunkError>,
    ) -> Result<(), ChunkError> {
        self.in_flight_records -= done.records;
        let outcome = result?;
        let admitted = self.assignment.admit(&done.offsets);
        if admitted.count() > 0 {
            if let Err(e) = self.consumer.store_offsets(&admitted) {
                // Revoked between the check and here: the new owner reads them again.
                tracing::debug!(error = %e, "offsets not stored");
            }
        }
        if let Some(c) = self.counters {
            c.done.fetch_add(done.records as u64, Ordering::Relaxed);
            c.orders_done.fetch_add(done.orders, Ordering::Relaxed);
            for (reason, n) in outcome.dead_lettered.iter().enumerate() {
                if *n > 0 {
                    c.dead_lettered(reason, *n);
                }
            }
            c.produced.fetch_add(outcome.produced, Ordering::Relaxed);
            c.chunk_seconds.observe(done.received.elapsed());
        }
        self.progress.notify();
        Ok(())
    }

    /// On shutdown: lets what is in flight finish, within the shutdown grace, unless a
    /// chunk has failed; the first failure.
    async fn drain(&mut self, mut failure: Option<ChunkError>) -> Option<ChunkError> {
        let grace = tokio::time::sleep(self.options.shutdown_grace);
        tokio::pin!(grace);
        while failure.is_none() && !self.in_flight.is_empty() {
            tokio::select! {
                _ = &mut grace => {
                    tracing::warn!(group = %self.options.group, records = self.in_flight_records,
                        "shutdown grace over; unfinished records will be redelivered");
                    break;
                }
                Some((done, result)) = self.in_flight.next() => {
                    failure = self.complete(done, result).err();
                }
            }
        }
        failure
    }

    /// Ends the loop, dropping what is still in flight; the stream stays for the final
    /// commit.
    fn into_stream(self) -> MessageStream<'c, GroupMember> {
        self.stream
    }
}

/// The final synchronous commit. A rebalance under way refuses it (the generation moved
/// on); let it finish and try again, briefly. Records received meanwhile are not stored:
/// redelivered.
async fn final_commit(
    consumer: &StreamConsumer<GroupMember>,
    stream: &mut MessageStream<'_, GroupMember>,
    group: &str,
) {
    let mut attempts = 0;
    loop {
        attempts += 1;
        match consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => tracing::info!(group = %group, "final commit done"),
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => tracing::info!(
                group = %group,
                "final commit done (every stored offset was already committed)"
            ),
            Err(KafkaError::ConsumerCommit(
                RDKafkaErrorCode::IllegalGeneration
                | RDKafkaErrorCode::RebalanceInProgress
                | RDKafkaErrorCode::UnknownMemberId,
            )) if attempts < 5 => {
                let _ = tokio::time::timeout(Duration::from_millis(500), async {
                    while stream.next().await.is_some() {}
                })
                .await;
                continue;
            }
            Err(e) => tracing::warn!(
                group = %group,
                error = %e,
                "final commit failed; records since the last commit will be redelivered"
            ),
        }
        break;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn tpl(parts: &[i32]) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        for p in parts {
            tpl.add_partition("orders", *p);
        }
        tpl
    }

    fn chunk(parts: &[(i32, i64, u64)]) -> BTreeMap<(Arc<str>, i32), (i64, u64)> {
        parts
            .iter()
            .map(|(p, next, epoch)| ((Arc::from("orders"), *p), (*next, *epoch)))
            .collect()
    }

    fn stored(tpl: &TopicPartitionList) -> Vec<(i32, i64)> {
        tpl.elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(o) => (e.partition(), o),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_dead_letter_keeps_the_records_headers_but_not_an_earlier_rounds_diagnostics() {
        let headers = [
            ("trace-id", "t-1"),
            ("dlq.redrive-count", "2"),
            ("dlq.reason", "schema"),
        ]
        .into_iter()
        .fold(OwnedHeaders::new(), |h, (key, v)| {
            h.insert(Header {
                key,
                value: Some(v),
            })
        });
        let record = Record {
            topic: Arc::from("orders"),
            partition: 2,
            offset: 9,
            key: Some(b"5".to_vec()),
            payload: Some(b"nope".to_vec()),
            timestamp_ms: None,
            headers: Some(headers),
        };
        let out = dead_letter("fraud-group", &record, &DecodeError::NotJson("x".into()));
        let got: Vec<(String, String)> = out
            .headers
            .unwrap()
            .iter()
            .map(|h| {
                (
                    h.key.to_owned(),
                    String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                )
            })
            .collect();
        let keys: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "trace-id",
                "dlq.redrive-count",
                "dlq.reason",
                "dlq.error",
                "dlq.topic",
                "dlq.partition",
                "dlq.offset",
                "dlq.group",
                "dlq.truncated"
            ]
        );
        assert_eq!(got[1].1, "2");
        assert_eq!(got[2].1, "not-json");
        assert_eq!(out.topic, "orders.dlq");
    }

    #[test]
    fn a_chunk_stores_offsets_only_under_the_assignment_it_was_received_in() {
        let a = Assignment::default();
        a.assign(&tpl(&[0, 1]));
        let first = a.epoch("orders", 0).unwrap();
        assert_eq!(
            a.partitions(),
            vec![("orders".into(), 0), ("orders".into(), 1)]
        );

        // Received under `first`, finished while still owned: stored.
        assert_eq!(
            stored(&a.admit(&chunk(&[(0, 100, first), (1, 50, first)]))),
            vec![(0, 100), (1, 50)]
        );
        // Partition 0 revoked: a late chunk stores nothing for it, partition 1 goes on.
        a.revoke(&tpl(&[0]));
        assert_eq!(
            stored(&a.admit(&chunk(&[(0, 200, first), (1, 80, first)]))),
            vec![(1, 80)]
        );
        // Partition 0 comes back under a new assignment (its new start was committed by the
        // member that had it meanwhile): a chunk from the old assignment still stores nothing.
        a.assign(&tpl(&[0]));
        let second = a.epoch("orders", 0).unwrap();
        assert_ne!(first, second);
        assert!(a.admit(&chunk(&[(0, 150, first)])).count() == 0);
        assert_eq!(
            stored(&a.admit(&chunk(&[(0, 300, second)]))),
            vec![(0, 300)]
        );
        // Never backwards within an assignment.
        assert!(a.admit(&chunk(&[(0, 250, second)])).count() == 0);
        // A record of a partition never assigned carries epoch 0: never stored.
        assert!(a.admit(&chunk(&[(5, 10, 0)])).count() == 0);
    }
}
