//! `GET /api/dlq` against the embedded broker: dead letters with their reason headers, the
//! ledger's handled ones left out unless asked for, filters checked, Kafka missing is 503.

use crate::common::*;
use orders_api::{app, AppState};
use orders_core::dead_letters::{Action, Coordinates, Handling};
use orders_core::kafka::{operator_topics, pipeline_topics, EmbeddedBroker, KafkaSettings};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::time::Duration;

async fn produce(
    kafka: &KafkaSettings,
    topic: &str,
    key: &str,
    value: &[u8],
    headers: &[(&str, &str)],
) {
    let producer: FutureProducer = kafka.producer_config("api-dlq-test").create().unwrap();
    let headers = headers.iter().fold(OwnedHeaders::new(), |h, (key, v)| {
        h.insert(Header {
            key,
            value: Some(*v),
        })
    });
    producer
        .send(
            FutureRecord::to(topic)
                .key(key)
                .payload(value)
                .headers(headers),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
}

fn dead_letter_headers<'a>(reason: &'a str, offset: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("trace-id", "t-1"),
        ("dlq.reason", reason),
        ("dlq.error", "the reader's message"),
        ("dlq.topic", "orders"),
        ("dlq.partition", "2"),
        ("dlq.offset", offset),
        ("dlq.group", "fraud-group"),
        ("dlq.truncated", "false"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_with_reasons_and_the_handled_left_out_unless_asked() {
    let mut topics = pipeline_topics("orders");
    topics.extend(operator_topics("orders"));
    let broker = tokio::task::spawn_blocking(move || EmbeddedBroker::start(&topics).unwrap())
        .await
        .unwrap();
    let kafka = broker.settings();
    produce(
        &kafka,
        "orders.dlq",
        "7",
        b"not json",
        &dead_letter_headers("not-json", "10"),
    )
    .await;
    produce(
        &kafka,
        "orders.dlq",
        "8",
        b"{\"order_id\":8}",
        &dead_letter_headers("schema", "11"),
    )
    .await;
    // The second one was redriven by an operator.
    let redriven = Coordinates {
        topic: "orders.dlq".into(),
        partition: 0,
        offset: 1,
    };
    let mut handling = Handling::new(Action::Redriven, "ana", &redriven);
    handling.sent_to = Some("orders".into());
    produce(
        &kafka,
        "orders.dlq.handled",
        "orders/2/11",
        &handling.encode(),
        &[],
    )
    .await;

    let f = filled_store(1).await;
    let app = app(AppState::new(f.store.clone()).with_kafka(kafka, "orders"));

    let pending = get_ok(&app, "/api/dlq").await;
    let letters = pending["dead_letters"].as_array().unwrap();
    assert_eq!(letters.len(), 1, "{pending}");
    let d = &letters[0];
    assert_eq!(
        (&d["topic"], &d["partition"], &d["offset"]),
        (&"orders.dlq".into(), &0.into(), &0.into())
    );
    assert_eq!(d["reason"], "not-json");
    assert_eq!(d["group"], "fraud-group");
    assert_eq!(d["key"], "7");
    assert_eq!(d["value"], "not json");
    assert_eq!(d["source"]["offset"], 10);
    assert!(d["handled"].is_null());
    assert_eq!(d["headers"][0]["key"], "trace-id");

    let all = get_ok(&app, "/api/dlq?handled=true").await;
    assert_eq!(all["dead_letters"].as_array().unwrap().len(), 2, "{all}");
    let schema = get_ok(&app, "/api/dlq?handled=true&reason=schema&topic=orders").await;
    let schema = schema["dead_letters"].as_array().unwrap();
    assert_eq!(schema.len(), 1);
    assert_eq!(schema[0]["handled"]["action"], "redriven");
    assert_eq!(schema[0]["handled"]["by"], "ana");
    let none = get_ok(&app, "/api/dlq?topic=payments.dlq&handled=true").await;
    assert_eq!(none["dead_letters"].as_array().unwrap().len(), 0);
    let one = get_ok(&app, "/api/dlq?handled=true&limit=1&since=1h").await;
    assert_eq!(one["dead_letters"].as_array().unwrap().len(), 1);

    // /metrics: the ledger's counts and what is pending, sampled in the background.
    let metrics_app = app.clone();
    eventually("dead-letter metrics", Duration::from_secs(30), || {
        let app = metrics_app.clone();
        async move {
            let text = get(&app, "/metrics").await.text;
            text.contains("orders_dlq_redriven_total 1\n")
                && text.contains("orders_dlq_discarded_total 0\n")
                && text.contains("orders_dlq_pending{topic=\"orders.dlq\",reason=\"not-json\"} 1\n")
                && !text.contains("reason=\"schema\"")
        }
    })
    .await;

    for (uri, code) in [
        ("/api/dlq?reason=bogus", "invalid_query"),
        ("/api/dlq?handled=maybe", "invalid_parameter"),
        ("/api/dlq?topic=elsewhere", "invalid_parameter"),
        ("/api/dlq?since=soon", "invalid_parameter"),
        ("/api/dlq?limit=0", "invalid_parameter"),
        ("/api/dlq?page=2", "unknown_parameter"),
    ] {
        assert_error(&get(&app, uri).await, 400, code, uri);
    }
    // A server that watches no Kafka cannot answer.
    let no_kafka = router(f.store.clone());
    assert_error(
        &get(&no_kafka, "/api/dlq").await,
        503,
        "kafka_unavailable",
        "no kafka",
    );
}
