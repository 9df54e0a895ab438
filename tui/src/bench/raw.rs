//! The bench's yardstick: raw librdkafka produce+consume on the pipeline's own broker, with
//! the pipeline's client settings and payloads, and no processing.
//!
//! The yardstick is the median of [`ROUNDS`] rounds of [`ROUND_MESSAGES`] messages each,
//! whatever `--orders` is. One pass over `--orders` messages was noise in a short run: CI's
//! `--orders 100000` moved its 100,000 messages in 0.12–0.45 s, and read 223k to 803k msgs/s
//! from one run to the next on the shared 2-core machine (a batch boundary, a fetch wait, the
//! scheduler), so the ratio to end to end read as a regression. A fixed size keeps each
//! round's length apart from the run's, and the median of five ignores the two fastest and
//! the two slowest rounds; the best round would instead pick the luckiest moment, so that a
//! busy machine, which slows end to end too, would make the ratio read low. Five rounds of
//! 200,000 cost 1.3–2 s at the 0.5–0.75M msgs/s measured there.

use anyhow::bail;
use orders_core::cpu_time::process_cpu_seconds;
use orders_core::kafka::KafkaSettings;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use std::time::{Duration, Instant};

pub const RAW_TOPIC: &str = "bench-raw";

/// Messages in one round of the yardstick.
pub const ROUND_MESSAGES: u64 = 200_000;

/// Rounds of the yardstick; its rate is their median.
pub const ROUNDS: usize = 5;

/// One timed round: its wall and CPU seconds (this whole process, broker included).
#[derive(Debug, Clone, Copy)]
pub struct Round {
    pub seconds: f64,
    pub cpu_seconds: f64,
}

/// Produces `payloads` and consumes them back with no processing, `rounds` times; each
/// round's figures. The payloads are real generated orders, each different, so compression
/// and the broker see what the pipeline sends. `warm_up` records go through first, off the
/// clock.
pub fn produce_consume(
    settings: &KafkaSettings,
    payloads: &[Vec<u8>],
    warm_up: u64,
    rounds: usize,
) -> anyhow::Result<Vec<Round>> {
    let n = payloads.len() as u64;
    let producer: ThreadedProducer<DefaultProducerContext> =
        settings.producer_config("bench-raw-producer").create()?;
    let consumer: BaseConsumer = settings
        .consumer_config("bench-raw-consumer", "bench-raw")
        .create()?;
    consumer.subscribe(&[RAW_TOPIC])?;
    let produce = |count: u64, from: u64| send(&producer, payloads, count, from);
    // Warm up: the group joins and the connections are open before the clock starts.
    produce(warm_up, 0)?;
    receive(&consumer, warm_up)?;
    let mut measured = Vec::with_capacity(rounds);
    for round in 0..rounds as u64 {
        let (cpu_before, start) = (process_cpu_seconds(), Instant::now());
        std::thread::scope(|s| -> anyhow::Result<()> {
            let producing = s.spawn(|| produce(n, warm_up + round * n));
            receive(&consumer, n)?;
            producing
                .join()
                .map_err(|_| anyhow::anyhow!("raw producer thread panicked"))??;
            Ok(())
        })?;
        measured.push(Round {
            seconds: start.elapsed().as_secs_f64(),
            cpu_seconds: process_cpu_seconds() - cpu_before,
        });
    }
    producer.flush(Duration::from_secs(10))?;
    Ok(measured)
}
/// Sends `count` records, keys `from..`, cycling through `payloads`.
fn send(
    producer: &ThreadedProducer<DefaultProducerContext>,
    payloads: &[Vec<u8>],
    count: u64,
    from: u64,
) -> anyhow::Result<()> {
    let n = payloads.len() as u64;
    for i in from..from + count {
        let key = i.to_string();
        let payload = &payloads[(i % n) as usize];
        let mut record = BaseRecord::to(RAW_TOPIC)
            .key(&key)
            .payload(payload.as_slice());
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    producer.poll(Duration::from_millis(1));
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

/// Receives `count` records.
fn receive(consumer: &BaseConsumer, count: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut got = 0;
    while got < count {
        if Instant::now() > deadline {
            bail!("raw consumer received {got} of {count}");
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(_)) => got += 1,
            Some(Err(e)) => tracing::warn!(error = %e, "raw consumer"),
            None => {}
        }
    }
    Ok(())
}
