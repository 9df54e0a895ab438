//! `ordersd` as operators run it: flags, errors, and secrets that never reach the output.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::process::{Command, Stdio};
use std::time::Duration;

const KEY: &str = "CKEY-7f3a9-NEVER-LOG";
const SECRET: &str = "CSECRET-b81c2-NEVER-LOG";
const CB_PASSWORD: &str = "CBPASS-55e1d-NEVER-LOG";

fn ordersd() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ordersd"));
    c.env("CONFLUENT_API_KEY", KEY)
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
