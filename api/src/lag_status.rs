//! Burrow-style status of a consumer group, judged over a sliding window of lag samples.
//!
//! The rules, per partition, over the samples of the window (oldest first):
//! 1. a sample with zero lag anywhere in the window: the partition is fine;
//! 2. the committed offset never moved while lag stayed above zero: stalled;
//! 3. the offset moved, but the lag never shrank from one sample to the next and ended
//!    higher than it began: lagging (the consumer works, but falls behind);
//! 4. otherwise: fine (progressing).
//!
//! The group is `STOP` when it has stalled partitions and committed nothing at all during
//! the window (a consumer that is down or stuck as a whole), `STALL` when some partitions
//! are stalled while others move (e.g. one instance of several is gone, or one partition
//! is stuck), `WARN` when partitions are lagging, and `OK` otherwise — in particular on an
//! idle topic with zero lag, where no commits are expected. A window of fewer than
//! [`MIN_SAMPLES`] samples never alarms.

use orders_core::lag::{ConsumerLag, PartitionLag};
use serde::Serialize;
use std::collections::BTreeMap;

/// Fewer samples than this prove nothing about movement, so they give `OK`.
pub const MIN_SAMPLES: usize = 3;

/// The status of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum LagStatus {
    /// Caught up, or progressing.
    Ok,
    /// Lag growing while offsets advance.
    Warn,
    /// Some partitions' offsets not moving while their lag is above zero.
    Stall,
    /// No commits during the whole window while records wait.
    Stop,
}

impl LagStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            LagStatus::Ok => "OK",
            LagStatus::Warn => "WARN",
            LagStatus::Stall => "STALL",
            LagStatus::Stop => "STOP",
        }
    }
}

/// One sample of one group: its lag, borrowed from the sample that holds it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupSample<'a> {
    /// When it was taken, in milliseconds since the Unix epoch.
    pub at_ms: i64,
    pub lag: &'a ConsumerLag,
}

/// The judgement and why, in words an operator reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub status: LagStatus,
    pub reason: String,
}

impl Verdict {
    fn new(status: LagStatus, reason: impl Into<String>) -> Self {
        Verdict {
            status,
            reason: reason.into(),
        }
    }
}

fn names(parts: &[(&str, i32)]) -> String {
    const SHOWN: usize = 4;
    let mut s: Vec<String> = parts
        .iter()
        .take(SHOWN)
        .map(|(t, p)| format!("{t}/{p}"))
        .collect();
    if parts.len() > SHOWN {
        s.push(format!("and {} more", parts.len() - SHOWN));
    }
    s.join(", ")
}

/// Judges a group from its window of samples, oldest first.
pub fn evaluate(window: &[GroupSample<'_>]) -> Verdict {
    let (Some(first), Some(last)) = (window.first(), window.last()) else {
        return Verdict::new(LagStatus::Ok, "no sample yet");
    };
    let total_lag = last.lag.total();
    if window.len() < MIN_SAMPLES {
        let reason = if total_lag == 0 {
            "caught up".to_owned()
        } else {
            format!(
                "{total_lag} records behind; {} of {MIN_SAMPLES} samples gathered",
                window.len()
            )
        };
        return Verdict::new(LagStatus::Ok, reason);
    }
    let span_s = (last.at_ms - first.at_ms).max(0) as f64 / 1000.0;

    let trends = Trends::of(&per_partition(window));
    trends.verdict(span_s, total_lag)
}

/// Each partition's lag across the window, oldest first.
fn per_partition<'a>(
    window: &'a [GroupSample<'_>],
) -> BTreeMap<(&'a str, i32), Vec<&'a PartitionLag>> {
    let mut series: BTreeMap<(&str, i32), Vec<&PartitionLag>> = BTreeMap::new();
    for sample in window {
        for p in &sample.lag.partitions {
            series
                .entry((p.topic.as_str(), p.partition))
                .or_default()
                .push(p);
        }
    }
    series
}

/// Which partitions with records waiting did not move, and which fell further behind.
struct Trends<'a> {
    /// Some partition's committed offset moved in the window.
    any_moved: bool,
    /// Records waiting, committed offset unchanged.
    stalled: Vec<(&'a str, i32)>,
    /// Offsets moving, but the lag never shrank and grew over the window.
    lagging: Vec<(&'a str, i32)>,
}

impl<'a> Trends<'a> {
    fn of(series: &BTreeMap<(&'a str, i32), Vec<&PartitionLag>>) -> Self {
        let mut any_moved = false;
        let mut stalled = Vec::new();
        let mut lagging = Vec::new();
        for (key, points) in series {
            let moved = points.windows(2).any(|w| w[0].committed != w[1].committed);
            any_moved |= moved;
            if points.iter().any(|p| p.lag == 0) {
                continue;
            }
            if !moved {
                stalled.push(*key);
                continue;
            }
            let never_shrank = points.windows(2).all(|w| w[1].lag >= w[0].lag);
            let grew = match (points.first(), points.last()) {
                (Some(a), Some(b)) => b.lag > a.lag,
                _ => false,
            };
            if never_shrank && grew {
                lagging.push(*key);
            }
        }
        Trends {
            any_moved,
            stalled,
            lagging,
        }
    }

    /// The status the trends over `span_s` seconds call for.
    fn verdict(&self, span_s: f64, total_lag: i64) -> Verdict {
        let Trends {
            any_moved,
            stalled,
            lagging,
        } = self;
        if !stalled.is_empty() && !any_moved {
            Verdict::new(
                LagStatus::Stop,
                format!("no commits for {span_s:.1} s while {total_lag} records wait"),
            )
        } else if !stalled.is_empty() {
            Verdict::new(
                LagStatus::Stall,
                format!(
                    "offsets not moving for {span_s:.1} s with records waiting on {}",
                    names(stalled)
                ),
            )
        } else if !lagging.is_empty() {
            Verdict::new(
                LagStatus::Warn,
                format!(
                    "lag growing for {span_s:.1} s while offsets advance on {}",
                    names(lagging)
                ),
            )
        } else if total_lag == 0 {
            Verdict::new(LagStatus::Ok, "caught up")
        } else {
            Verdict::new(
                LagStatus::Ok,
                format!("progressing, {total_lag} records behind"),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A window of samples 1.5 s apart, as `(at_ms, lag)`; each sample lists
    /// `(committed, lag)` per partition of topic `orders`.
    fn window(samples: &[&[(Option<i64>, i64)]]) -> Vec<(i64, ConsumerLag)> {
        samples
            .iter()
            .enumerate()
            .map(|(i, parts)| {
                let lag = ConsumerLag {
                    group: "fraud-group".into(),
                    topics: vec!["orders".into()],
                    partitions: parts
                        .iter()
                        .enumerate()
                        .map(|(p, (committed, lag))| {
                            let high = committed.unwrap_or(0) + lag;
                            PartitionLag::new("orders", p as i32, *committed, 0, high)
                        })
                        .collect(),
                };
                (1_700_000_000_000 + i as i64 * 1500, lag)
            })
            .collect()
    }

    /// `n` identical samples.
    fn steady(parts: &[(Option<i64>, i64)], n: usize) -> Vec<(i64, ConsumerLag)> {
        window(&vec![parts; n])
    }

    fn judge(window: &[(i64, ConsumerLag)]) -> Verdict {
        let samples: Vec<GroupSample> = window
            .iter()
            .map(|(at_ms, lag)| GroupSample { at_ms: *at_ms, lag })
            .collect();
        evaluate(&samples)
    }

    #[test]
    fn idle_topic_with_zero_lag_is_ok() {
        // Nothing produced, nothing committed, nothing moving: no alarm.
        let never_committed = steady(&[(None, 0), (None, 0)], 10);
        let v = judge(&never_committed);
        assert_eq!(v.status, LagStatus::Ok, "{v:?}");
        assert_eq!(v.reason, "caught up");
        // Caught up long ago, offsets frozen, topic idle.
        let caught_up = steady(&[(Some(500), 0), (Some(42), 0)], 10);
        assert_eq!(judge(&caught_up).status, LagStatus::Ok);
    }

    #[test]
    fn empty_and_short_windows_never_alarm() {
        assert_eq!(evaluate(&[]).status, LagStatus::Ok);
        let frozen = window(&[&[(Some(10), 90)], &[(Some(10), 95)]]);
        let v = judge(&frozen);
        assert_eq!(v.status, LagStatus::Ok, "{v:?}");
        assert!(v.reason.contains("2 of 3 samples"), "{v:?}");
    }

    #[test]
    fn progressing_consumer_is_ok() {
        // Offsets advance and lag goes up and down around a small value.
        let w = window(&[
            &[(Some(100), 5), (Some(80), 3)],
            &[(Some(110), 7), (Some(90), 2)],
            &[(Some(125), 4), (Some(98), 4)],
            &[(Some(131), 6), (Some(101), 3)],
        ]);
        let v = judge(&w);
        assert_eq!(v.status, LagStatus::Ok, "{v:?}");
        assert!(v.reason.starts_with("progressing"), "{v:?}");
    }

    #[test]
    fn draining_backlog_is_ok() {
        let w = window(&[
            &[(Some(0), 1000)],
            &[(Some(300), 800)],
            &[(Some(700), 450)],
            &[(Some(1100), 100)],
        ]);
        assert_eq!(judge(&w).status, LagStatus::Ok);
    }

    #[test]
    fn lag_growing_while_offsets_advance_is_warn() {
        let w = window(&[
            &[(Some(100), 10), (Some(50), 0)],
            &[(Some(120), 25), (Some(50), 0)],
            &[(Some(140), 25), (Some(50), 0)],
            &[(Some(160), 60), (Some(50), 0)],
        ]);
        let v = judge(&w);
        assert_eq!(v.status, LagStatus::Warn, "{v:?}");
        assert!(v.reason.contains("orders/0"), "{v:?}");
        assert!(!v.reason.contains("orders/1"), "{v:?}");
    }

    #[test]
    fn lag_that_dips_once_is_not_warn() {
        let w = window(&[
            &[(Some(100), 10)],
            &[(Some(120), 30)],
            &[(Some(150), 20)],
            &[(Some(160), 60)],
        ]);
        assert_eq!(judge(&w).status, LagStatus::Ok);
    }

    #[test]
    fn one_partition_frozen_while_others_move_is_stall() {
        let w = window(&[
            &[(Some(100), 5), (Some(40), 12)],
            &[(Some(110), 4), (Some(40), 15)],
            &[(Some(118), 6), (Some(40), 19)],
        ]);
        let v = judge(&w);
        assert_eq!(v.status, LagStatus::Stall, "{v:?}");
        assert!(v.reason.contains("orders/1"), "{v:?}");
        assert!(v.reason.contains("3.0 s"), "{v:?}");
    }

    #[test]
    fn no_commits_anywhere_with_records_waiting_is_stop() {
        // A dead consumer: nothing moves, lag constant (producer idle) or growing.
        let constant = steady(&[(Some(10), 7), (Some(3), 0)], 5);
        let v = judge(&constant);
        assert_eq!(v.status, LagStatus::Stop, "{v:?}");
        assert!(v.reason.contains("7 records wait"), "{v:?}");
        let growing = window(&[&[(Some(10), 7)], &[(Some(10), 9)], &[(Some(10), 30)]]);
        assert_eq!(judge(&growing).status, LagStatus::Stop);
        // A group that never committed while records wait.
        let never = steady(&[(None, 4)], 3);
        assert_eq!(judge(&never).status, LagStatus::Stop);
    }

    #[test]
    fn a_moment_of_zero_lag_in_the_window_clears_a_partition() {
        // Burrow's first rule: it was caught up within the window.
        let w = window(&[&[(Some(10), 0)], &[(Some(10), 3)], &[(Some(10), 5)]]);
        assert_eq!(judge(&w).status, LagStatus::Ok);
    }

    #[test]
    fn stall_outranks_warn() {
        let w = window(&[
            &[(Some(100), 10), (Some(40), 12)],
            &[(Some(120), 20), (Some(40), 15)],
            &[(Some(140), 30), (Some(40), 19)],
        ]);
        assert_eq!(judge(&w).status, LagStatus::Stall);
    }

    #[test]
    fn long_lists_of_partitions_are_shortened() {
        let frozen: Vec<(Option<i64>, i64)> = (0..6).map(|_| (Some(1), 3)).collect();
        let mut moving = frozen.clone();
        moving.push((Some(1), 1));
        let mut moved = frozen.clone();
        moved.push((Some(2), 1));
        let w = window(&[&moving, &moving, &moved]);
        let v = judge(&w);
        assert_eq!(v.status, LagStatus::Stall);
        assert!(v.reason.contains("and 2 more"), "{v:?}");
    }
}
