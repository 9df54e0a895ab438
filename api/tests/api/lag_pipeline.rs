//! `/api/lag`, the order journey and the pipeline metrics against the real embedded
//! pipeline (librdkafka's mock cluster over TCP, the daemons, a SQLite file).

use crate::common::*;
use orders_api::{app, AppState, LagOptions};
use orders_core::store::OrderStore;
use orders_daemons::local_pipeline::{LocalOptions, LocalPipeline, Role};
use orders_daemons::producer::{Pace, ProducerConfig};
use serde_json::Value;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

fn producer(n: u64) -> ProducerConfig {
    ProducerConfig {
        topic: "orders".into(),
        pace: Pace::Rate(0.0),
        max_orders: Some(n),
        seed: 42,
        canary_interval: None,
    }
}

fn groups(lag: &Value) -> &Vec<Value> {
    lag["groups"].as_array().unwrap()
}

fn orders_sum(group: &Value, field: &str) -> i64 {
    group["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["topic"] == "orders")
        .map(|p| p[field].as_i64().unwrap_or(0))
        .sum()
}

/// The API over a running pipeline, with its lag sampler (every 200 ms) started: the router,
/// the sampler's stop token and its task.
fn api_over(
    pipeline: &LocalPipeline,
) -> (axum::Router, CancellationToken, tokio::task::JoinHandle<()>) {
    let state = AppState::new(pipeline.store.clone())
        .with_kafka_options(
            pipeline.kafka(),
            "orders",
            LagOptions {
                interval: Duration::from_millis(200),
                window: 5,
                kafka_timeout: Duration::from_secs(5),
            },
        )
        .with_progress(pipeline.progress.clone());
    let sampler_stop = CancellationToken::new();
    let sampler = state.spawn_lag_sampler(sampler_stop.clone()).unwrap();
    (app(state), sampler_stop, sampler)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lag_journey_and_metrics_follow_the_real_pipeline() {
    const N: u64 = 300;
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let mut options = LocalOptions::new(dir.path().join("orders.db"));
    options.producer = Some(producer(N));
    let mut pipeline = LocalPipeline::start(options.clone()).await.unwrap();
    let (app, sampler_stop, sampler) = api_over(&pipeline);

    // 1. Everything consumed: every group has committed all N orders and is OK.
    eventually(
        "every group caught up on N orders",
        Duration::from_secs(120),
        || {
            let app = app.clone();
            async move {
                let a = get(&app, "/api/lag").await;
                if a.status != 200 {
                    return false;
                }
                let lag = a.json();
                groups(&lag).iter().all(|g| {
                    g["total_lag"] == 0
                        && g["status"] == "OK"
                        && orders_sum(g, "committed") == N as i64
                })
            }
        },
    )
    .await;
    let lag = get_ok(&app, "/api/lag").await;
    let names: Vec<&str> = groups(&lag)
        .iter()
        .map(|g| g["group"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["fraud-group", "payments-group", "analytics-group"]);
    for g in groups(&lag) {
        assert_eq!(orders_sum(g, "high_watermark"), N as i64);
        assert_eq!(g["reason"], "caught up");
        assert_eq!(g["max_lag_seconds"], 0.0);
    }
    let analytics = &groups(&lag)[2];
    assert_eq!(
        analytics["topics"],
        serde_json::json!(["orders", "fraud-alerts", "payments"])
    );
    assert_eq!(analytics["partitions"].as_array().unwrap().len(), 18);
    assert_eq!(groups(&lag)[0]["partitions"].as_array().unwrap().len(), 6);
    assert!(lag["window"]["samples"].as_u64().unwrap() >= 1);

    // 2. The journey of an order with an alert, and of one without (now provably clear).
    let store = pipeline.store.clone();
    eventually("every payment stored", Duration::from_secs(60), || {
        let store = store.clone();
        async move { store.totals().await.unwrap().payment_count == N }
    })
    .await;
    let alerts = pipeline.store.latest_alerts(1000).await.unwrap();
    assert!(!alerts.is_empty(), "seed 42 raises alerts");
    let alert_id = alerts[0].alert.order_id;
    let clear_id = (1..=N)
        .find(|id| !alerts.iter().any(|a| a.alert.order_id == *id))
        .unwrap();
    for (id, decision) in [(alert_id, "alert"), (clear_id, "clear")] {
        let v = get_ok(&app, &format!("/api/orders/{id}")).await;
        let j = &v["journey"];
        assert_eq!(j["fraud"]["decision"], decision, "order {id}: {j}");
        assert_eq!(j["payment"]["status"], "PAID", "order {id}");
        assert_eq!(j["groups_behind"], serde_json::json!([]), "order {id}");
        assert!(j["offsets_sampled_at"].is_string());
    }

    // 3. The pipeline counters of this process are in /metrics.
    let m = get(&app, "/metrics").await.text;
    for line in [
        format!("orders_pipeline_orders_stored_total {N}"),
        format!("orders_pipeline_orders_done_total{{group=\"fraud-group\"}} {N}"),
        "orders_consumer_lag_records{group=\"payments-group\"} 0".to_owned(),
        "orders_consumer_status{group=\"analytics-group\",status=\"OK\"} 1".to_owned(),
    ] {
        assert!(m.contains(&line), "missing {line} in\n{m}");
    }

    // 4. Consumers stopped, more orders produced: lag grows, nothing commits -> STOP,
    //    with the age of the oldest unconsumed record.
    pipeline.stop().await.unwrap();
    let mut more = options.clone();
    more.producer = Some(producer(40));
    pipeline.spawn_with(Role::Producer, &more, CancellationToken::new());
    let (role, result) = pipeline.next_finished().await.unwrap();
    assert_eq!(role, Role::Producer);
    result.unwrap();
    eventually(
        "every group STOP with 40 waiting",
        Duration::from_secs(60),
        || {
            let app = app.clone();
            async move {
                let lag = get_ok(&app, "/api/lag").await;
                groups(&lag).iter().all(|g| {
                    g["status"] == "STOP"
                        && g["total_lag"] == 40
                        && g["max_lag_seconds"].as_f64().is_some_and(|s| s > 0.0)
                })
            }
        },
    )
    .await;
    let lag = get_ok(&app, "/api/lag").await;
    for g in groups(&lag) {
        assert!(g["reason"].as_str().unwrap().contains("no commits"), "{g}");
        for p in g["partitions"].as_array().unwrap() {
            if p["lag"].as_i64().unwrap() > 0 {
                assert!(p["lag_seconds"].as_f64().unwrap() > 0.0, "{p}");
            } else {
                assert_eq!(p["lag_seconds"], 0.0, "{p}");
            }
        }
    }

    sampler_stop.cancel();
    tokio::time::timeout(Duration::from_secs(30), sampler)
        .await
        .expect("the sampler stops")
        .unwrap();
}

/// `/readyz` names what is wrong while it is wrong, and turns ready again after: every
/// broker down, then store writes failing in this process.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readyz_names_a_broker_outage_and_a_store_refusing_writes() {
    use orders_core::kafka::BrokerFault;
    use orders_core::store::WriteLimit;
    const N: u64 = 200;
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let mut options = LocalOptions::new(dir.path().join("orders.db"));
    options.producer = Some(producer(N));
    let mut pipeline = LocalPipeline::start(options.clone()).await.unwrap();
    let (app, sampler_stop, sampler) = api_over(&pipeline);
    let lag_status = || {
        let app = app.clone();
        async move { get(&app, "/api/lag").await.status }
    };
    let ready = |want: u16, says: &'static str| {
        let app = app.clone();
        async move {
            let a = get(&app, "/readyz").await;
            let body = a.json();
            a.status == want
                && body["error"]["message"]
                    .as_str()
                    .unwrap_or("ready")
                    .contains(says)
        }
    };
    eventually("ready", Duration::from_secs(60), || ready(200, "ready")).await;

    let broker = pipeline.broker().unwrap();
    broker.inject(BrokerFault::AllDown).unwrap();
    eventually("503 naming kafka", Duration::from_secs(60), || {
        ready(503, "kafka unavailable")
    })
    .await;
    let body = get(&app, "/readyz").await.json();
    assert_eq!(body["checks"]["store"], "ok", "{body}");
    // The lag the console shows is unavailable too, and says why.
    eventually("lag unavailable", Duration::from_secs(60), || async {
        lag_status().await == 503
    })
    .await;
    let lag = get(&app, "/api/lag").await.json();
    assert!(
        lag["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_lowercase()
            .contains("kafka"),
        "{lag}"
    );
    broker.inject(BrokerFault::AllUp).unwrap();
    eventually("lag again", Duration::from_secs(60), || async {
        lag_status().await == 200
    })
    .await;
    eventually("ready again", Duration::from_secs(60), || {
        ready(200, "ready")
    })
    .await;

    let store = pipeline.store.clone();
    eventually("orders stored", Duration::from_secs(60), || {
        let s = store.clone();
        async move { s.totals().await.unwrap().order_count >= N }
    })
    .await;
    pipeline
        .store
        .set_write_limit(WriteLimit::ReadOnly)
        .await
        .unwrap();
    // More orders: the analytics writer meets the read-only store.
    let mut more = options.clone();
    more.producer = Some(producer(50));
    pipeline.spawn_with(Role::Producer, &more, CancellationToken::new());
    eventually("503 naming the store", Duration::from_secs(60), || {
        ready(503, "store write failing")
    })
    .await;
    pipeline
        .store
        .set_write_limit(WriteLimit::Writable)
        .await
        .unwrap();
    eventually("ready once writes succeed", Duration::from_secs(60), || {
        ready(200, "ready")
    })
    .await;
    sampler_stop.cancel();
    sampler.await.unwrap();
    pipeline.stop().await.unwrap();
    assert_eq!(pipeline.store.totals().await.unwrap().order_count, N + 50);
}
