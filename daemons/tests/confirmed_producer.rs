//! The confirmed producer on librdkafka's mock broker: a batch resolves only once the broker
//! has answered for every record, records the broker could not take are sent again, and a
//! record it refuses for good is an error, never a retry loop.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use orders_core::kafka::embedded_settings;
use orders_daemons::confirmed_producer::{ConfirmedProducer, OutRecord, ProduceError};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::{ClientConfig, Message};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

fn records(topic: &str, n: usize) -> Vec<OutRecord> {
    (0..n)
        .map(|i| OutRecord {
            topic: topic.to_owned(),
            key: i.to_string(),
            payload: format!("payload {i}").into_bytes(),
            headers: Some(OwnedHeaders::new().insert(Header {
                key: "n",
                value: Some(i.to_string().as_str()),
            })),
        })
        .collect()
}

/// Every record on `topic`: key → (payload, header `n`), and how many records in all.
fn read_back(
    bootstrap: &str,
    topic: &str,
    expect: usize,
) -> (BTreeMap<String, (String, String)>, usize) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "read-back")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut seen = BTreeMap::new();
    let mut total = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    // Read until `expect` arrived, then a little longer to catch duplicates.
    let mut quiet_until: Option<Instant> = None;
    while Instant::now() < deadline && quiet_until.is_none_or(|q| Instant::now() < q) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            total += 1;
            let key = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
            let payload = String::from_utf8(m.payload().unwrap().to_vec()).unwrap();
            let header = m
                .headers()
                .and_then(|h| h.iter().find(|h| h.key == "n"))
                .and_then(|h| h.value)
                .map(|v| String::from_utf8(v.to_vec()).unwrap())
                .unwrap_or_default();
            seen.insert(key, (payload, header));
        }
        if total >= expect && quiet_until.is_none() {
            quiet_until = Some(Instant::now() + Duration::from_secs(1));
        }
    }
    (seen, total)
}

/// The broker answers within seconds; a test fails rather than hangs when it does not.
async fn answered<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .expect("no answer from the broker in 30 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_waits_for_every_answer() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("out", 3, 1).unwrap();
    let output =
        ConfirmedProducer::new(&embedded_settings(cluster.bootstrap_servers()), "test").unwrap();
    let shutdown = CancellationToken::new();
    let batch = records("out", 5_000);
    let pending = output.send(&batch, &shutdown).await.unwrap();
    let refused = answered(pending.refused()).await.unwrap();
    assert!(refused.is_empty(), "refused: {refused:?}");
    // Answered means on the broker: a reader finds every record at once.
    let (seen, total) = read_back(&cluster.bootstrap_servers(), "out", batch.len());
    assert_eq!((seen.len(), total), (5_000, 5_000));
    assert_eq!(seen["4999"], ("payload 4999".to_owned(), "4999".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_the_broker_could_not_take_are_sent_again() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("out", 1, 1).unwrap();
    // The broker is unreachable for longer than librdkafka's message timeout: the delivery
    // reports say "timed out" and the records come back to the caller.
    cluster.broker_down(-1).unwrap();
    let settings = orders_core::kafka::KafkaSettings {
        message_timeout_ms: 1_500,
        ..embedded_settings(cluster.bootstrap_servers())
    };
    let output = ConfirmedProducer::new(&settings, "test").unwrap();
    let shutdown = CancellationToken::new();
    let batch = records("out", 20);

    let first = answered(output.send(&batch, &shutdown).await.unwrap().refused())
        .await
        .unwrap();
    assert_eq!(first.len(), batch.len(), "every record timed out");
    for r in &first {
        // A refused record comes back whole: topic, payload and headers.
        assert_eq!(r.topic, "out");
        assert_eq!(r.payload, format!("payload {}", r.key).into_bytes());
        let n = r.headers.as_ref().unwrap().get_as::<str>(0).unwrap();
        assert_eq!((n.key, n.value), ("n", Some(r.key.as_str())));
    }

    // send_all keeps sending until the broker takes everything, each record once.
    cluster.broker_up(-1).unwrap();
    answered(output.send_all(&first, &shutdown)).await.unwrap();
    let (seen, total) = read_back(&cluster.bootstrap_servers(), "out", batch.len());
    assert_eq!(total, batch.len());
    assert_eq!(seen.len(), batch.len());
    for (key, (payload, header)) in &seen {
        assert_eq!(payload, &format!("payload {key}"));
        assert_eq!(header, key);
    }
}

/// A record the broker will never accept (not authorised, invalid, too large) ends
/// `send_all` with an error naming the topic, the key and the cause, instead of looping.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_refused_for_good_is_an_error_not_a_retry_loop() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("out", 1, 1).unwrap();
    let shutdown = CancellationToken::new();
    for (injected, expected) in [
        (
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
            RDKafkaErrorCode::TopicAuthorizationFailed,
        ),
        (
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_INVALID_RECORD,
            RDKafkaErrorCode::InvalidRecord,
        ),
        (
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE,
            RDKafkaErrorCode::MessageSizeTooLarge,
        ),
    ] {
        // A fresh client each time: librdkafka remembers a topic it was refused.
        let output =
            ConfirmedProducer::new(&embedded_settings(cluster.bootstrap_servers()), "test")
                .unwrap();
        cluster.request_errors(RDKafkaApiKey::Produce, &[injected; 1]);
        let err = answered(output.send_all(&records("out", 1), &shutdown))
            .await
            .unwrap_err();
        match &err {
            ProduceError::Rejected { topic, key, error } => {
                assert_eq!(
                    (topic.as_str(), key.as_str(), *error),
                    ("out", "0", expected)
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().contains("topic out, key 0"), "{err}");
    }
    // Too large for the client itself: refused at once, before reaching the broker.
    let output =
        ConfirmedProducer::new(&embedded_settings(cluster.bootstrap_servers()), "test").unwrap();
    let huge = OutRecord {
        payload: vec![b'x'; 2_000_000],
        ..records("out", 1).remove(0)
    };
    let err = answered(output.send_all(&[huge], &shutdown))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ProduceError::Rejected {
                error: RDKafkaErrorCode::MessageSizeTooLarge,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_batch_is_answered_at_once() {
    let cluster = MockCluster::new(1).unwrap();
    let output =
        ConfirmedProducer::new(&embedded_settings(cluster.bootstrap_servers()), "test").unwrap();
    let shutdown = CancellationToken::new();
    let pending = output.send(&[], &shutdown).await.unwrap();
    let refused = answered(pending.refused()).await.unwrap();
    assert!(refused.is_empty());
    output.send_all(&[], &shutdown).await.unwrap();
}
