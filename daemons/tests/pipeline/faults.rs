//! The pipeline under the faults a production Kafka pipeline meets: the broker down, leaders
//! moving, request errors, members joining and leaving, the store refusing writes. Each test
//! ends with a check of the whole result: every order stored once with its alert and its
//! payment, exact totals, no lag left.

use super::*;
use orders_core::kafka::{BrokerFault, RDKafkaApiKey, RDKafkaRespErr};
use std::sync::atomic::Ordering;

/// Everything produced is consumed, stored once, and committed, and `ordersctl audit`'s
/// reconciliation of the topics with the store finds nothing to report.
async fn assert_whole(pipeline: &LocalPipeline, n: u64) {
    let report = audit_report(pipeline).await;
    assert!(
        report.is_clean(),
        "audit: {}",
        serde_json::to_string_pretty(&report).unwrap()
    );
    assert_eq!(report.orders.stored, n, "{}", report.summary());
    assert_exact(pipeline.store.as_ref(), n).await;
    assert_eq!(total_lag(&pipeline.kafka()).await, 0, "lag after the stop");
    let on_topic = records_on(&pipeline.kafka(), "orders").await;
    assert_eq!(on_topic, n as i64, "each order published once");
}

fn inject(pipeline: &LocalPipeline, fault: BrokerFault) {
    pipeline.broker().unwrap().inject(fault).unwrap();
}

/// Every broker down for ten seconds mid-burst, then back: the producer holds its orders,
/// the consumers resume, nothing is lost or published twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broker_outage_mid_burst_loses_nothing_and_duplicates_nothing() {
    const N: u64 = 6_000;
    let (_dir, mut pipeline) = start(N, 1_000.0, |_| {}).await;
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
    let (_dir, mut pipeline) = start(N, 1_000.0, |o| {
        o.brokers = 3;
    })
    .await;
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

/// Long bursts of retriable Produce errors on three brokers, as the chaos run pushes them (43
/// at a time, eight times 1.5 s apart): every acknowledged order is on the topic once. With
/// five requests in flight the embedded broker lost 1 to 4 acknowledged orders of 8,000 here
/// (see `embedded_settings`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bursts_of_produce_errors_lose_nothing() {
    const N: u64 = 8_000;
    let (_dir, mut pipeline) = start(N, 400.0, |o| {
        o.brokers = 3;
    })
    .await;
    wait_produced(&pipeline, 500).await;
    for burst in 0..8 {
        let error = [
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
        ][burst % 3];
        inject(
            &pipeline,
            BrokerFault::RequestErrors(RDKafkaApiKey::Produce, vec![error; 43]),
        );
        tokio::time::sleep(Duration::from_millis(1_500)).await;
    }
    wait_all_done(&pipeline, N).await;
    pipeline.stop().await.unwrap();
    assert_whole(&pipeline, N).await;
}

/// Every group's committed offsets, sampled until `stop`: fails if one ever moves back.
async fn watch_commits_never_move_back(
    kafka: KafkaSettings,
    stop: tokio_util::sync::CancellationToken,
) -> u64 {
    tokio::task::spawn_blocking(move || {
        let mut last: std::collections::BTreeMap<(String, String, i32), i64> = Default::default();
        let mut samples = 0;
        while !stop.is_cancelled() {
            for (group, topics) in [
                (orders_core::kafka::FRAUD_GROUP, vec!["orders"]),
                (PAYMENTS_GROUP, vec!["orders"]),
                (
                    ANALYTICS_GROUP,
                    vec!["orders", FRAUD_ALERTS_TOPIC, PAYMENTS_TOPIC],
                ),
            ] {
                let Ok(lag) = consumer_lag(&kafka, group, &topics, Duration::from_secs(5)) else {
                    continue;
                };
                for p in lag.partitions {
                    let Some(c) = p.committed else { continue };
                    let key = (group.to_owned(), p.topic.clone(), p.partition);
                    if let Some(before) = last.insert(key.clone(), c) {
                        assert!(
                            c >= before,
                            "{key:?}: committed offset moved back {before} -> {c}"
                        );
                    }
                }
            }
            samples += 1;
            std::thread::sleep(Duration::from_millis(300));
        }
        samples
    })
    .await
    .unwrap()
}

/// A second and third instance of each consumer join during a burst; one of each leaves
/// with SIGTERM, the other is killed -9. Nothing is lost or counted twice, committed
/// offsets never move back, and the pipeline catches up after the kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_joining_and_leaving_mid_burst_lose_nothing() {
    const N: u64 = 24_000;
    let (dir, mut pipeline) = start(N, 2_000.0, |o| {
        o.flow_window = u64::MAX; // members in other processes do part of the work
    })
    .await;
    let kafka = pipeline.bootstrap_servers().to_owned();
    let stop_watch = tokio_util::sync::CancellationToken::new();
    let watcher = tokio::spawn(watch_commits_never_move_back(
        pipeline.kafka(),
        stop_watch.clone(),
    ));

    wait_produced(&pipeline, 2_000).await;
    let roles = ["fraud", "payment", "analytics"];
    let mut leaving: Vec<Daemon> = roles
        .iter()
        .map(|r| ordersd(&kafka, dir.path(), r))
        .collect();
    let killed: Vec<Daemon> = roles
        .iter()
        .map(|r| ordersd(&kafka, dir.path(), r))
        .collect();
    wait_produced(&pipeline, 8_000).await;
    for d in &mut leaving {
        let status = terminate(d);
        assert!(
            status.success(),
            "a member leaves cleanly on SIGTERM: {status:?}"
        );
    }
    wait_produced(&pipeline, 14_000).await;
    let kill_at = Instant::now();
    for d in killed {
        crash(d);
    }
    wait_produced(&pipeline, N).await;
    let settings = pipeline.kafka();
    eventually("no lag left in any group", Duration::from_secs(180), || {
        let s = settings.clone();
        async move { total_lag(&s).await == 0 }
    })
    .await;
    eprintln!(
        "scale-out: caught up {:.1} s after three members were killed -9 ({} orders, 2,000/s)",
        kill_at.elapsed().as_secs_f64(),
        N
    );
    stop_watch.cancel();
    let samples = watcher.await.unwrap();
    assert!(
        samples > 10,
        "committed offsets were watched ({samples} samples)"
    );
    pipeline.stop().await.unwrap();
    assert_whole(&pipeline, N).await;
}

/// A record the broker will never accept stops the daemon with one line naming the cause
/// and a non-zero exit: the producer's orders and the fraud daemon's alerts alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_record_refused_for_good_stops_the_daemon_with_one_line() {
    let (_dir, mut pipeline) = start(300, 0.0, |o| {
        o.consumers = Vec::new();
    })
    .await;
    let (role, result) = pipeline.next_finished().await.unwrap();
    assert_eq!(role, Role::Producer);
    result.unwrap();
    let kafka = pipeline.bootstrap_servers().to_owned();
    let not_authorised = vec![RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 200];
    let own_dir = tempfile::tempdir().unwrap();
    for args in [
        &["producer", "--orders", "20", "--rate", "0"][..],
        &["fraud"][..],
    ] {
        inject(
            &pipeline,
            BrokerFault::RequestErrors(RDKafkaApiKey::Produce, not_authorised.clone()),
        );
        let (k, d) = (kafka.clone(), own_dir.path().to_owned());
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let (status, stderr) = tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            ordersd_until_exit(&k, &d, &args)
        })
        .await
        .unwrap();
        assert!(!status.success(), "{stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with("ordersd: ")
                && stderr.contains("refused a record for good")
                && stderr.contains("Topic authorization failed"),
            "{stderr}"
        );
        inject(
            &pipeline,
            BrokerFault::ClearRequestErrors(RDKafkaApiKey::Produce),
        );
    }
    pipeline.stop().await.unwrap();
}

/// The SQLite file refuses writes for a while, first as a full disk and then as a
/// read-only file: analytics stores nothing and commits nothing meanwhile, says why, and
/// when the store takes writes again everything resumes and nothing is lost or doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_store_that_refuses_writes_for_a_while_loses_nothing() {
    use orders_core::store::WriteLimit;
    // 20 s of orders: both faults come while orders still arrive.
    const N: u64 = 6_000;
    let (_dir, mut pipeline) = start(N, 300.0, |_| {}).await;
    let kafka = pipeline.kafka();
    for (limit, from) in [(WriteLimit::Full, 600), (WriteLimit::ReadOnly, 3_500)] {
        let store = pipeline.store.clone();
        eventually(
            "orders stored before the fault",
            Duration::from_secs(120),
            || {
                let s = store.clone();
                async move { s.totals().await.unwrap().order_count >= from }
            },
        )
        .await;
        pipeline.store.set_write_limit(limit).await.unwrap();
        let progress = pipeline.progress.clone();
        eventually("the writer sees the fault", Duration::from_secs(30), || {
            let p = progress.clone();
            async move { p.store_failing().is_some() }
        })
        .await;
        // Auto-commit runs every second: whatever was durable before is committed by now.
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        let stored = pipeline.store.totals().await.unwrap().order_count;
        let committed = committed_and_records(&kafka, ANALYTICS_GROUP, "orders")
            .await
            .0;
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert_eq!(
            pipeline.store.totals().await.unwrap().order_count,
            stored,
            "{limit:?}: nothing stored"
        );
        assert_eq!(
            committed_and_records(&kafka, ANALYTICS_GROUP, "orders")
                .await
                .0,
            committed,
            "{limit:?}: nothing committed while the store refuses writes"
        );
        assert!(
            committed <= stored as i64,
            "committed {committed} > stored {stored}"
        );
        let why = pipeline.progress.store_failing().unwrap();
        assert!(
            why.contains("full") || why.contains("readonly"),
            "{limit:?}: {why}"
        );
        pipeline
            .store
            .set_write_limit(WriteLimit::Writable)
            .await
            .unwrap();
    }
    wait_all_done(&pipeline, N).await;
    assert_eq!(pipeline.progress.store_failing(), None);
    assert!(pipeline.progress.store_errors.load(Ordering::Relaxed) >= 2);
    pipeline.stop().await.unwrap();
    assert_whole(&pipeline, N).await;
}

/// Every broker down while the groups are still joining and the producer is starting:
/// once the cluster is back, everything goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broker_outage_while_the_groups_join_loses_nothing() {
    const N: u64 = 2_000;
    let (_dir, mut pipeline) = start(N, 0.0, |_| {}).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    inject(&pipeline, BrokerFault::AllDown);
    tokio::time::sleep(Duration::from_secs(8)).await;
    inject(&pipeline, BrokerFault::AllUp);
    wait_all_done(&pipeline, N).await;
    pipeline.stop().await.unwrap();
    assert_whole(&pipeline, N).await;
}

/// A processor whose dependency dies (as when the analytics store writer is gone): the
/// consumer loop ends with an error and stores no offset, instead of ending as if shut down.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_consumer_whose_processing_stops_fails_instead_of_ending_cleanly() {
    use futures::future::BoxFuture;
    use futures::FutureExt;
    use orders_daemons::consumer_loop::{
        run_consumer, ChunkError, ChunkOutcome, ChunkProcessor, ConsumeError, ConsumerOptions,
        Record,
    };

    struct WriterGone;
    impl ChunkProcessor for WriterGone {
        fn process(
            &mut self,
            _chunk: Vec<Record>,
        ) -> BoxFuture<'static, Result<ChunkOutcome, ChunkError>> {
            async { Err(ChunkError::Stopped("the store writer stopped".into())) }.boxed()
        }
    }

    let (_dir, mut pipeline) = start(50, 0.0, |o| {
        o.consumers = Vec::new();
    })
    .await;
    pipeline.next_finished().await.unwrap().1.unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let result = tokio::time::timeout(
        Duration::from_secs(60),
        run_consumer(
            &pipeline.kafka(),
            ConsumerOptions::new("test-group", &["orders"], "orders"),
            WriterGone,
            pipeline.progress.clone(),
            shutdown.clone(),
        ),
    )
    .await
    .expect("the loop ends on its own");
    assert!(!shutdown.is_cancelled());
    match result {
        Err(ConsumeError::Chunk(ChunkError::Stopped(why))) => {
            assert!(why.contains("store writer"), "{why}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        committed_and_records(&pipeline.kafka(), "test-group", "orders")
            .await
            .0,
        0,
        "nothing committed"
    );
    pipeline.stop().await.unwrap();
}

/// One broker of three down for a while mid-burst (its partitions' leaders stay on it, as
/// the mock cluster does not elect new ones), then back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_broker_of_three_down_mid_burst_loses_nothing() {
    const N: u64 = 6_000;
    let (_dir, mut pipeline) = start(N, 600.0, |o| {
        o.brokers = 3;
    })
    .await;
    wait_produced(&pipeline, 1_500).await;
    inject(&pipeline, BrokerFault::Down(3));
    tokio::time::sleep(Duration::from_secs(7)).await;
    inject(&pipeline, BrokerFault::Up(3));
    wait_produced(&pipeline, N).await;
    wait_all_done(&pipeline, N).await;
    pipeline.stop().await.unwrap();
    assert_whole(&pipeline, N).await;
}
