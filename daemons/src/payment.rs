//! The payment daemon: reads every order in `payments-group`, simulates processing (100 ms
//! by default) for many orders at once, and publishes one payment per order.

use crate::confirmed_producer::{ConfirmedProducer, OutRecord};
use crate::consumer_loop::{
    dead_letter, run_consumer, ChunkError, ChunkOutcome, ChunkProcessor, ConsumerOptions, Record,
};
use crate::progress::Progress;
use crate::DaemonError;
use futures::future::BoxFuture;
use futures::FutureExt;
use orders_core::canary;
use orders_core::domain::{Order, Payment, PaymentStatus};
use orders_core::kafka::{KafkaSettings, PAYMENTS_GROUP, PAYMENTS_TOPIC};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct PaymentConfig {
    pub orders_topic: String,
    /// Simulated processing time of one payment.
    pub delay: Duration,
    /// Most orders being processed at once.
    pub concurrency: usize,
}

impl PaymentConfig {
    pub fn new(orders_topic: &str) -> Self {
        PaymentConfig {
            orders_topic: orders_topic.to_owned(),
            delay: Duration::from_millis(100),
            concurrency: 20_000,
        }
    }
}

pub struct PaymentDeps {
    pub kafka: KafkaSettings,
    pub progress: Arc<Progress>,
}

/// Simulates a payment provider: each payment takes `delay`, and any number of payments
/// (up to the consumer's in-flight bound) are processed at the same time.
struct PaymentSimulator {
    delay: Duration,
    progress: Arc<Progress>,
    output: ConfirmedProducer,
    shutdown: CancellationToken,
}

/// An order being paid: what its payment needs, without the record it came in or the
/// order's strings. Up to the consumer's in-flight bound (20,000) wait at once through the
/// simulated delay, so this is most of the daemon's heap at full speed.
#[derive(Debug)]
struct Paying {
    /// The payment, its time still to be set when it is settled.
    payment: Payment,
    canary: bool,
}

impl Paying {
    fn of(order: &Order) -> Paying {
        Paying {
            payment: Payment {
                order_id: order.order_id,
                status: PaymentStatus::Paid,
                amount: order.amount,
                country: order.country,
                timestamp: 0.0,
            },
            canary: canary::is_canary(order),
        }
    }

    /// The payment record, settled now.
    fn settle(mut self) -> OutRecord {
        self.payment.timestamp = chrono::Utc::now().timestamp_micros() as f64 / 1e6;
        OutRecord {
            topic: PAYMENTS_TOPIC.to_owned(),
            key: self.payment.order_id.to_string(),
            payload: if self.canary {
                canary::marked_json(&self.payment)
            } else {
                self.payment.to_json()
            },
            headers: None,
        }
    }
}

impl ChunkProcessor for PaymentSimulator {
    fn process(
        &mut self,
        chunk: Vec<Record>,
    ) -> BoxFuture<'static, Result<ChunkOutcome, ChunkError>> {
        let started = Instant::now();
        let delay = self.delay;
        let output = self.output.clone();
        let shutdown = self.shutdown.clone();
        let progress = self.progress.clone();
        async move {
            let mut orders = Vec::with_capacity(chunk.len());
            let mut out = Vec::new();
            let mut outcome = ChunkOutcome::default();
            for r in &chunk {
                match Order::decode(r.payload.as_deref()) {
                    Ok(order) => orders.push(Paying::of(&order)),
                    Err(e) => {
                        progress
                            .payments
                            .decode_errors
                            .fetch_add(1, Ordering::Relaxed);
                        out.push(dead_letter(PAYMENTS_GROUP, r, &e));
                        outcome.dead_letter(&e);
                    }
                }
            }
            // The records are not needed through the delay: only what each payment needs.
            drop(chunk);
            let paying = orders.len() as i64;
            progress
                .payments_in_flight
                .fetch_add(paying, Ordering::Relaxed);
            // Counted out however this future ends (done, failed or dropped on shutdown).
            let _paying = InFlight(&progress.payments_in_flight, paying);
            // Every order of the chunk is processed during the same simulated interval.
            tokio::time::sleep_until(started + delay).await;
            outcome.produced = orders.len() as u64;
            out.extend(orders.into_iter().map(Paying::settle));
            drop(_paying);
            output.send_all(&out, &shutdown).await?;
            Ok(outcome)
        }
        .boxed()
    }
}

/// Payments in processing, taken off the gauge when dropped.
struct InFlight<'a>(&'a AtomicI64, i64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(self.1, Ordering::Relaxed);
    }
}

/// Runs the payment daemon until `shutdown`.
pub async fn run(
    config: PaymentConfig,
    deps: PaymentDeps,
    shutdown: CancellationToken,
) -> Result<(), DaemonError> {
    let output =
        ConfirmedProducer::new(&deps.kafka, "orders-payment")?.with_progress(deps.progress.clone());
    let processor = PaymentSimulator {
        delay: config.delay,
        progress: deps.progress.clone(),
        output: output.clone(),
        shutdown: shutdown.clone(),
    };
    let mut options = ConsumerOptions::new(
        PAYMENTS_GROUP,
        &[&config.orders_topic],
        &config.orders_topic,
    );
    options.max_in_flight = config.concurrency.max(1);
    options.max_chunk = options.max_chunk.min(options.max_in_flight);
    let result = run_consumer(&deps.kafka, options, processor, deps.progress, shutdown).await;
    output.flush(Duration::from_secs(5));
    Ok(result?)
}
