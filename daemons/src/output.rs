//! Producing records whose delivery must be confirmed before an input offset is stored.

use futures::future::join_all;
use orders_core::kafka::KafkaSettings;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// One record to produce.
#[derive(Debug, Clone)]
pub struct OutRecord {
    pub topic: String,
    pub key: String,
    pub payload: Vec<u8>,
    pub headers: Option<OwnedHeaders>,
}

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("shut down before delivery was confirmed")]
    Cancelled,
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
}

/// A producer whose every send is confirmed by the broker (acks=all, idempotent).
#[derive(Clone)]
pub struct Output {
    producer: FutureProducer,
}

impl Output {
    pub fn new(settings: &KafkaSettings, client_id: &str) -> Result<Self, KafkaError> {
        Ok(Output {
            producer: settings.producer_config(client_id).create()?,
        })
    }

    pub fn producer(&self) -> &FutureProducer {
        &self.producer
    }

    /// Hands one record to librdkafka, waiting while its queue is full.
    pub async fn enqueue(
        &self,
        record: &OutRecord,
        shutdown: &CancellationToken,
    ) -> Result<DeliveryFuture, OutputError> {
        let mut backoff = Duration::from_micros(200);
        loop {
            let mut fr = FutureRecord::to(&record.topic)
                .key(record.key.as_bytes())
                .payload(record.payload.as_slice());
            if let Some(h) = &record.headers {
                fr = fr.headers(h.clone());
            }
            match self.producer.send_result(fr) {
                Ok(delivery) => return Ok(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    if shutdown.is_cancelled() {
                        return Err(OutputError::Cancelled);
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(50));
                }
                Err((e, _)) => return Err(OutputError::Kafka(e)),
            }
        }
    }

    /// Produces every record and returns once the broker has acknowledged all of them.
    /// Failed deliveries are retried with backoff until they succeed or `shutdown` fires.
    pub async fn send_all(
        &self,
        records: &[OutRecord],
        shutdown: &CancellationToken,
    ) -> Result<(), OutputError> {
        let mut todo: Vec<&OutRecord> = records.iter().collect();
        let mut backoff = Duration::from_millis(100);
        while !todo.is_empty() {
            let mut pending = Vec::with_capacity(todo.len());
            for r in &todo {
                pending.push(self.enqueue(r, shutdown).await?);
            }
            let results = join_all(pending).await;
            let mut failed = Vec::new();
            for (r, result) in todo.into_iter().zip(results) {
                match result {
                    Ok(Ok(_)) => {}
                    Ok(Err((e, _))) => {
                        tracing::warn!(topic = %r.topic, key = %r.key, error = %e, "delivery failed; retrying");
                        failed.push(r);
                    }
                    Err(_) => {
                        tracing::warn!(topic = %r.topic, key = %r.key, "delivery cancelled; retrying");
                        failed.push(r);
                    }
                }
            }
            todo = failed;
            if !todo.is_empty() {
                tokio::select! {
                    _ = shutdown.cancelled() => return Err(OutputError::Cancelled),
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
        Ok(())
    }

    /// Waits for everything queued to be delivered, up to `timeout`.
    pub fn flush(&self, timeout: Duration) {
        if let Err(e) = self.producer.flush(timeout) {
            tracing::warn!(error = %e, "flush on shutdown did not complete");
        }
    }
}
