//! Consumer lag: a background sampler reads the groups' committed offsets, the partitions'
//! watermarks and the age of the oldest unconsumed record every second or two, keeps a
//! sliding window of samples, and judges each group over it (see [`crate::lag_status`]).
//!
//! Requests never talk to Kafka for lag: they read the latest sample.

use crate::lag_status::{self, GroupSample, LagStatus, Verdict};
use orders_core::kafka::{
    KafkaSettings, KafkaSetupError, LagReader, TopicPartition, ANALYTICS_GROUP, FRAUD_ALERTS_TOPIC,
    FRAUD_GROUP, PAYMENTS_GROUP, PAYMENTS_TOPIC,
};
use orders_core::lag::{ConsumerLag, PartitionLag};
use orders_core::Timestamp;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How often to sample and how much history to judge from.
#[derive(Debug, Clone)]
pub struct LagOptions {
    pub interval: Duration,
    /// Samples kept (the sliding window).
    pub window: usize,
    /// Bound on each Kafka request of a sample.
    pub kafka_timeout: Duration,
}

impl Default for LagOptions {
    fn default() -> Self {
        LagOptions {
            interval: Duration::from_millis(1500),
            window: 10,
            kafka_timeout: Duration::from_secs(5),
        }
    }
}

/// One group in one sample, with its status judged over the window ending here.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupLagSample {
    pub lag: ConsumerLag,
    pub verdict: Verdict,
}

/// Every watched group at one moment.
///
/// Reading order within a sample (relied on by [`LagMonitor::fraud_cleared`]): the
/// committed offsets of `fraud-group` and `payments-group` first, then the watermarks,
/// then the committed offsets of `analytics-group`.
#[derive(Debug, Clone, PartialEq)]
pub struct LagSnapshot {
    pub taken_at: Timestamp,
    pub groups: Vec<GroupLagSample>,
    /// Samples in the window this snapshot's verdicts were judged over, and its span.
    pub window_samples: usize,
    pub window_span_seconds: f64,
}

impl LagSnapshot {
    pub fn group(&self, group: &str) -> Option<&GroupLagSample> {
        self.groups.iter().find(|g| g.lag.group == group)
    }

    fn as_group_sample(&self, group: &str) -> Option<GroupSample<'_>> {
        self.group(group).map(|g| GroupSample {
            at_ms: self.taken_at.micros() / 1000,
            lag: &g.lag,
        })
    }
}

/// Why lag is not available.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LagUnavailable {
    #[error("no lag sample yet")]
    NotSampled,
    #[error("Kafka did not answer the last lag sample: {0}")]
    Kafka(String),
    #[error("the latest lag sample is {0:.0} s old")]
    Stale(f64),
}

#[derive(Default)]
struct History {
    samples: VecDeque<Arc<LagSnapshot>>,
    /// The error of the latest attempt, when it failed.
    last_error: Option<String>,
}

/// How long one sample may spend reading the oldest unconsumed records' times (all
/// groups together); what is not read by then is reported as unknown.
const TIMESTAMPS_BUDGET: Duration = Duration::from_secs(2);

/// The groups watched and the topics each reads.
fn watched(orders_topic: &str) -> Vec<(&'static str, Vec<String>)> {
    vec![
        (FRAUD_GROUP, vec![orders_topic.to_owned()]),
        (PAYMENTS_GROUP, vec![orders_topic.to_owned()]),
        (
            ANALYTICS_GROUP,
            vec![
                orders_topic.to_owned(),
                FRAUD_ALERTS_TOPIC.to_owned(),
                PAYMENTS_TOPIC.to_owned(),
            ],
        ),
    ]
}

/// The sampler and its window.
pub struct LagMonitor {
    settings: KafkaSettings,
    orders_topic: String,
    options: LagOptions,
    reader: Mutex<Option<Arc<LagReader>>>,
    history: RwLock<History>,
    /// Counts finished sampling attempts, so a request can wait for the first.
    attempts: watch::Sender<u64>,
}

impl LagMonitor {
    pub fn new(settings: KafkaSettings, orders_topic: String, options: LagOptions) -> Self {
        LagMonitor {
            settings,
            orders_topic,
            options: LagOptions {
                window: options.window.max(1),
                ..options
            },
            reader: Mutex::new(None),
            history: RwLock::new(History::default()),
            attempts: watch::channel(0).0,
        }
    }

    pub fn orders_topic(&self) -> &str {
        &self.orders_topic
    }

    pub fn options(&self) -> &LagOptions {
        &self.options
    }

    fn reader(&self) -> Result<Arc<LagReader>, KafkaSetupError> {
        let mut guard = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = guard.as_ref() {
            return Ok(r.clone());
        }
        let r = Arc::new(LagReader::new(&self.settings)?);
        *guard = Some(r.clone());
        Ok(r)
    }

    /// Asks Kafka for the orders topic's metadata. Blocking.
    pub fn ping_blocking(&self, timeout: Duration) -> Result<(), KafkaSetupError> {
        self.reader()?.ping(&self.orders_topic, timeout)
    }

    /// Reads one sample from Kafka: each group's lag, before it is judged. Blocking.
    fn read_sample(&self) -> Result<Vec<ConsumerLag>, KafkaSetupError> {
        let reader = self.reader()?;
        let timeout = self.options.kafka_timeout;
        let groups = watched(&self.orders_topic);
        let all_topics: Vec<&str> = groups
            .iter()
            .flat_map(|(_, t)| t.iter().map(String::as_str))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let partitions = reader.partitions(&all_topics, timeout)?;
        let of_topics = |topics: &[String]| -> Vec<TopicPartition> {
            partitions
                .iter()
                .filter(|(t, _)| topics.contains(t))
                .cloned()
                .collect()
        };
        // Order matters: see `LagSnapshot`.
        let mut committed: BTreeMap<&str, BTreeMap<TopicPartition, Option<i64>>> = BTreeMap::new();
        for (group, topics) in groups.iter().filter(|(g, _)| *g != ANALYTICS_GROUP) {
            committed.insert(group, reader.committed(group, &of_topics(topics), timeout)?);
        }
        let marks = reader.watermarks(&partitions, timeout)?;
        for (group, topics) in groups.iter().filter(|(g, _)| *g == ANALYTICS_GROUP) {
            committed.insert(group, reader.committed(group, &of_topics(topics), timeout)?);
        }

        let now_ms = Timestamp::now().micros() / 1000;
        let timestamps_started = std::time::Instant::now();
        let mut out = Vec::new();
        for (group, topics) in groups {
            let group_committed = committed.remove(group).unwrap_or_default();
            let partitions: Vec<PartitionLag> = of_topics(&topics)
                .into_iter()
                .map(|tp| {
                    let (low, high) = marks.get(&tp).copied().unwrap_or((0, 0));
                    let c = group_committed.get(&tp).copied().flatten();
                    PartitionLag::new(tp.0, tp.1, c, low, high)
                })
                .collect();
            // The oldest record a lagging group has yet to read is the one at its next offset.
            let oldest_wanted: Vec<(TopicPartition, i64)> = partitions
                .iter()
                .filter(|p| p.lag > 0)
                .map(|p| ((p.topic.clone(), p.partition), p.next_offset()))
                .collect();
            let mut lag = ConsumerLag {
                group: group.to_owned(),
                topics,
                partitions,
            };
            if !oldest_wanted.is_empty() {
                // A missing timestamp leaves `lag_seconds` unknown; it does not fail the sample.
                let budget = TIMESTAMPS_BUDGET.saturating_sub(timestamps_started.elapsed());
                match reader.record_timestamps(&oldest_wanted, budget) {
                    Ok(times) => {
                        if times.len() < oldest_wanted.len() {
                            tracing::debug!(
                                group,
                                wanted = oldest_wanted.len(),
                                found = times.len(),
                                "some oldest records not read in time"
                            );
                        }
                        for p in lag.partitions.iter_mut().filter(|p| p.lag > 0) {
                            if let Some(ms) = times.get(&(p.topic.clone(), p.partition)) {
                                p.lag_seconds = Some((now_ms - ms).max(0) as f64 / 1000.0);
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(group, error = %e, "cannot read the oldest records' times")
                    }
                }
            }
            out.push(lag);
        }
        Ok(out)
    }

    /// Takes one sample and adds it to the window (or records why it failed). Blocking.
    pub fn sample_blocking(&self) {
        let taken_at = Timestamp::now();
        let result = self.read_sample();
        {
            let mut history = self.history.write().unwrap_or_else(|e| e.into_inner());
            match result {
                Ok(groups) => {
                    let mut snapshot = LagSnapshot {
                        taken_at,
                        groups: groups
                            .into_iter()
                            .map(|lag| GroupLagSample {
                                lag,
                                verdict: Verdict {
                                    status: LagStatus::Ok,
                                    reason: String::new(),
                                },
                            })
                            .collect(),
                        window_samples: 0,
                        window_span_seconds: 0.0,
                    };
                    while history.samples.len() >= self.options.window {
                        history.samples.pop_front();
                    }
                    let first_at = history
                        .samples
                        .front()
                        .map_or(taken_at.micros(), |s| s.taken_at.micros());
                    snapshot.window_samples = history.samples.len() + 1;
                    snapshot.window_span_seconds =
                        (taken_at.micros() - first_at).max(0) as f64 / 1e6;
                    let names: Vec<String> = snapshot
                        .groups
                        .iter()
                        .map(|g| g.lag.group.clone())
                        .collect();
                    for name in names {
                        let mut window: Vec<GroupSample> = history
                            .samples
                            .iter()
                            .filter_map(|s| s.as_group_sample(&name))
                            .collect();
                        window.extend(snapshot.as_group_sample(&name));
                        let verdict = lag_status::evaluate(&window);
                        if let Some(g) = snapshot.groups.iter_mut().find(|g| g.lag.group == name) {
                            g.verdict = verdict;
                        }
                    }
                    history.samples.push_back(Arc::new(snapshot));
                    history.last_error = None;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "lag sample failed");
                    history.last_error = Some(e.to_string());
                }
            }
        }
        self.attempts.send_modify(|n| *n += 1);
    }

    /// Samples every `interval` until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.options.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            let me = self.clone();
            // Awaited even on shutdown (each request is bounded): a sample still running
            // holds Kafka clients that must not outlive the broker they talk to, which
            // in `ordersctl up` goes right after the API.
            let sample = tokio::task::spawn_blocking(move || me.sample_blocking());
            if let Err(e) = sample.await {
                tracing::error!(error = %e, "lag sampler task failed");
            }
        }
    }

    /// The latest sample, if it is recent and the latest attempt succeeded.
    pub fn latest(&self) -> Result<Arc<LagSnapshot>, LagUnavailable> {
        let history = self.history.read().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = &history.last_error {
            return Err(LagUnavailable::Kafka(e.clone()));
        }
        let latest = history
            .samples
            .back()
            .cloned()
            .ok_or(LagUnavailable::NotSampled)?;
        let age = (Timestamp::now().micros() - latest.taken_at.micros()) as f64 / 1e6;
        // A sample makes several requests, each bounded by `kafka_timeout`.
        let limit = (self.options.interval * 3 + self.options.kafka_timeout * 3).as_secs_f64();
        if age > limit {
            return Err(LagUnavailable::Stale(age));
        }
        Ok(latest)
    }

    /// The latest sample, waiting up to `wait` for the first attempt when none was made.
    pub async fn latest_or_wait(&self, wait: Duration) -> Result<Arc<LagSnapshot>, LagUnavailable> {
        let mut attempts = self.attempts.subscribe();
        if *attempts.borrow_and_update() == 0 {
            let _ = tokio::time::timeout(wait, attempts.changed()).await;
        }
        self.latest()
    }

    /// Every sample of the window, oldest first.
    pub fn window(&self) -> Vec<Arc<LagSnapshot>> {
        let history = self.history.read().unwrap_or_else(|e| e.into_inner());
        history.samples.iter().cloned().collect()
    }

    /// Whether the window proves that the fraud service passed `offset` of `partition` of
    /// the orders topic *and* that any alert it raised for it is already in the store:
    /// in some sample the fraud group's committed offset is past the order, and in that
    /// sample or a later one the analytics group has committed past every fraud alert that
    /// existed then (the sample read the fraud group's offsets before the watermarks, and
    /// the fraud service produces an alert before committing past its order).
    pub fn fraud_cleared(&self, partition: i32, offset: i64) -> bool {
        let window = self.window();
        let anchor = window.iter().position(|s| {
            s.group(FRAUD_GROUP)
                .and_then(|g| g.lag.partition(&self.orders_topic, partition))
                .is_some_and(|p| p.has_passed(offset))
        });
        let Some(anchor) = anchor else { return false };
        let Some(alerts_then) = window[anchor].group(ANALYTICS_GROUP) else {
            return false;
        };
        let marks: Vec<(i32, i64)> = alerts_then
            .lag
            .partitions
            .iter()
            .filter(|p| p.topic == FRAUD_ALERTS_TOPIC)
            .map(|p| (p.partition, p.high_watermark))
            .collect();
        if marks.is_empty() {
            return false;
        }
        window[anchor..].iter().any(|s| {
            let Some(analytics) = s.group(ANALYTICS_GROUP) else {
                return false;
            };
            marks.iter().all(|(partition, high)| {
                analytics
                    .lag
                    .partition(FRAUD_ALERTS_TOPIC, *partition)
                    .is_some_and(|p| p.next_offset() >= *high)
            })
        })
    }
}
