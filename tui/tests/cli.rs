//! The `ordersctl` binary as scripts call it: `json` exit codes and one-line usage errors,
//! and `up --headless` as a developer runs it (with no token, and with one).
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn ordersctl(args: &[&str]) -> std::process::Output {
    ordersctl_with_token(args, None)
}

fn ordersctl_with_token(args: &[&str], token: Option<&str>) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ordersctl"));
    command
        .args(args)
        .env_remove("ORDERS_API_URL")
        .env_remove("ORDERS_API_TOKEN")
        .env_remove("ORDERS_API_ALLOW_INSECURE_HTTP");
    if let Some(t) = token {
        command.env("ORDERS_API_TOKEN", t);
    }
    command.output().unwrap()
}

#[test]
fn json_against_an_unreachable_api_exits_4_with_nothing_on_stdout() {
    // Port 1 on loopback: nothing listens there.
    let out = ordersctl(&["json", "health", "--api", "http://127.0.0.1:1"]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty());
    assert!(!out.stderr.is_empty());
}

#[test]
fn bad_flags_are_one_line_and_exit_2() {
    for args in [
        &["json", "orders", "--limit", "0"][..],
        &["json", "teleport"],
        &["up", "--rate", "fast"],
        // Extreme numbers once panicked deep inside (`cannot convert float seconds`).
        &["up", "--rate", "1e-300"],
        &["up", "--rate", "1e308"],
        &["up", "--payment-delay-ms", "99999999999"],
    ] {
        let out = ordersctl(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(out.stdout.is_empty());
    }
}

/// `ordersctl up --headless` in its own process group of one, killed if the test fails.
struct Up(Child);

impl Up {
    fn start(data_dir: &Path, orders: u64) -> Up {
        Up::start_with_tokens(data_dir, orders, None)
    }

    /// With `tokens`, the API asks for one of them (ORDERS_API_TOKENS).
    fn start_with_tokens(data_dir: &Path, orders: u64, tokens: Option<&str>) -> Up {
        // Without canaries, so that every record on the topic is an order.
        Up::start_with(
            data_dir,
            orders,
            tokens,
            &["--rate", "0", "--canary-interval-seconds", "0"],
        )
    }

    /// `up --orders N` with `args` (the pace, the canaries).
    fn start_with(data_dir: &Path, orders: u64, tokens: Option<&str>, args: &[&str]) -> Up {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ordersctl"));
        command.env_remove("ORDERS_API_TOKENS");
        if let Some(t) = tokens {
            command.env("ORDERS_API_TOKENS", t);
        }
        let child = command
            .args(["up", "--headless", "--port", "0"])
            .args(["--orders", &orders.to_string(), "--payment-delay-ms", "5"])
            .args(args)
            .arg("--data-dir")
            .arg(data_dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        Up(child)
    }

    /// SIGTERM, as ECS and Docker stop a process; it must exit 0 after its final commits.
    fn stop(self) {
        self.stop_after_sigterms(1);
    }

    /// SIGTERM twice, 100 ms apart, as `timeout(1)` and `kill -- -PGID` deliver one request
    /// (to the process, then to its group); it must still drain and exit 0.
    fn stop_with_the_signal_delivered_twice(self) {
        self.stop_after_sigterms(2);
    }

    /// Sends `count` SIGTERMs 100 ms apart; the process must exit 0.
    fn stop_after_sigterms(mut self, count: usize) {
        let pid = self.0.id().to_string();
        for i in 0..count {
            if i > 0 {
                std::thread::sleep(Duration::from_millis(100));
            }
            assert!(Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success());
        }
        let status = self.0.wait().unwrap();
        assert!(
            status.success(),
            "clean exit after {count} SIGTERM: {status:?}"
        );
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_until<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The API address `up` published in `<data-dir>/up.json` (with the broker's).
fn published_api(data_dir: &Path) -> String {
    wait_until("up.json", Duration::from_secs(60), || {
        let text = std::fs::read_to_string(data_dir.join("up.json")).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        let kafka = v["kafka"].as_str()?;
        assert!(kafka.starts_with("127.0.0.1:"), "{v}");
        v["api"].as_str().map(str::to_owned)
    })
}

/// `ordersctl json WHAT` against `api`, parsed; `None` until it exits 0.
fn json(api: &str, args: &[&str]) -> Option<serde_json::Value> {
    let out = ordersctl(&[&["json", "--api", api][..], args].concat());
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).unwrap())
}

/// The ids of the newest `n` orders as the API lists them (newest first by arrival),
/// checking that each was stored no earlier than the next.
fn newest_first(api: &str, n: u64) -> Vec<u64> {
    let list = json(api, &["orders", "--limit", &n.to_string()]).unwrap();
    let orders = list["orders"].as_array().unwrap();
    let arrived: Vec<_> = orders
        .iter()
        .map(|o| chrono::DateTime::parse_from_rfc3339(o["processed_at"].as_str().unwrap()).unwrap())
        .collect();
    assert!(
        arrived.windows(2).all(|w| w[0] >= w[1]),
        "newest first by arrival: {arrived:?}"
    );
    orders
        .iter()
        .map(|o| o["order_id"].as_u64().unwrap())
        .collect()
}

fn totals_reach(api: &str, n: u64) -> serde_json::Value {
    wait_until(
        &format!("{n} orders stored and paid"),
        Duration::from_secs(120),
        || {
            let t = json(api, &["totals"])?;
            (t["order_count"] == n && t["payment_count"] == n).then_some(t)
        },
    )
}

#[test]
fn up_with_tokens_asks_for_one_and_json_exits_6_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let up = Up::start_with_tokens(
        dir.path(),
        5,
        Some("tok-old-0123456789abcdef0123456789ab,tok-new-0123456789abcdef0123456789ab"),
    );
    let api = published_api(dir.path());
    let t = wait_until("totals with the new token", Duration::from_secs(60), || {
        let out = ordersctl_with_token(
            &["json", "--api", &api, "totals"],
            Some("tok-new-0123456789abcdef0123456789ab"),
        );
        out.status
            .success()
            .then(|| serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap())
    });
    assert!(t["order_count"].is_u64(), "{t}");
    for token in [None, Some("tok-wrong")] {
        let out = ordersctl_with_token(&["json", "--api", &api, "totals"], token);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(6), "{token:?}: {err}");
        assert!(out.stdout.is_empty());
        assert!(err.contains("ORDERS_API_TOKEN"), "{err}");
        assert!(!err.contains("tok-"), "no token in the message: {err}");
    }
    // The rotated-out token still works until it is removed; the probe needs none.
    let out = ordersctl_with_token(
        &["json", "--api", &api, "totals"],
        Some("tok-old-0123456789abcdef0123456789ab"),
    );
    assert!(out.status.success());
    let out = ordersctl(&["json", "--api", &api, "health"]);
    assert!(matches!(out.status.code(), Some(0 | 5)), "{out:?}");
    assert!(!out.stdout.is_empty(), "readiness answers without a token");
    up.stop();
}

/// `ordersd api` on an address that is not loopback, with no credentials: it refuses to
/// start and says what to set, before it opens anything.
#[test]
fn ordersd_api_off_loopback_without_credentials_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let ordersd = Path::new(env!("CARGO_BIN_EXE_ordersctl")).with_file_name("ordersd");
    let out = Command::new(ordersd)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["api", "--addr", "0.0.0.0:0"])
        .env_remove("ORDERS_API_TOKENS")
        .env_remove("ORDERS_API_AUTH")
        .env_remove("ORDERS_API_ALB_ARN")
        .env_remove("ORDERS_API_OIDC_ISSUER")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("ORDERS_API_TOKENS") && err.contains("ORDERS_API_AUTH=none"),
        "{err}"
    );
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "nothing was opened"
    );
}

/// `ordersd api` given a short token refuses to start, says how long a token must be, and
/// does not repeat the token.
#[test]
fn ordersd_api_with_a_short_token_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let ordersd = Path::new(env!("CARGO_BIN_EXE_ordersctl")).with_file_name("ordersd");
    let mut child = Command::new(ordersd)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["api", "--addr", "0.0.0.0:0"])
        .env("ORDERS_API_TOKENS", "short-token-x")
        .env_remove("ORDERS_API_AUTH")
        .env_remove("ORDERS_API_ALB_ARN")
        .env_remove("ORDERS_API_OIDC_ISSUER")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // An api that serves instead of refusing is stopped and fails the test, not hangs it.
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("at least 32"), "{err}");
    assert!(!err.contains("short-token-x"), "{err}");
}

#[test]
fn up_headless_runs_everything_and_a_restart_continues_the_ids() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");

    let up = Up::start(&dir, 300);
    let api = published_api(&dir);
    assert!(api.starts_with("http://127.0.0.1:"), "{api}");
    let t = totals_reach(&api, 300);
    assert_eq!(t["paid_count"], 300, "{t}");
    let health = wait_until("ready", Duration::from_secs(30), || json(&api, &["health"]));
    assert_eq!(health["status"], "ready", "{health}");
    let ids = newest_first(&api, 300);
    assert_eq!(
        ids.iter().copied().collect::<BTreeSet<_>>(),
        (1..=300).collect()
    );

    // A closed pipe ends `--watch` normally: `head` leaves after the first line, and the
    // next write (lag is sampled anew every 1.5 s) finds the pipe closed.
    let script = format!(
        "{} json --api {api} lag --watch --interval 0.2 | head -n 1 >/dev/null; \
         echo \"status=${{PIPESTATUS[0]}}\"",
        env!("CARGO_BIN_EXE_ordersctl")
    );
    let out = Command::new("timeout")
        .args(["60", "bash", "-c", &script])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        said.trim(),
        "status=0",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    up.stop();
    assert!(
        !dir.join("up.json").exists(),
        "up.json is removed on a clean stop"
    );

    // Same data dir, a fresh broker: ids continue after the highest stored one, so
    // nothing stored is overwritten and the totals add up across both runs.
    let up = Up::start(&dir, 200);
    let api = published_api(&dir);
    let t = totals_reach(&api, 500);
    assert_eq!(t["paid_count"], 500, "{t}");
    // The second run's orders arrived last, so they list first.
    let ids = newest_first(&api, 500);
    let (second, first) = ids.split_at(200);
    assert_eq!(
        second.iter().copied().collect::<BTreeSet<_>>(),
        (301..=500).collect()
    );
    assert_eq!(
        first.iter().copied().collect::<BTreeSet<_>>(),
        (1..=300).collect()
    );
    let first_run = json(&api, &["order", "300"]).unwrap();
    assert_eq!(first_run["order_id"], 300, "{first_run}");
    up.stop();
}

/// Canaries among the orders leave no gap in the orders' ids: `up --orders N` with a canary
/// every 50 ms stores exactly 1..=N, and a restart continues at N + 1 (a canary's journey
/// is no bound on the orders' ids).
#[test]
fn up_with_canaries_stores_the_order_ids_without_gaps() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    // 200 orders over about two seconds: some 40 canaries among them.
    let pace = ["--rate", "100", "--canary-interval-seconds", "0.05"];
    let up = Up::start_with(&dir, 200, None, &pace);
    let api = published_api(&dir);
    totals_reach(&api, 200);
    up.stop();
    assert_eq!(stored(&dir), (200, 200));
    let ids = canary_ids(&dir);
    assert!(ids.len() >= 5, "{ids:?}");
    assert!(
        ids.iter().all(|id| orders_core::canary::is_canary_id(*id)),
        "{ids:?}"
    );

    let up = Up::start_with(&dir, 100, None, &pace);
    let api = published_api(&dir);
    totals_reach(&api, 300);
    up.stop();
    assert_eq!(stored(&dir), (300, 300));
    let ids_after = canary_ids(&dir);
    assert!(ids_after.len() > ids.len() && ids_after.is_superset(&ids));
    let ids = stored_ids(&dir);
    assert_eq!(ids, (1..=300).collect());
}

/// The ids of the canary journeys `up` left in `data_dir`.
fn canary_ids(data_dir: &Path) -> BTreeSet<u64> {
    let store = orders_core::store::SqliteStore::open(data_dir.join("orders.db")).unwrap();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        orders_core::store::OrderStore::canaries_before(&store, None, 100_000)
            .await
            .unwrap()
            .into_iter()
            .map(|j| j.order_id)
            .collect()
    })
}

/// The ids of every order `up` left in `data_dir`.
fn stored_ids(data_dir: &Path) -> BTreeSet<u64> {
    let store = orders_core::store::SqliteStore::open(data_dir.join("orders.db")).unwrap();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        orders_core::store::OrderStore::orders_before(&store, None, 100_000)
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.order.order_id)
            .collect()
    })
}

/// `ordersctl bench` on a small run: one JSON object whose counts are exactly what the
/// seeded orders imply, and whose rates and ratios are consistent with one another.
#[test]
fn bench_prints_one_consistent_json_report() {
    let orders = 3_000u64;
    let out = ordersctl(&[
        "bench",
        "--orders",
        &orders.to_string(),
        "--latency-rate",
        "500",
        "--latency-seconds",
        "1",
        "--payment-delay-ms",
        "20",
        "--timeout-seconds",
        "120",
        // The yardstick's size, apart from --orders.
        "--raw-messages",
        "5000",
        "--raw-rounds",
        "3",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    // The measured phase follows a 2,000-order warm-up: ids 2001..=2000+N, seed 7.
    let generator = orders_core::generator::OrderGenerator::new(7);
    let rules = orders_core::fraud::FraudRules::default();
    let now = orders_core::domain::Timestamp::now();
    let alerts = (2_001..=2_000 + orders)
        .filter(|id| rules.evaluate(&generator.order(*id, now)).is_some())
        .count() as u64;
    assert!(alerts > 0 && alerts < orders);
    let e2e = &report["end_to_end"];
    assert_eq!(e2e["orders"], orders);
    assert_eq!(e2e["payments"], orders);
    assert_eq!(e2e["fraud_alerts"], alerts);
    let ops = 4.0 + 2.0 * (alerts + orders) as f64 / orders as f64;
    assert!((e2e["kafka_record_ops_per_order"].as_f64().unwrap() - ops).abs() < 0.01);

    let rate = e2e["orders_per_sec"].as_f64().unwrap();
    let raw = report["raw"]["msgs_per_sec"].as_f64().unwrap();
    // The raw yardstick: rounds of a fixed size, whatever --orders is; its rate the median.
    assert_eq!(report["raw"]["messages"], 5000);
    assert_eq!(report["raw"]["rounds"], 3);
    let mut rounds: Vec<f64> = report["raw"]["msgs_per_sec_by_round"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_f64().unwrap())
        .collect();
    rounds.sort_by(f64::total_cmp);
    assert_eq!(rounds.len(), 3);
    assert!(
        (rounds[1] - raw).abs() <= 1.0,
        "{raw} is not the median of {rounds:?}"
    );
    // Its CPU is measured over the same window as its seconds (with the client setup and
    // the warm-up counted in, a short raw phase read "cores busy 109%").
    let busy = report["raw"]["cores_busy"].as_f64().unwrap();
    assert!(busy > 0.0 && busy <= 1.05, "raw cores busy {busy}");
    assert!(rate > 0.0 && raw > 0.0);
    let ratio = report["ratio_end_to_end_to_raw"].as_f64().unwrap();
    assert!(
        (ratio - rate / raw).abs() < 0.002,
        "{ratio} vs {rate}/{raw}"
    );
    // The per-op ratio, as the product of its two factors.
    let per_op = report["ratio_per_kafka_record_op"].as_f64().unwrap();
    let factors = &report["ratio_per_kafka_record_op_factors"];
    let (share, busy_against_raw) = (
        factors["cpu_share"].as_f64().unwrap(),
        factors["cores_busy_against_raw"].as_f64().unwrap(),
    );
    assert!(
        (share * busy_against_raw - per_op).abs() <= 0.01 * per_op + 0.002,
        "{per_op} vs {factors}"
    );
    let kafka_us = factors["kafka_cpu_us_per_order_at_raw_cost"]
        .as_f64()
        .unwrap();
    let other_us = factors["other_cpu_us_per_order"].as_f64().unwrap();
    let order_us = e2e["cpu_us_per_order"].as_f64().unwrap();
    assert!(
        kafka_us > 0.0 && (kafka_us + other_us - order_us).abs() < 0.01,
        "{factors}"
    );
    assert!(stderr.contains("per-op ratio"), "{stderr}");
    for phase in ["raw", "end_to_end"] {
        assert!(
            report[phase]["cpu_seconds"].as_f64().unwrap() > 0.0,
            "{phase}"
        );
    }

    let latency = &report["latency_created_to_stored"];
    assert_eq!(latency["orders"], 500);
    let (p50, p99, max) = (
        latency["p50_ms"].as_f64().unwrap(),
        latency["p99_ms"].as_f64().unwrap(),
        latency["max_ms"].as_f64().unwrap(),
    );
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{latency}");
    // Its first leg, of the same orders: received by analytics before stored.
    let received = &latency["created_to_received_by_analytics"];
    let (r50, r99, rmax) = (
        received["p50_ms"].as_f64().unwrap(),
        received["p99_ms"].as_f64().unwrap(),
        received["max_ms"].as_f64().unwrap(),
    );
    assert!(0.0 < r50 && r50 <= r99 && r99 <= rmax, "{latency}");
    assert!(r50 <= p50 && rmax <= max, "{latency}");
    let writes = latency["store_transactions"].as_u64().unwrap();
    assert!(writes > 0, "{latency}");
    assert!(latency["store_transactions_over_50ms"].as_u64().unwrap() <= writes);
    assert!(
        stderr.contains("created -> received by analytics"),
        "{stderr}"
    );
    assert_eq!(report["settings"]["payment_delay_ms"], 20);
}

/// The store `up` left in `data_dir`: (orders stored, highest id).
fn stored(data_dir: &Path) -> (u64, u64) {
    let store = orders_core::store::SqliteStore::open(data_dir.join("orders.db")).unwrap();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let totals = orders_core::store::OrderStore::totals(&store)
            .await
            .unwrap();
        let max = orders_core::store::OrderStore::max_order_id(&store)
            .await
            .unwrap()
            .unwrap_or(0);
        (totals.order_count, max)
    })
}

/// `up --headless` with its stdout and stderr (at info, no colour) in files under `logs`.
fn up_logged(data_dir: &Path, logs: &Path, args: &[&str]) -> Up {
    let child = Command::new(env!("CARGO_BIN_EXE_ordersctl"))
        .args(["up", "--headless", "--port", "0", "--payment-delay-ms", "5"])
        // The ids stored are checked to be exactly 1..=N: no canaries among them.
        .args(["--canary-interval-seconds", "0"])
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(std::fs::File::create(logs.join("stdout")).unwrap())
        .stderr(std::fs::File::create(logs.join("stderr")).unwrap())
        .spawn()
        .unwrap();
    Up(child)
}

fn signal(up: &Up, sig: &str) {
    let pid = up.0.id().to_string();
    assert!(Command::new("kill")
        .args([sig, &pid])
        .status()
        .unwrap()
        .success());
}

#[test]
fn a_second_up_on_a_data_dir_in_use_refuses_at_once_and_leaves_it_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let first = Up::start(&dir, 50);
    published_api(&dir);
    let up_json = std::fs::read_to_string(dir.join("up.json")).unwrap();

    let out = Command::new(env!("CARGO_BIN_EXE_ordersctl"))
        .args(["up", "--headless", "--port", "0", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim_end(),
        format!(
            "ordersctl: data dir {} in use by PID {}",
            dir.display(),
            first.0.id()
        )
    );
    assert!(out.stdout.is_empty(), "it started nothing");
    assert_eq!(
        std::fs::read_to_string(dir.join("up.json")).unwrap(),
        up_json,
        "the first instance's up.json is untouched"
    );
    first.stop();
    // The lock went with its holder: the data dir is free again.
    let again = Up::start(&dir, 10);
    published_api(&dir);
    again.stop();
}

/// Stops `up` with `sig` once `moment` has passed, and checks that every order the
/// producer had published was stored before the embedded broker went, that the consumers
/// made their final commits, and that the next start continues after those ids.
fn stopping_loses_no_produced_order(sig: &str, rate: &str, moment: impl FnOnce(&Path)) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut up = up_logged(&dir, tmp.path(), &["--rate", rate]);
    published_api(&dir);
    moment(&dir);
    signal(&up, sig);
    let status = up.0.wait().unwrap();
    let stdout = std::fs::read_to_string(tmp.path().join("stdout")).unwrap();
    let stderr = std::fs::read_to_string(tmp.path().join("stderr")).unwrap();
    assert!(status.success(), "{status:?}\n{stdout}\n{stderr}");
    assert!(stdout.contains("orders stopped cleanly"), "{stdout}");
    // "producer stopped orders=N next_order_id=M": N acknowledged by the broker.
    let produced: u64 = stderr
        .lines()
        .find_map(|l| l.split("producer stopped orders=").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no producer summary in\n{stderr}"));
    assert!(
        produced > 0,
        "nothing was produced before the stop\n{stderr}"
    );
    assert_eq!(stored(&dir), (produced, produced), "{stderr}");
    for group in ["fraud-group", "payments-group", "analytics-group"] {
        assert!(
            stderr
                .lines()
                .any(|l| l.contains("final commit done") && l.contains(group)),
            "{group} committed on the way out\n{stderr}"
        );
    }

    let up = Up::start(&dir, 20);
    let api = published_api(&dir);
    totals_reach(&api, produced + 20);
    up.stop();
    assert_eq!(stored(&dir), (produced + 20, produced + 20));
}

/// One stop request delivered twice at once (`timeout 25 ordersctl up` does that) is not an
/// operator asking to skip the drain: every order produced is still stored.
#[test]
fn a_sigterm_delivered_twice_at_once_still_drains() {
    let dir = tempfile::tempdir().unwrap();
    let up = Up::start(dir.path(), 3_000);
    let api = published_api(dir.path());
    wait_until("orders under way", Duration::from_secs(60), || {
        let t = json(&api, &["totals"])?;
        (t["order_count"].as_u64()? > 0).then_some(())
    });
    up.stop_with_the_signal_delivered_twice();
    let (orders, _) = stored(dir.path());
    assert!(orders > 0);
    assert_eq!(stored(dir.path()), (orders, orders));
}

/// Ctrl-C moments after start, while the consumers are still joining their groups.
#[test]
fn ctrl_c_in_the_first_seconds_loses_no_produced_order() {
    stopping_loses_no_produced_order("-INT", "1000", |_| {
        std::thread::sleep(Duration::from_millis(1500))
    });
}

/// SIGTERM mid-burst, thousands of orders in.
#[test]
fn sigterm_mid_burst_loses_no_produced_order() {
    stopping_loses_no_produced_order("-TERM", "3000", |dir| {
        let api = published_api(dir);
        wait_until("a burst under way", Duration::from_secs(60), || {
            let t = json(&api, &["totals"])?;
            (t["order_count"].as_u64()? >= 5_000).then_some(())
        });
    });
}

/// SIGTERM while two more members join the groups: the stop runs through a rebalance.
#[test]
fn sigterm_during_a_rebalance_loses_no_produced_order() {
    let mut joiners = Vec::new();
    stopping_loses_no_produced_order("-TERM", "1000", |dir| {
        std::thread::sleep(Duration::from_secs(4));
        for role in ["fraud", "analytics"] {
            joiners.push(ordersd_process(dir, role));
        }
        std::thread::sleep(Duration::from_millis(1500));
    });
    for mut j in joiners {
        let _ = j.kill();
        let _ = j.wait();
    }
}

/// `ordersd ROLE` attached to the `up` running on `dir` (through its up.json).
fn ordersd_process(dir: &Path, role: &str) -> Child {
    let ordersd = Path::new(env!("CARGO_BIN_EXE_ordersctl")).with_file_name("ordersd");
    Command::new(ordersd)
        .arg("--data-dir")
        .arg(dir)
        .arg(role)
        .env_remove("KAFKA_BOOTSTRAP_SERVERS")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn up_exits_non_zero_naming_the_daemon_that_failed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    std::fs::create_dir_all(&dir).unwrap();
    // The highest id of the producer's range in use: the producer has no id left to give
    // and fails at start (the ids above belong to the database, docs/ingest.md).
    {
        use orders_core::store::{OrderStore, SqliteStore, StoreBatch, StoredOrder};
        let store = SqliteStore::open(dir.join("orders.db")).unwrap();
        let now = orders_core::domain::Timestamp::now();
        let order = orders_core::generator::OrderGenerator::new(1)
            .order(orders_core::domain::PRODUCER_ORDER_IDS.end - 1, now);
        let batch = StoreBatch {
            orders: vec![StoredOrder {
                order,
                kafka_partition: 0,
                kafka_offset: 0,
                processed_at: now,
            }],
            ..StoreBatch::default()
        };
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(store.apply(std::sync::Arc::new(batch)))
            .unwrap();
    }
    let mut up = up_logged(&dir, tmp.path(), &["--rate", "10"]);
    let status = wait_until("up to stop", Duration::from_secs(120), || {
        up.0.try_wait().unwrap()
    });
    let stdout = std::fs::read_to_string(tmp.path().join("stdout")).unwrap();
    let stderr = std::fs::read_to_string(tmp.path().join("stderr")).unwrap();
    assert!(!status.success(), "{stdout}\n{stderr}");
    assert!(!stdout.contains("stopped cleanly"), "{stdout}");
    let last = stderr.trim_end().lines().last().unwrap_or_default();
    assert!(
        last.starts_with("ordersctl: the producer daemon failed:") && last.contains("exhausted"),
        "{stderr}"
    );
}

/// The metric families a Prometheus exposition declares (`# TYPE` lines), with the series
/// names a histogram or summary adds.
fn exported_families(exposition: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for line in exposition.lines() {
        let mut words = line.split_whitespace();
        if let (Some("#"), Some("TYPE"), Some(name), Some(kind)) =
            (words.next(), words.next(), words.next(), words.next())
        {
            names.insert(name.to_owned());
            let parts: &[&str] = match kind {
                "histogram" => &["_bucket", "_sum", "_count"],
                "summary" => &["_sum", "_count"],
                _ => &[],
            };
            names.extend(parts.iter().map(|p| format!("{name}{p}")));
        }
    }
    names
}

/// The `orders_*` metric names a rule file or dashboard uses.
fn used_metrics(text: &str) -> std::collections::BTreeSet<String> {
    let mut used = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("orders_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        used.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    used
}

/// Every metric the alerting rules and the dashboard under `ops/observability` use is one a
/// running pipeline exports (`ordersctl up` serves the api's, the lag monitor's and the
/// daemons' metrics in one `/metrics`), so a renamed metric cannot leave a rule silent.
/// The ingest role does not run in `ordersctl up`: its metrics are checked against the
/// exposition an ingest process serves on its ops port (the same function renders it).
#[test]
fn alert_rules_and_dashboard_use_only_exported_metrics() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ops/observability");
    let mut used = std::collections::BTreeSet::new();
    for file in ["alerts.yml", "dashboard.json"] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let names = used_metrics(&text);
        assert!(names.len() >= 5, "{file} uses {names:?}");
        used.extend(names);
    }
    let (ingest_used, used): (BTreeSet<String>, BTreeSet<String>) = used
        .into_iter()
        .partition(|m| m.starts_with("orders_ingest_"));
    let ingest = orders_core::progress::Progress::default();
    ingest
        .ingest
        .active
        .store(true, std::sync::atomic::Ordering::Relaxed);
    ingest
        .ingest
        .lag_bytes
        .store(0, std::sync::atomic::Ordering::Relaxed);
    // As its watcher sets them once it has measured the slot.
    ingest.ingest.set_slot_state(Some("reserved"));
    for gauge in [
        &ingest.ingest.safe_wal_bytes,
        &ingest.ingest.retained_bytes,
        &ingest.ingest.oldest_retained_seconds,
    ] {
        gauge.store(0, std::sync::atomic::Ordering::Relaxed);
    }
    let ingest_exported = exported_families(&orders_api::metrics::render_pipeline(&ingest));
    let missing: Vec<&String> = ingest_used.difference(&ingest_exported).collect();
    assert!(missing.is_empty(), "used but not exported: {missing:?}");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let up = Up::start(&dir, 50);
    let api = published_api(&dir);
    totals_reach(&api, 50);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = reqwest::Client::new();
    // Lag is sampled every 1.5 s: wait (bounded) for the first sample's metrics.
    let start = Instant::now();
    loop {
        let text = runtime
            .block_on(async {
                client
                    .get(format!("{api}/metrics"))
                    .send()
                    .await?
                    .text()
                    .await
            })
            .unwrap_or_default();
        let exported = exported_families(&text);
        let missing: Vec<&String> = used.difference(&exported).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "used but not exported: {missing:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    up.stop();
}

/// A token is not sent over plain http:// to another machine: `json` and `tui` refuse before
/// connecting (exit 2, naming the way round); with --allow-insecure-http it is sent, after a
/// warning (192.0.2.1 is a documentation address: nothing answers, so json exits 4).
#[test]
fn a_token_is_not_sent_over_plain_http_to_another_machine() {
    const TOKEN: &str = "tok-cleartext-0123456789abcdef0123456789";
    let remote = "http://192.0.2.1:8000";
    for args in [
        &["json", "--api", remote, "totals"][..],
        &["tui", "--api", remote][..],
    ] {
        let out = ordersctl_with_token(args, Some(TOKEN));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert!(
            err.contains("plain http://") && err.contains("--allow-insecure-http"),
            "{err}"
        );
        assert!(!err.contains(TOKEN), "{err}");
    }
    let out = ordersctl_with_token(
        &["json", "--api", remote, "totals", "--allow-insecure-http"],
        Some(TOKEN),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "it tried: {err}");
    assert!(err.contains("WARNING"), "{err}");
    // Loopback, https, or no token: nothing to refuse.
    let out = ordersctl(&["json", "--api", remote, "totals"]);
    assert_eq!(out.status.code(), Some(4));
}

/// A bad `--api` is a usage error before the console takes the screen: one line on stderr,
/// exit 2, nothing on stdout (no alternate-screen switch), the same words as `json` says.
#[test]
fn tui_rejects_a_bad_api_url_before_taking_the_screen() {
    for bad in ["notaurl", "ftp://example.test", "http://"] {
        let out = ordersctl(&["tui", "--api", bad]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {err}");
        assert!(out.stdout.is_empty(), "{bad}: {:?}", out.stdout);
        assert_eq!(err.lines().count(), 1, "{bad}: {err}");
        assert!(
            err.starts_with("ordersctl tui: ") && err.contains(bad),
            "{err}"
        );
        let json = ordersctl(&["json", "--api", bad, "health"]);
        let json_err = String::from_utf8_lossy(&json.stderr);
        assert_eq!(json.status.code(), Some(2), "{json_err}");
        assert_eq!(
            err.trim_start_matches("ordersctl tui: "),
            json_err.trim_start_matches("ordersctl json: "),
            "one validation, one message"
        );
    }
}

/// Every environment variable `ordersctl up --help` names is in the README.
#[test]
fn readme_names_every_variable_up_reads() {
    let help = String::from_utf8(ordersctl(&["up", "--help"]).stdout).unwrap();
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let vars: Vec<&str> = help
        .split("[env: ")
        .skip(1)
        .filter_map(|rest| rest.split(['=', ']']).next())
        .collect();
    assert!(vars.contains(&"ORDERS_API_PORT"), "{help}");
    for var in vars {
        assert!(readme.contains(var), "README omits {var}");
    }
}

/// docs/json.md: usage errors of the command line are prefixed `ordersctl:` (as for every
/// command), every other diagnostic `ordersctl json:`.
#[test]
fn json_diagnostics_carry_the_documented_prefixes() {
    let docs =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/json.md")).unwrap();
    assert!(docs.contains("command-line usage errors are prefixed `ordersctl:`"));
    let usage = ordersctl(&["json", "--no-such-flag", "health"]);
    assert_eq!(usage.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&usage.stderr).starts_with("ordersctl: "));
    let refused = ordersctl(&["json", "--api", "notaurl", "health"]);
    assert!(String::from_utf8_lossy(&refused.stderr).starts_with("ordersctl json: "));
}
