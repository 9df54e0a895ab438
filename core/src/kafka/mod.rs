//! Kafka setup: client settings for PLAINTEXT or SASL_SSL, the embedded broker
//! (librdkafka's mock cluster), the range reader, topic checks and consumer lag. Each job
//! is a module of its own; everything is re-exported here, so callers name
//! `orders_core::kafka::Item`. Topic and group names live in [`crate::topology`] and are
//! re-exported too.

mod close;
mod embedded;
mod error;
mod lag_reader;
mod range_reader;
mod settings;

pub use crate::topology::{
    dlq_handled_topic, dlq_topic, operator_topics, pipeline_topics, ANALYTICS_GROUP,
    ANALYTICS_TOPIC, FRAUD_ALERTS_TOPIC, FRAUD_GROUP, ORDER_GROUPS, PAYMENTS_GROUP, PAYMENTS_TOPIC,
};
pub use close::close_in_background;
pub use embedded::{embedded_settings, BrokerFault, EmbeddedBroker};
pub use error::KafkaSetupError;
pub use lag_reader::{consumer_lag, LagReader, TopicPartition};
pub use range_reader::{RangeReadError, RangeReader};
pub use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
pub use settings::{KafkaSettings, SaslPlain};
