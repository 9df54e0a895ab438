//! Key-value calls per order on the Couchbase write path, counted against the in-memory
//! stand-in of the collection (the same algorithm the store runs): inserts, sub-document
//! lookups and mutations, for first deliveries, a full redelivery, and a totals read.
//! No query is ever made on the write path.
//!
//! `cargo run --release -p orders-core --example couchbase_write_ops`

use orders_core::domain::{FraudAlert, Payment, PaymentStatus, Timestamp};
use orders_core::generator::OrderGenerator;
use orders_core::store::couchbase::batch::apply;
use orders_core::store::couchbase::counters::{Counters, Layout};
use orders_core::store::couchbase::documents::{CallCounts, MemoryDocuments};
use orders_core::store::{StoreBatch, StoredOrder};
use std::time::Instant;

fn per(label: &str, calls: CallCounts, orders: u64) {
    let f = |n: u64| n as f64 / orders as f64;
    println!(
        "{label:<34} {:>6.2} insert  {:>6.2} lookup_in  {:>6.2} mutate_in  {:>6.2} total  0 queries",
        f(calls.inserts),
        f(calls.lookups),
        f(calls.mutations),
        f(calls.total())
    );
}

fn diff(a: CallCounts, b: CallCounts) -> CallCounts {
    CallCounts {
        inserts: a.inserts - b.inserts,
        lookups: a.lookups - b.lookups,
        mutations: a.mutations - b.mutations,
    }
}

fn main() {
    let n: u64 = 100_000;
    let g = OrderGenerator::new(1);
    let now = Timestamp::now();
    let orders: Vec<_> = (1..=n).map(|id| g.order(id, now)).collect();
    let batch = StoreBatch {
        orders: orders
            .iter()
            .map(|o| StoredOrder {
                order: o.clone(),
                kafka_partition: 0,
                kafka_offset: o.order_id as i64,
                processed_at: now,
            })
            .collect(),
        ..StoreBatch::default()
    };
    // Every order gets a payment; those the default rule flags get an alert.
    let effects = StoreBatch {
        alerts: orders
            .iter()
            .filter(|o| o.amount.0 > 30_000 && !matches!(o.country.as_str(), "US" | "CA"))
            .map(|o| FraudAlert {
                order_id: o.order_id,
                reason: "HIGH_AMOUNT_RISKY_COUNTRY".into(),
                amount: o.amount,
                country: o.country,
                rule_id: None,
                detected_at: None,
            })
            .collect(),
        payments: orders
            .iter()
            .map(|o| Payment {
                order_id: o.order_id,
                status: PaymentStatus::Paid,
                amount: o.amount,
                country: o.country,
                timestamp: 1.0,
            })
            .collect(),
        ..StoreBatch::default()
    };
    let docs = MemoryDocuments::new();
    let counters = Counters::new("", Layout::default());
    let run = |b: &StoreBatch| futures::executor::block_on(apply(&docs, &counters, b, now));
    let start = Instant::now();
    let c0 = docs.calls();
    run(&batch).expect("orders");
    let c1 = docs.calls();
    run(&effects).expect("alerts and payments");
    let c2 = docs.calls();
    let elapsed = start.elapsed();
    run(&batch).expect("redelivery");
    let c3 = docs.calls();
    let totals = futures::executor::block_on(counters.totals(&docs)).expect("totals");
    let c4 = docs.calls();
    println!(
        "{n} orders, {} alerts, {} payments (counter layout: {} shards, {} markers per generation)",
        effects.alerts.len(),
        effects.payments.len(),
        Layout::default().shards,
        Layout::default().markers_per_generation
    );
    per("orders, first delivery, per order", diff(c1, c0), n);
    per("alerts + payments, per order", diff(c2, c1), n);
    per("orders, redelivered, per order", diff(c3, c2), n);
    println!(
        "totals read: {} lookup_in calls in all (order_count {})",
        diff(c4, c3).lookups,
        totals.order_count
    );
    let (docs_n, largest) = docs.sizes();
    println!(
        "{docs_n} documents, the largest {largest} bytes; in-memory write time {:.2?} \
         (not a Couchbase figure)",
        elapsed
    );
}
