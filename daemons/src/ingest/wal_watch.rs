//! Watches what the slot costs the database, on a connection and a timer of its own so it
//! keeps measuring while Kafka is down or the stream is stuck: the log between the slot's
//! confirmed position and the server's (lag), the log it retains and since when, its
//! `wal_status` and `safe_wal_size`; and checks the setup again every `setup_interval` (a
//! table dropped and created again leaves the publication and sends no change to notice).

use super::postgres::PostgresSource;
use super::{setup, IngestConfig, SessionError};
use orders_core::progress::{IngestCounters, Progress};
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

/// How far back the times of log positions are kept (for the age of the oldest retained
/// log), and how often one is kept.
const HISTORY: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
const HISTORY_STEP: std::time::Duration = std::time::Duration::from_secs(5);

/// When the server's log was at which position, oldest first.
#[derive(Debug, Default)]
pub struct LogHistory {
    samples: VecDeque<(Instant, u64)>,
}

impl LogHistory {
    pub fn record(&mut self, at: Instant, lsn: u64) {
        let due = self
            .samples
            .back()
            .is_none_or(|(t, _)| at.duration_since(*t) >= HISTORY_STEP);
        if due {
            self.samples.push_back((at, lsn));
        }
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| at.duration_since(*t) > HISTORY)
        {
            self.samples.pop_front();
        }
    }

    /// Seconds since the server's log first went past `restart`: the age of the oldest log
    /// the slot keeps (at least the history's length when it is older than that).
    pub fn age_of(&self, restart: u64, now: Instant) -> u64 {
        match self.samples.iter().find(|(_, lsn)| *lsn > restart) {
            Some((t, _)) => now.duration_since(*t).as_secs(),
            None => 0,
        }
    }
}

/// Runs until `shutdown`; sends why on `setup_lost` when the setup is gone.
pub async fn run(
    config: IngestConfig,
    postgres: PostgresSource,
    progress: Arc<Progress>,
    setup_lost: watch::Sender<Option<String>>,
    shutdown: CancellationToken,
) {
    let mut client: Option<Client> = None;
    let mut history = LogHistory::default();
    let mut tick = tokio::time::interval(config.watch_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_setup_check = Instant::now();
    let mut last_setup: Option<setup::Setup> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if client.as_ref().is_none_or(Client::is_closed) {
            client = postgres.connect().await.ok();
        }
        let Some(c) = &client else { continue };
        if let Err(e) = measure(c, &config.slot, &progress.ingest, &mut history).await {
            tracing::debug!(error = %e, "measuring the slot failed; measured again next time");
            client = None;
            continue;
        }
        if last_setup_check.elapsed() >= config.setup_interval {
            last_setup_check = Instant::now();
            match setup::check(c, &config).await {
                Ok(now) => {
                    // What the session logged at its start, said again when it changes (a
                    // publication altered while the ingest runs).
                    if last_setup.as_ref().is_some_and(|was| *was != now) {
                        now.log();
                    }
                    last_setup = Some(now);
                }
                Err(SessionError::Fatal(why)) => {
                    tracing::error!(error = %why, "the ingest's setup is gone");
                    let _ = setup_lost.send(Some(why));
                }
                Err(_) => client = None,
            }
        }
    }
}

/// One measurement of the slot into the ingest's gauges.
async fn measure(
    client: &Client,
    slot: &str,
    ingest: &IngestCounters,
    history: &mut LogHistory,
) -> Result<(), tokio_postgres::Error> {
    let row = client
        .query_opt(
            "SELECT wal_status, safe_wal_size, \
             pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint, \
             pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint, \
             pg_wal_lsn_diff(restart_lsn, '0/0')::bigint, \
             pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint \
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await?;
    let Some(row) = row else {
        ingest.set_slot_state(None);
        return Ok(());
    };
    let now = Instant::now();
    let current: Option<i64> = row.get(5);
    if let Some(current) = current {
        history.record(now, current.max(0) as u64);
    }
    let status: Option<String> = row.get(0);
    ingest.set_slot_state(status.as_deref());
    let store = |gauge: &std::sync::atomic::AtomicI64, value: Option<i64>| {
        gauge.store(value.map_or(-1, |v| v.max(0)), Ordering::Relaxed)
    };
    let safe: Option<i64> = row.get(1);
    ingest
        .safe_wal_bytes
        .store(safe.unwrap_or(i64::MIN), Ordering::Relaxed);
    let lag: Option<i64> = row.get(2);
    if lag.is_some() {
        store(&ingest.lag_bytes, lag);
    }
    store(&ingest.retained_bytes, row.get(3));
    let restart: Option<i64> = row.get(4);
    let age = restart.map(|r| history.age_of(r.max(0) as u64, now) as i64);
    store(&ingest.oldest_retained_seconds, age);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_age_of_the_oldest_retained_log_is_when_the_log_went_past_it() {
        let start = Instant::now();
        let mut h = LogHistory::default();
        for s in 0..60u64 {
            h.record(start + Duration::from_secs(s), 1000 + s * 100);
        }
        let now = start + Duration::from_secs(60);
        // A sample every 5 s: the log was seen past 1999 first at second 10 (2000), past
        // 2000 at second 15 (2500).
        assert_eq!(h.age_of(1999, now), 50);
        assert_eq!(h.age_of(2000, now), 45);
        assert_eq!(h.age_of(1_000_000, now), 0, "nothing retained");
        assert_eq!(h.age_of(0, now), 60, "older than the history: its length");
    }
}
