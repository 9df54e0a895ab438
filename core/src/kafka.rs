//! Kafka setup: topic names, client settings for PLAINTEXT or SASL_SSL, the embedded
//! broker (librdkafka's mock cluster), topic checks and consumer lag.

use crate::client_log::ClientLog;
use crate::config::{KafkaArgs, Secret};
use crate::lag::{ConsumerLag, PartitionLag};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::mocking::MockCluster;
pub use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::{mpsc, Arc};
use std::time::Duration;

pub const FRAUD_ALERTS_TOPIC: &str = "fraud-alerts";
pub const PAYMENTS_TOPIC: &str = "payments";
pub const ANALYTICS_TOPIC: &str = "order-analytics";
pub const FRAUD_GROUP: &str = "fraud-group";
pub const PAYMENTS_GROUP: &str = "payments-group";
pub const ANALYTICS_GROUP: &str = "analytics-group";
/// The groups that each read every order.
pub const ORDER_GROUPS: [&str; 3] = [FRAUD_GROUP, PAYMENTS_GROUP, ANALYTICS_GROUP];

/// The dead-letter topic of a topic.
pub fn dlq_topic(topic: &str) -> String {
    format!("{topic}.dlq")
}

/// The ledger of handled (redriven or discarded) dead letters: a compacted topic, one per
/// pipeline, read and written by `ordersctl dlq` and read by the api and the audit.
pub fn dlq_handled_topic(orders_topic: &str) -> String {
    format!("{}.handled", dlq_topic(orders_topic))
}

/// The topics operators' tools use beside the pipeline's own (the daemons need none of
/// them); the embedded broker creates them too.
pub fn operator_topics(orders_topic: &str) -> Vec<(String, i32)> {
    vec![(dlq_handled_topic(orders_topic), 1)]
}

/// The topics the pipeline uses and their partition counts (SPEC: `orders` has 6).
pub fn pipeline_topics(orders_topic: &str) -> Vec<(String, i32)> {
    vec![
        (orders_topic.to_owned(), 6),
        (FRAUD_ALERTS_TOPIC.to_owned(), 6),
        (PAYMENTS_TOPIC.to_owned(), 6),
        (ANALYTICS_TOPIC.to_owned(), 1),
        (dlq_topic(orders_topic), 1),
        (dlq_topic(FRAUD_ALERTS_TOPIC), 1),
        (dlq_topic(PAYMENTS_TOPIC), 1),
    ]
}

#[derive(Debug, thiserror::Error)]
pub enum KafkaSetupError {
    #[error("CONFLUENT_API_KEY and CONFLUENT_API_SECRET must be set together")]
    HalfCredentials,
    #[error("no Kafka bootstrap servers: set KAFKA_BOOTSTRAP_SERVERS")]
    NoBootstrap,
    #[error(
        "topic {0:?} does not exist on the cluster; create it first (topics are not auto-created)"
    )]
    MissingTopic(String),
    #[error("embedded broker: {0}")]
    Embedded(String),
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// No broker answered; librdkafka said why.
    #[error("kafka: cannot reach {failure}: {error}")]
    Unreachable { failure: String, error: KafkaError },
}

/// SASL PLAIN credentials.
#[derive(Debug, Clone)]
pub struct SaslPlain {
    pub username: Secret,
    pub password: Secret,
}

/// How to reach Kafka. `Debug` shows no secret.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    pub bootstrap_servers: String,
    pub sasl: Option<SaslPlain>,
    /// How long a fetch may wait for data. A real broker answers as soon as data arrives,
    /// so a long wait costs nothing there; the embedded broker waits out the full time
    /// when a partition is empty, so it gets a short one.
    pub fetch_wait_max_ms: u32,
    /// How long librdkafka keeps trying to deliver a record before reporting it failed
    /// (the confirmed producer then sends it again): the longest outage it rides out on
    /// its own.
    pub message_timeout_ms: u32,
    /// Produce requests a producer keeps in flight per broker connection (librdkafka's
    /// `max.in.flight.requests.per.connection`; at most 5 with idempotence).
    pub producer_in_flight: u32,
}

impl KafkaSettings {
    pub fn plaintext(bootstrap_servers: impl Into<String>) -> Self {
        KafkaSettings {
            bootstrap_servers: bootstrap_servers.into(),
            sasl: None,
            fetch_wait_max_ms: 500,
            message_timeout_ms: 60_000,
            producer_in_flight: 5,
        }
    }

    /// Settings from the flags/env; `None` when no bootstrap list is given (local mode).
    pub fn from_args(args: &KafkaArgs) -> Result<Option<Self>, KafkaSetupError> {
        let sasl = match (&args.confluent_api_key, &args.confluent_api_secret) {
            (Some(k), Some(s)) => Some(SaslPlain {
                username: k.clone(),
                password: s.clone(),
            }),
            (None, None) => None,
            _ => return Err(KafkaSetupError::HalfCredentials),
        };
        Ok(args
            .kafka_bootstrap_servers
            .as_ref()
            .filter(|s| !s.trim().is_empty())
            .map(|b| KafkaSettings {
                bootstrap_servers: b.trim().to_owned(),
                sasl,
                fetch_wait_max_ms: 500,
                message_timeout_ms: 60_000,
                producer_in_flight: 5,
            }))
    }

    /// Settings every client shares. Never log the result: it holds the password.
    pub fn client_config(&self, client_id: &str) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers)
            .set("client.id", client_id)
            .set("log_level", "4")
            // Back off reconnecting to at most 2 s (librdkafka's default is 10 s), so a
            // cluster that comes back is used again within seconds.
            .set("reconnect.backoff.max.ms", "2000")
            // A request unanswered for 15 s fails and is retried on a fresh connection
            // (librdkafka's default waits 60 s): a connection that went silent without
            // closing — a network blip, a broker that vanished — no longer stalls a
            // partition for a minute.
            .set("socket.timeout.ms", "15000");
        match &self.sasl {
            Some(sasl) => {
                c.set("security.protocol", "SASL_SSL")
                    .set("sasl.mechanisms", "PLAIN")
                    .set("sasl.username", sasl.username.expose())
                    .set("sasl.password", sasl.password.expose());
            }
            None => {
                c.set("security.protocol", "PLAINTEXT");
            }
        }
        c
    }

    /// A producer whose records are acknowledged by all in-sync replicas, without duplicates.
    pub fn producer_config(&self, client_id: &str) -> ClientConfig {
        let mut c = self.client_config(client_id);
        c.set("acks", "all")
            .set("enable.idempotence", "true")
            .set(
                "max.in.flight.requests.per.connection",
                self.producer_in_flight.to_string(),
            )
            .set("compression.type", "lz4")
            .set("linger.ms", "2")
            .set("batch.num.messages", "10000")
            .set("queue.buffering.max.messages", "500000")
            .set("queue.buffering.max.kbytes", "1048576")
            .set("message.timeout.ms", self.message_timeout_ms.to_string());
        c
    }

    /// A group consumer whose offsets are stored by the application after the effect is
    /// durable and committed in the background (and synchronously on shutdown).
    pub fn consumer_config(&self, client_id: &str, group: &str) -> ClientConfig {
        let mut c = self.client_config(client_id);
        c.set("group.id", group)
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("allow.auto.create.topics", "false")
            // Members joining or leaving move only the partitions that change hands; the
            // others keep being consumed through the rebalance.
            .set("partition.assignment.strategy", "cooperative-sticky")
            // A member that dies without leaving (kill -9, a lost host) holds its
            // partitions this long: the lowest a broker accepts by default.
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "1000")
            .set("fetch.wait.max.ms", self.fetch_wait_max_ms.to_string())
            // A bounded prefetch: librdkafka fetched a member's whole backlog into memory
            // (200,000 records per partition, up to 64 MiB of payload, two to three times
            // that in its own structures: 85 MB of analytics' 170 MB peak). 4 MiB of payload
            // covers many fetch round trips at full speed; the queue is topped up again
            // 5 ms after it drains below that, not after librdkafka's default 1 s.
            .set("queued.min.messages", "20000")
            .set("queued.max.messages.kbytes", "4096")
            .set("fetch.queue.backoff.ms", "5");
        c
    }

    /// A consumer that reads the partitions it is given from the offsets it is given, and
    /// commits nothing (`group` only names it).
    pub fn reader_config(&self, client_id: &str, group: &str) -> ClientConfig {
        let mut c = self.client_config(client_id);
        c.set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest");
        c
    }

    /// A consumer that joins no group: for metadata, watermarks and committed offsets.
    pub fn admin_consumer(
        &self,
        client_id: &str,
        group: &str,
    ) -> Result<BaseConsumer<ClientLog>, KafkaError> {
        let mut c = self.client_config(client_id);
        c.set("group.id", group).set("enable.auto.commit", "false");
        c.create_with_context(ClientLog::new(client_id))
    }

    /// Fails with a clear error naming the first topic that does not exist.
    pub fn ensure_topics(&self, topics: &[&str], timeout: Duration) -> Result<(), KafkaSetupError> {
        let consumer = self.admin_consumer("orders-topic-check", "orders-topic-check")?;
        let metadata = match consumer.fetch_metadata(None, timeout) {
            Ok(m) => m,
            Err(error) => {
                // Serve the events librdkafka queued meanwhile, so its log (and the last
                // connection failure, with the broker and the cause) is current.
                let _ = consumer.poll(Duration::ZERO);
                return Err(match consumer.context().last_connection_failure() {
                    Some(failure) => KafkaSetupError::Unreachable { failure, error },
                    None => KafkaSetupError::Kafka(error),
                });
            }
        };
        for topic in topics {
            let present = metadata
                .topics()
                .iter()
                .any(|t| t.name() == *topic && t.error().is_none() && !t.partitions().is_empty());
            if !present {
                return Err(KafkaSetupError::MissingTopic((*topic).to_owned()));
            }
        }
        Ok(())
    }
}

/// Destroys a Kafka client on a thread of its own, for a caller that needs nothing more of
/// it. librdkafka's destroy waits about 100 ms for its threads to time out their system
/// calls; a producer waited for two of them before its first order (BENCHMARKS.md).
pub fn close_in_background<T: Send + 'static>(client: T) {
    // Should the thread not start, the closure and the client in it are dropped here.
    if let Err(e) = std::thread::Builder::new()
        .name("kafka-close".into())
        .spawn(move || drop(client))
    {
        tracing::debug!(error = %e, "closed a Kafka client in place");
    }
}

/// Reads records of partitions up to given offsets, each read with a consumer of its own
/// (librdkafka starts fetching a fresh assignment at once, but a consumer assigned again
/// waits about a second before its first fetch); what the audit and the dead-letter
/// commands read topics with.
pub struct RangeReader {
    config: ClientConfig,
}

/// Why a [`RangeReader`] stopped short.
#[derive(Debug, thiserror::Error)]
pub enum RangeReadError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// Kafka silent for the idle limit: no record, no end of partition.
    #[error("no records from {topic} for {idle:?} with {left} partitions still to read")]
    Idle {
        topic: String,
        idle: Duration,
        left: usize,
    },
}

impl RangeReader {
    pub fn new(settings: &KafkaSettings, client_id: &str) -> Self {
        let mut c = settings.reader_config(client_id, client_id);
        c.set("enable.partition.eof", "true")
            .set("fetch.wait.max.ms", settings.fetch_wait_max_ms.to_string())
            // A small prefetch queue and fetch responses of at most 4 MiB: a reader's
            // memory is what it keeps of the records, not records waiting in librdkafka.
            .set("queued.max.messages.kbytes", "8192")
            .set("queued.min.messages", "20000")
            .set("fetch.max.bytes", "4194304")
            // Fetch again soon once the small queue has room: with the default 1 s
            // back-off, reading 1M orders took 24 s instead of 1.5 s.
            .set("fetch.queue.backoff.ms", "5");
        RangeReader { config: c }
    }

    /// Hands every record of `[from, to)` of each `(partition, from, to)` of `topic` to
    /// `f`. Kafka silent for `idle` (no record, no end of partition) is an error.
    pub fn read(
        &self,
        topic: &str,
        ranges: &[(i32, i64, i64)],
        idle: Duration,
        mut f: impl FnMut(&rdkafka::message::BorrowedMessage<'_>),
    ) -> Result<(), RangeReadError> {
        let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
        let mut tpl = TopicPartitionList::new();
        for &(partition, from, to) in ranges {
            if from < to {
                ends.insert(partition, to);
                tpl.add_partition_offset(topic, partition, Offset::Offset(from))?;
            }
        }
        if ends.is_empty() {
            return Ok(());
        }
        let consumer: BaseConsumer = self.config.create()?;
        consumer.assign(&tpl)?;
        let mut last_progress = std::time::Instant::now();
        while !ends.is_empty() {
            if last_progress.elapsed() > idle {
                return Err(RangeReadError::Idle {
                    topic: topic.to_owned(),
                    idle,
                    left: ends.len(),
                });
            }
            let finished = match consumer.poll(Duration::from_millis(100)) {
                None => None,
                Some(Ok(m)) => {
                    last_progress = std::time::Instant::now();
                    let partition = m.partition();
                    match ends.get(&partition) {
                        Some(&end) if m.offset() < end => {
                            f(&m);
                            (m.offset() + 1 >= end).then_some(partition)
                        }
                        Some(_) => Some(partition),
                        None => None,
                    }
                }
                // The end of the partition now, which is at or beyond the range's.
                Some(Err(KafkaError::PartitionEOF(partition))) => {
                    last_progress = std::time::Instant::now();
                    Some(partition)
                }
                Some(Err(e)) => {
                    tracing::debug!(topic, error = %e, "range reader: fetch error");
                    None
                }
            };
            if let Some(partition) = finished {
                if ends.remove(&partition).is_some() {
                    // Stop fetching past the range while other partitions finish.
                    let mut done = TopicPartitionList::new();
                    done.add_partition(topic, partition);
                    let _ = consumer.pause(&done);
                }
            }
        }
        close_in_background(consumer);
        Ok(())
    }
}

/// A fault to inject into the embedded broker: what the faults tests and `ordersctl chaos`
/// do to it. Broker ids run from 1 to the number of brokers.
#[derive(Debug, Clone, PartialEq)]
pub enum BrokerFault {
    /// Disconnects every broker and refuses new connections (leaders do not move).
    AllDown,
    /// Accepts connections again on every broker.
    AllUp,
    /// One broker down or up.
    Down(i32),
    Up(i32),
    /// Delays every answer of a broker (0 clears it).
    RoundTripTime(i32, Duration),
    /// Answers the next requests of one API with these errors, in order.
    RequestErrors(RDKafkaApiKey, Vec<RDKafkaRespErr>),
    /// Drops the errors still queued for one API.
    ClearRequestErrors(RDKafkaApiKey),
    /// Moves a partition's leader to a broker.
    PartitionLeader {
        topic: String,
        partition: i32,
        broker: i32,
    },
}

type FaultReply = mpsc::Sender<Result<(), String>>;

/// The embedded broker: librdkafka's mock cluster, reachable over TCP on a random local
/// port. Memory only; keeps about 5 MiB (and at most 100,000 batches) per partition.
/// The cluster lives on its own thread (its handle is not `Send`) until this is dropped;
/// faults reach it through a channel.
pub struct EmbeddedBroker {
    bootstrap: String,
    faults: Option<mpsc::Sender<(BrokerFault, FaultReply)>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EmbeddedBroker {
    /// Starts a one-broker mock cluster with these topics created.
    pub fn start(topics: &[(String, i32)]) -> Result<Self, KafkaSetupError> {
        Self::start_cluster(topics, 1)
    }

    /// Starts a mock cluster of `brokers` brokers; topics are replicated on up to three.
    pub fn start_cluster(topics: &[(String, i32)], brokers: i32) -> Result<Self, KafkaSetupError> {
        let (ready_tx, ready_rx) = mpsc::channel::<Result<String, String>>();
        let (fault_tx, fault_rx) = mpsc::channel::<(BrokerFault, FaultReply)>();
        let topics = topics.to_vec();
        let thread = std::thread::Builder::new()
            .name("embedded-kafka".into())
            .spawn(move || {
                let cluster = match MockCluster::new(brokers) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                for (name, partitions) in &topics {
                    if let Err(e) = cluster.create_topic(name, *partitions, brokers.min(3)) {
                        let _ = ready_tx.send(Err(format!("creating topic {name}: {e}")));
                        return;
                    }
                }
                let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
                // Serves faults until the owner drops its sender.
                while let Ok((fault, reply)) = fault_rx.recv() {
                    let _ = reply.send(inject(&cluster, &fault).map_err(|e| e.to_string()));
                }
                drop(cluster);
            })
            .map_err(|e| KafkaSetupError::Embedded(e.to_string()))?;
        let bootstrap = ready_rx
            .recv()
            .map_err(|e| KafkaSetupError::Embedded(e.to_string()))?
            .map_err(KafkaSetupError::Embedded)?;
        Ok(EmbeddedBroker {
            bootstrap,
            faults: Some(fault_tx),
            thread: Some(thread),
        })
    }

    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    pub fn settings(&self) -> KafkaSettings {
        embedded_settings(self.bootstrap.clone())
    }

    /// Injects a fault; returns once the cluster has taken it.
    pub fn inject(&self, fault: BrokerFault) -> Result<(), KafkaSetupError> {
        let gone = || KafkaSetupError::Embedded("the embedded broker has stopped".into());
        let (reply_tx, reply_rx) = mpsc::channel();
        self.faults
            .as_ref()
            .ok_or_else(gone)?
            .send((fault, reply_tx))
            .map_err(|_| gone())?;
        reply_rx
            .recv()
            .map_err(|_| gone())?
            .map_err(KafkaSetupError::Embedded)
    }
}

fn inject<C: rdkafka::ClientContext>(
    cluster: &MockCluster<'_, C>,
    fault: &BrokerFault,
) -> Result<(), KafkaError> {
    match fault {
        BrokerFault::AllDown => cluster.broker_down(-1),
        BrokerFault::AllUp => cluster.broker_up(-1),
        BrokerFault::Down(b) => cluster.broker_down(*b),
        BrokerFault::Up(b) => cluster.broker_up(*b),
        BrokerFault::RoundTripTime(b, d) => cluster.broker_round_trip_time(*b, *d),
        BrokerFault::RequestErrors(api, errors) => {
            cluster.request_errors(*api, errors);
            Ok(())
        }
        BrokerFault::ClearRequestErrors(api) => {
            cluster.clear_request_errors(*api);
            Ok(())
        }
        BrokerFault::PartitionLeader {
            topic,
            partition,
            broker,
        } => cluster.partition_leader(topic, *partition, Some(*broker)),
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        drop(self.faults.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Client settings for an embedded broker at `bootstrap_servers`.
///
/// Its producers keep one request in flight. The embedded broker checks an idempotent
/// producer's sequence numbers only for transactional producers: when a Produce request
/// fails (a request error, a leader move) while the next one of the same partition is in
/// flight, it writes the next one, and librdkafka, seeing a later batch succeed, counts the
/// failed batch as written — correct against a real broker, which refuses a sequence gap,
/// but an acknowledged record lost here (3 of 8,000 orders under bursts of Produce errors
/// with five in flight; none with one, see `bursts_of_produce_errors_lose_nothing`).
pub fn embedded_settings(bootstrap_servers: impl Into<String>) -> KafkaSettings {
    KafkaSettings {
        fetch_wait_max_ms: 5,
        producer_in_flight: 1,
        ..KafkaSettings::plaintext(bootstrap_servers)
    }
}

/// Reads the committed offsets of `group` on `topics` and the partitions' watermarks.
/// Blocking: call from a blocking context.
pub fn consumer_lag(
    settings: &KafkaSettings,
    group: &str,
    topics: &[&str],
    timeout: Duration,
) -> Result<ConsumerLag, KafkaSetupError> {
    let consumer = settings.admin_consumer("orders-lag", group)?;
    let metadata = consumer.fetch_metadata(None, timeout)?;
    let mut tpl = TopicPartitionList::new();
    for topic in topics {
        let t = metadata
            .topics()
            .iter()
            .find(|t| t.name() == *topic && t.error().is_none())
            .ok_or_else(|| KafkaSetupError::MissingTopic((*topic).to_owned()))?;
        for p in t.partitions() {
            tpl.add_partition(topic, p.id());
        }
    }
    let committed = consumer.committed_offsets(tpl, timeout)?;
    let mut partitions = Vec::new();
    for elem in committed.elements() {
        let (low, high) = consumer.fetch_watermarks(elem.topic(), elem.partition(), timeout)?;
        let committed = match elem.offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        };
        partitions.push(PartitionLag::new(
            elem.topic(),
            elem.partition(),
            committed,
            low,
            high,
        ));
    }
    partitions.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    Ok(ConsumerLag {
        group: group.to_owned(),
        topics: topics.iter().map(|t| (*t).to_owned()).collect(),
        partitions,
    })
}

/// A topic partition, as `(topic, partition)`.
pub type TopicPartition = (String, i32);

/// A long-lived reader of what lag monitoring needs: partitions of topics, the committed
/// offsets of any group, watermarks, and the timestamp of the record at an offset. Its
/// clients are created once and kept, so sampling every second or two costs a few round
/// trips and no new connections. Every method blocks: call it from a blocking context.
pub struct LagReader {
    settings: KafkaSettings,
    /// Metadata and watermarks (joins no group, commits nothing).
    metadata: BaseConsumer<ClientLog>,
    /// Reads records at given offsets to learn their timestamps (commits nothing).
    records: BaseConsumer<ClientLog>,
    /// One client per group: committed offsets are read through a client of that group.
    groups: std::sync::Mutex<std::collections::BTreeMap<String, Arc<BaseConsumer<ClientLog>>>>,
}

impl LagReader {
    pub fn new(settings: &KafkaSettings) -> Result<Self, KafkaSetupError> {
        let metadata = settings.admin_consumer("orders-lag", "orders-lag-reader")?;
        let mut c = settings.reader_config("orders-lag-records", "orders-lag-reader");
        c.set("enable.partition.eof", "false")
            // One record per partition is all we want: keep fetches small, and do not back
            // off a partition whose (tiny) queue is full, or a reassigned partition waits 1 s.
            .set("max.partition.fetch.bytes", "65536")
            .set("queued.min.messages", "10")
            .set("fetch.queue.backoff.ms", "0")
            .set("fetch.wait.max.ms", "10");
        let records = c.create_with_context(ClientLog::new("orders-lag-records"))?;
        Ok(LagReader {
            settings: settings.clone(),
            metadata,
            records,
            groups: std::sync::Mutex::new(std::collections::BTreeMap::new()),
        })
    }

    /// Answers when the cluster answers a metadata request for `topic` within `timeout`.
    pub fn ping(&self, topic: &str, timeout: Duration) -> Result<(), KafkaSetupError> {
        let metadata = self.metadata.fetch_metadata(Some(topic), timeout)?;
        match metadata.topics().iter().find(|t| t.name() == topic) {
            Some(t) if t.error().is_none() && !t.partitions().is_empty() => Ok(()),
            _ => Err(KafkaSetupError::MissingTopic(topic.to_owned())),
        }
    }

    /// The partitions of `topics`, sorted; fails naming the first topic that is missing.
    pub fn partitions(
        &self,
        topics: &[&str],
        timeout: Duration,
    ) -> Result<Vec<TopicPartition>, KafkaSetupError> {
        let mut out = Vec::new();
        // One small request per topic: a shared cluster may hold many other topics.
        for topic in topics {
            let metadata = self.metadata.fetch_metadata(Some(topic), timeout)?;
            let t = metadata
                .topics()
                .iter()
                .find(|t| t.name() == *topic && t.error().is_none() && !t.partitions().is_empty())
                .ok_or_else(|| KafkaSetupError::MissingTopic((*topic).to_owned()))?;
            out.extend(t.partitions().iter().map(|p| ((*topic).to_owned(), p.id())));
        }
        out.sort();
        Ok(out)
    }

    fn group_client(&self, group: &str) -> Result<Arc<BaseConsumer<ClientLog>>, KafkaSetupError> {
        // The map stays consistent even if a holder panicked, so a poisoned lock is usable.
        let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = groups.get(group) {
            return Ok(c.clone());
        }
        let c = Arc::new(self.settings.admin_consumer("orders-lag", group)?);
        groups.insert(group.to_owned(), c.clone());
        Ok(c)
    }

    /// The committed offset of `group` on each partition; `None` where it has committed
    /// nothing.
    pub fn committed(
        &self,
        group: &str,
        partitions: &[TopicPartition],
        timeout: Duration,
    ) -> Result<BTreeMap<TopicPartition, Option<i64>>, KafkaSetupError> {
        let consumer = self.group_client(group)?;
        let mut tpl = TopicPartitionList::new();
        for (topic, partition) in partitions {
            tpl.add_partition(topic, *partition);
        }
        let committed = consumer.committed_offsets(tpl, timeout)?;
        Ok(committed
            .elements()
            .iter()
            .map(|e| {
                let offset = match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                };
                ((e.topic().to_owned(), e.partition()), offset)
            })
            .collect())
    }

    /// The low and high watermarks of each partition.
    pub fn watermarks(
        &self,
        partitions: &[TopicPartition],
        timeout: Duration,
    ) -> Result<BTreeMap<TopicPartition, (i64, i64)>, KafkaSetupError> {
        partitions
            .iter()
            .map(|(topic, partition)| {
                let marks = self.metadata.fetch_watermarks(topic, *partition, timeout)?;
                Ok(((topic.clone(), *partition), marks))
            })
            .collect()
    }

    /// The timestamp (milliseconds since the Unix epoch) of the first record at or after
    /// each given offset. Partitions whose record did not arrive within `timeout` are left
    /// out of the answer.
    pub fn record_timestamps(
        &self,
        at: &[(TopicPartition, i64)],
        timeout: Duration,
    ) -> Result<BTreeMap<TopicPartition, i64>, KafkaSetupError> {
        let mut found = BTreeMap::new();
        if at.is_empty() {
            return Ok(found);
        }
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), offset) in at {
            tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
        }
        self.records.assign(&tpl)?;
        let deadline = std::time::Instant::now() + timeout;
        while found.len() < at.len() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            match self.records.poll(left) {
                Some(Ok(m)) => {
                    if let Some(ms) = m.timestamp().to_millis() {
                        found
                            .entry((m.topic().to_owned(), m.partition()))
                            .or_insert(ms);
                    }
                }
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "lag reader: fetch error");
                }
                None => break,
            }
        }
        self.records.unassign()?;
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(c: &ClientConfig, k: &str) -> Option<String> {
        c.get(k).map(str::to_owned)
    }

    #[test]
    fn plaintext_without_credentials() {
        let args = KafkaArgs {
            kafka_bootstrap_servers: Some("localhost:9092".into()),
            ..KafkaArgs::default()
        };
        let s = KafkaSettings::from_args(&args).unwrap().unwrap();
        let c = s.consumer_config("t", "fraud-group");
        assert_eq!(get(&c, "security.protocol").as_deref(), Some("PLAINTEXT"));
        assert_eq!(get(&c, "sasl.username"), None);
        assert_eq!(
            get(&c, "enable.auto.offset.store").as_deref(),
            Some("false")
        );
        assert_eq!(get(&c, "group.id").as_deref(), Some("fraud-group"));
    }

    #[test]
    fn sasl_ssl_plain_with_credentials_and_no_secret_in_debug() {
        let args = KafkaArgs {
            kafka_bootstrap_servers: Some("pkc-1.confluent.cloud:9092".into()),
            confluent_api_key: Some(Secret::new("API-KEY-X")),
            confluent_api_secret: Some(Secret::new("API-SECRET-Y")),
            topic_name: "orders".into(),
        };
        let s = KafkaSettings::from_args(&args).unwrap().unwrap();
        let c = s.producer_config("t");
        assert_eq!(get(&c, "security.protocol").as_deref(), Some("SASL_SSL"));
        assert_eq!(get(&c, "sasl.mechanisms").as_deref(), Some("PLAIN"));
        assert_eq!(get(&c, "sasl.username").as_deref(), Some("API-KEY-X"));
        assert_eq!(get(&c, "sasl.password").as_deref(), Some("API-SECRET-Y"));
        assert_eq!(get(&c, "acks").as_deref(), Some("all"));
        let in_flight = |c: &ClientConfig| get(c, "max.in.flight.requests.per.connection");
        assert_eq!(in_flight(&c).as_deref(), Some("5"));
        let embedded = embedded_settings("127.0.0.1:1").producer_config("t");
        assert_eq!(in_flight(&embedded).as_deref(), Some("1"));
        let dump = format!("{s:?} {args:?}");
        assert!(
            !dump.contains("API-SECRET-Y") && !dump.contains("API-KEY-X"),
            "{dump}"
        );
    }

    #[test]
    fn half_credentials_are_an_error() {
        let args = KafkaArgs {
            kafka_bootstrap_servers: Some("x:9092".into()),
            confluent_api_key: Some(Secret::new("k")),
            ..KafkaArgs::default()
        };
        assert!(matches!(
            KafkaSettings::from_args(&args),
            Err(KafkaSetupError::HalfCredentials)
        ));
    }

    #[test]
    fn no_bootstrap_means_local_mode() {
        assert!(KafkaSettings::from_args(&KafkaArgs::default())
            .unwrap()
            .is_none());
    }

    #[test]
    fn sasl_config_is_accepted_by_librdkafka() {
        // Creating the client validates every property name and value (needs TLS support
        // compiled in), without connecting.
        let s = KafkaSettings {
            sasl: Some(SaslPlain {
                username: Secret::new("k"),
                password: Secret::new("s"),
            }),
            ..KafkaSettings::plaintext("127.0.0.1:1")
        };
        let p: Result<rdkafka::producer::BaseProducer, _> = s.producer_config("t").create();
        assert!(p.is_ok(), "{:?}", p.err());
        let c: Result<BaseConsumer, _> = s.consumer_config("t", "g").create();
        assert!(c.is_ok(), "{:?}", c.err());
    }

    #[test]
    fn lag_reader_sees_offsets_watermarks_and_record_times() {
        use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
        let broker = EmbeddedBroker::start(&pipeline_topics("orders")).unwrap();
        let s = broker.settings();
        let reader = LagReader::new(&s).unwrap();
        let timeout = Duration::from_secs(10);
        reader.ping("orders", timeout).unwrap();
        assert!(matches!(
            reader.ping("no-such-topic", timeout),
            Err(KafkaSetupError::MissingTopic(_))
        ));
        let parts = reader.partitions(&["orders", "payments"], timeout).unwrap();
        assert_eq!(parts.len(), 12);
        assert!(matches!(
            reader.partitions(&["orders", "no-such-topic"], timeout),
            Err(KafkaSetupError::MissingTopic(t)) if t == "no-such-topic"
        ));
        assert_eq!(parts[0], ("orders".to_owned(), 0));

        let producer: BaseProducer = s.producer_config("t").create().unwrap();
        for (i, ts) in [1_700_000_000_000_i64, 1_700_000_001_000, 1_700_000_002_000]
            .into_iter()
            .enumerate()
        {
            producer
                .send(
                    BaseRecord::to("orders")
                        .partition(2)
                        .key(&i.to_string())
                        .payload("{}")
                        .timestamp(ts),
                )
                .unwrap();
        }
        producer.flush(timeout).unwrap();

        let marks = reader.watermarks(&parts, timeout).unwrap();
        assert_eq!(marks[&("orders".to_owned(), 2)], (0, 3));
        assert_eq!(marks[&("orders".to_owned(), 1)], (0, 0));
        let committed = reader.committed(FRAUD_GROUP, &parts, timeout).unwrap();
        assert_eq!(committed.len(), 12);
        assert!(committed.values().all(Option::is_none));

        let p2 = ("orders".to_owned(), 2);
        let times = reader
            .record_timestamps(&[(p2.clone(), 1)], timeout)
            .unwrap();
        assert_eq!(times.get(&p2), Some(&1_700_000_001_000));
        // The reader can be used again for another offset.
        let times = reader
            .record_timestamps(&[(p2.clone(), 2)], timeout)
            .unwrap();
        assert_eq!(times.get(&p2), Some(&1_700_000_002_000));
    }

    #[test]
    fn embedded_broker_reports_topics_and_missing_ones() {
        let broker = EmbeddedBroker::start(&pipeline_topics("orders")).unwrap();
        let s = broker.settings();
        s.ensure_topics(
            &["orders", "payments", "orders.dlq"],
            Duration::from_secs(10),
        )
        .unwrap();
        let err = s
            .ensure_topics(&["no-such-topic"], Duration::from_secs(10))
            .unwrap_err();
        assert!(err.to_string().contains("no-such-topic"), "{err}");
        let lag = consumer_lag(&s, FRAUD_GROUP, &["orders"], Duration::from_secs(10)).unwrap();
        assert_eq!(lag.partitions.len(), 6);
        assert_eq!(lag.total(), 0);
    }
}
