//! The whole pipeline in one process on the embedded broker and the SQLite store: what
//! `ordersctl up`, `ordersctl bench` and the end-to-end tests run.

use crate::analytics::{self, AnalyticsConfig, AnalyticsDeps};
use crate::fraud::{self, FraudConfig, FraudDeps};
use crate::ingest::postgres::PostgresSource;
use crate::ingest::{self, IngestConfig, IngestDeps};
use crate::payment::{self, PaymentConfig, PaymentDeps};
use crate::producer::{self, ProducerConfig, ProducerDeps};
use crate::progress::Progress;
use crate::DaemonError;
use orders_core::fraud::FraudRules;
use orders_core::kafka::{
    consumer_lag, operator_topics, pipeline_topics, EmbeddedBroker, KafkaSettings, ANALYTICS_GROUP,
    FRAUD_ALERTS_TOPIC, FRAUD_GROUP, PAYMENTS_GROUP, PAYMENTS_TOPIC,
};
use orders_core::store::{OrderStore, SqliteStore};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// A role of the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Producer,
    Fraud,
    Payment,
    Analytics,
    /// Orders from a Postgres table (`ordersctl up --postgres`).
    Ingest,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Producer => "producer",
            Role::Fraud => "fraud",
            Role::Payment => "payment",
            Role::Analytics => "analytics",
            Role::Ingest => "ingest",
        }
    }

    /// The consumer group of a consuming role and the topics it reads.
    fn group(self, orders_topic: &str) -> Option<(&'static str, Vec<String>)> {
        match self {
            Role::Producer | Role::Ingest => None,
            Role::Fraud => Some((FRAUD_GROUP, vec![orders_topic.to_owned()])),
            Role::Payment => Some((PAYMENTS_GROUP, vec![orders_topic.to_owned()])),
            Role::Analytics => Some((
                ANALYTICS_GROUP,
                vec![
                    orders_topic.to_owned(),
                    FRAUD_ALERTS_TOPIC.to_owned(),
                    PAYMENTS_TOPIC.to_owned(),
                ],
            )),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// The SQLite file.
    pub store_path: PathBuf,
    pub orders_topic: String,
    /// `None`: no producer (orders come from elsewhere).
    pub producer: Option<ProducerConfig>,
    /// Orders from a Postgres table too (or instead), when set.
    pub ingest: Option<(IngestConfig, PostgresSource)>,
    pub payment: PaymentConfig,
    pub fraud_rules: FraudRules,
    /// How far the producer may run ahead of the slowest group.
    pub flow_window: u64,
    /// Which consumer roles to run.
    pub consumers: Vec<Role>,
    /// More topics to create on the broker.
    pub extra_topics: Vec<(String, i32)>,
    /// On stop, how long the consumers may take to finish what was produced.
    pub drain_grace: Duration,
    /// Brokers of the embedded cluster (faults tests use three).
    pub brokers: i32,
}

impl LocalOptions {
    pub fn new(store_path: PathBuf) -> Self {
        LocalOptions {
            store_path,
            orders_topic: "orders".into(),
            producer: None,
            ingest: None,
            payment: PaymentConfig::new("orders"),
            fraud_rules: FraudRules::default(),
            flow_window: 50_000,
            consumers: vec![Role::Fraud, Role::Payment, Role::Analytics],
            extra_topics: Vec::new(),
            drain_grace: Duration::from_secs(30),
            brokers: 1,
        }
    }
}

/// A running embedded pipeline.
pub struct LocalPipeline {
    /// `None` only once dropped.
    broker: Option<EmbeddedBroker>,
    pub store: Arc<SqliteStore>,
    pub progress: Arc<Progress>,
    /// Stops the consumers (and anything started with a child of it).
    shutdown: CancellationToken,
    /// Stops the producer, which stops first.
    producer_shutdown: CancellationToken,
    tasks: JoinSet<Result<(), DaemonError>>,
    /// The role of every task still running, so a panic is reported as its own.
    roles: HashMap<tokio::task::Id, Role>,
    orders_topic: String,
    drain_grace: Duration,
}

/// A daemon of the pipeline that failed.
#[derive(Debug, thiserror::Error)]
#[error("the {role} daemon failed: {error}")]
pub struct RoleFailed {
    pub role: Role,
    pub error: DaemonError,
}

/// Why a stop was not clean.
#[derive(Debug, thiserror::Error)]
pub enum StopError {
    #[error(transparent)]
    Failed(#[from] RoleFailed),
    /// The consumers had not finished when the grace period ended: in embedded mode those
    /// records are lost with the broker.
    #[error(
        "the consumers had {records} records left to process when the {grace:?} grace period \
         ended ({groups})"
    )]
    Undrained {
        records: i64,
        grace: Duration,
        groups: String,
    },
    /// A second shutdown request skipped the drain: what the consumers had not finished is
    /// lost with the embedded broker.
    #[error(
        "the drain was skipped (a second shutdown request): records the consumers had not \
         finished were not processed"
    )]
    DrainSkipped,
}

impl LocalPipeline {
    /// Starts the broker (topics created with the SPEC's partition counts), opens the
    /// store, and starts the chosen daemons.
    pub async fn start(options: LocalOptions) -> Result<Self, DaemonError> {
        let mut topics = pipeline_topics(&options.orders_topic);
        topics.extend(operator_topics(&options.orders_topic));
        topics.extend(options.extra_topics.iter().cloned());
        let brokers = options.brokers;
        let broker =
            tokio::task::spawn_blocking(move || EmbeddedBroker::start_cluster(&topics, brokers))
                .await
                .map_err(|e| DaemonError::Task(e.to_string()))??;
        let store = Arc::new(SqliteStore::open(&options.store_path)?);
        let mut pipeline = LocalPipeline {
            broker: Some(broker),
            store,
            progress: Arc::new(Progress::default()),
            shutdown: CancellationToken::new(),
            producer_shutdown: CancellationToken::new(),
            tasks: JoinSet::new(),
            roles: HashMap::new(),
            orders_topic: options.orders_topic.clone(),
            drain_grace: options.drain_grace,
        };
        for role in options.consumers.clone() {
            pipeline.spawn(role, &options);
        }
        if options.producer.is_some() {
            pipeline.spawn(Role::Producer, &options);
        }
        if options.ingest.is_some() {
            pipeline.spawn(Role::Ingest, &options);
        }
        Ok(pipeline)
    }

    fn track<F>(&mut self, role: Role, daemon: F)
    where
        F: std::future::Future<Output = Result<(), DaemonError>> + Send + 'static,
    {
        let handle = self.tasks.spawn(daemon);
        self.roles.insert(handle.id(), role);
    }

    /// Starts one more daemon of `role` on this pipeline (with its own shutdown token).
    /// A producer started here is stopped first by [`LocalPipeline::stop`] only through its
    /// own token; consumers are drained all the same.
    pub fn spawn_with(&mut self, role: Role, options: &LocalOptions, shutdown: CancellationToken) {
        let kafka = self.kafka();
        let progress = self.progress.clone();
        let store: Arc<dyn OrderStore> = self.store.clone();
        let topic = options.orders_topic.clone();
        match role {
            Role::Producer => {
                let Some(config) = options.producer.clone() else {
                    return;
                };
                let deps = ProducerDeps {
                    kafka,
                    store: Some(store),
                    progress,
                    flow_window: Some(options.flow_window),
                };
                self.track(role, async move {
                    producer::run(config, deps, shutdown).await.map(|_| ())
                });
            }
            Role::Fraud => {
                let config = FraudConfig {
                    orders_topic: topic,
                    rules: options.fraud_rules.clone(),
                };
                let deps = FraudDeps { kafka, progress };
                self.track(role, fraud::run(config, deps, shutdown));
            }
            Role::Payment => {
                let mut config = options.payment.clone();
                config.orders_topic = topic;
                let deps = PaymentDeps { kafka, progress };
                self.track(role, payment::run(config, deps, shutdown));
            }
            Role::Analytics => {
                let config = AnalyticsConfig {
                    orders_topic: topic,
                };
                let deps = AnalyticsDeps {
                    kafka,
                    store,
                    progress,
                };
                self.track(role, analytics::run(config, deps, shutdown));
            }
            Role::Ingest => {
                let Some((mut config, postgres)) = options.ingest.clone() else {
                    return;
                };
                config.orders_topic = topic;
                let deps = IngestDeps {
                    postgres,
                    kafka,
                    progress,
                };
                self.track(role, ingest::run(config, deps, shutdown));
            }
        }
    }

    fn spawn(&mut self, role: Role, options: &LocalOptions) {
        let token = match role {
            Role::Producer | Role::Ingest => self.producer_shutdown.clone(),
            _ => self.shutdown.child_token(),
        };
        self.spawn_with(role, options, token);
    }

    /// The embedded broker, for tests that inject faults into it.
    pub fn broker(&self) -> Option<&EmbeddedBroker> {
        self.broker.as_ref()
    }

    pub fn bootstrap_servers(&self) -> &str {
        self.broker
            .as_ref()
            .map(EmbeddedBroker::bootstrap_servers)
            .unwrap_or_default()
    }

    pub fn kafka(&self) -> KafkaSettings {
        orders_core::kafka::embedded_settings(self.bootstrap_servers())
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits for the next daemon to end (the producer ends after `--orders N`).
    pub async fn next_finished(&mut self) -> Option<(Role, Result<(), DaemonError>)> {
        let joined = self.tasks.join_next_with_id().await?;
        Some(self.settle(joined))
    }

    fn settle(
        &mut self,
        joined: Result<(tokio::task::Id, Result<(), DaemonError>), tokio::task::JoinError>,
    ) -> (Role, Result<(), DaemonError>) {
        let (id, result) = match joined {
            Ok((id, result)) => (id, result),
            Err(e) => {
                let id = e.id();
                let message = if e.is_panic() {
                    format!("panicked: {}", panic_message(e.try_into_panic().ok()))
                } else {
                    e.to_string()
                };
                (id, Err(DaemonError::Task(message)))
            }
        };
        // Every task is tracked at spawn; an unknown id cannot happen, but a wrong role in
        // a report is better than none.
        let role = self.roles.remove(&id).unwrap_or(Role::Producer);
        (role, result)
    }

    /// Stops every daemon cleanly: the producer first, then the consumers once they have
    /// finished what was produced (bounded by the drain grace), then each makes its final
    /// commit. The broker stays up until the pipeline is dropped, so lag can still be read.
    /// The first failure of any daemon, seen here or before, is the error.
    pub async fn stop(&mut self) -> Result<(), StopError> {
        self.stop_with(CancellationToken::new()).await
    }

    /// [`LocalPipeline::stop`], where cancelling `hurry` skips the rest of the drain.
    pub async fn stop_with(&mut self, hurry: CancellationToken) -> Result<(), StopError> {
        let mut failure: Option<RoleFailed> = None;
        let mut note = |(role, result): (Role, Result<(), DaemonError>)| {
            if let Err(error) = result {
                tracing::error!(%role, error = %error, "daemon failed");
                failure.get_or_insert(RoleFailed { role, error });
            }
        };
        // 1. The producer and the ingest, so nothing new arrives.
        self.producer_shutdown.cancel();
        while self
            .roles
            .values()
            .any(|r| matches!(r, Role::Producer | Role::Ingest))
        {
            match self.tasks.join_next_with_id().await {
                Some(joined) => note(self.settle(joined)),
                None => break,
            }
        }
        // 2. The consumers finish what is on the topics.
        let undrained = tokio::select! {
            left = self.drain() => left.map(|(records, groups)| StopError::Undrained {
                records,
                grace: self.drain_grace,
                groups,
            }),
            _ = hurry.cancelled() => Some(StopError::DrainSkipped),
        };
        // 3. Final commits.
        self.shutdown.cancel();
        while let Some(joined) = self.tasks.join_next_with_id().await {
            note(self.settle(joined));
        }
        if let Some(failed) = failure {
            return Err(failed.into());
        }
        match undrained {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// Waits until every running consumer group has committed everything on its topics,
    /// up to the drain grace. Returns what was left, when something was.
    async fn drain(&mut self) -> Option<(i64, String)> {
        let mut groups: Vec<(&'static str, Vec<String>)> = self
            .roles
            .values()
            .filter_map(|r| r.group(&self.orders_topic))
            .collect();
        groups.sort();
        groups.dedup();
        // Upstream groups first: once fraud and payment have committed every order, what
        // they published is on their topics before analytics' watermarks are read.
        groups.sort_by_key(|(g, _)| *g == ANALYTICS_GROUP);
        if groups.is_empty() {
            return None;
        }
        let kafka = self.kafka();
        let deadline = tokio::time::Instant::now() + self.drain_grace;
        let mut announced = false;
        loop {
            let (k, g) = (kafka.clone(), groups.clone());
            let left = tokio::task::spawn_blocking(move || remaining(&k, &g))
                .await
                .unwrap_or_else(|e| Err(e.to_string()));
            let (records, detail) = match left {
                Ok(left) if left.iter().all(|(_, n)| *n == 0) => return None,
                Ok(left) => (
                    left.iter().map(|(_, n)| n).sum::<i64>(),
                    left.iter()
                        .filter(|(_, n)| *n > 0)
                        .map(|(g, n)| format!("{g}: {n}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                ),
                Err(e) => (-1, format!("lag unknown: {e}")),
            };
            if !announced {
                announced = true;
                tracing::info!(
                    records,
                    groups = %detail,
                    grace_seconds = self.drain_grace.as_secs_f64(),
                    "waiting for the consumers to finish what was produced"
                );
            }
            if tokio::time::Instant::now() >= deadline {
                return Some((records, detail));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Records each group has yet to commit on its topics.
fn remaining(
    kafka: &KafkaSettings,
    groups: &[(&'static str, Vec<String>)],
) -> Result<Vec<(&'static str, i64)>, String> {
    groups
        .iter()
        .map(|(group, topics)| {
            let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
            consumer_lag(kafka, group, &topics, Duration::from_secs(5))
                .map(|lag| (*group, lag.total()))
                .map_err(|e| e.to_string())
        })
        .collect()
}

fn panic_message(payload: Option<Box<dyn std::any::Any + Send>>) -> String {
    match payload {
        Some(p) => match p.downcast::<String>() {
            Ok(s) => *s,
            Err(p) => match p.downcast::<&'static str>() {
                Ok(s) => (*s).to_owned(),
                Err(_) => "(no message)".to_owned(),
            },
        },
        None => "(no message)".to_owned(),
    }
}

impl Drop for LocalPipeline {
    fn drop(&mut self) {
        self.producer_shutdown.cancel();
        self.shutdown.cancel();
        if !self.tasks.is_empty() {
            // Dropped without `stop()` (a failed test, say): daemons still hold connections,
            // and destroying the broker under them makes their consumer close wait forever.
            // Keep it for the rest of the process instead.
            if let Some(broker) = self.broker.take() {
                std::mem::forget(broker);
            }
        }
    }
}
