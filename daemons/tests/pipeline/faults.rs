//! The pipeline under the faults a production Kafka pipeline meets: the broker down, leaders
//! moving, request errors, members joining and leaving, the store refusing writes. Each test
//! ends with a check of the whole result: every order stored once with its alert and its
//! payment, exact totals, no lag left.

use super::*;
use orders_core::kafka::{BrokerFault, RDKafkaApiKey, RDKafkaRespErr};
use std::sync::atomic::Ordering;

/// Everything produced is consumed, stored once, and committed.
async fn assert_whole(pipeline: &LocalPipeline, n: u64) {
    assert_exact(pipeline.store.as_ref(), n).await;
    assert_eq!(total_lag(&pipeline.kafka()).await, 0, "lag after the stop");
    let kafka = pipeline.kafka();
    let on_topic = tokio::task::spawn_blocking(move || {
        consumer_lag(
            &kafka,
            ANALYTICS_GROUP,
            &["orders"],
            Duration::from_secs(10),
        )
        .unwrap()
        .partitions
        .iter()
        .map(|p| p.high_watermark)
        .sum::<i64>()
    })
    .await
    .unwrap();
    assert_eq!(on_topic, n as i64, "each order published once");
}

fn inject(pipeline: &LocalPipeline, fault: BrokerFault) {
    pipeline.broker().unwrap().inject(fault).unwrap();
}

async fn wait_produced(pipeline: &LocalPipeline, n: u64) {
    let progress = pipeline.progress.clone();
    eventually(
        &format!("{n} orders produced"),
        Duration::from_secs(120),
        || {
            let p = progress.clone();
            async move { p.orders_produced.load(Ordering::Relaxed) >= n }
        },
    )
    .await;
}

async fn wait_all_done(pipeline: &LocalPipeline, n: u64) {
    let progress = pipeline.progress.clone();
    eventually(
        &format!("every group done with {n} orders, all stored"),
        Duration::from_secs(180),
        || {
            let p = progress.clone();
            async move {
                p.orders_done_by_all() >= n && p.payments_stored.load(Ordering::Relaxed) >= n
            }
        },
    )
    .await;
}

/// Every broker down for ten seconds mid-burst, then back: the producer holds its orders,
/// the consumers resume, nothing is lost or published twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broker_outage_mid_burst_loses_nothing_and_duplicates_nothing() {
    const N: u64 = 6_000;
    let dir = tempfile::tempdir().unwrap();
    let mut options = LocalOptions::new(dir.path().join("orders.db"));
    options.producer = Some(producer(N, 1_000.0));
    let mut pipeline = LocalPipeline::start(options).await.unwrap();
    wait_produced(&pipeline, 2_000).await;
    inject(&pipeline, BrokerFault::AllDown);
    let at_outage = pipeline.progress.orders_produced.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let during = pipeline.progress.orders_produced.load(Ordering::Relaxed);
    assert!(
        during < at_outage + 100,
        "the broker acknowledged orders while down: {at_outage} -> {during}"
    );
    inject(&pipeline, BrokerFault::AllUp);
    wait_all_done(&pipeline, N).await;
    pipeline.stop().await.unwrap();
    assert_whole(&pipeline, N).await;
}

/// Leaders of `orders` move between three brokers mid-stream while retriable errors are
/// pushed onto produce, fetch, commit and group requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_moves_and_transient_errors_lose_nothing() {
    const N: u64 = 6_000;
    let dir = tempfile::tempdir().unwrap();
    let mut options = LocalOptions::new(dir.path().join("orders.db"));
    options.producer = Some(producer(N, 1_000.0));
    options.brokers = 3;
    let mut pipeline = LocalPipeline::start(options).await.unwrap();
    wait_produced(&pipeline, 1_000).await;
    let errors = [
        (
            RDKafkaApiKey::Produce,
            vec![
                RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
                RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
                RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
            ],
        ),
        (
            RDKafkaApiKey::Fetch,
            vec![
                RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
                RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART,
            ],
        ),
        (
            RDKafkaApiKey::OffsetCommit,
            vec![
                RDKafkaRespErr::RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE,
                RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
            ],
        ),
        (
            RDKafkaApiKey::Heartbeat,
            vec![RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_COORDINATOR],
        ),
        (
            RDKafkaApiKey::JoinGroup,
            vec![RDKafkaRespErr::RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS],
        ),
        (
            RDKafkaApiKey::SyncGroup,
            vec![RDKafkaRespErr::RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE],
        ),
    ];
    for round in 0..6 {
        for partition in 0..6 {
            inject(
                &pipeline,
                BrokerFault::PartitionLeader {
                    topic: "orders".into(),
                    partition,
                    broker: 1 + (partition + round) % 3,
                },
            );
        }
        for (api, errs) in &errors {
            inject(&pipeline, BrokerFault::RequestErrors(*api, errs.clone()));
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    wait_all_done(&pipeline, N).await;
    pipeline.stop().await.unwrap();
    assert_whole(&pipeline, N).await;
}
