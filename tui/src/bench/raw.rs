//! The bench's yardstick: raw librdkafka produce+consume on the pipeline's own broker, with
//! the pipeline's client settings and payloads, and no processing.

use anyhow::bail;
use orders_core::kafka::KafkaSettings;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use std::time::{Duration, Instant};

pub const RAW_TOPIC: &str = "bench-raw";

/// Produces `payloads` and consumes them back with no processing; returns seconds taken.
/// The payloads are real generated orders, each different, so compression and the broker
/// see what the pipeline sends. `warm_up` records go through first, off the clock.
pub fn produce_consume(
    settings: &KafkaSettings,
    payloads: &[Vec<u8>],
    warm_up: u64,
) -> anyhow::Result<f64> {
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
    let start = Instant::now();
    std::thread::scope(|s| -> anyhow::Result<()> {
        let producing = s.spawn(|| produce(n, warm_up));
        receive(&consumer, n)?;
        producing
            .join()
            .map_err(|_| anyhow::anyhow!("raw producer thread panicked"))??;
        Ok(())
    })?;
    let seconds = start.elapsed().as_secs_f64();
    producer.flush(Duration::from_secs(10))?;
    Ok(seconds)
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
