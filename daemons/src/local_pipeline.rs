//! The whole pipeline in one process on the embedded broker and the SQLite store: what
//! `ordersctl up`, `ordersctl bench` and the end-to-end tests run.

use crate::analytics::{self, AnalyticsConfig, AnalyticsDeps};
use crate::fraud::{self, FraudConfig, FraudDeps};
use crate::payment::{self, PaymentConfig, PaymentDeps};
use crate::producer::{self, ProducerConfig, ProducerDeps};
use crate::progress::Progress;
use crate::DaemonError;
use orders_core::fraud::FraudRules;
use orders_core::kafka::{pipeline_topics, EmbeddedBroker, KafkaSettings};
use orders_core::store::{OrderStore, SqliteStore};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// A role of the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Producer,
    Fraud,
    Payment,
    Analytics,
}

#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// The SQLite file.
    pub store_path: PathBuf,
    pub orders_topic: String,
    /// `None`: no producer (orders come from elsewhere).
    pub producer: Option<ProducerConfig>,
    pub payment: PaymentConfig,
    pub fraud_rules: FraudRules,
    /// How far the producer may run ahead of the slowest group.
    pub flow_window: u64,
    /// Which consumer roles to run.
    pub consumers: Vec<Role>,
    /// More topics to create on the broker.
    pub extra_topics: Vec<(String, i32)>,
}

impl LocalOptions {
    pub fn new(store_path: PathBuf) -> Self {
        LocalOptions {
            store_path,
            orders_topic: "orders".into(),
            producer: None,
            payment: PaymentConfig::new("orders"),
            fraud_rules: FraudRules::default(),
            flow_window: 50_000,
            consumers: vec![Role::Fraud, Role::Payment, Role::Analytics],
            extra_topics: Vec::new(),
        }
    }
}

/// A running embedded pipeline.
pub struct LocalPipeline {
    /// `None` only once dropped.
    broker: Option<EmbeddedBroker>,
    pub store: Arc<SqliteStore>,
    pub progress: Arc<Progress>,
    shutdown: CancellationToken,
    tasks: JoinSet<(Role, Result<(), DaemonError>)>,
}

impl LocalPipeline {
    /// Starts the broker (topics created with the SPEC's partition counts), opens the
    /// store, and starts the chosen daemons.
    pub async fn start(options: LocalOptions) -> Result<Self, DaemonError> {
        let mut topics = pipeline_topics(&options.orders_topic);
        topics.extend(options.extra_topics.iter().cloned());
        let broker = tokio::task::spawn_blocking(move || EmbeddedBroker::start(&topics))
            .await
            .map_err(|e| DaemonError::Task(e.to_string()))??;
        let store = Arc::new(SqliteStore::open(&options.store_path)?);
        let mut pipeline = LocalPipeline {
            broker: Some(broker),
            store,
            progress: Arc::new(Progress::default()),
            shutdown: CancellationToken::new(),
            tasks: JoinSet::new(),
        };
        for role in options.consumers.clone() {
            pipeline.spawn(role, &options);
        }
        if options.producer.is_some() {
            pipeline.spawn(Role::Producer, &options);
        }
        Ok(pipeline)
    }

    /// Starts one more daemon of `role` on this pipeline (with its own shutdown token).
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
                self.tasks.spawn(async move {
                    (
                        role,
                        producer::run(config, deps, shutdown).await.map(|_| ()),
                    )
                });
            }
            Role::Fraud => {
                let config = FraudConfig {
                    orders_topic: topic,
                    rules: options.fraud_rules.clone(),
                };
                let deps = FraudDeps { kafka, progress };
                self.tasks
                    .spawn(async move { (role, fraud::run(config, deps, shutdown).await) });
            }
            Role::Payment => {
                let mut config = options.payment.clone();
                config.orders_topic = topic;
                let deps = PaymentDeps { kafka, progress };
                self.tasks
                    .spawn(async move { (role, payment::run(config, deps, shutdown).await) });
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
                self.tasks
                    .spawn(async move { (role, analytics::run(config, deps, shutdown).await) });
            }
        }
    }

    fn spawn(&mut self, role: Role, options: &LocalOptions) {
        let token = self.shutdown.child_token();
        self.spawn_with(role, options, token);
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
        match self.tasks.join_next().await? {
            Ok(done) => Some(done),
            Err(e) => Some((Role::Producer, Err(DaemonError::Task(e.to_string())))),
        }
    }

    /// Stops every daemon cleanly (each makes its final commit). The broker stays up until
    /// the pipeline is dropped, so lag can still be read.
    pub async fn stop(&mut self) -> Result<(), DaemonError> {
        self.shutdown.cancel();
        let mut first_error = None;
        while let Some(joined) = self.tasks.join_next().await {
            match joined {
                Ok((role, Err(e))) => {
                    tracing::error!(?role, error = %e, "daemon failed");
                    first_error.get_or_insert(e);
                }
                Ok((_, Ok(()))) => {}
                Err(e) => {
                    first_error.get_or_insert(DaemonError::Task(e.to_string()));
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Drop for LocalPipeline {
    fn drop(&mut self) {
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
