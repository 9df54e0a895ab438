//! Why setting up a Kafka client, the embedded broker or a lag reading failed.

use rdkafka::error::KafkaError;

/// Why setting up Kafka failed.
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
