//! The ingest tests' own steps: a throwaway PostgreSQL with the pipeline storing what the
//! ingest publishes, rows to write, the ingest as a process of its own, its dead letters,
//! the replication slot, and the check of the store against the table.

use super::common::{audit_report, eventually, free_port, records_on, Daemon};
use super::postgres_cluster::PgCluster;
use orders_core::audit::AuditReport;
use orders_core::config::Secret;
use orders_core::domain::COUNTRIES;
use orders_core::money::Cents;
use orders_core::store::OrderStore;
use orders_daemons::ingest::pgoutput::Lsn;
use orders_daemons::ingest::postgres::PostgresSource;
use orders_daemons::ingest::IngestConfig;
use orders_daemons::local_pipeline::{LocalOptions, LocalPipeline, Role};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// An order as the table holds it and the store should: (amount, country, status).
pub type Row = (Cents, String, String);

/// One test's world: a PostgreSQL, the consumers of the pipeline on a fresh embedded broker
/// and store (with the ingest in-process when asked), and a writer's session.
pub struct TestBed {
    /// The writers' session on `shop`: the tests' inserts and DDL.
    pub client: tokio_postgres::Client,
    pub pipeline: LocalPipeline,
    /// The store's directory, where ingest processes log too.
    pub dir: tempfile::TempDir,
    /// Declared last: the cluster is stopped after everything that talks to it.
    pub pg: PgCluster,
}

impl TestBed {
    /// The pipeline on `pg`, with the ingest in-process when `with_ingest`.
    pub async fn start(pg: PgCluster, with_ingest: bool) -> TestBed {
        TestBed::start_with(pg, with_ingest, |_| {}).await
    }

    /// [`start`](Self::start), with the in-process ingest's settings changed by `tune`.
    pub async fn start_with(
        pg: PgCluster,
        with_ingest: bool,
        tune: impl FnOnce(&mut IngestConfig),
    ) -> TestBed {
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
        let client = pg.client().await;
        TestBed {
            client,
            pipeline,
            dir,
            pg,
        }
    }

    /// Inserts the row made from `i` with the bed's session; its order id.
    pub async fn insert(&self, i: u64) -> u64 {
        insert(&self.client, i).await
    }

    /// Inserts the rows made from `rows`, one transaction each; their order ids.
    pub async fn insert_rows(&self, rows: Range<u64>) -> Vec<u64> {
        let mut ids = Vec::with_capacity(rows.end.saturating_sub(rows.start) as usize);
        for i in rows {
            ids.push(self.insert(i).await);
        }
        ids
    }

    pub async fn stored_count(&self) -> u64 {
        self.pipeline.store.totals().await.unwrap().order_count
    }

    /// Waits (60 s at most) until the store holds order `id`.
    pub async fn wait_order(&self, id: u64, what: &str) {
        let store = &self.pipeline.store;
        eventually(what, Duration::from_secs(60), || async move {
            store.order(id).await.unwrap().is_some()
        })
        .await;
    }

    /// Waits (120 s at most) until the store counts `n` orders.
    pub async fn wait_count(&self, n: u64, what: &str) {
        eventually(what, Duration::from_secs(120), || async move {
            self.stored_count().await >= n
        })
        .await;
    }

    /// Records on `topic` of the bed's broker.
    pub async fn records_on(&self, topic: &str) -> i64 {
        records_on(&self.pipeline.kafka(), topic).await
    }

    /// Every stored order.
    pub async fn stored(&self) -> BTreeMap<u64, Row> {
        self.pipeline
            .store
            .orders_before(None, 1_000_000)
            .await
            .unwrap()
            .into_iter()
            .map(|o| {
                let order = o.order;
                let row = (
                    order.amount,
                    order.country.to_string(),
                    order.status.to_string(),
                );
                (order.order_id, row)
            })
            .collect()
    }

    /// The table as the store should hold it: its valid rows only.
    pub async fn table(&self) -> BTreeMap<u64, Row> {
        self.rows(true).await
    }

    /// Every row of the table, whatever its values.
    pub async fn table_rows(&self) -> BTreeMap<u64, Row> {
        self.rows(false).await
    }

    async fn rows(&self, valid_only: bool) -> BTreeMap<u64, Row> {
        let select = "SELECT order_id, amount::text, country, status FROM orders";
        // A session of its own: the bed's may be gone with a stopped server.
        let client = self.pg.client().await;
        let rows = if valid_only {
            let valid = format!(
                "{select} WHERE amount BETWEEN 10 AND 500 AND country = ANY($1) \
                 AND customer_id BETWEEN 1000 AND 9999 AND status = 'CREATED'"
            );
            client.query(&valid, &[&COUNTRIES.to_vec()]).await
        } else {
            client.query(select, &[]).await
        };
        rows.unwrap()
            .iter()
            .map(|r| {
                let amount: String = r.get(1);
                let cents = orders_daemons::ingest::row::parse_amount(&amount).unwrap();
                (r.get::<_, i64>(0) as u64, (cents, r.get(2), r.get(3)))
            })
            .collect()
    }

    /// `ordersd` set for the ingest: this bed's database and broker, its ops on `ops`.
    pub fn ingest_command(&self, ops: &str) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ordersd"));
        command
            .env("ORDERS_OPS_ADDR", ops)
            .env("POSTGRES_URL", self.pg.url())
            .env("KAFKA_BOOTSTRAP_SERVERS", self.pipeline.bootstrap_servers());
        command
    }

    /// `ordersd ingest` as a process of its own, logging to `log` (appended).
    pub fn ingest_process(&self, ops: &str, log: &Path) -> Daemon {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = self
            .ingest_command(ops)
            .env("RUST_LOG", "debug,rdkafka=info,tokio_postgres=debug")
            .arg("ingest")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Daemon(Some(child))
    }

    /// The first `want` records on `orders.dlq` (20 s at most).
    pub async fn dead_letters(&self, want: usize) -> Vec<Letter> {
        let kafka = self.pipeline.bootstrap_servers().to_owned();
        tokio::task::spawn_blocking(move || read_letters(&kafka, "orders.dlq", want))
            .await
            .unwrap()
    }

    /// Waits (30 s at most) until the in-process ingest stops; its error.
    pub async fn ingest_stops_with(&mut self) -> String {
        let (role, result) =
            tokio::time::timeout(Duration::from_secs(30), self.pipeline.next_finished())
                .await
                .expect("the ingest stops")
                .unwrap();
        assert_eq!(role, Role::Ingest);
        result.unwrap_err().to_string()
    }

    /// The slot's confirmed position.
    pub fn confirmed_flush(&self) -> u64 {
        let text = self.pg.psql(
            "shop",
            "SELECT confirmed_flush_lsn FROM pg_replication_slots \
             WHERE slot_name = 'orders_ingest'",
        );
        text.parse::<Lsn>().unwrap().0
    }

    /// Waits (30 s at most) until the slot is confirmed past `lsn`.
    pub async fn wait_confirmed_past(&self, lsn: u64, what: &str) {
        eventually(what, Duration::from_secs(30), || async move {
            self.confirmed_flush() > lsn
        })
        .await;
    }

    /// The log between the slot's confirmed position and the server's, as psql sees it.
    pub fn slot_lag(&self) -> i64 {
        self.pg
            .psql(
                "shop",
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint \
                 FROM pg_replication_slots WHERE slot_name = 'orders_ingest'",
            )
            .parse()
            .unwrap()
    }

    /// The audit's only findings are the unhandled dead letters of the orders `dead` (none:
    /// a clean audit); its report.
    pub async fn assert_audit_finds_only(&self, dead: &[u64]) -> AuditReport {
        let report = audit_report(&self.pipeline).await;
        let expected_dead: BTreeSet<u64> = dead.iter().copied().collect();
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
        report
    }

    /// The whole result, once the pipeline is stopped: the audit finds nothing, and the store
    /// holds exactly the table's valid rows, each with its values.
    pub async fn assert_store_is_the_table(&mut self) {
        self.assert_whole(&[]).await;
    }

    /// [`assert_store_is_the_table`](Self::assert_store_is_the_table), where the audit's
    /// only finding is the unhandled dead letters of the rows `dead` (the rows the SPEC
    /// forbids).
    pub async fn assert_whole(&mut self, dead: &[u64]) {
        self.pipeline.stop().await.unwrap();
        let report = self.assert_audit_finds_only(dead).await;
        let want = self.table().await;
        let got = self.stored().await;
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
        assert_eq!(self.stored_count().await, want.len() as u64);
    }
}

/// A row of the SPEC's order, from `i`.
fn good_values(i: u64) -> (i32, String, &'static str) {
    let customer = 1000 + (i * 7919 % 9000) as i32;
    let amount = format!("{}.{:02}", 10 + i * 31 % 490, i % 100);
    let country = COUNTRIES[(i % COUNTRIES.len() as u64) as usize];
    (customer, amount, country)
}

/// Inserts the row made from `i` with `client`; its order id.
pub async fn insert(client: &tokio_postgres::Client, i: u64) -> u64 {
    let (customer, amount, country) = good_values(i);
    let row = client
        .query_one(
            "INSERT INTO orders (customer_id, amount, country) \
             VALUES ($1, $2::text::numeric, $3) RETURNING order_id",
            &[&customer, &amount, &country],
        )
        .await
        .unwrap();
    row.get::<_, i64>(0) as u64
}

/// A loopback address free now (the daemon binds it right after).
pub fn free_addr() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// A dead letter as read back.
#[derive(Debug)]
pub struct Letter {
    pub key: String,
    pub headers: BTreeMap<String, String>,
    /// The record's value as it came.
    pub payload: String,
}

impl Letter {
    /// The value, which must be JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.payload).unwrap()
    }
}

/// The first `want` records of a one-partition topic (20 s at most).
fn read_letters(bootstrap: &str, topic: &str, want: usize) -> Vec<Letter> {
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
            let text =
                |b: Option<&[u8]>| String::from_utf8_lossy(b.unwrap_or_default()).into_owned();
            out.push(Letter {
                key: text(m.key()),
                headers,
                payload: text(m.payload()),
            });
        }
    }
    out
}
