//! The store side of the audit: the three full scans of the store, merged by order id
//! with the sorted topic entries, and each order judged once with everything known about
//! it. Memory is the topic entries plus one page per scan.

use super::fingerprint;
use super::report::{
    Discrepancies, FraudSummary, InFlight, OrdersSummary, PaymentsSummary, TotalsMismatch,
};
use super::topics::{KafkaRead, OrdersPartition, Snapshot, TopicOrder, TopicRecord};
use crate::domain::{Country, Order, OrderStatus, PaymentStatus};
use crate::fraud::FraudRules;
use crate::money::Cents;
use crate::store::{
    CountAndSum, OrderStore, StoreError, StoredAlert, StoredOrder, StoredPayment, Totals,
};
use futures::future::BoxFuture;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// A record the store scans in pages.
pub(super) trait Scanned: Sized + Send {
    const WHAT: &'static str;
    fn order_id(&self) -> u64;
    fn page(
        store: &dyn OrderStore,
        before_id: Option<u64>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Self>, StoreError>>;
}

impl Scanned for StoredOrder {
    const WHAT: &'static str = "orders";
    fn order_id(&self) -> u64 {
        self.order.order_id
    }
    fn page(
        store: &dyn OrderStore,
        before_id: Option<u64>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Self>, StoreError>> {
        store.orders_before(before_id, limit)
    }
}

impl Scanned for StoredAlert {
    const WHAT: &'static str = "alerts";
    fn order_id(&self) -> u64 {
        self.alert.order_id
    }
    fn page(
        store: &dyn OrderStore,
        before_id: Option<u64>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Self>, StoreError>> {
        store.alerts_before(before_id, limit)
    }
}

impl Scanned for StoredPayment {
    const WHAT: &'static str = "payments";
    fn order_id(&self) -> u64 {
        self.payment.order_id
    }
    fn page(
        store: &dyn OrderStore,
        before_id: Option<u64>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Self>, StoreError>> {
        store.payments_before(before_id, limit)
    }
}

/// One full scan, a page at a time.
struct Pager<'a, T> {
    store: &'a dyn OrderStore,
    limit: usize,
    items: VecDeque<T>,
    before: Option<u64>,
    done: bool,
}

/// The records of one order id from one source: normally none or one.
struct Same<T> {
    first: Option<T>,
    /// More records with the same id (a store that broke its key; redeliveries on a topic).
    rest: Vec<T>,
}

impl<T> Same<T> {
    fn iter(&self) -> impl Iterator<Item = &T> {
        self.first.iter().chain(self.rest.iter())
    }
}

impl<'a, T: Scanned> Pager<'a, T> {
    fn new(store: &'a dyn OrderStore, limit: usize) -> Self {
        Pager {
            store,
            limit: limit.max(1),
            items: VecDeque::new(),
            before: None,
            done: false,
        }
    }

    /// The id of the next record, fetching a page when needed. A page that does not keep
    /// to the scan's order is an error: merging it would misjudge every order after it.
    async fn head(&mut self) -> Result<Option<u64>, StoreError> {
        if self.items.is_empty() && !self.done {
            let page = T::page(self.store, self.before, self.limit).await?;
            self.done = page.len() < self.limit;
            let mut previous: Option<u64> = None;
            for item in &page {
                let id = item.order_id();
                let in_order = match previous {
                    None => self.before.is_none_or(|b| id < b),
                    Some(p) => id <= p,
                };
                if !in_order {
                    return Err(StoreError::Corrupt(format!(
                        "the scan of stored {} returned order id {id} out of order",
                        T::WHAT
                    )));
                }
                previous = Some(id);
            }
            if previous.is_some() {
                self.before = previous;
            }
            self.items.extend(page);
        }
        Ok(self.items.front().map(T::order_id))
    }

    /// Takes the records of `id` at the front (after `head` said it is next).
    fn take(&mut self, id: u64) -> Same<T> {
        let mut same = Same {
            first: None,
            rest: Vec::new(),
        };
        while self.items.front().is_some_and(|t| t.order_id() == id) {
            if let Some(item) = self.items.pop_front() {
                match same.first {
                    None => same.first = Some(item),
                    Some(_) => same.rest.push(item),
                }
            }
        }
        same
    }
}

/// A cursor over topic entries sorted by order id, highest first.
struct Entries<'a, T> {
    items: &'a [T],
    id: fn(&T) -> u64,
}

impl<'a, T> Entries<'a, T> {
    fn head(&self) -> Option<u64> {
        self.items.first().map(self.id)
    }

    fn take(&mut self, order_id: u64) -> &'a [T] {
        let n = self
            .items
            .iter()
            .take_while(|t| (self.id)(t) == order_id)
            .count();
        let (same, rest) = self.items.split_at(n);
        self.items = rest;
        same
    }
}

/// The store's figures summed from its records, as `OrderStore::totals()` keeps them.
#[derive(Debug, Default)]
struct Counted {
    orders: u64,
    sales: i64,
    by_country: BTreeMap<Country, (u64, i64)>,
    by_status: BTreeMap<OrderStatus, (u64, i64)>,
    fraud: u64,
    fraud_sales: i64,
    payments: u64,
    paid: u64,
}

impl Counted {
    fn order(&mut self, o: &Order) {
        self.orders += 1;
        self.sales += o.amount.0;
        let c = self.by_country.entry(o.country).or_default();
        c.0 += 1;
        c.1 += o.amount.0;
        let s = self.by_status.entry(o.status).or_default();
        s.0 += 1;
        s.1 += o.amount.0;
    }

    fn totals(&self) -> Totals {
        let sums = |(count, cents): &(u64, i64)| CountAndSum {
            count: *count,
            sales: Cents(*cents),
        };
        Totals {
            order_count: self.orders,
            total_sales: Cents(self.sales),
            by_country: self
                .by_country
                .iter()
                .map(|(c, v)| (c.as_str().to_owned(), sums(v)))
                .collect(),
            by_status: self
                .by_status
                .iter()
                .map(|(s, v)| (s.as_str().to_owned(), sums(v)))
                .collect(),
            fraud_count: self.fraud,
            fraud_sales: Cents(self.fraud_sales),
            payment_count: self.payments,
            paid_count: self.paid,
        }
    }
}

/// Where a stored order is that the topic (up to the snapshot) does not hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Whereabouts {
    /// Below the partition's low watermark, or stored before the oldest record the
    /// partition holds was written (a topic since recreated): retention took it.
    Gone,
    /// At or beyond the snapshot's high watermark: it arrived while the audit ran.
    AfterSnapshot,
    /// Where the topic should still hold it, yet it is not there.
    Missing,
}

pub(super) fn whereabouts(
    stored: &StoredOrder,
    partitions: &BTreeMap<i32, OrdersPartition>,
) -> Whereabouts {
    let Some(p) = partitions.get(&stored.kafka_partition) else {
        return Whereabouts::Missing;
    };
    let processed_ms = stored.processed_at.micros().div_euclid(1000);
    if stored.kafka_offset < p.low || p.first_timestamp_ms.is_some_and(|ts| processed_ms < ts) {
        Whereabouts::Gone
    } else if stored.kafka_offset >= p.high {
        Whereabouts::AfterSnapshot
    } else {
        Whereabouts::Missing
    }
}

/// What is known of an order whose fraud decision and payment can be judged.
struct Judgeable<'s> {
    /// The rule its content matches.
    rule: Option<usize>,
    /// The fraud service may not have seen it yet.
    fraud_pending: bool,
    /// The payment service may not have seen it yet.
    payment_pending: bool,
    /// It reached the topic after the snapshot.
    after_snapshot: bool,
    /// The stored order, when it agrees with the topic (or is all there is).
    trusted: Option<&'s Order>,
}

/// Everything the merge finds.
pub(super) struct Ledger<'a> {
    rules: &'a FraudRules,
    snapshot: &'a Snapshot,
    partitions: &'a BTreeMap<i32, OrdersPartition>,
    cap: usize,
    pub discrepancies: Discrepancies,
    pub in_flight: InFlight,
    pub orders: OrdersSummary,
    pub fraud: FraudSummary,
    pub payments: PaymentsSummary,
    counted: Counted,
    /// Order ids with an alert or payment but no order, highest first: unknown unless
    /// the order reached the topic after the snapshot.
    pub unknown_alert_orders: Vec<u64>,
    pub unknown_payment_orders: Vec<u64>,
}

impl<'a> Ledger<'a> {
    pub fn new(rules: &'a FraudRules, read: &'a KafkaRead, cap: usize) -> Self {
        Ledger {
            rules,
            snapshot: &read.snapshot,
            partitions: &read.orders.partitions,
            cap,
            discrepancies: Discrepancies::default(),
            in_flight: InFlight::default(),
            orders: OrdersSummary {
                topic_records: read.orders.records,
                undecodable: read.orders.undecodable.clone(),
                ..OrdersSummary::default()
            },
            fraud: FraudSummary {
                rules: rules.0.clone(),
                topic_records: read.alerts.records,
                undecodable: read.alerts.undecodable.clone(),
                ..FraudSummary::default()
            },
            payments: PaymentsSummary {
                topic_records: read.payments.records,
                undecodable: read.payments.undecodable.clone(),
                ..PaymentsSummary::default()
            },
            counted: Counted::default(),
            unknown_alert_orders: Vec::new(),
            unknown_payment_orders: Vec::new(),
        }
    }

    pub fn counted_totals(&self) -> Totals {
        self.counted.totals()
    }

    /// Merges the store's three scans with the topic entries, highest order id first.
    pub async fn run(
        &mut self,
        store: &dyn OrderStore,
        read: &KafkaRead,
        page_size: usize,
    ) -> Result<(), StoreError> {
        let mut topic_orders = Entries {
            items: &read.orders.entries,
            id: |t: &TopicOrder| t.order_id,
        };
        let mut topic_alerts = Entries {
            items: &read.alerts.entries,
            id: |t: &TopicRecord| t.order_id,
        };
        let mut topic_payments = Entries {
            items: &read.payments.entries,
            id: |t: &TopicRecord| t.order_id,
        };
        let mut stored_orders = Pager::<StoredOrder>::new(store, page_size);
        let mut stored_alerts = Pager::<StoredAlert>::new(store, page_size);
        let mut stored_payments = Pager::<StoredPayment>::new(store, page_size);
        loop {
            let heads = [
                topic_orders.head(),
                topic_alerts.head(),
                topic_payments.head(),
                stored_orders.head().await?,
                stored_alerts.head().await?,
                stored_payments.head().await?,
            ];
            let Some(id) = heads.into_iter().flatten().max() else {
                return Ok(());
            };
            let on_topic = OnTopic {
                orders: topic_orders.take(id),
                alerts: topic_alerts.take(id),
                payments: topic_payments.take(id),
            };
            let stored = InStore {
                order: stored_orders.take(id),
                alert: stored_alerts.take(id),
                payment: stored_payments.take(id),
            };
            self.judge(id, &on_topic, &stored);
        }
    }

    /// Judges one order id with everything the topics and the store hold about it.
    fn judge(&mut self, id: u64, topic: &OnTopic<'_>, stored: &InStore) {
        let cap = self.cap;
        self.count_store(stored);
        self.count_topics(id, topic);
        if stored.payment.first.is_some() && !stored.payment.rest.is_empty() {
            self.discrepancies.payments_duplicated.add(id, cap);
        }
        let first_on_topic = topic.orders.iter().min_by_key(|t| (t.offset, t.partition));
        let judgeable = match (first_on_topic, stored.order.first.as_ref()) {
            (Some(t), stored_order) => Some(self.order_on_topic(id, t, topic, stored_order)),
            (None, Some(s)) => self.order_only_stored(id, s),
            (None, None) => {
                if stored.alert.first.is_some() || !topic.alerts.is_empty() {
                    self.unknown_alert_orders.push(id);
                }
                if stored.payment.first.is_some() || !topic.payments.is_empty() {
                    self.unknown_payment_orders.push(id);
                }
                None
            }
        };
        if let Some(j) = judgeable {
            self.judge_fraud(id, &j, topic, stored);
            self.judge_payment(id, &j, topic, stored);
        }
    }

    fn count_store(&mut self, stored: &InStore) {
        for s in stored.order.iter() {
            self.orders.stored += 1;
            self.counted.order(&s.order);
        }
        for a in stored.alert.iter() {
            self.fraud.stored += 1;
            self.counted.fraud += 1;
            self.counted.fraud_sales += a.alert.amount.0;
        }
        for p in stored.payment.iter() {
            self.payments.stored += 1;
            self.counted.payments += 1;
            match p.payment.status {
                PaymentStatus::Paid => {
                    self.payments.paid += 1;
                    self.counted.paid += 1;
                }
                PaymentStatus::Failed => self.payments.failed += 1,
            }
        }
    }

    fn count_topics(&mut self, id: u64, topic: &OnTopic<'_>) {
        if let Some(first) = topic.orders.first() {
            self.orders.on_topic += 1;
            if topic
                .orders
                .iter()
                .all(|t| t.fingerprint == first.fingerprint)
            {
                self.orders.redelivered += topic.orders.len() as u64 - 1;
            } else {
                self.discrepancies.orders_conflicting.add(id, self.cap);
            }
        }
        if !topic.alerts.is_empty() {
            self.fraud.on_topic += 1;
            self.fraud.redelivered += topic.alerts.len() as u64 - 1;
        }
        if !topic.payments.is_empty() {
            self.payments.on_topic += 1;
            self.payments.redelivered += topic.payments.len() as u64 - 1;
        }
    }

    /// An order the topic holds (`first` is its earliest record, the one every group
    /// reached first).
    fn order_on_topic<'s>(
        &mut self,
        id: u64,
        first: &TopicOrder,
        topic: &OnTopic<'_>,
        stored: Option<&'s StoredOrder>,
    ) -> Judgeable<'s> {
        let trusted = match stored {
            Some(s) => {
                let stored_print = fingerprint(&s.order);
                if topic.orders.iter().any(|t| t.fingerprint == stored_print) {
                    Some(&s.order)
                } else {
                    self.discrepancies.orders_differ.add(id, self.cap);
                    None
                }
            }
            None => {
                let committed = self.snapshot.analytics_orders.at(first.partition);
                if first.offset >= committed {
                    self.in_flight.orders_not_yet_stored += 1;
                } else {
                    self.discrepancies.orders_not_stored.add(id, self.cap);
                }
                None
            }
        };
        Judgeable {
            rule: first.rule(),
            fraud_pending: first.offset >= self.snapshot.fraud.at(first.partition),
            payment_pending: first.offset >= self.snapshot.payment.at(first.partition),
            after_snapshot: false,
            trusted,
        }
    }

    /// A stored order the topic (up to the snapshot) does not hold.
    fn order_only_stored<'s>(&mut self, id: u64, s: &'s StoredOrder) -> Option<Judgeable<'s>> {
        let rule = self.rules.first_match(&s.order).map(|(i, _)| i);
        match whereabouts(s, self.partitions) {
            // Long processed: every group has passed it.
            Whereabouts::Gone => {
                self.orders.no_longer_on_topic += 1;
                Some(Judgeable {
                    rule,
                    fraud_pending: false,
                    payment_pending: false,
                    after_snapshot: false,
                    trusted: Some(&s.order),
                })
            }
            Whereabouts::AfterSnapshot => {
                self.in_flight.orders_after_snapshot += 1;
                Some(Judgeable {
                    rule,
                    fraud_pending: true,
                    payment_pending: true,
                    after_snapshot: true,
                    trusted: Some(&s.order),
                })
            }
            // Whether fraud or payment ever saw it is unknowable: reported once, here.
            Whereabouts::Missing => {
                self.discrepancies.orders_not_on_topic.add(id, self.cap);
                None
            }
        }
    }

    fn judge_fraud(&mut self, id: u64, j: &Judgeable<'_>, topic: &OnTopic<'_>, stored: &InStore) {
        let cap = self.cap;
        if j.rule.is_some() {
            self.fraud.alerts_expected += 1;
        }
        let alert = stored.alert.first.as_ref();
        if alert.is_some() && j.after_snapshot {
            self.in_flight.alerts_after_snapshot += 1;
        }
        let first_on_topic = topic.alerts.iter().min_by_key(|a| (a.offset, a.partition));
        match (j.rule, alert, first_on_topic) {
            (Some(rule), Some(a), _) => {
                let reason_agrees = self
                    .rules
                    .0
                    .get(rule)
                    .is_some_and(|r| r.reason == a.alert.reason);
                let fields_agree = j
                    .trusted
                    .is_none_or(|o| a.alert.amount == o.amount && a.alert.country == o.country);
                if !(reason_agrees && fields_agree) {
                    self.discrepancies.alerts_differ.add(id, cap);
                }
            }
            (Some(_), None, Some(t)) => {
                if t.offset >= self.snapshot.analytics_alerts.at(t.partition) {
                    self.in_flight.alerts_not_yet_stored += 1;
                } else {
                    self.discrepancies.alerts_missing.add(id, cap);
                }
            }
            (Some(_), None, None) => {
                if j.fraud_pending {
                    self.in_flight.alerts_not_yet_raised += 1;
                } else {
                    self.discrepancies.alerts_missing.add(id, cap);
                }
            }
            (None, Some(_), _) | (None, None, Some(_)) => {
                self.discrepancies.alerts_extra.add(id, cap);
            }
            (None, None, None) => {}
        }
    }

    fn judge_payment(&mut self, id: u64, j: &Judgeable<'_>, topic: &OnTopic<'_>, stored: &InStore) {
        let cap = self.cap;
        let payment = stored.payment.first.as_ref();
        if payment.is_some() && j.after_snapshot {
            self.in_flight.payments_after_snapshot += 1;
        }
        let first_on_topic = topic
            .payments
            .iter()
            .min_by_key(|p| (p.offset, p.partition));
        match (payment, first_on_topic) {
            (Some(p), _) => {
                if j.trusted
                    .is_some_and(|o| p.payment.amount != o.amount || p.payment.country != o.country)
                {
                    self.discrepancies.payments_differ.add(id, cap);
                }
            }
            (None, Some(t)) => {
                if t.offset >= self.snapshot.analytics_payments.at(t.partition) {
                    self.in_flight.payments_not_yet_stored += 1;
                } else {
                    self.discrepancies.payments_missing.add(id, cap);
                }
            }
            (None, None) => {
                if j.payment_pending {
                    self.in_flight.payments_not_yet_made += 1;
                } else {
                    self.discrepancies.payments_missing.add(id, cap);
                }
            }
        }
    }

    /// Settles the alerts and payments whose order was nowhere in the first look:
    /// those whose order reached the topic after the snapshot are new, the rest are for
    /// unknown orders.
    pub fn settle_unknown(&mut self, arrived_late: &std::collections::HashSet<u64>) {
        let cap = self.cap;
        for id in std::mem::take(&mut self.unknown_alert_orders) {
            if arrived_late.contains(&id) {
                self.in_flight.alerts_after_snapshot += 1;
            } else {
                self.discrepancies.alerts_for_unknown_orders.add(id, cap);
            }
        }
        for id in std::mem::take(&mut self.unknown_payment_orders) {
            if arrived_late.contains(&id) {
                self.in_flight.payments_after_snapshot += 1;
            } else {
                self.discrepancies.payments_for_unknown_orders.add(id, cap);
            }
        }
    }
}

/// What the topics hold about one order id.
struct OnTopic<'a> {
    orders: &'a [TopicOrder],
    alerts: &'a [TopicRecord],
    payments: &'a [TopicRecord],
}

/// What the store holds about one order id.
struct InStore {
    order: Same<StoredOrder>,
    alert: Same<StoredAlert>,
    payment: Same<StoredPayment>,
}

/// The figures of `Totals` by name (money in cents).
fn figures(t: &Totals) -> BTreeMap<String, i64> {
    let mut f = BTreeMap::new();
    let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    f.insert("order_count".to_owned(), n(t.order_count));
    f.insert("total_sales_cents".to_owned(), t.total_sales.0);
    f.insert("fraud_count".to_owned(), n(t.fraud_count));
    f.insert("fraud_sales_cents".to_owned(), t.fraud_sales.0);
    f.insert("payment_count".to_owned(), n(t.payment_count));
    f.insert("paid_count".to_owned(), n(t.paid_count));
    for (by, map) in [("by_country", &t.by_country), ("by_status", &t.by_status)] {
        for (key, cs) in map {
            f.insert(format!("{by}.{key}.count"), n(cs.count));
            f.insert(format!("{by}.{key}.sales_cents"), cs.sales.0);
        }
    }
    f
}

/// The figures of the counted totals that are not what the store said. The store's
/// totals only grow, and the scan saw every record stored before it began and some stored
/// during it, so each counted figure must lie between the totals read before and after
/// the scan (equal to them when nothing was written meanwhile). A figure absent on one
/// side is 0 there.
pub(super) fn compare_totals(
    start: &Totals,
    end: &Totals,
    counted: &Totals,
) -> Vec<TotalsMismatch> {
    let (start, end, counted) = (figures(start), figures(end), figures(counted));
    let fields: BTreeSet<&String> = start
        .keys()
        .chain(end.keys())
        .chain(counted.keys())
        .collect();
    fields
        .into_iter()
        .filter_map(|field| {
            let get = |m: &BTreeMap<String, i64>| m.get(field).copied().unwrap_or(0);
            let (s, e, c) = (get(&start), get(&end), get(&counted));
            let in_bounds = s.min(e) <= c && c <= s.max(e);
            (!in_bounds).then(|| TotalsMismatch {
                field: field.clone(),
                stored_at_start: s,
                stored_at_end: e,
                counted: c,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Timestamp;
    use crate::generator::OrderGenerator;

    fn stored(offset: i64, partition: i32, processed_ms: i64) -> StoredOrder {
        StoredOrder {
            order: OrderGenerator::new(1).order(1, Timestamp::now()),
            kafka_partition: partition,
            kafka_offset: offset,
            processed_at: Timestamp::from_micros(processed_ms * 1000).unwrap(),
        }
    }

    #[test]
    fn stored_orders_off_the_topic_are_placed_by_offset_and_time() {
        let partitions = BTreeMap::from([
            (
                0,
                OrdersPartition {
                    low: 100,
                    high: 200,
                    first_timestamp_ms: Some(50_000),
                },
            ),
            (
                1,
                OrdersPartition {
                    low: 0,
                    high: 0,
                    first_timestamp_ms: None,
                },
            ),
        ]);
        let at = |o, p, t| whereabouts(&stored(o, p, t), &partitions);
        assert_eq!(
            at(99, 0, 60_000),
            Whereabouts::Gone,
            "below the low watermark"
        );
        assert_eq!(at(150, 0, 60_000), Whereabouts::Missing);
        assert_eq!(
            at(150, 0, 49_999),
            Whereabouts::Gone,
            "stored before the oldest record was written: an earlier topic"
        );
        assert_eq!(at(200, 0, 60_000), Whereabouts::AfterSnapshot);
        assert_eq!(
            at(0, 1, 60_000),
            Whereabouts::AfterSnapshot,
            "empty partition"
        );
        assert_eq!(at(5, 7, 60_000), Whereabouts::Missing, "no such partition");
    }

    fn totals(orders: u64, cents: i64, de: (u64, i64)) -> Totals {
        Totals {
            order_count: orders,
            total_sales: Cents(cents),
            by_country: BTreeMap::from([(
                "DE".to_owned(),
                CountAndSum {
                    count: de.0,
                    sales: Cents(de.1),
                },
            )]),
            ..Totals::default()
        }
    }

    #[test]
    fn totals_must_match_when_quiet_and_lie_between_when_moving() {
        let t = totals(10, 1_000, (2, 300));
        assert!(compare_totals(&t, &t, &t).is_empty());
        let off = totals(10, 1_000, (3, 300));
        let m = compare_totals(&t, &t, &off);
        assert_eq!(
            m,
            vec![TotalsMismatch {
                field: "by_country.DE.count".into(),
                stored_at_start: 2,
                stored_at_end: 2,
                counted: 3
            }]
        );
        let later = totals(20, 2_000, (4, 600));
        let between = totals(15, 1_500, (3, 450));
        assert!(compare_totals(&t, &later, &between).is_empty());
        let beyond = totals(21, 1_500, (3, 450));
        let m = compare_totals(&t, &later, &beyond);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].field, "order_count");
        // A key on one side only counts as zero on the other.
        let none = Totals::default();
        let fields: Vec<String> = compare_totals(&none, &none, &t)
            .into_iter()
            .map(|m| m.field)
            .collect();
        assert_eq!(
            fields,
            [
                "by_country.DE.count",
                "by_country.DE.sales_cents",
                "order_count",
                "total_sales_cents"
            ]
        );
    }
}
