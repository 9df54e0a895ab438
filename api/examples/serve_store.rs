//! Serves the API over an existing SQLite order store, optionally watching an embedded
//! broker's (idle) consumer groups so `/api/lag` has something to answer. For benchmarks
//! and demos; stops on Ctrl-C or SIGTERM.
//!
//! `cargo run --release -p orders-api --example serve_store -- --db data/bench.db`

use anyhow::Context;
use clap::Parser;
use orders_api::{serve, AppState};
use orders_core::kafka::{pipeline_topics, EmbeddedBroker};
use orders_core::store::SqliteStore;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
struct Args {
    /// The SQLite file.
    #[arg(long)]
    db: PathBuf,
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:8000")]
    listen: SocketAddr,
    /// Start an embedded broker with the pipeline's topics and watch its groups' lag.
    #[arg(long)]
    embedded_kafka: bool,
    /// How long list answers are reused, in milliseconds (0: every request reads the store).
    #[arg(long, default_value_t = orders_api::cache::DEFAULT_TTL.as_millis() as u64)]
    cache_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    anyhow::ensure!(args.db.exists(), "{} does not exist", args.db.display());
    let store = SqliteStore::open(&args.db).with_context(|| format!("{}", args.db.display()))?;
    let mut state = AppState::new(Arc::new(store))
        .with_response_cache(std::time::Duration::from_millis(args.cache_ms));
    let broker = if args.embedded_kafka {
        let broker = EmbeddedBroker::start(&pipeline_topics("orders"))?;
        state = state.with_kafka(broker.settings(), "orders");
        Some(broker)
    } else {
        None
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let shutdown = CancellationToken::new();
    orders_daemons::signals::cancel_on_signals(shutdown.clone());
    serve(listener, state, shutdown).await?;
    drop(broker);
    Ok(())
}
