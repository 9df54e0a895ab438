//! Canary orders: synthetic orders the producer emits at a low rate so the whole pipeline
//! (fraud, payment, analytics, store) is measured end to end, without ever counting in the
//! business figures.
//!
//! A canary is an ordinary SPEC order whose `source` is `"canary"`. What the fraud and
//! payment services publish about it carries the extra field `"canary": true` (the fraud
//! service publishes its verdict for every canary, flagged or not, with `"flagged"`), so
//! every reader can tell those records apart. Analytics stores no canary as an order,
//! alert or payment: it records the stages of each canary's journey instead.
//!
//! Canaries take their ids from a range of their own ([`CANARY_ORDER_IDS`], handed out by
//! [`CanaryIds`]), never from the orders' sequence: an operator reading the order ids sees
//! no gap where a canary went by.

use crate::domain::{FraudAlert, Order, Timestamp, CANARY_ORDER_IDS};
use crate::fraud::FraudRules;
use serde::{Deserialize, Serialize};

/// The `source` of a canary order.
pub const CANARY_SOURCE: &str = "canary";

/// The `reason` of the fraud service's verdict on a canary no rule matched.
pub const NOT_FLAGGED: &str = "NOT_FLAGGED";

/// Whether an order is a canary.
pub fn is_canary(order: &Order) -> bool {
    order.source.as_deref() == Some(CANARY_SOURCE)
}

/// Whether `order_id` is in the canaries' range. A canary made before canaries had their
/// own range carries an id from the orders' sequence: [`is_canary`] is what makes a canary.
pub fn is_canary_id(order_id: u64) -> bool {
    CANARY_ORDER_IDS.contains(&order_id)
}

/// Hands out canary ids: the start of [`CANARY_ORDER_IDS`] plus the Unix time in
/// milliseconds the canary is made at, or one more than the previous id when that is not
/// larger. Ids so grow with time, across restarts too, without reading back what an earlier
/// process used; a producer starts above the highest journey stored as well, against a
/// clock set back. (A range of 2^51 ms lasts until the year 71,000.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CanaryIds {
    /// The last id handed out (or in use), below the range when none is.
    last: u64,
}

impl CanaryIds {
    /// Ids above `highest` (the highest canary id in use, when known: ids outside the
    /// canaries' range are ignored).
    pub fn after(highest: Option<u64>) -> CanaryIds {
        let last = highest
            .filter(|id| is_canary_id(*id))
            .unwrap_or(CANARY_ORDER_IDS.start - 1);
        CanaryIds { last }
    }

    /// The id of a canary made at `now`; `None` once the range is used up.
    pub fn next(&mut self, now: Timestamp) -> Option<u64> {
        let millis = u64::try_from(now.0.timestamp_millis()).unwrap_or(0);
        let id = CANARY_ORDER_IDS
            .start
            .saturating_add(millis)
            .max(self.last.saturating_add(1));
        if !is_canary_id(id) {
            return None;
        }
        self.last = id;
        Some(id)
    }
}

/// The mark on a fraud verdict or payment about a canary, read from its JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct CanaryMark {
    #[serde(default)]
    pub canary: bool,
    /// On a fraud verdict: whether a rule matched.
    #[serde(default)]
    pub flagged: Option<bool>,
}

impl CanaryMark {
    /// The mark of a record, when it is about a canary. Cheap for every other record: only
    /// a payload naming the field is parsed.
    pub fn of(payload: Option<&[u8]>) -> Option<CanaryMark> {
        const FIELD: &[u8] = b"\"canary\"";
        let bytes = payload?;
        if !bytes.windows(FIELD.len()).any(|w| w == FIELD) {
            return None;
        }
        serde_json::from_slice::<CanaryMark>(bytes)
            .ok()
            .filter(|m| m.canary)
    }
}

/// `record` as JSON with the canary mark (and any `extra` fields) added.
fn marked<T: Serialize>(record: &T, extra: &[(&str, serde_json::Value)]) -> Vec<u8> {
    let mut value = serde_json::to_value(record).unwrap_or_default();
    if let Some(map) = value.as_object_mut() {
        map.insert("canary".into(), serde_json::Value::Bool(true));
        for (k, v) in extra {
            map.insert((*k).into(), v.clone());
        }
    }
    serde_json::to_vec(&value).unwrap_or_default()
}

/// The fraud service's verdict on a canary: the alert a rule raises (or one with reason
/// [`NOT_FLAGGED`] when none matches), marked, with `"flagged"`.
pub fn fraud_verdict(rules: &FraudRules, order: &Order) -> Vec<u8> {
    let (alert, flagged) = match rules.evaluate(order) {
        Some(alert) => (alert, true),
        None => (
            FraudAlert {
                order_id: order.order_id,
                reason: NOT_FLAGGED.to_owned(),
                amount: order.amount,
                country: order.country,
                rule_id: None,
                detected_at: Some(Timestamp::now()),
            },
            false,
        ),
    };
    marked(&alert, &[("flagged", serde_json::Value::Bool(flagged))])
}

/// A payment (or any record) about a canary, marked.
pub fn marked_json<T: Serialize>(record: &T) -> Vec<u8> {
    marked(record, &[])
}

/// One stage of a canary's journey, as analytics learns it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CanaryStage {
    /// Analytics read the canary order and recorded it: `created_at` is the order's own.
    Stored {
        order_id: u64,
        created_at: Timestamp,
        stored_at: Timestamp,
    },
    /// The fraud service decided (`at`: when it says it did).
    Decided {
        order_id: u64,
        at: Timestamp,
        flagged: bool,
    },
    /// The payment service paid (`at`: the payment's `timestamp`).
    Paid { order_id: u64, at: Timestamp },
}

impl CanaryStage {
    pub fn order_id(&self) -> u64 {
        match self {
            CanaryStage::Stored { order_id, .. }
            | CanaryStage::Decided { order_id, .. }
            | CanaryStage::Paid { order_id, .. } => *order_id,
        }
    }
}

/// What the store knows of one canary. Stages may arrive in any order (they come from
/// three topics); the first time recorded for a stage is kept, so redelivery changes
/// nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanaryJourney {
    pub order_id: u64,
    pub created_at: Option<Timestamp>,
    pub decided_at: Option<Timestamp>,
    pub flagged: Option<bool>,
    pub paid_at: Option<Timestamp>,
    pub stored_at: Option<Timestamp>,
}

/// The measured legs of a journey, each from the canary's creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CanaryLeg {
    Decision,
    Paid,
    Stored,
}

impl CanaryLeg {
    pub const ALL: [CanaryLeg; 3] = [CanaryLeg::Decision, CanaryLeg::Paid, CanaryLeg::Stored];
    /// The name metrics and JSON use.
    pub fn as_str(self) -> &'static str {
        match self {
            CanaryLeg::Decision => "decision",
            CanaryLeg::Paid => "paid",
            CanaryLeg::Stored => "stored",
        }
    }
}

impl CanaryJourney {
    pub fn new(order_id: u64) -> Self {
        CanaryJourney {
            order_id,
            created_at: None,
            decided_at: None,
            flagged: None,
            paid_at: None,
            stored_at: None,
        }
    }

    /// Adds a stage, keeping what was recorded first.
    pub fn record(&mut self, stage: &CanaryStage) {
        match *stage {
            CanaryStage::Stored {
                created_at,
                stored_at,
                ..
            } => {
                self.created_at.get_or_insert(created_at);
                self.stored_at.get_or_insert(stored_at);
            }
            CanaryStage::Decided { at, flagged, .. } => {
                if self.decided_at.is_none() {
                    self.decided_at = Some(at);
                    self.flagged = Some(flagged);
                }
            }
            CanaryStage::Paid { at, .. } => {
                self.paid_at.get_or_insert(at);
            }
        }
    }

    /// When a leg ended.
    pub fn reached(&self, leg: CanaryLeg) -> Option<Timestamp> {
        match leg {
            CanaryLeg::Decision => self.decided_at,
            CanaryLeg::Paid => self.paid_at,
            CanaryLeg::Stored => self.stored_at,
        }
    }

    /// Seconds from creation to the end of `leg`, once both are known (never negative:
    /// clocks of different hosts may disagree by a little).
    pub fn seconds(&self, leg: CanaryLeg) -> Option<f64> {
        let created = self.created_at?;
        let reached = self.reached(leg)?;
        Some(((reached.micros() - created.micros()) as f64 / 1e6).max(0.0))
    }

    /// Every stage is known.
    pub fn is_complete(&self) -> bool {
        self.created_at.is_some() && CanaryLeg::ALL.iter().all(|l| self.reached(*l).is_some())
    }

    /// The earliest time known of the canary: its creation, or, before analytics has
    /// read the order, the first stage seen.
    pub fn first_seen(&self) -> Option<Timestamp> {
        self.created_at
            .or_else(|| CanaryLeg::ALL.iter().filter_map(|l| self.reached(*l)).min())
    }

    /// The journeys `stages` describe, merged into `journeys` by order id.
    pub fn merge(stages: &[CanaryStage]) -> std::collections::BTreeMap<u64, CanaryJourney> {
        let mut journeys = std::collections::BTreeMap::new();
        for s in stages {
            journeys
                .entry(s.order_id())
                .or_insert_with(|| CanaryJourney::new(s.order_id()))
                .record(s);
        }
        journeys
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test
    use super::*;
    use crate::domain::{Payment, PaymentStatus};
    use crate::generator::OrderGenerator;

    fn canary(id: u64) -> Order {
        let mut order = OrderGenerator::new(3).order(id, Timestamp::now());
        order.source = Some(CANARY_SOURCE.into());
        order
    }

    fn at_millis(ms: i64) -> Timestamp {
        Timestamp::from_micros(ms * 1_000).unwrap()
    }

    #[test]
    fn canary_ids_are_their_own_range_and_grow_with_time() {
        let mut ids = CanaryIds::after(None);
        let base = CANARY_ORDER_IDS.start;
        assert_eq!(ids.next(at_millis(1_000)), Some(base + 1_000));
        // Two in the same millisecond, and a clock set back: still one more each time.
        assert_eq!(ids.next(at_millis(1_000)), Some(base + 1_001));
        assert_eq!(ids.next(at_millis(10)), Some(base + 1_002));
        assert_eq!(ids.next(at_millis(5_000)), Some(base + 5_000));
        let now = ids.next(Timestamp::now()).unwrap();
        assert!(is_canary_id(now) && !crate::domain::PRODUCER_ORDER_IDS.contains(&now));
        assert!(now < crate::domain::DATABASE_ORDER_ID_BASE);
    }

    #[test]
    fn canary_ids_continue_above_the_highest_in_use() {
        let base = CANARY_ORDER_IDS.start;
        // A journey stored by a process whose clock was ahead: the next id is above it.
        let mut ids = CanaryIds::after(Some(base + 9_000));
        assert_eq!(ids.next(at_millis(1_000)), Some(base + 9_001));
        // A canary id from before the canaries' range is no bound.
        let mut ids = CanaryIds::after(Some(57));
        assert_eq!(ids.next(at_millis(1_000)), Some(base + 1_000));
        // The end of the range: no id rather than one of the database's.
        let mut ids = CanaryIds::after(Some(CANARY_ORDER_IDS.end - 1));
        assert_eq!(ids.next(at_millis(1_000)), None);
    }

    #[test]
    fn verdicts_are_marked_and_readable_as_alerts() {
        let mut flagged = canary(7);
        flagged.amount = crate::Cents(40_000);
        flagged.country = "DE".parse().unwrap();
        let mut clean = canary(8);
        clean.country = "US".parse().unwrap();
        for (order, want) in [(flagged, true), (clean, false)] {
            let json = fraud_verdict(&FraudRules::default(), &order);
            let alert = FraudAlert::decode(Some(&json)).unwrap();
            assert_eq!(alert.order_id, order.order_id);
            let mark = CanaryMark::of(Some(&json)).unwrap();
            assert_eq!(mark.flagged, Some(want));
            assert_eq!(alert.reason == NOT_FLAGGED, !want);
        }
    }

    #[test]
    fn only_marked_records_are_canaries() {
        let payment = Payment {
            order_id: 9,
            status: PaymentStatus::Paid,
            amount: crate::Cents(1_000),
            country: "US".parse().unwrap(),
            timestamp: 1.5,
        };
        assert!(CanaryMark::of(Some(&payment.to_json())).is_none());
        assert!(CanaryMark::of(Some(&marked_json(&payment))).is_some());
        assert!(CanaryMark::of(Some(br#"{"canary": false}"#)).is_none());
        assert!(CanaryMark::of(Some(br#"{"canary": tru"#)).is_none());
        assert!(CanaryMark::of(None).is_none());
        assert!(is_canary(&canary(1)));
        assert!(!is_canary(
            &OrderGenerator::new(1).order(1, Timestamp::now())
        ));
    }

    #[test]
    fn journeys_keep_the_first_time_of_each_stage_in_any_order() {
        let t = |s: i64| Timestamp::from_micros(1_700_000_000_000_000 + s * 1_000_000).unwrap();
        let stages = [
            CanaryStage::Paid {
                order_id: 5,
                at: t(2),
            },
            CanaryStage::Stored {
                order_id: 5,
                created_at: t(0),
                stored_at: t(3),
            },
            CanaryStage::Paid {
                order_id: 5,
                at: t(9),
            },
        ];
        let journeys = CanaryJourney::merge(&stages);
        let j = &journeys[&5];
        assert_eq!(j.seconds(CanaryLeg::Paid), Some(2.0));
        assert_eq!(j.seconds(CanaryLeg::Stored), Some(3.0));
        assert!(!j.is_complete());
        let mut j = j.clone();
        j.record(&CanaryStage::Decided {
            order_id: 5,
            at: t(1),
            flagged: false,
        });
        assert!(j.is_complete());
        assert_eq!(j.seconds(CanaryLeg::Decision), Some(1.0));
        assert_eq!(j.first_seen(), Some(t(0)));
        assert_eq!(CanaryJourney::new(1).first_seen(), None);
    }
}
