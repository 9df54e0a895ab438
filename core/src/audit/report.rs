//! The audit's report: one JSON document whose fields are a contract for scripts
//! (described field by field in `docs/audit.md`), and its summary for people.

use crate::domain::Timestamp;
use crate::fraud::FraudRule;
use crate::store::Totals;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

/// Everything one audit found.
#[derive(Debug, Clone, Serialize)]
pub struct AuditReport {
    /// No discrepancy of any kind.
    pub consistent: bool,
    /// The sum of the counts of every kind of discrepancy.
    pub discrepancy_count: u64,
    pub started_at: Timestamp,
    pub seconds: f64,
    pub discrepancies: Discrepancies,
    pub in_flight: InFlight,
    pub orders: OrdersSummary,
    pub fraud: FraudSummary,
    pub payments: PaymentsSummary,
    pub totals: TotalsCheck,
    pub dead_letters: DeadLetters,
    /// Canary orders: not orders of the business, so not among the figures above nor a
    /// discrepancy; a missing journey is reported here.
    pub canaries: CanarySummary,
    pub snapshot: SnapshotReport,
}

/// The canary orders on the topic against the journeys the store recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CanarySummary {
    /// Canary orders on the orders topic (up to the snapshot).
    pub on_topic: u64,
    /// Fraud verdicts and payments about canaries on their topics.
    pub fraud_verdicts_on_topic: u64,
    pub payments_on_topic: u64,
    /// Canary orders on the topic with an id of the orders' range, not the canaries' own:
    /// made by a producer from before canaries had a range of their own, each a gap in the
    /// orders' ids (explained, not a discrepancy).
    pub in_order_range: u64,
    /// Canaries with a journey in the store.
    pub journeys: u64,
    /// Canaries analytics-group has not committed past yet.
    pub not_yet_recorded: u64,
    /// Canaries analytics-group has committed past with no journey (or no stored stage)
    /// in the store: a canary lost on the way to the store, not an order lost.
    pub journeys_missing: Finding,
}

impl AuditReport {
    /// True when the topics and the store agree.
    pub fn is_clean(&self) -> bool {
        self.consistent
    }

    /// A few lines for a person (the CLI prints them on stderr).
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let partitions = self.snapshot.partitions.len();
        let _ = writeln!(
            s,
            "audit of {partitions} partitions as of {} ({:.1} s)",
            self.snapshot.taken_at, self.seconds
        );
        self.summarise_counts(&mut s);
        self.summarise_canaries(&mut s);
        if self.totals.changed_during_audit {
            let _ = writeln!(s, "  totals changed during the audit: checked as bounds");
        }
        if self.consistent {
            let _ = writeln!(s, "consistent");
            return s;
        }
        let _ = writeln!(s, "{} discrepancies:", self.discrepancy_count);
        self.summarise_discrepancies(&mut s);
        s
    }

    /// Orders, alerts and payments on the topics and in the store, and those in flight.
    fn summarise_counts(&self, s: &mut String) {
        let o = &self.orders;
        let _ = writeln!(
            s,
            "  orders:    {} on the topic ({} redelivered, {} undecodable), {} stored, {} no longer on the topic",
            o.on_topic, o.redelivered, o.undecodable.count, o.stored, o.no_longer_on_topic
        );
        let f = &self.fraud;
        let _ = writeln!(
            s,
            "  fraud:     {} alerts called for by the rules, {} on the topic, {} stored",
            f.alerts_expected, f.on_topic, f.stored
        );
        let p = &self.payments;
        let _ = writeln!(
            s,
            "  payments:  {} on the topic ({} redelivered), {} stored ({} paid, {} failed)",
            p.on_topic, p.redelivered, p.stored, p.paid, p.failed
        );
        let i = &self.in_flight;
        let _ = writeln!(
            s,
            "  in flight: {} orders, {} alerts, {} payments not yet stored; {} alerts, {} payments not yet made",
            i.orders_not_yet_stored,
            i.alerts_not_yet_stored,
            i.payments_not_yet_stored,
            i.alerts_not_yet_raised,
            i.payments_not_yet_made
        );
        let _ = writeln!(
            s,
            "             stored after the snapshot: {} orders, {} alerts, {} payments",
            i.orders_after_snapshot, i.alerts_after_snapshot, i.payments_after_snapshot
        );
    }

    /// The canaries, when there were any.
    fn summarise_canaries(&self, s: &mut String) {
        let c = &self.canaries;
        if c.on_topic > 0 {
            let _ = writeln!(
                s,
                "  canaries:  {} on the topic, {} journeys recorded, {} not yet, {} missing (not counted as orders)",
                c.on_topic, c.journeys, c.not_yet_recorded, c.journeys_missing.count
            );
        }
        if c.in_order_range > 0 {
            let _ = writeln!(
                s,
                "             {} canaries with ids of the orders' range (from an older producer): gaps in the order ids",
                c.in_order_range
            );
        }
    }

    /// One line per kind of discrepancy found, with the lowest order ids.
    fn summarise_discrepancies(&self, s: &mut String) {
        for (kind, finding) in self.discrepancies.kinds() {
            if finding.count == 0 {
                continue;
            }
            let ids: Vec<String> = finding.order_ids.iter().map(u64::to_string).collect();
            let more = if finding.count as usize > ids.len() && !ids.is_empty() {
                ", ..."
            } else {
                ""
            };
            let _ = match kind {
                "totals_differ" => {
                    let fields: Vec<&str> = self
                        .totals
                        .mismatches
                        .iter()
                        .map(|m| m.field.as_str())
                        .collect();
                    writeln!(s, "  {kind}: {} ({})", finding.count, fields.join(", "))
                }
                _ if ids.is_empty() => writeln!(s, "  {kind}: {}", finding.count),
                _ => writeln!(
                    s,
                    "  {kind}: {} (order ids {}{more})",
                    finding.count,
                    ids.join(", ")
                ),
            };
        }
    }
}

/// How many of one kind, and the lowest order ids among them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub count: u64,
    /// Ascending, at most the audit's `max_ids` (the count is always complete).
    pub order_ids: BTreeSet<u64>,
}

impl Finding {
    /// Counts one more, keeping the `cap` lowest ids.
    pub(crate) fn add(&mut self, order_id: u64, cap: usize) {
        self.count += 1;
        self.list(order_id, cap);
    }

    /// Lists an id without counting (for kinds counted by records, listed by order).
    pub(crate) fn list(&mut self, order_id: u64, cap: usize) {
        if cap == 0 {
            return;
        }
        self.order_ids.insert(order_id);
        if self.order_ids.len() > cap {
            self.order_ids.pop_last();
        }
    }
}

/// Every kind of discrepancy, always present (count 0 when there is none).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Discrepancies {
    /// On the topic, not stored, though analytics-group has committed past it.
    pub orders_not_stored: Finding,
    /// Stored, at a place on the topic that the snapshot covers, but not there.
    pub orders_not_on_topic: Finding,
    /// Stored with fields that differ from the record on the topic.
    pub orders_differ: Finding,
    /// The same order id on the topic more than once with different content.
    pub orders_conflicting: Finding,
    /// The rules call for an alert; none is stored though the fraud service (and
    /// analytics, when the alert is on its topic) has committed past it.
    pub alerts_missing: Finding,
    /// An alert (stored or on the topic) for an order the rules do not flag.
    pub alerts_extra: Finding,
    /// A stored alert whose reason is not the matching rule's, or whose amount or country
    /// is not its order's.
    pub alerts_differ: Finding,
    /// An alert (stored or on the topic) for an order neither on the topic nor stored.
    pub alerts_for_unknown_orders: Finding,
    /// No payment stored though payments-group (and analytics, when the payment is on its
    /// topic) has committed past the order.
    pub payments_missing: Finding,
    /// More than one payment stored for one order.
    pub payments_duplicated: Finding,
    /// A stored payment whose amount or country is not its order's.
    pub payments_differ: Finding,
    /// A payment (stored or on the topic) for an order neither on the topic nor stored.
    pub payments_for_unknown_orders: Finding,
    /// Stored totals that do not add up from the stored records: the count is of fields
    /// (listed in `totals.mismatches`), no order ids.
    pub totals_differ: Finding,
    /// Records in the dead-letter topics: the count is of records, the ids those of
    /// their keys that are order ids.
    pub dead_letters: Finding,
}

impl Discrepancies {
    /// Each kind with its name in the JSON.
    pub fn kinds(&self) -> [(&'static str, &Finding); 14] {
        [
            ("orders_not_stored", &self.orders_not_stored),
            ("orders_not_on_topic", &self.orders_not_on_topic),
            ("orders_differ", &self.orders_differ),
            ("orders_conflicting", &self.orders_conflicting),
            ("alerts_missing", &self.alerts_missing),
            ("alerts_extra", &self.alerts_extra),
            ("alerts_differ", &self.alerts_differ),
            ("alerts_for_unknown_orders", &self.alerts_for_unknown_orders),
            ("payments_missing", &self.payments_missing),
            ("payments_duplicated", &self.payments_duplicated),
            ("payments_differ", &self.payments_differ),
            (
                "payments_for_unknown_orders",
                &self.payments_for_unknown_orders,
            ),
            ("totals_differ", &self.totals_differ),
            ("dead_letters", &self.dead_letters),
        ]
    }

    pub fn total(&self) -> u64 {
        self.kinds().iter().map(|(_, f)| f.count).sum()
    }

    /// The kinds found at least once, with their counts.
    pub fn found(&self) -> Vec<(&'static str, u64)> {
        self.kinds()
            .iter()
            .filter(|(_, f)| f.count > 0)
            .map(|(k, f)| (*k, f.count))
            .collect()
    }
}

/// What the pipeline has not finished yet: not discrepancies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct InFlight {
    /// Orders on the topic, not stored, at or beyond analytics-group's committed offset.
    pub orders_not_yet_stored: u64,
    /// Alerts the rules call for, not raised, their order at or beyond fraud-group's
    /// committed offset.
    pub alerts_not_yet_raised: u64,
    /// Alerts on their topic, not stored, at or beyond analytics-group's committed offset.
    pub alerts_not_yet_stored: u64,
    /// Orders without a payment, at or beyond payments-group's committed offset.
    pub payments_not_yet_made: u64,
    /// Payments on their topic, not stored, at or beyond analytics-group's committed
    /// offset.
    pub payments_not_yet_stored: u64,
    /// Stored orders that reached the topic after the snapshot.
    pub orders_after_snapshot: u64,
    /// Stored alerts of orders that reached the topic after the snapshot.
    pub alerts_after_snapshot: u64,
    /// Stored payments of orders that reached the topic after the snapshot.
    pub payments_after_snapshot: u64,
}

/// Records that no reader can use, by reason (the dead-letter codes).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Undecodable {
    pub count: u64,
    pub by_reason: BTreeMap<String, u64>,
}

impl Undecodable {
    pub(crate) fn add(&mut self, reason: &str) {
        self.count += 1;
        *self.by_reason.entry(reason.to_owned()).or_default() += 1;
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OrdersSummary {
    /// Records read from the orders topic (up to the snapshot).
    pub topic_records: u64,
    /// Distinct orders among them.
    pub on_topic: u64,
    /// Records repeating an order with identical content.
    pub redelivered: u64,
    pub undecodable: Undecodable,
    /// Orders in the store.
    pub stored: u64,
    /// Stored orders the topic no longer holds: below a partition's low watermark
    /// (retention), or stored before its oldest record was written (an earlier topic).
    pub no_longer_on_topic: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FraudSummary {
    /// The rules in force, first match wins.
    pub rules: Vec<FraudRule>,
    /// Orders (on the topic or stored) the rules flag.
    pub alerts_expected: u64,
    pub topic_records: u64,
    /// Distinct orders with an alert on the topic.
    pub on_topic: u64,
    pub redelivered: u64,
    pub undecodable: Undecodable,
    /// Alerts in the store.
    pub stored: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PaymentsSummary {
    pub topic_records: u64,
    /// Distinct orders with a payment on the topic.
    pub on_topic: u64,
    /// Records repeating a payment for one order (a redelivered order is paid again;
    /// the store keeps one payment per order).
    pub redelivered: u64,
    pub undecodable: Undecodable,
    /// Payments in the store.
    pub stored: u64,
    pub paid: u64,
    pub failed: u64,
}

/// The store's totals against the sums of the stored records.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TotalsCheck {
    /// `OrderStore::totals()` when the scan began.
    pub stored: Totals,
    /// The same figures summed from the scanned records.
    pub counted: Totals,
    /// The stored totals moved between the start and the end of the scan (the pipeline
    /// was writing): each counted figure must then lie between the two.
    pub changed_during_audit: bool,
    pub mismatches: Vec<TotalsMismatch>,
}

/// One figure that does not add up. Money in cents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TotalsMismatch {
    /// E.g. `order_count`, `total_sales_cents`, `by_country.DE.count`.
    pub field: String,
    pub stored_at_start: i64,
    pub stored_at_end: i64,
    pub counted: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DeadLetters {
    pub records: u64,
    /// Of those, records an operator redrove or discarded (`ordersctl dlq`): handled, so
    /// not discrepancies.
    pub handled: u64,
    /// Keyed by dead-letter topic; every one is present.
    pub topics: BTreeMap<String, DeadLetterTopic>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DeadLetterTopic {
    pub records: u64,
    /// By the `dlq.reason` header (`unknown` when absent).
    pub by_reason: BTreeMap<String, u64>,
    /// By the `dlq.group` header (`unknown` when absent).
    pub by_group: BTreeMap<String, u64>,
}

/// What the audit read: each partition up to its high watermark at the snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotReport {
    pub taken_at: Timestamp,
    pub partitions: Vec<PartitionSnapshot>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionSnapshot {
    pub topic: String,
    pub partition: i32,
    pub low_watermark: i64,
    pub high_watermark: i64,
    /// The committed offset of each group that reads this topic; null where it has
    /// committed nothing.
    pub committed: BTreeMap<String, Option<i64>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn findings_count_everything_and_list_the_lowest_ids() {
        let mut f = Finding::default();
        for id in [50, 7, 30, 7, 1, 99] {
            f.add(id, 3);
        }
        assert_eq!(f.count, 6);
        assert_eq!(f.order_ids.iter().copied().collect::<Vec<_>>(), [1, 7, 30]);
        let mut none = Finding::default();
        none.add(5, 0);
        assert_eq!((none.count, none.order_ids.len()), (1, 0));
        assert_eq!(
            serde_json::to_value(&f).unwrap(),
            serde_json::json!({"count": 6, "order_ids": [1, 7, 30]})
        );
    }

    #[test]
    fn every_kind_is_named_and_summed() {
        let mut d = Discrepancies::default();
        d.alerts_missing.add(3, 20);
        d.totals_differ.count = 2;
        assert_eq!(d.total(), 3);
        let json = serde_json::to_value(&d).unwrap();
        let names: Vec<&str> = d.kinds().iter().map(|(n, _)| *n).collect();
        assert_eq!(json.as_object().unwrap().len(), names.len());
        for name in names {
            assert!(json.get(name).is_some(), "{name}");
        }
    }
}
