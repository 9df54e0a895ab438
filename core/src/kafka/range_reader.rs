//! The range reader: reads records of partitions between given offsets, for the audit and
//! the dead-letter commands.

use super::{close_in_background, KafkaSettings};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::time::Duration;

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
