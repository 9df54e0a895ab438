//! Store benchmark: what the embedded store (SQLite) costs per order in the analytics
//! writer's transactions.
//!
//! `cargo bench -p orders-core --bench store` applies transactions like the analytics
//! writer's under load (20,000 orders read from six partitions, their payments, an alert for
//! about a third of them) to a fresh SQLite file, and prints microseconds of wall time per
//! order (median of the transactions, and over all) and the process's CPU time per order,
//! after a few warm-up transactions. The wall time includes the commit's fsync; CPU time is
//! what the store costs the analytics daemon's cores.

use orders_core::cpu_time::process_cpu_seconds;
use orders_core::domain::{Payment, PaymentStatus, Timestamp};
use orders_core::fraud::FraudRules;
use orders_core::generator::OrderGenerator;
use orders_core::store::sqlite::SqliteStore;
use orders_core::store::{KafkaPosition, OrderStore, StoreBatch, StoredOrder};
use std::sync::Arc;
use std::time::Instant;

const ORDERS_PER_TRANSACTION: u64 = 20_000;
const PARTITIONS: u64 = 6;
const WARM_UP: u64 = 3;
const TRANSACTIONS: u64 = 20;

/// Transaction `n` (0-based): orders `n * ORDERS_PER_TRANSACTION + 1 ..`, grouped by the
/// partition they would be read from (by id), as the consumer hands them over.
fn transaction(n: u64, generator: &OrderGenerator, rules: &FraudRules) -> StoreBatch {
    let now = Timestamp::now();
    let first = n * ORDERS_PER_TRANSACTION + 1;
    let mut ids: Vec<u64> = (first..first + ORDERS_PER_TRANSACTION).collect();
    ids.sort_by_key(|id| (id % PARTITIONS, *id));
    let mut batch = StoreBatch::default();
    for (i, id) in ids.into_iter().enumerate() {
        let order = generator.order(id, now);
        let position = KafkaPosition {
            partition: (id % PARTITIONS) as i32,
            offset: (n * ORDERS_PER_TRANSACTION) as i64 + i as i64,
        };
        if let Some(alert) = rules.evaluate(&order) {
            batch.push_alert(alert, position);
        }
        batch.push_payment(
            Payment {
                order_id: id,
                status: PaymentStatus::Paid,
                amount: order.amount,
                country: order.country,
                timestamp: now.micros() as f64 / 1e6,
            },
            position,
        );
        batch.orders.push(StoredOrder {
            order,
            kafka_partition: position.partition,
            kafka_offset: position.offset,
            processed_at: now,
        });
    }
    batch
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open(dir.path().join("orders.db"))?;
    let generator = OrderGenerator::new(7);
    let rules = FraudRules::default();
    let mut per_order = Vec::new();
    let mut total = 0.0;
    let mut cpu = 0.0;
    let mut alerts = 0;
    for n in 0..WARM_UP + TRANSACTIONS {
        let batch = Arc::new(transaction(n, &generator, &rules));
        alerts += batch.alerts.len();
        let start = Instant::now();
        let cpu_start = process_cpu_seconds();
        let outcome = store.apply(batch).await?;
        let seconds = start.elapsed().as_secs_f64();
        let cpu_used = process_cpu_seconds() - cpu_start;
        assert_eq!(outcome.new_orders as u64, ORDERS_PER_TRANSACTION);
        if n >= WARM_UP {
            per_order.push(seconds * 1e6 / ORDERS_PER_TRANSACTION as f64);
            total += seconds;
            cpu += cpu_used;
        }
    }
    per_order.sort_by(f64::total_cmp);
    let orders = TRANSACTIONS * ORDERS_PER_TRANSACTION;
    println!(
        "store (SQLite): {TRANSACTIONS} transactions of {ORDERS_PER_TRANSACTION} orders, \
         their payments and {:.0}% alerts",
        100.0 * alerts as f64 / ((WARM_UP + TRANSACTIONS) * ORDERS_PER_TRANSACTION) as f64
    );
    println!(
        "  wall µs per order: median {:.2}, min {:.2}, max {:.2}; {:.0} orders/s over all",
        per_order[per_order.len() / 2],
        per_order[0],
        per_order[per_order.len() - 1],
        orders as f64 / total
    );
    println!("  CPU µs per order: {:.2}", cpu * 1e6 / orders as f64);
    Ok(())
}
