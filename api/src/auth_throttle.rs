//! The throttle on failed authentication: each client address may fail a few times a minute;
//! beyond that every request from it is answered 429 before its credentials are looked at
//! (no token compared, no load balancer key fetched), until its budget refills.
//!
//! A leaky bucket per address (an IPv6 address counts by its /64, what one host is
//! usually given): a failure adds one, the bucket drains at the configured rate, and an
//! address whose bucket is full is refused. Memory is bounded: at most
//! [`MAX_TRACKED_ADDRESSES`] buckets; when full, drained ones are dropped, and addresses
//! beyond that share one overflow bucket, so many addresses cannot buy many budgets.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Addresses tracked one by one; beyond this they share one bucket.
pub const MAX_TRACKED_ADDRESSES: usize = 10_000;

/// Who a bucket belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum BucketKey {
    V4([u8; 4]),
    /// The /64 an IPv6 address is in.
    V6([u8; 8]),
    /// No known address (a test calling the router directly), and the overflow.
    Shared,
}

impl BucketKey {
    fn of(addr: Option<IpAddr>) -> Self {
        match addr.map(|a| a.to_canonical()) {
            Some(IpAddr::V4(v4)) => BucketKey::V4(v4.octets()),
            Some(IpAddr::V6(v6)) => {
                let mut prefix = [0; 8];
                prefix.copy_from_slice(&v6.octets()[..8]);
                BucketKey::V6(prefix)
            }
            None => BucketKey::Shared,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Failures not yet drained, as of `at`.
    level: f64,
    at: Instant,
}

impl Bucket {
    fn level_at(&self, now: Instant, per_second: f64) -> f64 {
        let drained = now.saturating_duration_since(self.at).as_secs_f64() * per_second;
        (self.level - drained).max(0.0)
    }
}

/// Failed authentications per address: `burst` at once, refilled at `per_minute`.
#[derive(Debug)]
pub struct FailureThrottle {
    burst: f64,
    per_second: f64,
    buckets: Mutex<HashMap<BucketKey, Bucket>>,
}

impl FailureThrottle {
    /// `per_minute` failures a minute, sustained, with bursts of as many (both at least 1).
    pub fn new(per_minute: u32) -> Self {
        let per_minute = per_minute.max(1);
        FailureThrottle {
            burst: f64::from(per_minute),
            per_second: f64::from(per_minute) / 60.0,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// How long `addr` must wait before its credentials are looked at again; `None`: now.
    pub fn blocked(&self, addr: Option<IpAddr>, now: Instant) -> Option<Duration> {
        let buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let key = BucketKey::of(addr);
        let bucket = buckets
            .get(&key)
            .or_else(|| buckets.get(&BucketKey::Shared))?;
        let over = bucket.level_at(now, self.per_second) + 1.0 - self.burst;
        (over > 0.0).then(|| Duration::from_secs_f64(over / self.per_second))
    }

    /// Counts one failed authentication from `addr`.
    pub fn record_failure(&self, addr: Option<IpAddr>, now: Instant) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let mut key = BucketKey::of(addr);
        if !buckets.contains_key(&key) && buckets.len() >= MAX_TRACKED_ADDRESSES {
            let per_second = self.per_second;
            buckets.retain(|_, b| b.level_at(now, per_second) > 0.0);
            if buckets.len() >= MAX_TRACKED_ADDRESSES {
                key = BucketKey::Shared;
            }
        }
        let per_second = self.per_second;
        let bucket = buckets.entry(key).or_insert(Bucket {
            level: 0.0,
            at: now,
        });
        // Capped at the burst: a full bucket is refused until one failure drains.
        bucket.level = (bucket.level_at(now, per_second) + 1.0).min(self.burst);
        bucket.at = now;
    }

    /// Addresses tracked (for tests and the bound).
    pub fn tracked(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn an_address_is_refused_after_its_burst_and_served_again_once_drained() {
        let t = FailureThrottle::new(6); // one failure drains every 10 s
        let start = Instant::now();
        for _ in 0..6 {
            assert_eq!(t.blocked(ip("203.0.113.9"), start), None);
            t.record_failure(ip("203.0.113.9"), start);
        }
        let wait = t.blocked(ip("203.0.113.9"), start).unwrap();
        assert!(
            (9.9..=10.1).contains(&wait.as_secs_f64()),
            "{wait:?}: one failure drains in 10 s"
        );
        assert_eq!(
            t.blocked(ip("203.0.113.10"), start),
            None,
            "another address"
        );
        assert_eq!(
            t.blocked(ip("203.0.113.9"), start + Duration::from_secs(10)),
            None
        );
    }

    #[test]
    fn an_ipv6_host_counts_by_its_64_and_a_mapped_v4_as_v4() {
        let t = FailureThrottle::new(2);
        let now = Instant::now();
        t.record_failure(ip("2001:db8:1:2::1"), now);
        t.record_failure(ip("2001:db8:1:2:ffff::9"), now);
        assert!(t.blocked(ip("2001:db8:1:2::77"), now).is_some());
        assert!(t.blocked(ip("2001:db8:1:3::1"), now).is_none());
        t.record_failure(ip("::ffff:198.51.100.4"), now);
        t.record_failure(ip("198.51.100.4"), now);
        assert!(t.blocked(ip("198.51.100.4"), now).is_some());
    }

    #[test]
    fn memory_stays_bounded_and_new_addresses_beyond_it_share_one_budget() {
        let t = FailureThrottle::new(3);
        let now = Instant::now();
        for i in 0..(MAX_TRACKED_ADDRESSES as u32 + 5_000) {
            t.record_failure(Some(IpAddr::V4(i.to_be_bytes().into())), now);
        }
        assert!(t.tracked() <= MAX_TRACKED_ADDRESSES + 1, "{}", t.tracked());
        // The overflow bucket took the last 5,000 failures: a new address is refused.
        assert!(t.blocked(ip("192.0.2.200"), now).is_some());
        // Once drained, the old buckets make room again.
        let later = now + Duration::from_secs(120);
        t.record_failure(ip("192.0.2.201"), later);
        assert_eq!(t.tracked(), 1);
        assert!(t.blocked(ip("192.0.2.200"), later).is_none());
    }
}
