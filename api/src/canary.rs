//! The canary monitor: polls the store's canary journeys, measures each canary once per
//! process (created → fraud decision, → paid, → stored, as Prometheus histograms), counts
//! the canaries not back within the SLA (`orders_canary_lost_total`), and answers
//! `/api/canary` with the last canary's journey and percentiles over the last
//! [`CANARY_WINDOW`].

use crate::model::{CanaryBody, CanaryJson, CanaryPercentiles, LegPercentiles};
use orders_core::canary::{CanaryJourney, CanaryLeg};
use orders_core::progress::DurationHistogram;
use orders_core::store::{OrderStore, StoreError};
use orders_core::Timestamp;
use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The SLA by default: a canary not back within it is lost.
pub const DEFAULT_CANARY_SLA: Duration = Duration::from_secs(30);
/// How many of the newest canaries the monitor reads, and the percentiles cover.
pub const CANARY_WINDOW: usize = 100;
/// How many canaries `/api/canary` lists.
pub const CANARY_LISTED: usize = 20;
/// How often the store is polled.
pub const CANARY_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Where a canary is, seen at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CanaryState {
    /// Every stage reached within the SLA.
    Complete,
    /// Not complete, and the SLA has not passed yet.
    Pending,
    /// Not complete within the SLA (it may still complete later: it stays lost).
    Lost,
}

impl CanaryState {
    pub fn as_str(self) -> &'static str {
        match self {
            CanaryState::Complete => "complete",
            CanaryState::Pending => "pending",
            CanaryState::Lost => "lost",
        }
    }

    /// The state of `journey` at `now` under `sla`; `None` when nothing dates it.
    pub fn of(journey: &CanaryJourney, sla: Duration, now: Timestamp) -> Option<CanaryState> {
        let sla = sla.as_secs_f64();
        if journey.is_complete() {
            let slowest = CanaryLeg::ALL
                .iter()
                .filter_map(|l| journey.seconds(*l))
                .fold(0.0, f64::max);
            return Some(if slowest <= sla {
                CanaryState::Complete
            } else {
                CanaryState::Lost
            });
        }
        let age = (now.micros() - journey.first_seen()?.micros()) as f64 / 1e6;
        Some(if age > sla {
            CanaryState::Lost
        } else {
            CanaryState::Pending
        })
    }
}

#[derive(Default)]
struct Seen {
    /// The last poll's journeys, highest id first.
    recent: Vec<CanaryJourney>,
    polled_at: Option<Timestamp>,
    error: Option<String>,
    /// Canaries measured or counted lost by this process (ids within the window).
    measured: HashSet<u64>,
    lost: HashSet<u64>,
}

/// See the module documentation. One per api process.
pub struct CanaryMonitor {
    sla: Duration,
    /// Canaries older than this (by SLA) were judged before this process started.
    started: Timestamp,
    seen: Mutex<Seen>,
    /// By [`CanaryLeg::ALL`].
    legs: [DurationHistogram; 3],
    lost_total: AtomicU64,
}

impl Default for CanaryMonitor {
    fn default() -> Self {
        CanaryMonitor::new(DEFAULT_CANARY_SLA)
    }
}

impl CanaryMonitor {
    pub fn new(sla: Duration) -> Self {
        CanaryMonitor {
            sla,
            started: Timestamp::now(),
            seen: Mutex::default(),
            legs: Default::default(),
            lost_total: AtomicU64::new(0),
        }
    }

    pub fn sla(&self) -> Duration {
        self.sla
    }

    pub fn lost_total(&self) -> u64 {
        self.lost_total.load(Ordering::Relaxed)
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads the newest journeys and measures what changed.
    pub async fn poll(&self, store: &dyn OrderStore) -> Result<(), StoreError> {
        let read = store.canaries_before(None, CANARY_WINDOW).await;
        let now = Timestamp::now();
        let mut seen = self.seen();
        seen.polled_at = Some(now);
        let journeys = match read {
            Ok(j) => j,
            Err(e) => {
                seen.error = Some(e.to_string());
                return Err(e);
            }
        };
        seen.error = None;
        self.observe(&mut seen, &journeys, now);
        seen.recent = journeys;
        Ok(())
    }

    fn observe(&self, seen: &mut Seen, journeys: &[CanaryJourney], now: Timestamp) {
        let horizon = self.started.micros() - self.sla.as_micros() as i64;
        for j in journeys {
            // Judged (or not) by whichever process ran when its SLA passed.
            if j.first_seen().is_none_or(|t| t.micros() < horizon) {
                continue;
            }
            if j.is_complete() && seen.measured.insert(j.order_id) {
                for (leg, histogram) in CanaryLeg::ALL.iter().zip(&self.legs) {
                    if let Some(s) = j.seconds(*leg) {
                        histogram.observe(Duration::from_secs_f64(s));
                    }
                }
            }
            if CanaryState::of(j, self.sla, now) == Some(CanaryState::Lost)
                && seen.lost.insert(j.order_id)
            {
                self.lost_total.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    order_id = j.order_id,
                    sla_seconds = self.sla.as_secs_f64(),
                    "canary not back within the SLA"
                );
            }
        }
        // Ids below the window are never read again.
        if let Some(lowest) = journeys.last().map(|j| j.order_id) {
            seen.measured.retain(|id| *id >= lowest);
            seen.lost.retain(|id| *id >= lowest);
        }
    }

    /// Polls every [`CANARY_POLL_INTERVAL`] until `shutdown`.
    pub async fn run(
        self: std::sync::Arc<Self>,
        store: std::sync::Arc<dyn OrderStore>,
        shutdown: CancellationToken,
    ) {
        let mut failing = false;
        loop {
            match self.poll(store.as_ref()).await {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!("canary journeys readable again");
                }
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "cannot read the canary journeys");
                }
                _ => {}
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(CANARY_POLL_INTERVAL) => {}
            }
        }
    }

    /// What `/api/canary` answers; `Err` when the last poll failed.
    pub fn report(&self) -> Result<CanaryBody, String> {
        let seen = self.seen();
        if let Some(e) = &seen.error {
            return Err(e.clone());
        }
        let now = seen.polled_at.unwrap_or_else(Timestamp::now);
        let json = |j: &CanaryJourney| journey_json(j, CanaryState::of(j, self.sla, now));
        let states: Vec<Option<CanaryState>> = seen
            .recent
            .iter()
            .map(|j| CanaryState::of(j, self.sla, now))
            .collect();
        let last = seen
            .recent
            .iter()
            .zip(&states)
            .find(|(_, s)| matches!(s, Some(CanaryState::Complete | CanaryState::Lost)))
            .map(|(j, _)| json(j));
        let count = |want: CanaryState| states.iter().filter(|s| **s == Some(want)).count();
        let complete: Vec<&CanaryJourney> =
            seen.recent.iter().filter(|j| j.is_complete()).collect();
        let leg = |leg: CanaryLeg| {
            let mut values: Vec<f64> = complete.iter().filter_map(|j| j.seconds(leg)).collect();
            values.sort_by(f64::total_cmp);
            LegPercentiles {
                p50: nearest_rank(&values, 0.50),
                p99: nearest_rank(&values, 0.99),
            }
        };
        Ok(CanaryBody {
            sla_seconds: self.sla.as_secs_f64(),
            window: CANARY_WINDOW,
            polled_at: seen.polled_at,
            last,
            pending: count(CanaryState::Pending),
            lost_in_window: count(CanaryState::Lost),
            lost_total: self.lost_total(),
            samples: complete.len(),
            percentiles: CanaryPercentiles {
                decision: leg(CanaryLeg::Decision),
                paid: leg(CanaryLeg::Paid),
                stored: leg(CanaryLeg::Stored),
            },
            canaries: seen.recent.iter().take(CANARY_LISTED).map(json).collect(),
        })
    }

    /// The canary metrics in the text exposition format.
    pub fn render(&self, out: &mut String) {
        out.push_str(
            "# HELP orders_canary_journey_seconds Time from a canary order's creation to each stage of its journey (decision, paid, stored), each canary once.\n\
             # TYPE orders_canary_journey_seconds histogram\n",
        );
        for (leg, histogram) in CanaryLeg::ALL.iter().zip(&self.legs) {
            crate::metrics::render_histogram(
                out,
                "orders_canary_journey_seconds",
                &format!("stage=\"{}\"", leg.as_str()),
                &histogram.snapshot(),
            );
        }
        let newest = {
            let seen = self.seen();
            seen.recent
                .iter()
                .filter_map(|j| j.created_at)
                .max()
                .map_or(0.0, |t| t.micros() as f64 / 1e6)
        };
        let _ = writeln!(
            out,
            "# HELP orders_canary_lost_total Canaries not back within the SLA (each counted once).\n\
             # TYPE orders_canary_lost_total counter\n\
             orders_canary_lost_total {}\n\
             # HELP orders_canary_sla_seconds The canary SLA (ORDERS_CANARY_SLA_SECONDS).\n\
             # TYPE orders_canary_sla_seconds gauge\n\
             orders_canary_sla_seconds {}\n\
             # HELP orders_canary_last_created_timestamp_seconds Creation time of the newest canary in the store (0: none).\n\
             # TYPE orders_canary_last_created_timestamp_seconds gauge\n\
             orders_canary_last_created_timestamp_seconds {newest}",
            self.lost_total(),
            self.sla.as_secs_f64(),
        );
    }
}

/// One journey as `/api/canary` shows it, in `state`.
fn journey_json(j: &CanaryJourney, state: Option<CanaryState>) -> CanaryJson {
    let time = |t: Option<Timestamp>| t.map(|t| t.to_rfc3339());
    CanaryJson {
        order_id: j.order_id,
        state: state.map(|s| s.as_str()),
        created_at: time(j.created_at),
        decided_at: time(j.decided_at),
        flagged: j.flagged,
        paid_at: time(j.paid_at),
        stored_at: time(j.stored_at),
        decision_seconds: j.seconds(CanaryLeg::Decision),
        paid_seconds: j.seconds(CanaryLeg::Paid),
        stored_seconds: j.seconds(CanaryLeg::Stored),
    }
}

/// The nearest-rank percentile of sorted `values`; `None` when there are none.
fn nearest_rank(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let rank = (q * values.len() as f64).ceil() as usize;
    values.get(rank.clamp(1, values.len()) - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_micros(Timestamp::now().micros() + ms * 1_000).unwrap()
    }

    fn journey(id: u64, created: i64, legs: [Option<i64>; 3]) -> CanaryJourney {
        CanaryJourney {
            order_id: id,
            created_at: Some(at(created)),
            decided_at: legs[0].map(at),
            flagged: legs[0].map(|_| false),
            paid_at: legs[1].map(at),
            stored_at: legs[2].map(at),
        }
    }

    #[test]
    fn each_canary_is_measured_once_and_lost_once() {
        let mut m = CanaryMonitor::new(Duration::from_secs(2));
        m.started = at(-10_000);
        let now = Timestamp::now();
        let done = journey(3, -1_000, [Some(-900), Some(-800), Some(-700)]);
        let stuck = journey(2, -3_000, [Some(-2_900), None, Some(-2_800)]);
        let young = journey(4, -100, [None, None, None]);
        let before_start = journey(1, -60_000, [None, None, None]);
        let all = vec![young, done, stuck, before_start];
        for _ in 0..3 {
            let mut seen = m.seen();
            m.observe(&mut seen, &all, now);
            seen.recent = all.clone();
        }
        assert_eq!(
            m.lost_total(),
            1,
            "only 2: 1 was judged before this process"
        );
        let snapshot = |leg: usize| m.legs[leg].snapshot().count;
        assert_eq!((snapshot(0), snapshot(1), snapshot(2)), (1, 1, 1));
        let body = m.report().unwrap();
        assert_eq!(body.last.as_ref().map(|j| j.order_id), Some(3));
        assert_eq!(body.pending, 1);
        assert_eq!(body.lost_in_window, 2);
        assert_eq!(body.samples, 1);
        let p = body.percentiles.paid.p50.unwrap();
        assert!((p - 0.2).abs() < 1e-3, "{p}");
        let mut text = String::new();
        m.render(&mut text);
        assert!(text.contains("orders_canary_lost_total 1\n"), "{text}");
        assert!(text.contains("orders_canary_journey_seconds_count{stage=\"paid\"} 1"));
    }

    #[test]
    fn a_late_canary_is_lost_even_when_it_completes() {
        let sla = Duration::from_secs(1);
        let late = journey(1, -5_000, [Some(-4_900), Some(-2_000), Some(-4_800)]);
        assert_eq!(
            CanaryState::of(&late, sla, Timestamp::now()),
            Some(CanaryState::Lost)
        );
        assert_eq!(nearest_rank(&[1.0, 2.0, 3.0, 4.0], 0.5), Some(2.0));
        assert_eq!(nearest_rank(&[1.0, 2.0, 3.0, 4.0], 0.99), Some(4.0));
        assert_eq!(nearest_rank(&[], 0.5), None);
    }
}
