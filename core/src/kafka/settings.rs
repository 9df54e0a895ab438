//! Client settings: how to reach Kafka (PLAINTEXT or SASL_SSL), the configurations of
//! the producer, group consumer, range reader and admin clients, and the topic check.

use super::KafkaSetupError;
use crate::client_log::ClientLog;
use crate::config::{KafkaArgs, Secret};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::ClientConfig;
use std::time::Duration;

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
            // A backstop: every producer of the pipeline bounds what it has unanswered
            // (the producer daemon 10,000 orders, the consumers their in-flight records),
            // so librdkafka's queue never needs the 500,000 records and 1 GiB it allowed.
            .set("queue.buffering.max.messages", "100000")
            .set("queue.buffering.max.kbytes", "65536")
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
            // that in its own structures: 85 MB of analytics' 170 MB peak). Each queued record
            // costs a fetch op of its own (about 200 bytes) beside its share of the
            // decompressed batch: 10,000 queued records were 7.5 MB of a consumer's C heap
            // (heaptrack). 2,000 records (about 22 ms of work at 90,000 orders/s) or 1 MiB
            // still cover many fetch round trips at full speed; the queue is topped up again
            // 5 ms after it drains below that, not after librdkafka's default 1 s. A fetch may
            // overshoot the bound by one response: at most 256 KiB per partition instead of
            // the default 1 MiB (BENCHMARKS.md).
            .set("queued.min.messages", "2000")
            .set("queued.max.messages.kbytes", "1024")
            .set("max.partition.fetch.bytes", "262144")
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::embedded_settings;

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
}
