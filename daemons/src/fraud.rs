//! The fraud daemon: reads every order in `fraud-group` and publishes an alert, keyed by
//! order id, for each order a rule matches, and its verdict on every canary order (marked
//! `"canary": true`, see `orders_core::canary`).

use crate::confirmed_producer::{ConfirmedProducer, OutRecord};
use crate::consumer_loop::{
    dead_letter, run_consumer, ChunkError, ChunkOutcome, ChunkProcessor, ConsumerOptions, Record,
};
use crate::progress::Progress;
use crate::DaemonError;
use futures::future::BoxFuture;
use futures::FutureExt;
use orders_core::canary;
use orders_core::domain::Order;
use orders_core::fraud::FraudRules;
use orders_core::kafka::{KafkaSettings, FRAUD_ALERTS_TOPIC, FRAUD_GROUP};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct FraudConfig {
    pub orders_topic: String,
    pub rules: FraudRules,
}

/// The fraud daemon's dependencies.
pub struct FraudDeps {
    pub kafka: KafkaSettings,
    pub progress: Arc<Progress>,
}

struct FraudProcessor {
    rules: Arc<FraudRules>,
    progress: Arc<Progress>,
    output: ConfirmedProducer,
    shutdown: CancellationToken,
}

impl ChunkProcessor for FraudProcessor {
    fn process(
        &mut self,
        chunk: Vec<Record>,
    ) -> BoxFuture<'static, Result<ChunkOutcome, ChunkError>> {
        let mut out = Vec::new();
        let mut outcome = ChunkOutcome::default();
        for r in &chunk {
            match Order::decode(r.payload.as_deref()) {
                Ok(order) if canary::is_canary(&order) => {
                    // A canary's verdict is published whatever it is, marked, so its
                    // decision time is observable downstream.
                    out.push(OutRecord {
                        topic: FRAUD_ALERTS_TOPIC.to_owned(),
                        key: order.key(),
                        payload: canary::fraud_verdict(&self.rules, &order),
                        headers: None,
                    });
                    outcome.produced += 1;
                }
                Ok(order) => {
                    if let Some(alert) = self.rules.evaluate(&order) {
                        tracing::debug!(order_id = order.order_id, reason = %alert.reason, "fraud alert");
                        out.push(OutRecord {
                            topic: FRAUD_ALERTS_TOPIC.to_owned(),
                            key: order.key(),
                            payload: alert.to_json(),
                            headers: None,
                        });
                        outcome.produced += 1;
                    }
                }
                Err(e) => {
                    self.progress
                        .fraud
                        .decode_errors
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    out.push(dead_letter(FRAUD_GROUP, r, &e));
                    outcome.dead_letter(&e);
                }
            }
        }
        let output = self.output.clone();
        let shutdown = self.shutdown.clone();
        async move {
            output.send_all(&out, &shutdown).await?;
            Ok(outcome)
        }
        .boxed()
    }
}

/// Runs the fraud daemon until `shutdown`.
pub async fn run(
    config: FraudConfig,
    deps: FraudDeps,
    shutdown: CancellationToken,
) -> Result<(), DaemonError> {
    let output =
        ConfirmedProducer::new(&deps.kafka, "orders-fraud")?.with_progress(deps.progress.clone());
    let processor = FraudProcessor {
        rules: Arc::new(config.rules),
        progress: deps.progress.clone(),
        output: output.clone(),
        shutdown: shutdown.clone(),
    };
    let options = ConsumerOptions::new(FRAUD_GROUP, &[&config.orders_topic], &config.orders_topic);
    let result = run_consumer(&deps.kafka, options, processor, deps.progress, shutdown).await;
    output.flush(std::time::Duration::from_secs(5));
    Ok(result?)
}
