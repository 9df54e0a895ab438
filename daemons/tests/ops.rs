//! Every daemon's ops server, on real `ordersd` processes against the embedded broker
//! (librdkafka's mock cluster over TCP): /healthz stays live while a loop idles and fails
//! when its store writer is blocked, /metrics counts what was consumed, and the
//! exposition passes `promtool check metrics`.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use orders_core::kafka::{pipeline_topics, EmbeddedBroker};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A daemon process, killed when the test ends.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port free on loopback now (the daemon binds it right after).
fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn ordersd(kafka: &str, data_dir: &Path, ops: SocketAddr, args: &[&str]) -> Daemon {
    let child = Command::new(env!("CARGO_BIN_EXE_ordersd"))
        .args(["--kafka-bootstrap-servers", kafka, "--data-dir"])
        .arg(data_dir)
        .args(["--ops-addr", &ops.to_string()])
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("KAFKA_BOOTSTRAP_SERVERS")
        .env_remove("COUCHBASE_HOST")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    Daemon(child)
}

/// `GET path` on `addr`: status and body, or `None` while nothing answers.
fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    let status = answer.split_whitespace().nth(1)?.parse().ok()?;
    let body = answer.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

fn wait_until<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The value of the sample `series` (name and labels exactly) in an exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn healthcheck(ops: SocketAddr) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ordersd"))
        .args(["--ops-addr", &ops.to_string(), "healthcheck"])
        .env_remove("KAFKA_BOOTSTRAP_SERVERS")
        .env_remove("COUCHBASE_HOST")
        .output()
        .unwrap()
}

/// Validates an exposition with Prometheus's own checker. CI installs it (.ci/run) and
/// sets ORDERS_REQUIRE_PROMTOOL, so there it always runs; elsewhere a missing promtool is
/// said, not hidden.
fn promtool_accepts(text: &str) {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            assert!(
                std::env::var_os("ORDERS_REQUIRE_PROMTOOL").is_none(),
                "promtool is required here (ORDERS_REQUIRE_PROMTOOL) but cannot run: {e}"
            );
            eprintln!("SKIPPED promtool check metrics: promtool cannot run here ({e}); apt-get install prometheus");
            return;
        }
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics refused the exposition:\n{}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn fraud_metrics_count_what_the_producer_sent_and_an_idle_loop_stays_live() {
    let broker = EmbeddedBroker::start(&pipeline_topics("orders")).unwrap();
    let kafka = broker.bootstrap_servers().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let ops = free_port();
    let _fraud = ordersd(
        &kafka,
        dir.path(),
        ops,
        &["--wedged-after-seconds", "3", "fraud"],
    );
    let (status, body) = wait_until("fraud /healthz", Duration::from_secs(60), || {
        get(ops, "/healthz")
    });
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#));
    wait_until("fraud /readyz ready", Duration::from_secs(60), || {
        get(ops, "/readyz").filter(|(s, _)| *s == 200)
    });

    const ORDERS: u64 = 40;
    let producer_dir = tempfile::tempdir().unwrap();
    let mut producer = ordersd(
        &kafka,
        producer_dir.path(),
        "127.0.0.1:0".parse().unwrap(),
        // Without canaries: fraud counts exactly the orders sent.
        &[
            "producer",
            "--rate",
            "0",
            "--orders",
            &ORDERS.to_string(),
            "--canary-interval-seconds",
            "0",
        ],
    );
    let status = wait_until("the producer to finish", Duration::from_secs(60), || {
        producer.0.try_wait().unwrap()
    });
    assert!(status.success());

    let consumed = r#"orders_pipeline_consumed_total{group="fraud-group"}"#;
    let text = wait_until(
        "fraud to have consumed every order",
        Duration::from_secs(60),
        || {
            let (_, text) = get(ops, "/metrics")?;
            (sample(&text, consumed) == Some(ORDERS as f64)).then_some(text)
        },
    );
    let done = r#"orders_pipeline_done_total{group="fraud-group"}"#;
    let text = if sample(&text, done) == Some(ORDERS as f64) {
        text
    } else {
        wait_until("fraud to be done", Duration::from_secs(60), || {
            let (_, text) = get(ops, "/metrics")?;
            (sample(&text, done) == Some(ORDERS as f64)).then_some(text)
        })
    };
    assert_eq!(
        sample(
            &text,
            r#"orders_pipeline_dead_lettered_total{group="fraud-group",reason="not-json"}"#
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"orders_pipeline_chunk_duration_seconds_count{group="fraud-group"}"#
        )
        .map(|n| n > 0.0),
        Some(true),
        "{text}"
    );
    let assigned = wait_until(
        "fraud to own the 6 partitions",
        Duration::from_secs(60),
        || {
            let (_, text) = get(ops, "/metrics")?;
            let n = sample(
                &text,
                r#"orders_pipeline_assigned_partitions{group="fraud-group"}"#,
            )?;
            (n == 6.0).then_some(text)
        },
    );
    assert!(
        assigned.contains(r#"orders_pipeline_last_poll_age_seconds{group="fraud-group"}"#),
        "{assigned}"
    );
    promtool_accepts(&assigned);

    // Idle for longer than the wedge limit (3 s): every answer stays live.
    let idle_since = Instant::now();
    while idle_since.elapsed() < Duration::from_secs(8) {
        let (status, body) = get(ops, "/healthz").unwrap();
        assert_eq!(status, 200, "an idle loop is live: {body}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let out = healthcheck(ops);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn analytics_with_its_store_writer_blocked_is_wedged_and_says_why() {
    let broker = EmbeddedBroker::start(&pipeline_topics("orders")).unwrap();
    let kafka = broker.bootstrap_servers().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let ops = free_port();
    let _analytics = ordersd(
        &kafka,
        dir.path(),
        ops,
        &["--wedged-after-seconds", "2", "analytics"],
    );
    wait_until("analytics ready", Duration::from_secs(60), || {
        get(ops, "/readyz").filter(|(s, _)| *s == 200)
    });
    assert_eq!(get(ops, "/healthz").unwrap().0, 200);

    // Another writer takes the store's write lock and keeps it: the analytics writer's
    // next transaction waits on it (SQLite's busy timeout) instead of finishing.
    let store = dir.path().join("orders.db");
    assert!(store.exists(), "analytics opened its store");
    let blocker = rusqlite::Connection::open(&store).unwrap();
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();

    let producer_dir = tempfile::tempdir().unwrap();
    let mut producer = ordersd(
        &kafka,
        producer_dir.path(),
        "127.0.0.1:0".parse().unwrap(),
        &["producer", "--rate", "0", "--orders", "5"],
    );
    wait_until("the producer to finish", Duration::from_secs(60), || {
        producer.0.try_wait().unwrap()
    });

    let body = wait_until(
        "analytics /healthz to fail",
        Duration::from_secs(60),
        || {
            get(ops, "/healthz")
                .filter(|(s, _)| *s == 503)
                .map(|(_, b)| b)
        },
    );
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["status"], "wedged", "{body}");
    let reasons = body["reasons"].to_string();
    assert!(reasons.contains("store write"), "{body}");
    let out = healthcheck(ops);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("503"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The lock released, the writer finishes and the daemon is live again.
    blocker.execute_batch("COMMIT").unwrap();
    wait_until(
        "analytics /healthz live again",
        Duration::from_secs(60),
        || get(ops, "/healthz").filter(|(s, _)| *s == 200),
    );
}

/// The api role serves the ops port too (ORDERS_OPS_ADDR), as every daemon does: a
/// scraper there gets the consumer lag and status, dead-letter and canary metrics without
/// the api's bearer token (before, they were only on the api's own `/metrics` behind the
/// token, and nothing answered on the api's 9100), and `ordersd healthcheck`, the
/// container health check, asks its `/healthz`.
#[test]
fn api_serves_its_whole_exposition_on_the_ops_port_without_a_token() {
    const TOKEN: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
    // With the dead-letter ledger, so the api samples its dead-letter metrics too.
    let mut topics = pipeline_topics("orders");
    topics.push((orders_core::kafka::dlq_handled_topic("orders"), 1));
    let broker = EmbeddedBroker::start(&topics).unwrap();
    let kafka = broker.bootstrap_servers().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let ops = free_port();
    let api = free_port();
    let _api = ordersd(
        &kafka,
        dir.path(),
        ops,
        &["api", "--addr", &api.to_string(), "--api-tokens", TOKEN],
    );
    // The api's own /metrics asks for the token...
    let (status, _) = wait_until("the api's /metrics", Duration::from_secs(60), || {
        get(api, "/metrics")
    });
    assert_eq!(status, 401);
    // ...the ops port's does not, and has the groups' lag and status once sampled.
    let text = wait_until(
        "lag metrics on the api's ops port",
        Duration::from_secs(60),
        || {
            get(ops, "/metrics")
                .filter(|(s, t)| {
                    *s == 200 && t.contains("orders_consumer_status{group=\"fraud-group\"")
                })
                .map(|(_, t)| t)
        },
    );
    for series in [
        "orders_consumer_lag_records{group=\"payments-group\"}",
        "orders_canary_lost_total",
    ] {
        assert!(sample(&text, series).is_some(), "no {series} in:\n{text}");
    }
    let text = wait_until(
        "dead-letter metrics on the api's ops port",
        Duration::from_secs(60),
        || {
            get(ops, "/metrics")
                .filter(|(_, t)| t.contains("# TYPE orders_dlq_pending gauge"))
                .map(|(_, t)| t)
        },
    );
    // The same counters as the api's own exposition: the refused request is counted.
    assert_eq!(
        sample(
            &text,
            "orders_api_requests_total{route=\"/metrics\",status=\"401\"}"
        ),
        Some(1.0),
        "{text}"
    );
    promtool_accepts(&text);
    let (status, body) = get(ops, "/healthz").unwrap();
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#));
    let check = healthcheck(ops);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

/// Threads of process `pid` now (Linux).
fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .count()
}

/// `/readyz` is answered from a shared check: 100 probes one after another cost next to
/// nothing, and 16 clients probing at once add no threads to the daemon (each probe used to
/// build a Kafka client of its own: 18.7 s for 100, and 12 → 124 threads for 16 clients).
#[test]
fn readyz_probes_cost_no_kafka_client_and_no_thread() {
    let broker = EmbeddedBroker::start(&pipeline_topics("orders")).unwrap();
    let kafka = broker.bootstrap_servers().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let ops = free_port();
    let fraud = ordersd(&kafka, dir.path(), ops, &["fraud"]);
    let pid = fraud.0.id();
    wait_until("fraud /readyz ready", Duration::from_secs(60), || {
        get(ops, "/readyz").filter(|(s, _)| *s == 200)
    });
    let start = Instant::now();
    for i in 0..100 {
        let (status, _) = get(ops, "/readyz").unwrap();
        assert_eq!(status, 200, "probe {i}");
    }
    let sequential = start.elapsed();
    eprintln!("100 sequential /readyz probes: {sequential:?}");
    assert!(
        sequential < Duration::from_secs(3),
        "100 probes took {sequential:?}"
    );
    let before = threads(pid);
    let clients: Vec<_> = (0..16)
        .map(|_| {
            std::thread::spawn(move || {
                for _ in 0..10 {
                    assert_eq!(get(ops, "/readyz").unwrap().0, 200);
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        })
        .collect();
    let mut most = before;
    while !clients.iter().all(|c| c.is_finished()) {
        most = most.max(threads(pid));
        std::thread::sleep(Duration::from_millis(20));
    }
    for c in clients {
        c.join().unwrap();
    }
    let after = threads(pid);
    eprintln!("daemon threads: {before} before, at most {most} during, {after} after 16 clients");
    assert!(
        most <= before + 2,
        "16 probing clients took the daemon from {before} to {most} threads"
    );
}
