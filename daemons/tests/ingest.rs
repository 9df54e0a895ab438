//! The ingest role against a real PostgreSQL (a throwaway cluster per test) and the
//! embedded broker, with the rest of the pipeline storing what it publishes: every row
//! arrives once, whatever the order its transaction commits in, through a crash of the
//! ingest and an outage of the database; bad rows are dead-lettered; the password is never
//! logged. Each test ends with the audit and a comparison of the store with the table.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

#[path = "ingest/postgres_cluster.rs"]
mod postgres_cluster;

use orders_core::config::Secret;
use orders_core::domain::{COUNTRIES, DATABASE_ORDER_ID_BASE};
use orders_core::fraud::FraudRules;
use orders_core::kafka::{consumer_lag, KafkaSettings};
use orders_core::money::Cents;
use orders_core::store::OrderStore;
use orders_daemons::ingest::postgres::PostgresSource;
use orders_daemons::ingest::IngestConfig;
use orders_daemons::local_pipeline::{LocalOptions, LocalPipeline};
use postgres_cluster::{PgCluster, INGEST_PASSWORD};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Waits (bounded) until `cond` holds; panics with `what` otherwise.
async fn eventually<F, Fut>(what: &str, limit: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !cond().await {
        assert!(start.elapsed() < limit, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The consumers of the pipeline on a fresh embedded broker and store; with the ingest
/// in-process when `with_ingest`.
async fn pipeline(pg: &PgCluster, with_ingest: bool) -> (tempfile::TempDir, LocalPipeline) {
    pipeline_with(pg, with_ingest, |_| {}).await
}

/// [`pipeline`], with the ingest's settings changed by `tune`.
async fn pipeline_with(
    pg: &PgCluster,
    with_ingest: bool,
    tune: impl FnOnce(&mut IngestConfig),
) -> (tempfile::TempDir, LocalPipeline) {
    let dir = tempfile::tempdir().unwrap();
    let mut options = LocalOptions::new(dir.path().join("orders.db"));
    options.payment.delay = Duration::ZERO;
    options.drain_grace = Duration::from_secs(60);
    if with_ingest {
        let mut config = IngestConfig::new("orders");
        config.chunk_changes = 2_000;
        tune(&mut config);
        let source = PostgresSource::new(Some(&Secret::new(pg.url())), &|_| None).unwrap();
        options.ingest = Some((config, source));
    }
    let pipeline = LocalPipeline::start(options).await.unwrap();
    (dir, pipeline)
}

/// A row of the SPEC's order, from `i`.
fn good_values(i: u64) -> (i32, String, &'static str) {
    let customer = 1000 + (i * 7919 % 9000) as i32;
    let amount = format!("{}.{:02}", 10 + i * 31 % 490, i % 100);
    let country = COUNTRIES[(i % COUNTRIES.len() as u64) as usize];
    (customer, amount, country)
}

const INSERT: &str = "INSERT INTO orders (customer_id, amount, country) \
                      VALUES ($1, $2::text::numeric, $3) RETURNING order_id";

async fn insert(client: &tokio_postgres::Client, i: u64) -> u64 {
    let (customer, amount, country) = good_values(i);
    let row = client
        .query_one(INSERT, &[&customer, &amount, &country])
        .await
        .unwrap();
    row.get::<_, i64>(0) as u64
}

/// The table as the store should hold it: id → (amount in cents, country), valid rows only.
async fn table(pg: &PgCluster) -> BTreeMap<u64, (Cents, String)> {
    let client = pg.client().await;
    client
        .query(
            "SELECT order_id, amount::text, country FROM orders \
             WHERE amount BETWEEN 10 AND 500 AND country = ANY($1) \
             AND customer_id BETWEEN 1000 AND 9999 AND status = 'CREATED'",
            &[&COUNTRIES.to_vec()],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let amount: String = r.get(1);
            let cents = orders_daemons::ingest::row::parse_amount(&amount).unwrap();
            (r.get::<_, i64>(0) as u64, (cents, r.get::<_, String>(2)))
        })
        .collect()
}

/// Every stored order: id → (amount, country).
async fn stored(store: &dyn OrderStore) -> BTreeMap<u64, (Cents, String)> {
    store
        .orders_before(None, 1_000_000)
        .await
        .unwrap()
        .into_iter()
        .map(|o| {
            (
                o.order.order_id,
                (o.order.amount, o.order.country.to_string()),
            )
        })
        .collect()
}

async fn stored_count(store: &dyn OrderStore) -> u64 {
    store.totals().await.unwrap().order_count
}

/// Records on the orders topic (high watermarks, summed).
async fn records_on_topic(kafka: &KafkaSettings, topic: &str) -> i64 {
    let (kafka, topic) = (kafka.clone(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        consumer_lag(
            &kafka,
            "analytics-group",
            &[&topic],
            Duration::from_secs(10),
        )
        .unwrap()
        .partitions
        .iter()
        .map(|p| p.high_watermark)
        .sum()
    })
    .await
    .unwrap()
}

/// The whole result, once the pipeline is stopped: the audit finds nothing, and the store
/// holds exactly the table's valid rows, each with its values.
async fn assert_store_is_the_table(pipeline: &mut LocalPipeline, pg: &PgCluster) {
    assert_whole(pipeline, pg, &[]).await;
}

/// [`assert_store_is_the_table`], where the audit's only finding is the unhandled dead
/// letters of the rows `dead` (the rows the SPEC forbids).
async fn assert_whole(pipeline: &mut LocalPipeline, pg: &PgCluster, dead: &[u64]) {
    pipeline.stop().await.unwrap();
    let report = orders_core::audit::audit(
        &pipeline.kafka(),
        pipeline.store.as_ref(),
        &FraudRules::default(),
        &orders_core::audit::AuditOptions::default(),
    )
    .await
    .unwrap();
    let expected_dead: std::collections::BTreeSet<u64> = dead.iter().copied().collect();
    assert_eq!(
        (
            report.discrepancy_count,
            &report.discrepancies.dead_letters.order_ids
        ),
        (dead.len() as u64, &expected_dead),
        "audit: {}",
        serde_json::to_string_pretty(&report).unwrap()
    );
    assert_eq!(report.is_clean(), dead.is_empty());
    let want = table(pg).await;
    let got = stored(pipeline.store.as_ref()).await;
    let missing: Vec<&u64> = want
        .keys()
        .filter(|id| !got.contains_key(id))
        .take(10)
        .collect();
    let extra: Vec<&u64> = got
        .keys()
        .filter(|id| !want.contains_key(id))
        .take(10)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "store vs table: {} rows, {} stored; missing {missing:?}, not in the table {extra:?}",
        want.len(),
        got.len()
    );
    assert_eq!(got, want, "stored values");
    assert_eq!(report.orders.stored, want.len() as u64);
    assert_eq!(
        stored_count(pipeline.store.as_ref()).await,
        want.len() as u64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_rows_from_concurrent_writers_arrive_exactly_once() {
    let pg = PgCluster::start();
    let (_dir, mut pipeline) = pipeline(&pg, true).await;
    const WRITERS: u64 = 8;
    const ROWS: u64 = 10_000;
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let client = pg.client().await;
        writers.push(tokio::spawn(async move {
            // Transactions of 1 to 25 rows, pausing inside: ids are drawn at insert, so
            // the eight writers' transactions commit out of id order.
            let mut i = w;
            let mut size = 1 + w % 5;
            while i < ROWS {
                client.batch_execute("BEGIN").await.unwrap();
                for _ in 0..size {
                    if i >= ROWS {
                        break;
                    }
                    insert(&client, i).await;
                    i += WRITERS;
                }
                tokio::time::sleep(Duration::from_micros(200 * (i % 7))).await;
                client.batch_execute("COMMIT").await.unwrap();
                size = 1 + (size * 7 + w) % 25;
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let store = pipeline.store.clone();
    eventually("every row stored", Duration::from_secs(120), || {
        let store = store.clone();
        async move { stored_count(store.as_ref()).await >= ROWS }
    })
    .await;
    assert_eq!(
        pipeline
            .progress
            .ingest
            .rows_published
            .load(std::sync::atomic::Ordering::Relaxed),
        ROWS
    );
    assert_store_is_the_table(&mut pipeline, &pg).await;
    assert_eq!(table(&pg).await.len() as u64, ROWS);
    // No crash: no redelivery either, each row is one record on the topic.
    assert_eq!(
        records_on_topic(&pipeline.kafka(), "orders").await,
        ROWS as i64
    );
    let ids = table(&pg).await;
    assert!(ids.keys().all(|id| *id >= DATABASE_ORDER_ID_BASE));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_transaction_held_open_10_s_is_published_when_it_commits_and_bad_rows_are_dead_lettered()
{
    let pg = PgCluster::start();
    let (_dir, mut pipeline) = pipeline(&pg, true).await;
    let store = pipeline.store.clone();
    // The long transaction takes the lowest id, then stays open.
    let long = pg.client().await;
    long.batch_execute("BEGIN").await.unwrap();
    let held = insert(&long, 0).await;
    let opened = Instant::now();
    // Others commit meanwhile, with higher ids: bad rows among them.
    let other = pg.client().await;
    let mut later = Vec::new();
    for i in 1..=50 {
        later.push(insert(&other, i).await);
    }
    let bad = [
        (
            "5678",
            "600.00",
            "US",
            "CREATED",
            "invalid-value",
            "amount 600.00",
        ),
        (
            "5678",
            "25.00",
            "XX",
            "CREATED",
            "invalid-value",
            "country \"XX\"",
        ),
        ("5678", "25.00", "US", "SHIPPED", "invalid-value", "SHIPPED"),
        (
            "",
            "25.00",
            "US",
            "CREATED",
            "schema",
            "customer_id is null",
        ),
    ];
    let mut bad_ids = Vec::new();
    for (customer, amount, country, status, _, _) in bad {
        let customer: Option<i32> = customer.parse().ok();
        let row = other
            .query_one(
                "INSERT INTO orders (customer_id, amount, country, status) \
                 VALUES ($1, $2::text::numeric, $3, $4) RETURNING order_id",
                &[&customer, &amount, &country, &status],
            )
            .await
            .unwrap();
        bad_ids.push(row.get::<_, i64>(0) as u64);
    }
    // A good row after the bad ones: ingestion went on.
    later.push(insert(&other, 99).await);
    assert!(later.iter().all(|id| *id > held));
    {
        let store = store.clone();
        let last = *later.last().unwrap();
        eventually("the later rows stored", Duration::from_secs(30), || {
            let store = store.clone();
            async move { store.order(last).await.unwrap().is_some() }
        })
        .await;
    }
    assert_eq!(stored_count(store.as_ref()).await, later.len() as u64);
    assert!(
        store.order(held).await.unwrap().is_none(),
        "the open transaction's row is not published before it commits"
    );
    let wait = Duration::from_secs(10).saturating_sub(opened.elapsed());
    tokio::time::sleep(wait).await;
    assert!(store.order(held).await.unwrap().is_none());
    long.batch_execute("COMMIT").await.unwrap();
    {
        let store = store.clone();
        eventually(
            "the held row stored after its commit",
            Duration::from_secs(30),
            || {
                let store = store.clone();
                async move { store.order(held).await.unwrap().is_some() }
            },
        )
        .await;
    }
    // The bad rows are on orders.dlq with their reason and key; none is an order.
    let kafka = pipeline.bootstrap_servers().to_owned();
    let letters = tokio::task::spawn_blocking(move || read_all(&kafka, "orders.dlq", bad.len()))
        .await
        .unwrap();
    assert_eq!(letters.len(), bad.len(), "{letters:?}");
    for ((key, reason, error, value), ((_, _, _, _, want_reason, says), id)) in
        letters.iter().zip(bad.iter().zip(&bad_ids))
    {
        assert_eq!(key, &id.to_string());
        assert_eq!(reason, want_reason);
        assert!(error.contains(says), "{error}");
        let v: serde_json::Value = serde_json::from_str(value).unwrap();
        assert_eq!(v["order_id"], id.to_string());
    }
    let ingest = &pipeline.progress.ingest;
    assert_eq!(ingest.dead_lettered(), bad.len() as u64);
    assert_eq!(
        ingest
            .rows_published
            .load(std::sync::atomic::Ordering::Relaxed),
        later.len() as u64 + 1
    );
    assert_whole(&mut pipeline, &pg, &bad_ids).await;
}

/// Every record of a one-partition topic: (key, dlq.reason, dlq.error, value).
fn read_all(bootstrap: &str, topic: &str, want: usize) -> Vec<(String, String, String, String)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "ingest-test-reader")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while out.len() < want && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let header = |name: &str| {
                m.headers()
                    .and_then(|h| h.iter().find(|h| h.key == name))
                    .and_then(|h| h.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .unwrap_or_default()
            };
            out.push((
                String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                header("dlq.reason"),
                header("dlq.error"),
                String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
            ));
        }
    }
    out
}

/// `ordersd ingest` as a process of its own, logging to `log`; killed if the test ends early.
struct Ingest(Option<Child>);

impl Drop for Ingest {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Ingest {
    fn start(kafka: &str, pg: &PgCluster, ops: &str, log: &std::path::Path) -> Ingest {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_ordersd"))
            .env("ORDERS_OPS_ADDR", ops)
            .env("POSTGRES_URL", pg.url())
            .env("KAFKA_BOOTSTRAP_SERVERS", kafka)
            .env("RUST_LOG", "debug,rdkafka=info,tokio_postgres=debug")
            .arg("ingest")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Ingest(Some(child))
    }

    /// SIGKILL: no shutdown, no flush, nothing confirmed on the slot past what was.
    fn kill(mut self) {
        let mut child = self.0.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// Asks the ingest's /readyz: (HTTP status, body).
async fn readyz(addr: &str) -> Option<(u16, serde_json::Value)> {
    let response = reqwest_get(&format!("http://{addr}/readyz")).await?;
    Some(response)
}

/// A minimal HTTP/1.0 GET (the daemons crate has no HTTP client).
async fn reqwest_get(url: &str) -> Option<(u16, serde_json::Value)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest.split_once('/')?;
    let mut stream = tokio::net::TcpStream::connect(host).await.ok()?;
    stream
        .write_all(format!("GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buf);
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n")?.1;
    Some((status, serde_json::from_str(body).ok()?))
}

fn assert_no_password(log: &std::path::Path) {
    let text = std::fs::read_to_string(log).unwrap();
    assert!(!text.is_empty(), "the ingest logged nothing");
    assert!(
        !text.contains(INGEST_PASSWORD),
        "the Postgres password appears in the ingest's log"
    );
}

/// A writer inserting `n` rows, one per transaction, from `from`, pausing `pause` between.
fn writer(
    client: tokio_postgres::Client,
    from: u64,
    n: u64,
    pause: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for i in from..from + n {
            insert(&client, i).await;
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ingest_killed_and_restarted_mid_stream_misses_nothing() {
    let pg = PgCluster::start();
    let (dir, mut pipeline) = pipeline(&pg, false).await;
    let log = dir.path().join("ingest.log");
    let kafka = pipeline.bootstrap_servers().to_owned();
    let ops = free_addr();
    let first = Ingest::start(&kafka, &pg, &ops, &log);
    const ROWS: u64 = 3_000;
    let writing = writer(pg.client().await, 0, ROWS, Duration::from_micros(500));
    let store = pipeline.store.clone();
    {
        let store = store.clone();
        eventually(
            "a third of the rows stored",
            Duration::from_secs(60),
            || {
                let store = store.clone();
                async move { stored_count(store.as_ref()).await >= ROWS / 3 }
            },
        )
        .await;
    }
    first.kill();
    let at_kill = stored_count(store.as_ref()).await;
    assert!(
        at_kill < ROWS,
        "the kill came mid-stream ({at_kill} stored)"
    );
    let _second = Ingest::start(&kafka, &pg, &ops, &log);
    writing.await.unwrap();
    {
        let store = store.clone();
        eventually(
            "every row stored after the restart",
            Duration::from_secs(60),
            || {
                let store = store.clone();
                async move { stored_count(store.as_ref()).await >= ROWS }
            },
        )
        .await;
    }
    drop(_second);
    assert_no_password(&log);
    assert_store_is_the_table(&mut pipeline, &pg).await;
    // At least every row is on the topic; more only by the redelivery of the chunk the
    // kill interrupted, which the store absorbed.
    let on_topic = records_on_topic(&pipeline.kafka(), "orders").await;
    assert!(
        on_topic >= ROWS as i64,
        "{on_topic} records for {ROWS} rows"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_down_then_up_ingest_waits_reports_and_resumes() {
    let pg = PgCluster::start();
    let (dir, mut pipeline) = pipeline(&pg, false).await;
    let log = dir.path().join("ingest.log");
    let kafka = pipeline.bootstrap_servers().to_owned();
    let ops = free_addr();
    let _ingest = Ingest::start(&kafka, &pg, &ops, &log);
    let store = pipeline.store.clone();
    let client = pg.client().await;
    for i in 0..200 {
        insert(&client, i).await;
    }
    drop(client);
    {
        let store = store.clone();
        eventually("the first rows stored", Duration::from_secs(60), || {
            let store = store.clone();
            async move { stored_count(store.as_ref()).await >= 200 }
        })
        .await;
    }
    let (status, body) = readyz(&ops).await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["checks"]["postgres"], "ok");

    pg.stop_server();
    let down = Instant::now();
    eventually("/readyz reports postgres unavailable", Duration::from_secs(30), || {
        let ops = ops.clone();
        async move {
            matches!(readyz(&ops).await, Some((503, body)) if body["checks"]["postgres"] == "unavailable")
        }
    })
    .await;
    // Down for a while: the ingest waits (its process keeps running, alive).
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(down.elapsed())).await;
    let healthz = reqwest_get(&format!("http://{ops}/healthz")).await.unwrap();
    assert_eq!(healthz.0, 200, "waiting is not wedged: {}", healthz.1);
    pg.start_server();
    let client = pg.client().await;
    for i in 200..400 {
        insert(&client, i).await;
    }
    {
        let store = store.clone();
        eventually(
            "the rows written after the outage stored",
            Duration::from_secs(60),
            || {
                let store = store.clone();
                async move { stored_count(store.as_ref()).await >= 400 }
            },
        )
        .await;
    }
    let (status, body) = readyz(&ops).await.unwrap();
    assert_eq!(status, 200, "{body}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("postgres unavailable"), "{text}");
    assert!(text.contains("postgres is back"), "{text}");
    drop(_ingest);
    assert_no_password(&log);
    assert_store_is_the_table(&mut pipeline, &pg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn producer_ids_continue_below_the_databases_range_after_ingested_orders() {
    use orders_daemons::local_pipeline::Role;
    use orders_daemons::producer::{Pace, ProducerConfig};
    let pg = PgCluster::start();
    let (_dir, mut pipeline) = pipeline(&pg, true).await;
    let store = pipeline.store.clone();
    let producer = |seed| {
        let mut options = LocalOptions::new(std::path::PathBuf::new());
        options.producer = Some(ProducerConfig {
            topic: "orders".into(),
            pace: Pace::Rate(0.0),
            max_orders: Some(20),
            seed,
            // Ids exactly 21..=40: no canary takes one.
            canary_interval: None,
        });
        options
    };
    let wait_for = |n: u64| {
        let store = store.clone();
        async move {
            eventually(
                &format!("{n} orders stored"),
                Duration::from_secs(60),
                || {
                    let store = store.clone();
                    async move { stored_count(store.as_ref()).await >= n }
                },
            )
            .await
        }
    };
    // Producer orders 1..=20, then database orders: the last records of every partition
    // and the highest stored id are the database's.
    pipeline.spawn_with(
        Role::Producer,
        &producer(1),
        pipeline.shutdown_token().child_token(),
    );
    wait_for(20).await;
    let client = pg.client().await;
    for i in 0..120 {
        insert(&client, i).await;
    }
    wait_for(140).await;
    // A new producer continues after its own range's highest id, not the database's.
    pipeline.spawn_with(
        Role::Producer,
        &producer(2),
        pipeline.shutdown_token().child_token(),
    );
    wait_for(160).await;
    let stored_ids: Vec<u64> = stored(store.as_ref()).await.into_keys().collect();
    let producer_ids: Vec<u64> = stored_ids
        .iter()
        .copied()
        .filter(|id| *id < DATABASE_ORDER_ID_BASE)
        .collect();
    assert_eq!(producer_ids, (1..=40).collect::<Vec<u64>>());
    let database_ids: Vec<u64> = stored_ids
        .iter()
        .copied()
        .filter(|id| *id >= DATABASE_ORDER_ID_BASE)
        .collect();
    assert_eq!(
        database_ids,
        table(&pg).await.into_keys().collect::<Vec<u64>>()
    );
    pipeline.stop().await.unwrap();
    let report = orders_core::audit::audit(
        &pipeline.kafka(),
        pipeline.store.as_ref(),
        &FraudRules::default(),
        &orders_core::audit::AuditOptions::default(),
    )
    .await
    .unwrap();
    assert!(report.is_clean(), "{}", report.summary());
    assert_eq!(report.orders.stored, 160);
}

/// Waits (60 s at most) until the store holds order `id`.
async fn wait_order<S: OrderStore + 'static>(store: &std::sync::Arc<S>, id: u64, what: &str) {
    eventually(what, Duration::from_secs(60), || {
        let store = store.clone();
        async move { store.order(id).await.unwrap().is_some() }
    })
    .await;
}

/// Waits (120 s at most) until the store counts `n` orders.
async fn wait_count<S: OrderStore + 'static>(store: &std::sync::Arc<S>, n: u64, what: &str) {
    eventually(what, Duration::from_secs(120), || {
        let store = store.clone();
        async move { stored_count(store.as_ref()).await >= n }
    })
    .await;
}

/// An invalid row with 2 MB in a column made a dead letter Kafka
/// refused, which stopped the ingest for good. Its dead letter now fits, and the valid rows
/// behind it are stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bad_row_of_megabytes_is_dead_lettered_small_and_the_rows_behind_it_stored() {
    let pg = PgCluster::start();
    let client = pg.client().await;
    client
        .batch_execute("ALTER TABLE orders ADD COLUMN note text")
        .await
        .unwrap();
    let (_dir, mut pipeline) = pipeline(&pg, true).await;
    let store = pipeline.store.clone();
    let huge = "x".repeat(2 << 20);
    let mut bad_ids = Vec::new();
    for (country, status, note) in [
        ("XX", "CREATED", huge.as_str()),
        ("US", huge.as_str(), "a note"),
    ] {
        let row = client
            .query_one(
                "INSERT INTO orders (customer_id, amount, country, status, note) \
                 VALUES (5678, 25.00, $1, $2, $3) RETURNING order_id",
                &[&country, &status, &note],
            )
            .await
            .unwrap();
        bad_ids.push(row.get::<_, i64>(0) as u64);
    }
    let mut last = 0;
    for i in 0..50 {
        last = insert(&client, i).await;
    }
    wait_order(&store, last, "the rows behind the bad ones stored").await;
    let kafka = pipeline.bootstrap_servers().to_owned();
    let letters = tokio::task::spawn_blocking(move || read_all(&kafka, "orders.dlq", 2))
        .await
        .unwrap();
    assert_eq!(letters.len(), 2, "{letters:?}");
    for ((key, reason, error, value), id) in letters.iter().zip(&bad_ids) {
        assert_eq!(key, &id.to_string(), "findable by its key");
        assert_eq!(reason, "invalid-value");
        assert!(
            error.len() < 2048,
            "the error is cut: {} bytes",
            error.len()
        );
        assert!(
            value.len() < 16 * 1024,
            "the value is cut: {} bytes",
            value.len()
        );
        let v: serde_json::Value = serde_json::from_str(value).unwrap();
        assert_eq!(v["order_id"], id.to_string());
        assert!(value.contains("[cut: 2097152 bytes]"), "{value:.200}");
    }
    assert_eq!(pipeline.progress.ingest.dead_lettered(), 2);
    assert_whole(&mut pipeline, &pg, &bad_ids).await;
}

/// The ingest's backends (its query sessions and its walsender), by application name.
fn ingest_backends(pg: &PgCluster) -> Vec<u32> {
    pg.psql(
        "postgres",
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'ordersd-ingest'",
    )
    .lines()
    .filter_map(|l| l.trim().parse().ok())
    .collect()
}

/// CPU seconds (user + system) a process has used, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces): utime is the 14th field.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// The peak resident memory of a process, in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib / 1024.0
}

/// A peek returned a whole transaction (memory grew by ≈ 1.1 KB
/// a row), and every poll decoded again from the slot's restart position (an open
/// transaction made the ingest's backend spend most of a core idle-polling). Streamed, one
/// transaction of 150,000 rows passes in bounded memory, and an open transaction costs the
/// backend nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_large_transaction_streams_in_bounded_memory_and_an_open_one_costs_no_cpu() {
    let pg = PgCluster::start();
    let (dir, mut pipeline) = pipeline(&pg, false).await;
    let log = dir.path().join("ingest.log");
    let kafka = pipeline.bootstrap_servers().to_owned();
    let ingest = Ingest::start(&kafka, &pg, &free_addr(), &log);
    let pid = ingest.0.as_ref().unwrap().id();
    let store = pipeline.store.clone();
    let client = pg.client().await;
    // An open transaction holding one row, while others write for 10 s.
    let held = pg.client().await;
    held.batch_execute("BEGIN").await.unwrap();
    insert(&held, 0).await;
    let backends = {
        let mut b = Vec::new();
        for _ in 0..100 {
            b = ingest_backends(&pg);
            if !b.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        b
    };
    assert!(!backends.is_empty(), "the ingest's backends");
    let cpu_before: f64 = backends.iter().map(|p| cpu_seconds(*p)).sum();
    // Orders, and a table outside the publication writing most of the log: decoding reads
    // every change, published or not.
    client
        .batch_execute("CREATE TABLE filler (note text)")
        .await
        .unwrap();
    let started = Instant::now();
    let mut written = 0u64;
    while started.elapsed() < Duration::from_secs(10) {
        client
            .batch_execute(
                "INSERT INTO filler SELECT repeat(md5(g::text), 32) FROM generate_series(1, 1000) g",
            )
            .await
            .unwrap();
        for _ in 0..5 {
            written += 1;
            insert(&client, written).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cpu: f64 = ingest_backends(&pg)
        .iter()
        .map(|p| cpu_seconds(*p))
        .sum::<f64>()
        - cpu_before;
    let elapsed = started.elapsed().as_secs_f64();
    eprintln!("the ingest's backends: {cpu:.2} s of CPU in {elapsed:.1} s");
    assert!(
        cpu < 0.15 * elapsed,
        "the ingest's backends used {cpu:.2} s of CPU in {elapsed:.1} s with a transaction open"
    );
    held.batch_execute("COMMIT").await.unwrap();
    wait_count(&store, written + 1, "every row stored").await;
    // One transaction of 150,000 rows.
    const BIG: u64 = 150_000;
    client
        .execute(
            "INSERT INTO orders (customer_id, amount, country) \
             SELECT 1000 + (g * 7919) % 9000, 10 + (g % 49000) / 100.0, \
             (ARRAY['US','CA','DE','IN','GB','FR','CN','BR'])[1 + g % 8] \
             FROM generate_series(1, $1::bigint) g",
            &[&(BIG as i64)],
        )
        .await
        .unwrap();
    wait_count(&store, written + 1 + BIG, "the large transaction stored").await;
    let rss = peak_rss_mib(pid);
    eprintln!("the ingest's peak RSS: {rss:.0} MiB");
    assert!(rss < 100.0, "the ingest's peak RSS was {rss:.0} MiB");
    drop(ingest);
    assert_store_is_the_table(&mut pipeline, &pg).await;
}

/// The log between the slot's confirmed position and the server's, as psql sees it.
fn slot_lag(pg: &PgCluster) -> i64 {
    pg.psql(
        "shop",
        "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint \
         FROM pg_replication_slots WHERE slot_name = 'orders_ingest'",
    )
    .parse()
    .unwrap()
}

/// The lag was measured only at the top of the loop, which waits while
/// Kafka is down (it read 0 while 1.74 MB were unpublished), and nothing showed the slot's
/// wal_status, safe_wal_size or retention. The watcher measures them on its own timer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_slot_is_measured_while_kafka_is_down() {
    use orders_core::kafka::BrokerFault;
    use std::sync::atomic::Ordering::Relaxed;
    let pg = PgCluster::start_with(&[], "max_slot_wal_keep_size = '64MB'");
    let (_dir, mut pipeline) = pipeline(&pg, true).await;
    let store = pipeline.store.clone();
    let client = pg.client().await;
    let mut last = 0;
    for i in 0..100 {
        last = insert(&client, i).await;
    }
    wait_order(&store, last, "the first rows stored").await;
    pipeline
        .broker()
        .unwrap()
        .inject(BrokerFault::AllDown)
        .unwrap();
    for i in 100..600 {
        last = insert(&client, i).await;
    }
    let ingest = &pipeline.progress.ingest;
    let real = slot_lag(&pg);
    assert!(real > 10_000, "{real} bytes unpublished");
    eventually(
        "the lag measured during the outage",
        Duration::from_secs(10),
        || async { ingest.lag_bytes.load(Relaxed) >= real },
    )
    .await;
    assert!(ingest.retained_bytes.load(Relaxed) >= real);
    assert_eq!(ingest.slot_state(), Some("reserved"));
    let safe = ingest.safe_wal_bytes.load(Relaxed);
    // The limit, plus the segments the server counts on top (16 MB each).
    assert!(safe > 0 && safe < 128 << 20, "safe_wal_size {safe}");
    assert!(ingest.oldest_retained_seconds.load(Relaxed) >= 0);
    pipeline
        .broker()
        .unwrap()
        .inject(BrokerFault::AllUp)
        .unwrap();
    wait_order(&store, last, "every row stored after the outage").await;
    // Caught up: the keepalives confirm the rest, and the lag falls back.
    eventually(
        "the lag back to nothing",
        Duration::from_secs(30),
        || async { ingest.lag_bytes.load(Relaxed) < real },
    )
    .await;
    assert_store_is_the_table(&mut pipeline, &pg).await;
}

/// With max_slot_wal_keep_size the server invalidated the slot while the
/// ingest was stopped, and 300 rows were lost with no documented way back. The ingest now
/// stops naming the way back; the runbook's steps (docs/ingest.md, "A lost slot") recreate
/// the slot and `ordersd ingest-recover` publishes the gap from the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_slot_is_reported_and_the_gap_recovered_from_the_table() {
    let pg = PgCluster::start_with(
        &["--wal-segsize=1"],
        "max_slot_wal_keep_size = '1MB'\nmax_wal_size = '32MB'\nmin_wal_size = '2MB'",
    );
    let (dir, mut pipeline) = pipeline(&pg, false).await;
    let log = dir.path().join("ingest.log");
    let kafka = pipeline.bootstrap_servers().to_owned();
    let store = pipeline.store.clone();
    let client = pg.client().await;
    let first = Ingest::start(&kafka, &pg, &free_addr(), &log);
    for i in 0..200 {
        insert(&client, i).await;
    }
    wait_count(&store, 200, "the first rows stored").await;
    first.kill();
    // Stopped: rows written meanwhile, and log enough for the server to drop the slot's.
    for i in 200..500 {
        insert(&client, i).await;
    }
    for i in 0..4 {
        insert(&client, 500 + i).await;
        pg.psql("shop", "SELECT pg_switch_wal()");
    }
    pg.psql("shop", "CHECKPOINT");
    assert_eq!(
        pg.psql(
            "shop",
            "SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'orders_ingest'"
        ),
        "lost"
    );
    // The ingest stops, naming the way back.
    let out = Command::new(env!("CARGO_BIN_EXE_ordersd"))
        .env("ORDERS_OPS_ADDR", free_addr())
        .env("POSTGRES_URL", pg.url())
        .env("KAFKA_BOOTSTRAP_SERVERS", &kafka)
        .arg("ingest")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("ingest-recover"), "{stderr}");
    // The runbook: a new slot, the ingest started on it, the gap published from the table.
    let highest_stored = *stored(store.as_ref()).await.keys().last().unwrap();
    client
        .batch_execute(
            "SELECT pg_drop_replication_slot('orders_ingest'); \
             SELECT pg_create_logical_replication_slot('orders_ingest', 'pgoutput')",
        )
        .await
        .unwrap();
    let _second = Ingest::start(&kafka, &pg, &free_addr(), &log);
    for i in 504..554 {
        insert(&client, i).await;
    }
    let recovered = Command::new(env!("CARGO_BIN_EXE_ordersd"))
        .env("ORDERS_OPS_ADDR", free_addr())
        .env("POSTGRES_URL", pg.url())
        .env("KAFKA_BOOTSTRAP_SERVERS", &kafka)
        .args(["ingest-recover", "--from-id"])
        .arg((highest_stored + 1).to_string())
        .output()
        .unwrap();
    assert!(recovered.status.success(), "{recovered:?}");
    let done: serde_json::Value = serde_json::from_slice(&recovered.stdout).unwrap();
    assert!(done["published"].as_u64().unwrap() >= 304, "{done}");
    wait_count(&store, 554, "the gap and the new rows stored").await;
    drop(_second);
    assert_no_password(&log);
    assert_store_is_the_table(&mut pipeline, &pg).await;
}

/// The setup was checked only at start; a table dropped and created
/// again mid-run (no longer in the publication) went unnoticed. The watcher checks it again
/// and the ingest stops with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_table_dropped_and_created_again_mid_run_stops_the_ingest_with_the_reason() {
    use orders_daemons::local_pipeline::Role;
    let pg = PgCluster::start();
    let (_dir, mut pipeline) = pipeline_with(&pg, true, |c| {
        c.setup_interval = Duration::from_secs(1);
    })
    .await;
    let store = pipeline.store.clone();
    let client = pg.client().await;
    let mut last = 0;
    for i in 0..20 {
        last = insert(&client, i).await;
    }
    wait_order(&store, last, "the rows stored").await;
    let before = table(&pg).await;
    client
        .batch_execute(
            "ALTER TABLE orders RENAME TO orders_old; \
             CREATE TABLE orders (LIKE orders_old INCLUDING ALL)",
        )
        .await
        .unwrap();
    let finished = tokio::time::timeout(Duration::from_secs(30), pipeline.next_finished())
        .await
        .expect("the ingest stops")
        .unwrap();
    assert_eq!(finished.0, Role::Ingest);
    let error = finished.1.unwrap_err().to_string();
    assert!(error.contains("does not publish table orders"), "{error}");
    // Nothing else changed: the store is what the table held before.
    let _ = pipeline.stop().await;
    assert_eq!(stored(pipeline.store.as_ref()).await, before);
    let report = orders_core::audit::audit(
        &pipeline.kafka(),
        pipeline.store.as_ref(),
        &FraudRules::default(),
        &orders_core::audit::AuditOptions::default(),
    )
    .await
    .unwrap();
    assert!(report.is_clean(), "{}", report.summary());
    assert_eq!(records_on_topic(&pipeline.kafka(), "orders").await, 20);
}

/// Every record of a one-partition dead-letter topic: (key, headers by name, value).
fn read_letters(
    bootstrap: &str,
    topic: &str,
    want: usize,
) -> Vec<(String, BTreeMap<String, String>, serde_json::Value)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "ingest-test-letters")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while out.len() < want && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| {
                            let v = String::from_utf8_lossy(h.value.unwrap_or_default());
                            (h.key.to_owned(), v.into_owned())
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push((
                String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                headers,
                serde_json::from_slice(m.payload().unwrap_or_default()).unwrap(),
            ));
        }
    }
    out
}

/// The log position a dead letter's `dlq.source-row` header names.
fn source_row_lsn(headers: &BTreeMap<String, String>) -> u64 {
    let at = headers["dlq.source-row"]
        .strip_prefix("postgres public.orders at ")
        .unwrap();
    let lsn: orders_daemons::ingest::pgoutput::Lsn = at.parse().unwrap();
    lsn.0
}

/// The slot's confirmed position.
fn confirmed_flush(pg: &PgCluster) -> u64 {
    let text = pg.psql(
        "shop",
        "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'orders_ingest'",
    );
    text.parse::<orders_daemons::ingest::pgoutput::Lsn>()
        .unwrap()
        .0
}

/// Every row of the table, whatever its values: id → (amount, country, status).
async fn table_rows(pg: &PgCluster) -> BTreeMap<u64, (Cents, String, String)> {
    let client = pg.client().await;
    client
        .query(
            "SELECT order_id, amount::text, country, status FROM orders",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let amount: String = r.get(1);
            let cents = orders_daemons::ingest::row::parse_amount(&amount).unwrap();
            (r.get::<_, i64>(0) as u64, (cents, r.get(2), r.get(3)))
        })
        .collect()
}

/// Every stored order: id → (amount, country, status).
async fn stored_rows(store: &dyn OrderStore) -> BTreeMap<u64, (Cents, String, String)> {
    store
        .orders_before(None, 1_000_000)
        .await
        .unwrap()
        .into_iter()
        .map(|o| {
            let order = o.order;
            let status = order.status.to_string();
            (
                order.order_id,
                (order.amount, order.country.to_string(), status),
            )
        })
        .collect()
}

/// An UPDATE to CANCELLED left the store CREATED and the order paid,
/// and a DELETE went unnoticed: both were dropped in silence. Each is now a dead letter of
/// its own (`source-update`, `source-delete`) with the order's key, its log position and
/// what changed, counted, and never an order record; the rows behind are published.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn updates_and_deletes_of_published_rows_are_dead_lettered_never_published() {
    use std::sync::atomic::Ordering::Relaxed;
    let pg = PgCluster::start();
    let (_dir, mut pipeline) = pipeline(&pg, true).await;
    let store = pipeline.store.clone();
    let client = pg.client().await;
    let mut ids = Vec::new();
    for i in 0..30 {
        ids.push(insert(&client, i).await);
    }
    wait_order(&store, ids[29], "the rows stored").await;
    let inserted = table_rows(&pg).await;
    let at_start = confirmed_flush(&pg);
    let change = |sql: &'static str, id: u64| {
        let client = &client;
        async move {
            let id = id as i64;
            client.execute(sql, &[&id]).await.unwrap()
        }
    };
    change(
        "UPDATE orders SET status = 'CANCELLED' WHERE order_id = $1",
        ids[0],
    )
    .await;
    change(
        "UPDATE orders SET amount = 30.00, country = 'DE' WHERE order_id = $1",
        ids[1],
    )
    .await;
    change("DELETE FROM orders WHERE order_id = $1", ids[2]).await;
    // An update that leaves the order as it was: nothing differs, nothing to refuse.
    change(
        "UPDATE orders SET status = status WHERE order_id = $1",
        ids[3],
    )
    .await;
    for i in 30..40 {
        ids.push(insert(&client, i).await);
    }
    wait_order(&store, ids[39], "the rows behind the changes stored").await;
    let kafka = pipeline.bootstrap_servers().to_owned();
    let letters = tokio::task::spawn_blocking(move || read_letters(&kafka, "orders.dlq", 3))
        .await
        .unwrap();
    assert_eq!(letters.len(), 3, "{letters:?}");
    assert_eq!(
        records_on_topic(&pipeline.kafka(), "orders.dlq").await,
        3,
        "none for the update that changed no order column"
    );
    let want = [
        (ids[0], "source-update", "status CREATED → CANCELLED"),
        (ids[1], "source-update", "→ 30.00, country "),
        (ids[2], "source-delete", "deleted from public.orders"),
    ];
    // The first change's record may start exactly where the slot stood.
    let mut last_lsn = at_start - 1;
    for ((key, headers, value), (id, reason, says)) in letters.iter().zip(want) {
        assert_eq!(key, &id.to_string(), "findable by its key");
        assert_eq!(headers["dlq.reason"], reason);
        assert_eq!(headers["dlq.group"], "ingest");
        assert!(headers["dlq.error"].contains(says), "{headers:?}");
        assert!(
            headers["dlq.error"].contains("not published"),
            "{headers:?}"
        );
        let lsn = source_row_lsn(headers);
        assert!(
            lsn > last_lsn,
            "each at its own log position, in order: {lsn:X} after {last_lsn:X} ({headers:?})"
        );
        last_lsn = lsn;
        assert_eq!(value["order_id"], id.to_string());
        assert_eq!(value["old_row"], "whole", "REPLICA IDENTITY FULL: {value}");
    }
    let cancelled = &letters[0].2;
    assert_eq!(cancelled["change"], "update");
    assert_eq!(
        cancelled["changed"],
        serde_json::json!({"status": {"old": "CREATED", "new": "CANCELLED"}})
    );
    assert_eq!(cancelled["row"]["status"], "CANCELLED");
    let repriced = &letters[1].2["changed"];
    assert_eq!(repriced["amount"]["new"], "30.00");
    assert_eq!(repriced["country"]["new"], "DE");
    assert_eq!(repriced["amount"]["old"], inserted[&ids[1]].0.to_string());
    let deleted = &letters[2].2;
    assert_eq!(deleted["change"], "delete");
    assert_eq!(deleted["row"]["country"], inserted[&ids[2]].1);
    let ingest = &pipeline.progress.ingest;
    assert_eq!(
        (
            ingest.refused_changes("update"),
            ingest.refused_changes("delete")
        ),
        (2, 1)
    );
    assert_eq!(ingest.dead_lettered(), 0, "no inserted row was refused");
    assert_eq!(ingest.rows_published.load(Relaxed), 40);
    // Acknowledged, then confirmed: the slot moves past the changes.
    eventually(
        "the slot confirmed past the changes",
        Duration::from_secs(30),
        || async { confirmed_flush(&pg) > last_lsn },
    )
    .await;
    pipeline.stop().await.unwrap();
    // Topic: one record per inserted row, none for a change.
    assert_eq!(records_on_topic(&pipeline.kafka(), "orders").await, 40);
    // Store: the orders as inserted. It differs from the table exactly by the changes the
    // dead letters name.
    let mut expected = table_rows(&pg).await;
    assert_eq!(expected[&ids[0]].2, "CANCELLED");
    assert!(!expected.contains_key(&ids[2]));
    for id in &ids[..3] {
        expected.insert(*id, inserted[id].clone());
    }
    assert_eq!(stored_rows(pipeline.store.as_ref()).await, expected);
    // The audit finds nothing but the three dead letters, until an operator handles them.
    let report = orders_core::audit::audit(
        &pipeline.kafka(),
        pipeline.store.as_ref(),
        &FraudRules::default(),
        &orders_core::audit::AuditOptions::default(),
    )
    .await
    .unwrap();
    let dead: std::collections::BTreeSet<u64> = ids[..3].iter().copied().collect();
    assert_eq!(
        (
            report.discrepancy_count,
            &report.discrepancies.dead_letters.order_ids
        ),
        (3, &dead),
        "{}",
        report.summary()
    );
    assert_eq!(report.orders.stored, 40);
}

/// A test-wide log, for the lines the in-process ingest writes at warn and above.
fn captured_log() -> &'static std::sync::Mutex<Vec<u8>> {
    static LOG: std::sync::OnceLock<std::sync::Mutex<Vec<u8>>> = std::sync::OnceLock::new();
    let log = LOG.get_or_init(Default::default);
    struct Writer;
    impl std::io::Write for Writer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            captured_log().lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer(|| Writer)
        .try_init();
    log
}

/// No test proved that a dead letter Kafka refuses is never fatal: the embedded broker takes
/// small records. Here Kafka's client refuses one (a producer whose `message.max.bytes` is
/// below the dead letter's size: MsgSizeTooLarge), and the ingest logs the row with its key,
/// log position and reason, counts it, goes on with the rows behind it, and moves the slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_letter_kafka_refuses_is_logged_and_counted_and_the_stream_goes_on() {
    let log = captured_log();
    let pg = PgCluster::start();
    let (_dir, mut pipeline) = pipeline_with(&pg, true, |c| {
        c.producer_properties = vec![("message.max.bytes".into(), "1000".into())];
    })
    .await;
    let store = pipeline.store.clone();
    let client = pg.client().await;
    let bad = "INSERT INTO orders (customer_id, amount, country) VALUES (5678, 25.00, $1) \
               RETURNING order_id";
    let country = "X".repeat(3000);
    let refused: i64 = client.query_one(bad, &[&country]).await.unwrap().get(0);
    let small: i64 = client.query_one(bad, &[&"XX"]).await.unwrap().get(0);
    let mut last = 0;
    for i in 0..50 {
        last = insert(&client, i).await;
    }
    wait_order(
        &store,
        last,
        "the rows behind the refused dead letter stored",
    )
    .await;
    let ingest = &pipeline.progress.ingest;
    eventually("the refusal counted", Duration::from_secs(10), || async {
        ingest
            .dead_letters_refused
            .load(std::sync::atomic::Ordering::Relaxed)
            == 1
    })
    .await;
    // The refused row is findable: its key, log position and reason in the log.
    let line = {
        let text = String::from_utf8_lossy(&log.lock().unwrap()).into_owned();
        text.lines()
            .find(|l| {
                l.contains("refused this row's dead letter") && l.contains(&refused.to_string())
            })
            .unwrap_or_else(|| panic!("no log line for row {refused}"))
            .to_owned()
    };
    assert!(line.contains("reason=\"invalid-value\""), "{line}");
    assert!(line.contains("MessageSizeTooLarge"), "{line}");
    let lsn: orders_daemons::ingest::pgoutput::Lsn = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("lsn="))
        .unwrap()
        .parse()
        .unwrap();
    // The slot moves past it.
    eventually(
        "the slot confirmed past the refused row",
        Duration::from_secs(30),
        || async { confirmed_flush(&pg) > lsn.0 },
    )
    .await;
    // Still running: a row written now is stored.
    let after = insert(&client, 99).await;
    wait_order(&store, after, "a row written after the refusal stored").await;
    assert_eq!(ingest.dead_lettered(), 2);
    assert_eq!(records_on_topic(&pipeline.kafka(), "orders.dlq").await, 1);
    assert_whole(&mut pipeline, &pg, &[small as u64]).await;
}

/// pgoutput describes the table anew (a Relation message) after an ALTER TABLE, and when a
/// table of the same name is created again and published; the ingest checks its setup again
/// then, not only on its timer (an hour here): a table still fit goes on, one that lost an
/// order column stops the ingest with the reason, within seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_setup_is_checked_again_when_the_stream_describes_the_table_anew() {
    use orders_daemons::local_pipeline::Role;
    let pg = PgCluster::start();
    let (_dir, mut pipeline) = pipeline_with(&pg, true, |c| {
        c.setup_interval = Duration::from_secs(3600);
    })
    .await;
    let store = pipeline.store.clone();
    let client = pg.client().await;
    let mut last = 0;
    for i in 0..10 {
        last = insert(&client, i).await;
    }
    wait_order(&store, last, "the first rows stored").await;
    client
        .batch_execute("ALTER TABLE orders ADD COLUMN note text")
        .await
        .unwrap();
    for i in 10..20 {
        last = insert(&client, i).await;
    }
    wait_order(&store, last, "the rows after ALTER TABLE stored").await;
    // Created again under the same name, its ids continuing, and published.
    client
        .batch_execute(&format!(
            "ALTER TABLE orders RENAME TO orders_old; \
             CREATE TABLE orders (LIKE orders_old INCLUDING ALL); \
             ALTER TABLE orders ALTER COLUMN order_id RESTART WITH {}; \
             ALTER PUBLICATION orders_ingest ADD TABLE orders; \
             ALTER PUBLICATION orders_ingest DROP TABLE orders_old",
            last + 1
        ))
        .await
        .unwrap();
    let mut ids = Vec::new();
    for i in 20..30 {
        ids.push(insert(&client, i).await);
    }
    wait_order(&store, ids[9], "the rows of the table created again stored").await;
    let before: BTreeMap<u64, (Cents, String)> = stored(store.as_ref()).await;
    assert_eq!(before.len(), 30);
    // An order column dropped: the next row's description stops the ingest.
    client
        .batch_execute("ALTER TABLE orders DROP COLUMN currency")
        .await
        .unwrap();
    insert(&client, 30).await;
    let finished = tokio::time::timeout(Duration::from_secs(30), pipeline.next_finished())
        .await
        .expect("the ingest stops")
        .unwrap();
    assert_eq!(finished.0, Role::Ingest);
    let error = finished.1.unwrap_err().to_string();
    assert!(
        error.contains("lacks the order columns currency"),
        "{error}"
    );
    let _ = pipeline.stop().await;
    assert_eq!(stored(pipeline.store.as_ref()).await, before);
    assert_eq!(records_on_topic(&pipeline.kafka(), "orders").await, 30);
    let report = orders_core::audit::audit(
        &pipeline.kafka(),
        pipeline.store.as_ref(),
        &FraudRules::default(),
        &orders_core::audit::AuditOptions::default(),
    )
    .await
    .unwrap();
    assert!(report.is_clean(), "{}", report.summary());
}
