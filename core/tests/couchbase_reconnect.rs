//! Reconnecting to Couchbase holds its resources flat: a minute of failed attempts against
//! an unreachable cluster leaves the process's threads, file descriptors and memory where
//! they were after the first attempts. Its own test binary, so no other test's threads,
//! files or allocations move the figures.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use orders_core::config::Secret;
use orders_core::store::{CouchbaseConfig, CouchbaseStore, OrderStore};
use std::time::{Duration, Instant};

mod common;

/// What the process holds at one moment.
#[derive(Debug, Clone, Copy)]
struct Footprint {
    threads: usize,
    fds: usize,
    rss_kib: u64,
}

fn footprint() -> Footprint {
    let count = |dir: &str| std::fs::read_dir(dir).unwrap().count();
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    Footprint {
        threads: count("/proc/self/task"),
        fds: count("/proc/self/fd"),
        rss_kib,
    }
}

/// The highest footprint seen, sampled every 4 s from `baseline` until `start + until`.
async fn peak_until(start: Instant, until: Duration, baseline: Footprint) -> Footprint {
    let mut peak = baseline;
    while start.elapsed() < until {
        tokio::time::sleep(Duration::from_secs(4)).await;
        let now = footprint();
        peak = Footprint {
            threads: peak.threads.max(now.threads),
            fds: peak.fds.max(now.fds),
            rss_kib: peak.rss_kib.max(now.rss_kib),
        };
    }
    peak
}

/// A minute of reconnecting to a closed port: dozens of attempts, each failing, and the
/// footprint after the warm-up stays within a few threads, descriptors and megabytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minute_of_failed_connects_holds_threads_fds_and_memory_flat() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    // A host that takes connections and never answers (a wrong service, a proxy to
    // nowhere): the SDK's connect is still under way when an attempt times out.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
            // Keep the latest few open, as a server would until its own timeout.
            if held.len() > 8 {
                held.remove(0);
            }
        }
    });
    let store_at = |port: u16| {
        let mut config = CouchbaseConfig::new(
            format!("couchbase://127.0.0.1:{port}"),
            "order_analytics",
            "app",
            Secret::new("pw"),
        );
        config.connect_timeout = Duration::from_millis(500);
        config.reconnect_max_delay = Duration::from_millis(100);
        CouchbaseStore::connect(config).unwrap()
    };
    let store = store_at(port);
    let silent_store = store_at(silent_port);

    let start = Instant::now();
    // Warm-up: the first attempts allocate what every later one reuses (runtime workers,
    // the blocking pool's resolver threads, allocator arenas).
    tokio::time::sleep(Duration::from_secs(10)).await;
    let baseline = footprint();
    let attempts_at_baseline = store.connect_attempts();
    let silent_at_baseline = silent_store.connect_attempts();
    let peak = peak_until(start, Duration::from_secs(58), baseline).await;
    let end = footprint();
    let attempts = store.connect_attempts() - attempts_at_baseline;
    let silent_attempts = silent_store.connect_attempts() - silent_at_baseline;
    eprintln!(
        "{attempts} attempts on a closed port and {silent_attempts} on a silent one in {:?} \
         after warm-up; baseline {baseline:?}, peak {peak:?}, end {end:?}",
        start.elapsed()
    );
    assert!(
        attempts >= 20,
        "only {attempts} attempts: nothing was exercised"
    );
    assert!(
        silent_attempts >= 20,
        "only {silent_attempts} attempts on the silent port"
    );
    for (store, port) in [(&store, port), (&silent_store, silent_port)] {
        let e = store.ping().await.unwrap_err();
        assert!(e.to_string().contains(&port.to_string()), "{e}");
    }
    // Bounds: a leaked attempt costs at least a task with its socket, timers and buffers;
    // dozens of them show in every figure.
    assert!(
        peak.threads <= baseline.threads + 4,
        "threads grew from {} to {}",
        baseline.threads,
        peak.threads
    );
    assert!(
        peak.fds <= baseline.fds + 8,
        "file descriptors grew from {} to {}",
        baseline.fds,
        peak.fds
    );
    assert!(
        end.rss_kib <= baseline.rss_kib + 8 * 1024,
        "memory grew from {} KiB to {} KiB",
        baseline.rss_kib,
        end.rss_kib
    );
    drop((store, silent_store));
    a_minute_against_a_missing_bucket().await;
}

/// With a cluster configured (`COUCHBASE_CONNSTR`): a minute of retrying a bucket that does
/// not exist, where the cluster connects and the bucket then fails — the case where each
/// retry used to leave a whole cluster agent behind. Run after the offline part, in the
/// same test, so the two measurements never overlap.
async fn a_minute_against_a_missing_bucket() {
    let Some(mut config) = common::couchbase_config(
        format!("orders_missing_{}", std::process::id()),
        "the missing-bucket minute",
    ) else {
        return;
    };
    config.connect_timeout = Duration::from_secs(2);
    config.reconnect_max_delay = Duration::from_millis(500);
    let store = CouchbaseStore::connect(config).unwrap();
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let baseline = footprint();
    let attempts_at_baseline = store.connect_attempts();
    let peak = peak_until(start, Duration::from_secs(60), baseline).await;
    let attempts = store.connect_attempts() - attempts_at_baseline;
    eprintln!("missing bucket: {attempts} attempts; baseline {baseline:?}, peak {peak:?}");
    assert!(attempts >= 10, "only {attempts} attempts");
    let e = store.ping().await.unwrap_err().to_string();
    assert!(e.contains("orders_missing_"), "{e}");
    assert!(
        peak.threads <= baseline.threads + 4,
        "threads {baseline:?} → {peak:?}"
    );
    assert!(peak.fds <= baseline.fds + 8, "fds {baseline:?} → {peak:?}");
    assert!(
        peak.rss_kib <= baseline.rss_kib + 16 * 1024,
        "memory {baseline:?} → {peak:?}"
    );
}
