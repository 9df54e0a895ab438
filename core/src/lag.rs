//! Consumer lag: how far a consumer group is behind on each partition it reads. The one
//! definition that the Kafka reader, the API's sampler, the API's JSON and the console share.

use serde::{Deserialize, Serialize};

/// Lag of one group on one partition.
///
/// Serialized as `/api/lag` shows it (`PartitionLag` in docs/json.md: these field names, in
/// this order, `null` for what is unknown). Read leniently: a missing field takes its
/// default and unknown fields are ignored, so a console keeps working against an API one
/// version apart.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: i32,
    /// The group's committed offset (the next record it will read); `None` when it has
    /// committed nothing on this partition.
    pub committed: Option<i64>,
    /// The first offset still in Kafka.
    pub low_watermark: i64,
    /// The offset the next record written will get.
    pub high_watermark: i64,
    /// Records the group has yet to consume.
    pub lag: i64,
    /// Age in seconds of the oldest record the group has yet to consume (from its Kafka
    /// timestamp): 0 without lag, `None` while that timestamp is unknown.
    pub lag_seconds: Option<f64>,
}

impl PartitionLag {
    /// The lag of a group whose committed offset is `committed` on a partition that holds
    /// the offsets from `low_watermark` up to (not including) `high_watermark`.
    ///
    /// The age of the oldest unconsumed record is known from offsets alone only when there
    /// is none (0 s); otherwise it is left unknown for whoever reads that record's time.
    pub fn new(
        topic: impl Into<String>,
        partition: i32,
        committed: Option<i64>,
        low_watermark: i64,
        high_watermark: i64,
    ) -> Self {
        let mut p = PartitionLag {
            topic: topic.into(),
            partition,
            committed,
            low_watermark,
            high_watermark,
            lag: 0,
            lag_seconds: None,
        };
        // Watermarks are read apart from the committed offset, so a group that just caught up
        // can appear past the high watermark: that is no lag, not negative lag.
        p.lag = (high_watermark - p.next_offset()).max(0);
        p.lag_seconds = (p.lag == 0).then_some(0.0);
        p
    }

    /// The offset the group reads next. A group that committed nothing starts at the oldest
    /// record still in Kafka (the consumers reset to `earliest`), and so does one whose
    /// committed offset retention has already deleted.
    pub fn next_offset(&self) -> i64 {
        self.committed
            .unwrap_or(self.low_watermark)
            .max(self.low_watermark)
    }

    /// Whether the group has consumed the record at `offset` of this partition: only a
    /// commit past it proves so.
    pub fn has_passed(&self, offset: i64) -> bool {
        self.committed.is_some_and(|c| c > offset)
    }
}

/// Lag of one group over the partitions of the topics it reads.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConsumerLag {
    pub group: String,
    pub topics: Vec<String>,
    /// One per partition of `topics`, sorted by topic and partition.
    pub partitions: Vec<PartitionLag>,
}

impl ConsumerLag {
    /// Records the group has yet to consume, over all its partitions.
    pub fn total(&self) -> i64 {
        self.partitions.iter().map(|p| p.lag).sum()
    }

    /// How far behind the group is in time: the age of the oldest unconsumed record over
    /// the partitions where it is known; `None` where it is known on none.
    pub fn max_lag_seconds(&self) -> Option<f64> {
        self.partitions
            .iter()
            .filter_map(|p| p.lag_seconds)
            .reduce(f64::max)
    }

    /// The group's lag on one partition, if it reads that partition.
    pub fn partition(&self, topic: &str, partition: i32) -> Option<&PartitionLag> {
        self.partitions
            .iter()
            .find(|p| p.topic == topic && p.partition == partition)
    }
}

/// What the store already holds of one order: each is the effect of one consumer group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeenEffects {
    /// The order is stored (analytics-group).
    pub stored: bool,
    /// Its fraud alert is stored (fraud-group).
    pub alerted: bool,
    /// Its payment result is stored (payments-group).
    pub payment_stored: bool,
}

impl SeenEffects {
    /// Whether `group`'s effect on the order is already seen: proof that the group is past
    /// it, whatever an offsets sample taken before the order says.
    pub fn prove_past(self, group: &str) -> bool {
        match group {
            crate::topology::ANALYTICS_GROUP => self.stored,
            crate::topology::FRAUD_GROUP => self.alerted,
            crate::topology::PAYMENTS_GROUP => self.payment_stored,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lag(committed: Option<i64>, low: i64, high: i64) -> PartitionLag {
        PartitionLag::new("orders", 0, committed, low, high)
    }

    #[test]
    fn lag_is_what_lies_between_the_next_offset_and_the_high_watermark() {
        let p = lag(Some(40), 0, 42);
        assert_eq!((p.next_offset(), p.lag, p.lag_seconds), (40, 2, None));
        // Nothing committed: everything still in Kafka waits.
        let p = lag(None, 5, 9);
        assert_eq!((p.next_offset(), p.lag, p.lag_seconds), (5, 4, None));
        // Committed below what retention kept: only what is left waits.
        let p = lag(Some(2), 5, 9);
        assert_eq!((p.next_offset(), p.lag), (5, 4));
        // Caught up, and an empty partition nobody read.
        assert_eq!(lag(Some(7), 0, 7).lag_seconds, Some(0.0));
        assert_eq!(lag(None, 0, 0).lag_seconds, Some(0.0));
        // Watermarks read before a commit landed: no negative lag.
        let p = lag(Some(12), 0, 10);
        assert_eq!((p.lag, p.lag_seconds), (0, Some(0.0)));
    }

    #[test]
    fn passed_means_committed_past_the_offset() {
        let p = lag(Some(10), 0, 15);
        assert!(p.has_passed(9));
        assert!(!p.has_passed(10));
        assert!(!lag(None, 20, 30).has_passed(1));
    }

    #[test]
    fn group_totals_over_partitions() {
        let mut slow = PartitionLag::new("orders", 1, Some(3), 0, 10);
        slow.lag_seconds = Some(2.5);
        let group = ConsumerLag {
            group: "fraud-group".into(),
            topics: vec!["orders".into()],
            partitions: vec![
                PartitionLag::new("orders", 0, Some(40), 0, 42),
                slow,
                PartitionLag::new("orders", 2, Some(7), 0, 7),
            ],
        };
        assert_eq!(group.total(), 9);
        assert_eq!(group.max_lag_seconds(), Some(2.5));
        assert_eq!(group.partition("orders", 1).map(|p| p.lag), Some(7));
        assert_eq!(group.partition("payments", 1), None);
        let unknown = ConsumerLag {
            partitions: vec![PartitionLag::new("orders", 0, None, 0, 3)],
            ..group
        };
        assert_eq!(unknown.max_lag_seconds(), None);
    }

    #[test]
    fn serialized_as_the_api_documents_it_and_read_back_leniently() {
        let p = PartitionLag::new("orders", 1, None, 5, 9);
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(
            json,
            r#"{"topic":"orders","partition":1,"committed":null,"low_watermark":5,"high_watermark":9,"lag":4,"lag_seconds":null}"#
        );
        assert_eq!(serde_json::from_str::<PartitionLag>(&json).unwrap(), p);
        let sparse: PartitionLag =
            serde_json::from_str(r#"{"topic": "orders", "partition": 2, "lag": 5, "new": [1]}"#)
                .unwrap();
        assert_eq!((sparse.partition, sparse.lag), (2, 5));
        assert_eq!((sparse.committed, sparse.lag_seconds), (None, None));
    }

    #[test]
    fn a_seen_effect_proves_its_group_past() {
        use crate::topology::{ANALYTICS_GROUP, FRAUD_GROUP, PAYMENTS_GROUP};
        let none = SeenEffects::default();
        assert!(!none.prove_past(FRAUD_GROUP) && !none.prove_past(ANALYTICS_GROUP));
        let all = SeenEffects {
            stored: true,
            alerted: true,
            payment_stored: true,
        };
        for g in [FRAUD_GROUP, PAYMENTS_GROUP, ANALYTICS_GROUP] {
            assert!(all.prove_past(g), "{g}");
        }
        assert!(!all.prove_past("another-group"));
        let stored = SeenEffects {
            stored: true,
            ..none
        };
        assert!(stored.prove_past(ANALYTICS_GROUP) && !stored.prove_past(PAYMENTS_GROUP));
    }
}
