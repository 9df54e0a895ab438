//! Canary orders through the whole pipeline: measured by the api, never counted as orders,
//! reported lost when a stage does not answer within the SLA, and accounted for by the audit.

use super::*;
use orders_api::client::ApiClient;
use orders_core::audit::{audit, AuditOptions};
use orders_core::canary::CanaryJourney;
use tokio_util::sync::CancellationToken;

/// The api over the pipeline's store, served on a free port; stops with the token.
async fn serve_api(pipeline: &LocalPipeline, sla: Duration) -> (ApiClient, orders_api::AppState) {
    let state = orders_api::AppState::new(pipeline.store.clone())
        .with_response_cache(Duration::ZERO)
        .with_canary_sla(sla);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(orders_api::serve(
        listener,
        state.clone(),
        CancellationToken::new(),
    ));
    (ApiClient::new(&url).unwrap(), state)
}

async fn journeys(store: &dyn OrderStore) -> Vec<CanaryJourney> {
    store.canaries_before(None, 10_000).await.unwrap()
}

fn canary_producer(max_orders: Option<u64>, pace: Pace) -> ProducerConfig {
    ProducerConfig {
        pace,
        max_orders,
        canary_interval: Some(Duration::from_millis(100)),
        ..producer(0, 0.0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn canaries_flow_are_measured_and_never_count_as_orders() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = LocalOptions::new(dir.path().join("orders.db"));
    // 300 orders over three seconds, a canary every 100 ms meanwhile.
    options.producer = Some(canary_producer(Some(300), Pace::Rate(100.0)));
    let mut pipeline = LocalPipeline::start(options).await.unwrap();
    let (api, state) = serve_api(&pipeline, Duration::from_secs(30)).await;
    let store = pipeline.store.clone();
    eventually(
        "300 orders paid and every canary's journey complete",
        Duration::from_secs(120),
        || {
            let store = store.clone();
            async move {
                let t = store.totals().await.unwrap();
                let j = journeys(store.as_ref()).await;
                t.paid_count == 300 && j.len() >= 5 && j.iter().all(CanaryJourney::is_complete)
            }
        },
    )
    .await;
    pipeline.stop().await.unwrap();
    let canaries = journeys(store.as_ref()).await;
    let canary_ids: BTreeSet<u64> = canaries.iter().map(|j| j.order_id).collect();

    // The orders' ids run 1..=300 without a gap; the canaries' are of their own range.
    let orders = store
        .orders_before(None, 10_000)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.order)
        .collect::<Vec<_>>();
    assert_eq!(orders.len(), 300);
    let order_ids: BTreeSet<u64> = orders.iter().map(|o| o.order_id).collect();
    assert_eq!(order_ids, (1..=300).collect::<BTreeSet<u64>>());
    assert!(
        canary_ids
            .iter()
            .all(|id| orders_core::canary::is_canary_id(*id)),
        "{canary_ids:?}"
    );
    assert!(orders.iter().all(|o| !orders_core::canary::is_canary(o)));

    // The business figures hold the 300 orders and nothing of the canaries.
    let generator = OrderGenerator::new(SEED);
    let rules = FraudRules::default();
    let expected: Vec<Order> = order_ids
        .iter()
        .map(|id| generator.order(*id, Timestamp::now()))
        .collect();
    let totals = api.get("api/totals", &[]).await.unwrap();
    assert_eq!(totals.status, 200);
    assert_eq!(totals.body["order_count"], 300);
    assert_eq!(
        totals.body["total_sales"].as_f64().unwrap(),
        expected.iter().map(|o| o.amount).sum::<Cents>().dollars()
    );
    let flagged = expected
        .iter()
        .filter(|o| rules.evaluate(o).is_some())
        .count();
    assert_eq!(totals.body["fraud_count"], flagged);
    assert_eq!(totals.body["payment_count"], 300);
    let listed = api
        .get("api/orders", &[("limit", "500".into())])
        .await
        .unwrap();
    let listed = listed.body["orders"].as_array().unwrap();
    assert_eq!(listed.len(), 300);
    assert!(listed.iter().all(|o| o["source"] != "canary"));
    let alerts = store.latest_alerts(1_000).await.unwrap();
    assert_eq!(alerts.len(), flagged);
    assert!(alerts.iter().all(|a| order_ids.contains(&a.alert.order_id)));

    // Measured: each canary once, none lost.
    let body = api.get("api/canary", &[]).await.unwrap();
    assert_eq!(body.status, 200, "{}", body.body);
    let b = &body.body;
    assert_eq!(b["lost_total"], 0, "{b}");
    assert_eq!(b["samples"], canaries.len().min(100), "{b}");
    assert_eq!(b["last"]["state"], "complete", "{b}");
    assert_eq!(b["last"]["order_id"], *canary_ids.last().unwrap(), "{b}");
    for leg in ["decision", "paid", "stored"] {
        let p50 = b["percentiles"][leg]["p50"].as_f64().unwrap();
        let p99 = b["percentiles"][leg]["p99"].as_f64().unwrap();
        assert!((0.0..30.0).contains(&p50) && p50 <= p99, "{leg}: {b}");
    }
    let mut metrics = String::new();
    state.canary_monitor().render(&mut metrics);
    for leg in ["decision", "paid", "stored"] {
        let line = format!(
            "orders_canary_journey_seconds_count{{stage=\"{leg}\"}} {}\n",
            canaries.len()
        );
        assert!(metrics.contains(&line), "{line}{metrics}");
    }
    assert!(metrics.contains("orders_canary_lost_total 0\n"));

    // The audit accounts for the canaries apart from the orders.
    let report = audit(
        &pipeline.kafka(),
        pipeline.store.as_ref(),
        &rules,
        &AuditOptions::default(),
    )
    .await
    .unwrap();
    let json = serde_json::to_string_pretty(&report).unwrap();
    assert!(report.is_clean(), "{json}");
    assert_eq!(report.orders.stored, 300, "{json}");
    assert_eq!(report.orders.on_topic, 300, "{json}");
    assert_eq!(report.canaries.on_topic, canary_ids.len() as u64, "{json}");
    assert_eq!(report.canaries.journeys, canary_ids.len() as u64, "{json}");
    assert_eq!(report.canaries.in_order_range, 0, "{json}");
    assert_eq!(report.canaries.payments_on_topic, canary_ids.len() as u64);
    assert_eq!(
        report.canaries.fraud_verdicts_on_topic,
        canary_ids.len() as u64
    );
    assert_eq!(report.canaries.journeys_missing.count, 0, "{json}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_payment_stopped_a_canary_is_reported_lost_after_the_sla() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = LocalOptions::new(dir.path().join("orders.db"));
    options.consumers = vec![Role::Fraud, Role::Analytics];
    // One order, then canaries only.
    options.producer = Some(canary_producer(
        None,
        Pace::Sleep(Duration::from_secs(3_600)),
    ));
    options.drain_grace = Duration::from_secs(5);
    let mut pipeline = LocalPipeline::start(options).await.unwrap();
    let sla = Duration::from_secs(2);
    let (api, state) = serve_api(&pipeline, sla).await;
    let monitor = state.canary_monitor().clone();
    eventually("a canary counted lost", Duration::from_secs(60), || {
        let monitor = monitor.clone();
        async move { monitor.lost_total() >= 1 }
    })
    .await;
    let body = api.get("api/canary", &[]).await.unwrap();
    let b = &body.body;
    assert_eq!(body.status, 200, "{b}");
    assert_eq!(b["last"]["state"], "lost", "{b}");
    assert!(b["last"]["paid_at"].is_null(), "never paid: {b}");
    assert!(b["last"]["decided_at"].is_string(), "fraud decided: {b}");
    assert!(
        b["last"]["stored_at"].is_string(),
        "analytics recorded it: {b}"
    );
    assert!(b["last"]["decision_seconds"].as_f64().unwrap() < 2.0, "{b}");
    assert_eq!(b["samples"], 0, "{b}");
    assert!(b["lost_total"].as_u64().unwrap() >= 1, "{b}");
    let mut metrics = String::new();
    monitor.render(&mut metrics);
    assert!(
        metrics.contains("orders_canary_journey_seconds_count{stage=\"paid\"} 0\n"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("orders_canary_lost_total 0\n"),
        "{metrics}"
    );
    // Lost canaries count once each: a second look counts no more than the store holds.
    let lost_now = monitor.lost_total();
    let recorded = journeys(pipeline.store.as_ref()).await.len() as u64;
    assert!(
        lost_now <= recorded,
        "{lost_now} lost of {recorded} canaries"
    );

    pipeline.stop().await.unwrap();
    let report = audit(
        &pipeline.kafka(),
        pipeline.store.as_ref(),
        &FraudRules::default(),
        &AuditOptions::default(),
    )
    .await
    .unwrap();
    let json = serde_json::to_string_pretty(&report).unwrap();
    assert!(report.is_clean(), "{json}");
    assert_eq!(report.orders.stored, 1, "{json}");
    assert_eq!(report.payments.on_topic, 0, "{json}");
    assert_eq!(report.canaries.payments_on_topic, 0, "{json}");
    assert!(report.canaries.on_topic >= 1, "{json}");
    assert_eq!(report.canaries.journeys, report.canaries.on_topic, "{json}");
    assert_eq!(report.canaries.journeys_missing.count, 0, "{json}");
}
