//! Fills a SQLite order store with synthetic orders (and their fraud alerts and payments)
//! through `OrderStore::apply`, in batches, for benchmarks and demos.
//!
//! `cargo run --release -p orders-api --example fill_store -- --db data/bench.db --orders 1000000`

use anyhow::Context;
use clap::Parser;
use orders_core::store::{OrderStore, SqliteStore};
use orders_core::Timestamp;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

#[derive(Parser)]
struct Args {
    /// The SQLite file (created if missing; filling continues after its highest order id).
    #[arg(long)]
    db: PathBuf,
    /// How many orders to add.
    #[arg(long, default_value_t = 1_000_000)]
    orders: u64,
    /// Orders per transaction.
    #[arg(long, default_value_t = 50_000)]
    batch: u64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let store = SqliteStore::open(&args.db).with_context(|| format!("{}", args.db.display()))?;
    let first = store.max_order_id().await?.unwrap_or(0) + 1;
    let last = first + args.orders.saturating_sub(1);
    // Created times end about now.
    let start = Timestamp::from_micros(Timestamp::now().micros() - args.orders as i64 * 1000)
        .unwrap_or_else(Timestamp::now);
    let began = Instant::now();
    let mut id = first;
    while id <= last {
        let end = (id + args.batch.max(1) - 1).min(last);
        let batch = orders_api::sample_data::batch(args.seed, id..=end, start);
        store.apply(Arc::new(batch)).await?;
        eprintln!("fill_store: orders {id}..={end} stored");
        id = end + 1;
    }
    let t = store.totals().await?;
    eprintln!(
        "fill_store: {} orders in the store ({} added in {:.1} s), total sales {}",
        t.order_count,
        args.orders,
        began.elapsed().as_secs_f64(),
        t.total_sales
    );
    Ok(())
}
