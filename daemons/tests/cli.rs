//! `ordersd` as operators run it: flags, errors, and secrets that never reach the output.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::process::{Command, Stdio};
use std::time::Duration;

const KEY: &str = "CKEY-7f3a9-NEVER-LOG";
const SECRET: &str = "CSECRET-b81c2-NEVER-LOG";
const CB_PASSWORD: &str = "CBPASS-55e1d-NEVER-LOG";

fn ordersd() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ordersd"));
    // Each daemon its own ops port: several run at once.
    c.env("ORDERS_OPS_ADDR", "127.0.0.1:0")
        .env("CONFLUENT_API_KEY", KEY)
        .env("CONFLUENT_API_SECRET", SECRET)
        .env("COUCHBASE_PASSWORD", CB_PASSWORD)
        .env_remove("KAFKA_BOOTSTRAP_SERVERS")
        .env_remove("COUCHBASE_HOST");
    c
}

fn assert_no_secret(text: &str) {
    for s in [KEY, SECRET, CB_PASSWORD] {
        assert!(!text.contains(s), "secret {s} leaked:\n{text}");
    }
}

#[test]
fn help_shows_the_spec_variables_but_no_secret_values() {
    for args in [
        vec!["--help"],
        vec!["fraud", "--help"],
        vec!["producer", "--help"],
    ] {
        let out = ordersd().args(&args).output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("KAFKA_BOOTSTRAP_SERVERS") && text.contains("CONFLUENT_API_SECRET"),
            "{text}"
        );
        assert_no_secret(&text);
    }
}

#[test]
fn a_bad_flag_is_one_line_and_a_non_zero_exit() {
    for args in [
        vec!["fraud", "--no-such-flag"],
        vec!["payment", "--payment-delay-ms", "soon"],
        vec!["teleport"],
    ] {
        let out = ordersd().args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("ordersd: "), "{err}");
    }
}

#[test]
fn bad_settings_are_clear_errors() {
    let out = ordersd()
        .args([
            "--kafka-bootstrap-servers",
            "127.0.0.1:1",
            "fraud",
            "--fraud-safe-countries",
            "usa",
        ])
        .env_remove("CONFLUENT_API_SECRET")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("CONFLUENT_API_KEY and CONFLUENT_API_SECRET"),
        "{err}"
    );
    assert_no_secret(&err);

    // Each role's settings are checked before any network call: at once, not after a
    // 15 s wait for Kafka (127.0.0.1:1 would time out).
    for (args, says) in [
        (vec!["producer", "--sleep-seconds", "1e308"], "out of range"),
        (vec!["producer", "--rate", "1e-300"], "out of range"),
        (vec!["fraud", "--fraud-rules", "[{"], "rule"),
        (vec!["fraud", "--fraud-threshold=-5"], "fraud-threshold"),
        (
            vec!["payment", "--payment-delay-ms", "99999999999"],
            "payment-delay-ms",
        ),
    ] {
        let out = ordersd()
            .env_remove("CONFLUENT_API_KEY")
            .env_remove("CONFLUENT_API_SECRET")
            .args(["--kafka-bootstrap-servers", "127.0.0.1:1"])
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(
            !err.contains("checking the topics") && !err.contains("127.0.0.1:1"),
            "{args:?} reached Kafka first: {err}"
        );
    }
    let out = ordersd()
        .env("SLEEP_SECONDS", "1e308")
        .env_remove("CONFLUENT_API_KEY")
        .env_remove("CONFLUENT_API_SECRET")
        .args(["--kafka-bootstrap-servers", "127.0.0.1:1", "producer"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(!err.contains("panicked"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let out = ordersd()
        .env_remove("CONFLUENT_API_KEY")
        .env_remove("CONFLUENT_API_SECRET")
        .args(["--data-dir"])
        .arg(dir.path())
        .arg("analytics")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("KAFKA_BOOTSTRAP_SERVERS") && err.contains("ordersctl up"),
        "{err}"
    );
}

#[test]
fn secrets_never_reach_the_logs() {
    // SASL_SSL towards a port where nothing listens, with every log level on: the daemon
    // retries and logs, and the secrets must appear nowhere.
    let mut child = ordersd()
        .args(["--kafka-bootstrap-servers", "127.0.0.1:1", "fraud"])
        .env("RUST_LOG", "trace")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.is_empty(), "expected some logging");
    assert_no_secret(&text);
}

/// A port on loopback where nothing listens (bound, then released).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// One HTTP GET; the status code and the body.
fn get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

#[test]
fn api_with_an_unreachable_couchbase_is_live_but_not_ready() {
    let couchbase = closed_port();
    let port = closed_port();
    let mut child = ordersd()
        .env_remove("CONFLUENT_API_KEY")
        .env_remove("CONFLUENT_API_SECRET")
        .args(["--kafka-bootstrap-servers", "127.0.0.1:1"])
        .args([
            "--couchbase-host",
            &format!("couchbase://127.0.0.1:{couchbase}"),
        ])
        .args(["--couchbase-username", "app", "api", "--addr"])
        .arg(format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    let live = loop {
        if let Ok(answer) = get(port, "/healthz") {
            break answer;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "never listened");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(live, (200, r#"{"status":"ok"}"#.to_owned()));

    // Not ready, naming the store; and a store call answers 503 at once, not after the
    // SDK's retries.
    let (status, body) = get(port, "/readyz").unwrap();
    assert_eq!(status, 503, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["checks"]["store"], "unavailable", "{v}");
    let asked = std::time::Instant::now();
    let (status, body) = get(port, "/api/totals").unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(v["error"]["message"].is_string(), "{v}");
    assert_no_secret(&body);

    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let logs = String::from_utf8_lossy(&out.stderr);
    assert!(logs.contains("couchbase"), "{logs}");
    assert_no_secret(&logs);
}

#[test]
fn a_missing_topic_is_named_and_the_daemon_exits() {
    // A broker with the orders topic only: the daemon must not create the others.
    let broker = orders_core::kafka::EmbeddedBroker::start(&[("orders".to_owned(), 6)]).unwrap();
    let mut child = ordersd()
        .env_remove("CONFLUENT_API_KEY")
        .env_remove("CONFLUENT_API_SECRET")
        .args([
            "--kafka-bootstrap-servers",
            broker.settings().bootstrap_servers.as_str(),
        ])
        .arg("fraud")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "still running with a topic missing"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!status.success());
    assert!(
        err.contains("does not exist") && err.contains("fraud-alerts"),
        "{err}"
    );
    assert_no_secret(&err);
}

/// `ordersd fraud` towards a port where nothing listens, stderr to a file as a log
/// collector has it, in `format`: it logs the refused connections and gives up after its
/// 15 s topic check. Returns the file's text.
fn unreachable_kafka_log(format: &str, dir: &std::path::Path) -> std::process::Child {
    let log = std::fs::File::create(dir.join(format!("{format}.log"))).unwrap();
    ordersd()
        .env_remove("CONFLUENT_API_KEY")
        .env_remove("CONFLUENT_API_SECRET")
        .env_remove("NO_COLOR")
        .env("RUST_LOG", "info")
        .env("ORDERS_LOG_FORMAT", format)
        .args([
            "--kafka-bootstrap-servers",
            &format!("127.0.0.1:{}", closed_port()),
            "fraud",
        ])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

#[test]
fn with_json_logs_a_usage_error_is_json_too() {
    for (args, env) in [
        (vec!["fraud", "--no-such-flag"], Some("json")),
        (vec!["--log-format", "json", "teleport"], None),
    ] {
        let mut c = ordersd();
        c.args(&args);
        match env {
            Some(v) => c.env("ORDERS_LOG_FORMAT", v),
            None => c.env_remove("ORDERS_LOG_FORMAT"),
        };
        let out = c.output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        let line: serde_json::Value = serde_json::from_str(err.trim_end()).unwrap();
        assert_eq!(line["fields"]["message"], "ordersd stopped", "{err}");
        assert!(
            line["fields"]["error"]
                .as_str()
                .is_some_and(|e| e.contains("see --help")),
            "{err}"
        );
    }
}

#[test]
fn a_log_file_gets_plain_text_or_only_json_with_the_cause_and_the_fatal_error_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = unreachable_kafka_log("text", dir.path());
    let mut json = unreachable_kafka_log("json", dir.path());
    assert!(!text.wait().unwrap().success());
    assert!(!json.wait().unwrap().success());

    let text = std::fs::read_to_string(dir.path().join("text.log")).unwrap();
    assert!(
        !text.contains('\u{1b}'),
        "no colour codes in a file:\n{text}"
    );
    assert_eq!(
        text.lines().filter(|l| l.starts_with("ordersd: ")).count(),
        1,
        "the fatal error once:\n{text}"
    );
    assert!(
        text.contains("cannot reach broker 127.0.0.1:") && text.contains("(refused)"),
        "the broker and the cause:\n{text}"
    );

    let json = std::fs::read_to_string(dir.path().join("json.log")).unwrap();
    let lines: Vec<serde_json::Value> = json
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(!json.contains('\u{1b}'), "{json}");
    let fatal: Vec<_> = lines
        .iter()
        .filter(|l| l["fields"]["message"] == "ordersd stopped")
        .collect();
    assert_eq!(fatal.len(), 1, "the fatal error once:\n{json}");
    let error = fatal[0]["fields"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("cannot reach broker 127.0.0.1:") && error.contains("(refused)"),
        "the fatal error names the broker and the cause:\n{json}"
    );
    assert!(
        lines.iter().any(|l| l["fields"]["cause"] == "refused"
            && l["fields"]["broker"]
                .as_str()
                .is_some_and(|b| b.starts_with("127.0.0.1:"))),
        "the refused connection logged with its broker and cause:\n{json}"
    );
}

/// `--help` says what an unset KAFKA_BOOTSTRAP_SERVERS does, and it does that: attach to a
/// running `ordersctl up` through `<data-dir>/up.json`, else fail naming what to set.
#[test]
fn help_says_what_an_unset_bootstrap_list_does() {
    let help = ordersd().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(!help.contains("embedded broker (local mode)"), "{help}");
    assert!(help.contains("<data-dir>/up.json"), "{help}");
    let dir = tempfile::tempdir().unwrap();
    let out = ordersd()
        .arg("--data-dir")
        .arg(dir.path())
        .arg("fraud")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("KAFKA_BOOTSTRAP_SERVERS") && err.contains("up.json"),
        "{err}"
    );
}
