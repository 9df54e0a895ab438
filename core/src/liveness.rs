//! Whether a daemon's loop is alive: when each consumer loop last turned, and since when
//! the oldest store write and the oldest produce have been waiting. A loop is wedged when
//! it has not turned, or one of those has waited, for longer than a limit; a loop that is
//! idle (nothing to read, nothing waiting) is alive.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a daemon can be waiting on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Wait {
    /// A write to the order store (the analytics store writer).
    StoreWrite,
    /// The broker's acknowledgement of produced records.
    Produce,
}

impl Wait {
    fn describe(self) -> &'static str {
        match self {
            Wait::StoreWrite => "a store write has been pending",
            Wait::Produce => "produced records have waited for the broker's acknowledgement",
        }
    }
}

/// The liveness marks of one process.
#[derive(Debug)]
pub struct Liveness {
    origin: Instant,
    /// Per consumer group: milliseconds since `origin` of the loop's last turn, plus one
    /// (0: the loop has not started).
    polls: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
    waits: Mutex<BTreeMap<u64, (Wait, Instant)>>,
    next_wait: AtomicU64,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness {
            origin: Instant::now(),
            polls: Mutex::new(BTreeMap::new()),
            waits: Mutex::new(BTreeMap::new()),
            next_wait: AtomicU64::new(0),
        }
    }
}

/// The mark a consumer loop sets each time it turns.
#[derive(Debug, Clone)]
pub struct PollMark {
    origin: Instant,
    last: Arc<AtomicU64>,
}

impl PollMark {
    /// The loop turned (polled, or found nothing to do) now.
    pub fn polled(&self) {
        let ms = self.origin.elapsed().as_millis() as u64 + 1;
        self.last.store(ms, Ordering::Relaxed);
    }
}

/// Something a daemon waits on, from its start until this is dropped.
#[derive(Debug)]
#[must_use = "the wait ends when this is dropped"]
pub struct Waiting {
    liveness: Arc<Liveness>,
    id: u64,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.liveness.lock_waits().remove(&self.id);
    }
}

/// Why a process is not live.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Wedged {
    /// One sentence per cause.
    pub reasons: Vec<String>,
}

impl Liveness {
    fn lock_waits(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, (Wait, Instant)>> {
        // Plain data: usable even if a holder panicked.
        self.waits.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_polls(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<AtomicU64>>> {
        self.polls.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The mark of `group`'s consumer loop, set to now.
    pub fn poll_mark(&self, group: &str) -> PollMark {
        let last = self
            .lock_polls()
            .entry(group.to_owned())
            .or_default()
            .clone();
        let mark = PollMark {
            origin: self.origin,
            last,
        };
        mark.polled();
        mark
    }

    /// Starts waiting on `what`; the wait lasts until the guard is dropped.
    pub fn begin(self: &Arc<Self>, what: Wait) -> Waiting {
        let id = self.next_wait.fetch_add(1, Ordering::Relaxed);
        self.lock_waits().insert(id, (what, Instant::now()));
        Waiting {
            liveness: self.clone(),
            id,
        }
    }

    /// Seconds since each consumer loop last turned, by group.
    pub fn poll_ages(&self) -> Vec<(String, Duration)> {
        let now = self.origin.elapsed();
        self.lock_polls()
            .iter()
            .filter_map(|(group, last)| {
                let ms = last.load(Ordering::Relaxed);
                (ms > 0).then(|| {
                    let at = Duration::from_millis(ms - 1);
                    (group.clone(), now.saturating_sub(at))
                })
            })
            .collect()
    }

    /// How long the oldest wait on `what` has lasted, if one is under way.
    pub fn oldest_wait(&self, what: Wait) -> Option<Duration> {
        self.lock_waits()
            .values()
            .filter(|(w, _)| *w == what)
            .map(|(_, since)| since.elapsed())
            .max()
    }

    /// Alive, or wedged with why: a loop that has not turned, or a wait that has lasted,
    /// longer than `limit`.
    pub fn check(&self, limit: Duration) -> Result<(), Wedged> {
        let mut reasons = Vec::new();
        for (group, age) in self.poll_ages() {
            if age > limit {
                reasons.push(format!(
                    "the {group} consumer loop has not polled for {}s (limit {}s)",
                    age.as_secs(),
                    limit.as_secs()
                ));
            }
        }
        for what in [Wait::StoreWrite, Wait::Produce] {
            if let Some(age) = self.oldest_wait(what).filter(|age| *age > limit) {
                reasons.push(format!(
                    "{} for {}s (limit {}s)",
                    what.describe(),
                    age.as_secs(),
                    limit.as_secs()
                ));
            }
        }
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(Wedged { reasons })
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn idle_is_alive_and_a_long_wait_or_a_stopped_loop_is_wedged() {
        let l = Arc::new(Liveness::default());
        assert_eq!(l.check(Duration::from_secs(60)), Ok(()), "nothing started");
        let mark = l.poll_mark("fraud-group");
        let write = l.begin(Wait::StoreWrite);
        assert_eq!(l.check(Duration::from_secs(60)), Ok(()));
        // With a zero limit, every loop and every wait is over it.
        std::thread::sleep(Duration::from_millis(5));
        let wedged = l.check(Duration::ZERO).unwrap_err();
        assert_eq!(wedged.reasons.len(), 2, "{wedged:?}");
        assert!(wedged.reasons[0].contains("fraud-group consumer loop"));
        assert!(wedged.reasons[1].contains("store write"));
        drop(write);
        mark.polled();
        assert!(l.oldest_wait(Wait::StoreWrite).is_none());
        let wedged = l.check(Duration::ZERO).unwrap_err();
        assert_eq!(wedged.reasons.len(), 1, "the write ended: {wedged:?}");
        let _produce = l.begin(Wait::Produce);
        assert!(l.oldest_wait(Wait::Produce).is_some());
    }
}
