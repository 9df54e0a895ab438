//! Reading consumer lag from the cluster: a group's committed offsets against the
//! partitions' watermarks, once ([`consumer_lag`]) or sampled again and again ([`LagReader`]).

use super::{KafkaSettings, KafkaSetupError};
use crate::client_log::ClientLog;
use crate::lag::{ConsumerLag, PartitionLag};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

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
    use crate::kafka::{pipeline_topics, EmbeddedBroker, FRAUD_GROUP};

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
}
