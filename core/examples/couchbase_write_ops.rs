//! Key-value calls and durable writes per order on the Couchbase write path, counted against
//! the in-memory stand-in of the collections (the same algorithm the store runs): inserts,
//! gets and CAS replaces, for first deliveries, a full redelivery, and a totals read, with
//! the orders written in one batch and in batches of 500. No query is ever made on the
//! write path.
//!
//! `cargo run --release -p orders-core --example couchbase_write_ops`

use orders_core::domain::{FraudAlert, Order, Payment, PaymentStatus, Timestamp};
use orders_core::generator::OrderGenerator;
use orders_core::store::couchbase::batch::apply;
use orders_core::store::couchbase::documents::{CallCounts, MemoryDocuments};
use orders_core::store::couchbase::migration::migrate;
use orders_core::store::couchbase::totals::TotalsBook;
use orders_core::store::{KafkaPosition, StoreBatch, StoredOrder};

const PARTITIONS: u64 = 6;

fn per(label: &str, calls: CallCounts, orders: u64) {
    let f = |n: u64| n as f64 / orders as f64;
    println!(
        "{label:<44} {:>5.2} insert {:>5.2} get {:>5.2} replace = {:>5.2} KV calls, {:>5.2} durable writes",
        f(calls.inserts),
        f(calls.gets),
        f(calls.replaces),
        f(calls.total()),
        f(calls.durable_writes())
    );
}

fn diff(a: CallCounts, b: CallCounts) -> CallCounts {
    CallCounts {
        inserts: a.inserts - b.inserts,
        gets: a.gets - b.gets,
        replaces: a.replaces - b.replaces,
    }
}

fn at(id: u64) -> KafkaPosition {
    KafkaPosition {
        partition: (id % PARTITIONS) as i32,
        offset: (id / PARTITIONS) as i64,
    }
}

/// The orders, then (every order paid; those the default rule flags alerted) their effects.
fn batches(orders: &[Order], now: Timestamp) -> (StoreBatch, StoreBatch) {
    let placed = StoreBatch {
        orders: orders
            .iter()
            .map(|o| StoredOrder {
                order: o.clone(),
                kafka_partition: at(o.order_id).partition,
                kafka_offset: at(o.order_id).offset,
                processed_at: now,
            })
            .collect(),
        ..StoreBatch::default()
    };
    let mut effects = StoreBatch::default();
    for o in orders {
        if o.amount.0 > 30_000 && !matches!(o.country.as_str(), "US" | "CA") {
            let alert = FraudAlert {
                order_id: o.order_id,
                reason: "HIGH_AMOUNT_RISKY_COUNTRY".into(),
                amount: o.amount,
                country: o.country,
                rule_id: None,
                detected_at: None,
            };
            effects.push_alert(alert, at(o.order_id));
        }
        let payment = Payment {
            order_id: o.order_id,
            status: PaymentStatus::Paid,
            amount: o.amount,
            country: o.country,
            timestamp: 1.0,
        };
        effects.push_payment(payment, at(o.order_id));
    }
    (placed, effects)
}

/// Writes `orders` in batches of `size`: orders, then alerts and payments, then the orders
/// again; prints the calls per order of each, and of a totals read.
fn measure(orders: &[Order], size: usize) {
    let now = Timestamp::now();
    let docs = MemoryDocuments::new();
    let book = TotalsBook::new("");
    futures::executor::block_on(migrate(&docs, "", &docs)).expect("store init");
    let run = |b: &StoreBatch| futures::executor::block_on(apply(&docs, &book, b, now));
    let chunks: Vec<(StoreBatch, StoreBatch)> =
        orders.chunks(size).map(|c| batches(c, now)).collect();
    let alerts: usize = chunks.iter().map(|(_, e)| e.alerts.len()).sum();
    let c0 = docs.calls();
    chunks.iter().for_each(|(o, _)| {
        run(o).expect("orders");
    });
    let c1 = docs.calls();
    chunks.iter().for_each(|(_, e)| {
        run(e).expect("alerts and payments");
    });
    let c2 = docs.calls();
    chunks.iter().for_each(|(o, _)| {
        run(o).expect("redelivery");
    });
    let c3 = docs.calls();
    let totals = futures::executor::block_on(book.totals(&docs)).expect("totals");
    let c4 = docs.calls();
    let n = orders.len() as u64;
    println!(
        "{n} orders in batches of {size} on {PARTITIONS} partitions, {alerts} alerts, {n} payments"
    );
    per("  order, first delivery", diff(c1, c0), n);
    per("  alerts + payments, per order", diff(c2, c1), n);
    per("  order, redelivered", diff(c3, c2), n);
    println!(
        "  totals read: {} gets in all (order_count {}, paid {})",
        diff(c4, c3).gets,
        totals.order_count,
        totals.paid_count
    );
    let (docs_n, largest) = docs.sizes();
    println!("  {docs_n} documents, the largest {largest} bytes");
}

fn main() {
    let n: u64 = 100_000;
    let g = OrderGenerator::new(1);
    let now = Timestamp::now();
    let orders: Vec<Order> = (1..=n).map(|id| g.order(id, now)).collect();
    measure(&orders, orders.len());
    measure(&orders, 500);
}
