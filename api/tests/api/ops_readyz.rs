//! A daemon's ops `/readyz` against the embedded broker, over a real socket: probes share
//! one Kafka client for the process and one check at a time, however many ask.

use orders_api::ops_server::{self, OpsState};
use orders_core::kafka::{pipeline_topics, EmbeddedBroker};
use orders_core::progress::Progress;
use std::sync::Arc;
use std::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_probes_share_one_kafka_client_and_one_check() {
    let topics = pipeline_topics("orders");
    let broker = tokio::task::spawn_blocking(move || EmbeddedBroker::start(&topics).unwrap())
        .await
        .unwrap();
    let state =
        OpsState::new(Arc::new(Progress::default())).with_kafka(broker.settings(), "orders");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/readyz", listener.local_addr().unwrap());
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(ops_server::serve(listener, state.clone(), stop.clone()));
    let http = reqwest::Client::new();
    let start = Instant::now();
    for i in 0..100 {
        let r = http.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200, "probe {i}: {}", r.text().await.unwrap());
    }
    let sequential = start.elapsed();
    let checks = state.dependency_checks();
    // One check, and one more for each time the answer grew stale while probing.
    let stale =
        (sequential.as_secs_f64() / orders_api::readiness::READY_TTL.as_secs_f64()) as usize;
    assert!(checks <= 1 + stale, "{checks} checks in {sequential:?}");
    let concurrent: Vec<_> = (0..32)
        .map(|_| {
            let (http, url) = (http.clone(), url.clone());
            tokio::spawn(async move { http.get(&url).send().await.unwrap().status() })
        })
        .collect();
    for c in concurrent {
        assert_eq!(c.await.unwrap(), 200);
    }
    assert_eq!(
        state.kafka_clients_created(),
        1,
        "one Kafka client for the process"
    );
    eprintln!(
        "100 probes in {sequential:?}; {} dependency checks in all",
        state.dependency_checks()
    );
    stop.cancel();
    server.await.unwrap().unwrap();
}
