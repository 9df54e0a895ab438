//! Producing records whose delivery must be confirmed before an input offset is stored.
//!
//! Records are sent in batches: every record of a batch carries a shared counter as its
//! delivery opaque, the delivery callback counts it down and keeps any refused record, and
//! the batch's waiter wakes once, when the last answer arrives. That costs a reference
//! count per record instead of a channel, a boxed future and a wake-up per record.

use orders_core::client_log::ClientLog;
use orders_core::kafka::KafkaSettings;
use orders_core::liveness::{Wait, Waiting};
use orders_core::progress::Progress;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::Message;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// One record to produce.
#[derive(Debug, Clone)]
pub struct OutRecord {
    pub topic: String,
    /// Empty means no key (Kafka's null key), as the totals record on `order-analytics`
    /// has, and a dead letter of a record that had none.
    pub key: String,
    pub payload: Vec<u8>,
    pub headers: Option<OwnedHeaders>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    #[error("shut down before delivery was confirmed")]
    Cancelled,
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// The broker refused a record for a reason sending it again cannot change.
    #[error(
        "Kafka refused a record for good (topic {topic}, key {key}): {error}; not retried, \
         the same record would be refused again"
    )]
    Rejected {
        topic: String,
        key: String,
        error: RDKafkaErrorCode,
    },
}

/// Errors the broker (or librdkafka) gives again for the same record however often it is
/// sent: sending again would loop forever, so they stop the daemon instead. Every other
/// delivery error (a timeout while the cluster is unreachable, say) is retried.
pub fn is_permanent(error: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        error,
        MessageSizeTooLarge
            | InvalidRecord
            | InvalidTopic
            | UnknownTopic
            | PolicyViolation
            | TopicAuthorizationFailed
            | ClusterAuthorizationFailed
            | TransactionalIdAuthorizationFailed
            | SaslAuthenticationFailed
            | Authentication
            | Fatal
    )
}

/// The broker's answers for one batch, as they arrive.
#[derive(Debug)]
struct Batch {
    /// Records not yet answered, plus one while the batch is still being sent (an error
    /// while sending abandons the batch: nobody waits for it then).
    unanswered: AtomicUsize,
    refused: Mutex<Refused>,
    answered: Notify,
}

/// What the broker refused of a batch.
#[derive(Debug, Default)]
struct Refused {
    /// Worth sending again.
    retry: Vec<OutRecord>,
    /// The first error among them, for the one log line a batch gets.
    first_error: Option<KafkaError>,
    /// The first record refused for good, if any.
    rejected: Option<(OutRecord, RDKafkaErrorCode)>,
}

impl Batch {
    fn answer(&self) {
        if self.unanswered.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.answered.notify_one();
        }
    }
}

/// Counts delivery reports down on their batch.
struct BatchAcks {
    log: Arc<ClientLog>,
}

impl ClientContext for BatchAcks {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        self.log.log(level, fac, message);
    }
    fn error(&self, error: KafkaError, reason: &str) {
        self.log.error(error, reason);
    }
}

impl ProducerContext for BatchAcks {
    type DeliveryOpaque = Arc<Batch>;

    fn delivery(&self, result: &DeliveryResult<'_>, batch: Arc<Batch>) {
        if let Err((error, m)) = result {
            // No log line here: a cluster outage fails every queued record at once, and the
            // batch's owner logs one line for all of them.
            let record = OutRecord {
                topic: m.topic().to_owned(),
                key: m
                    .key()
                    .map(|k| String::from_utf8_lossy(k).into_owned())
                    .unwrap_or_default(),
                payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                headers: m.headers().map(|h| h.detach()),
            };
            let mut refused = match batch.refused.lock() {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            };
            match error.rdkafka_error_code() {
                Some(code) if is_permanent(code) => {
                    if refused.rejected.is_none() {
                        refused.rejected = Some((record, code));
                    }
                }
                _ => {
                    if refused.first_error.is_none() {
                        refused.first_error = Some(error.clone());
                    }
                    refused.retry.push(record);
                }
            }
        }
        batch.answer();
    }
}

/// Records handed to librdkafka; resolves once the broker has answered for each.
#[derive(Debug)]
#[must_use = "dropping it leaves the batch's outcome unknown"]
pub struct Pending {
    batch: Arc<Batch>,
    log: Arc<ClientLog>,
    /// Marks the wait for the broker's answers, for /healthz, while this lives.
    _waiting: Option<Waiting>,
    progress: Option<Arc<Progress>>,
}

impl Pending {
    /// Waits for every answer; returns the records the broker refused but may take on
    /// another try, or the error when it refused one for good.
    pub async fn refused(self) -> Result<Vec<OutRecord>, ProduceError> {
        while self.batch.unanswered.load(Ordering::Acquire) != 0 {
            // `notify_one` keeps a permit when nobody waits yet, so no answer is missed
            // between the check and the wait.
            self.batch.answered.notified().await;
        }
        let refused = match self.batch.refused.lock() {
            Ok(mut refused) => std::mem::take(&mut *refused),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        };
        if let Some(p) = &self.progress {
            let errors = refused.retry.len() + usize::from(refused.rejected.is_some());
            p.produce_errors.fetch_add(errors as u64, Ordering::Relaxed);
        }
        if let Some((record, error)) = refused.rejected {
            return Err(ProduceError::Rejected {
                topic: record.topic,
                key: record.key,
                error,
            });
        }
        if let Some(error) = &refused.first_error {
            // Once per 30 s per producer: during an outage every small batch fails alike.
            if let Some(repeated) = self.log.admit("delivery-failed") {
                tracing::warn!(
                    client = self.log.client(),
                    records = refused.retry.len(),
                    first_topic = %refused.retry.first().map(|r| r.topic.as_str()).unwrap_or_default(),
                    %error,
                    repeated,
                    "delivery failed; these records will be sent again"
                );
            }
        }
        Ok(refused.retry)
    }
}

/// A producer whose every send is confirmed by the broker (acks=all, idempotent).
#[derive(Clone)]
pub struct ConfirmedProducer {
    producer: Arc<ThreadedProducer<BatchAcks>>,
    /// Where errors, retries and waits are counted, when given.
    progress: Option<Arc<Progress>>,
}

impl ConfirmedProducer {
    pub fn new(settings: &KafkaSettings, client_id: &str) -> Result<Self, KafkaError> {
        Self::with_properties(settings, client_id, &[])
    }

    /// [`new`](Self::new), with librdkafka properties set over the pipeline's producer
    /// settings (`extra`, in order).
    pub fn with_properties(
        settings: &KafkaSettings,
        client_id: &str,
        extra: &[(String, String)],
    ) -> Result<Self, KafkaError> {
        let mut config = settings.producer_config(client_id);
        for (key, value) in extra {
            config.set(key, value);
        }
        Ok(ConfirmedProducer {
            producer: Arc::new(config.create_with_context(BatchAcks {
                log: Arc::new(ClientLog::new(client_id)),
            })?),
            progress: None,
        })
    }

    /// Counts produce errors and retries in `progress`, and marks each wait for the
    /// broker's answers in its liveness.
    pub fn with_progress(mut self, progress: Arc<Progress>) -> Self {
        self.progress = Some(progress);
        self
    }

    /// Hands every record to librdkafka, waiting while its queue is full.
    pub async fn send(
        &self,
        records: &[OutRecord],
        shutdown: &CancellationToken,
    ) -> Result<Pending, ProduceError> {
        let batch = Arc::new(Batch {
            unanswered: AtomicUsize::new(records.len() + 1),
            refused: Mutex::new(Refused::default()),
            answered: Notify::new(),
        });
        let pending = Pending {
            batch: batch.clone(),
            log: self.producer.context().log.clone(),
            _waiting: self
                .progress
                .as_ref()
                .map(|p| p.liveness.begin(Wait::Produce)),
            progress: self.progress.clone(),
        };
        for record in records {
            let mut base =
                BaseRecord::<[u8], [u8], _>::with_opaque_to(&record.topic, batch.clone())
                    .payload(record.payload.as_slice());
            if !record.key.is_empty() {
                base = base.key(record.key.as_bytes());
            }
            if let Some(h) = &record.headers {
                base = base.headers(h.clone());
            }
            let mut backoff = Duration::from_micros(200);
            loop {
                match self.producer.send(base) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        if shutdown.is_cancelled() {
                            return Err(ProduceError::Cancelled);
                        }
                        base = back;
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_millis(50));
                    }
                    Err((KafkaError::MessageProduction(code), _)) if is_permanent(code) => {
                        return Err(ProduceError::Rejected {
                            topic: record.topic.clone(),
                            key: record.key.clone(),
                            error: code,
                        })
                    }
                    Err((e, _)) => return Err(ProduceError::Kafka(e)),
                }
            }
        }
        // Everything is sent: the batch is complete once the broker has answered.
        batch.answer();
        Ok(pending)
    }

    /// Produces every record and returns once the broker has acknowledged all of them.
    /// Refused records are sent again with backoff until they succeed or `shutdown` fires.
    pub async fn send_all(
        &self,
        records: &[OutRecord],
        shutdown: &CancellationToken,
    ) -> Result<(), ProduceError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut refused = self.send(records, shutdown).await?.refused().await?;
        let mut backoff = Duration::from_millis(100);
        while !refused.is_empty() {
            tokio::select! {
                _ = shutdown.cancelled() => return Err(ProduceError::Cancelled),
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
            if let Some(p) = &self.progress {
                p.produce_retries
                    .fetch_add(refused.len() as u64, Ordering::Relaxed);
            }
            refused = self.send(&refused, shutdown).await?.refused().await?;
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
