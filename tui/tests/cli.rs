//! The `ordersctl` binary as scripts call it: `json` exit codes and one-line usage errors.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::process::Command;

fn ordersctl(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ordersctl"))
        .args(args)
        .env_remove("ORDERS_API_URL")
        .output()
        .unwrap()
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
    ] {
        let out = ordersctl(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(out.stdout.is_empty());
    }
}
