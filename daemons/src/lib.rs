//! The daemons of the orders pipeline — producer, fraud, payment, analytics — each an
//! `async fn run(config, deps, shutdown)`, and the embedded pipeline that runs them all in
//! one process on the embedded broker and store.

pub mod analytics;
pub mod cli;
pub mod confirmed_producer;
pub mod consumer_loop;
pub mod fraud;
pub mod healthcheck;
pub mod ingest;
pub mod local_pipeline;
pub mod payment;
pub mod producer;
pub mod signals;

pub use orders_core::progress;

use orders_core::kafka::KafkaSetupError;
use orders_core::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Setup(#[from] KafkaSetupError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Consume(#[from] consumer_loop::ConsumeError),
    #[error(transparent)]
    Produce(#[from] confirmed_producer::ProduceError),
    #[error(transparent)]
    Read(#[from] orders_core::kafka::RangeReadError),
    #[error("task failed: {0}")]
    Task(String),
    #[error("order ids are exhausted: the highest id in use is {0}")]
    IdsExhausted(u64),
}
