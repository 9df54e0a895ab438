//! `ordersctl up`: broker, store and every daemon in one process, zero setup.

use anyhow::{bail, Context};
use clap::Args;
use orders_core::config::{DataDirLock, Secret, UpInfo};
use orders_daemons::cli::{parse_rate, CanaryIntervalArgs, CanarySlaArgs, MAX_PAYMENT_DELAY_MS};
use orders_daemons::ingest::postgres::PostgresSource;
use orders_daemons::ingest::IngestConfig;
use orders_daemons::local_pipeline::{LocalOptions, LocalPipeline, RoleFailed};
use orders_daemons::producer::{Pace, ProducerConfig};
use orders_daemons::signals::cancel_on_signals_then_hurry;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    /// Run without the console (logs go to stderr).
    #[arg(long)]
    pub headless: bool,
    /// Stop producing after this many orders (the consumers keep running).
    #[arg(long)]
    pub orders: Option<u64>,
    /// Orders per second (0 = as fast as possible).
    #[arg(long, env = "ORDERS_RATE", default_value_t = 5.0, value_parser = parse_rate)]
    pub rate: f64,
    /// Seed of the order generator (same seed, same orders).
    #[arg(long, env = "ORDERS_SEED")]
    pub seed: Option<u64>,
    /// Where the store (orders.db) and up.json live.
    #[arg(long, env = "ORDERS_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// Port of the HTTP API.
    #[arg(long, env = "ORDERS_API_PORT", default_value_t = 8000)]
    pub port: u16,
    /// Simulated payment processing time, in milliseconds.
    #[arg(long, env = "PAYMENT_DELAY_MS", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(0..=MAX_PAYMENT_DELAY_MS))]
    pub payment_delay_ms: u64,
    /// On stop, how long the consumers may take to finish what was produced, in seconds
    /// (the embedded broker lives in memory: what is left then is lost).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub drain_seconds: u64,
    /// Unset (the default), the API on 127.0.0.1 asks no credentials; set, it asks one of
    /// these tokens, and the console sends the first.
    #[command(flatten)]
    pub tokens: orders_api::auth::TokensArgs,
    #[command(flatten)]
    pub canary: CanaryIntervalArgs,
    #[command(flatten)]
    pub canary_sla: CanarySlaArgs,
    /// Also publish the orders inserted into this PostgreSQL database's orders table (a
    /// libpq URL; PG* variables fill in; docs/ingest.md). The table, publication and slot
    /// must exist (ops/postgres/orders.sql).
    #[arg(long = "postgres", env = "POSTGRES_URL", hide_env_values = true)]
    pub postgres: Option<Secret>,
}

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    // One owner per data dir: a second `up` would produce the same order ids and take over
    // its up.json. Held until this process exits.
    let _owner = DataDirLock::acquire(&args.data_dir)?;
    // With the console on this terminal, logs go to a file: never onto the screen it draws.
    let log_file = args.data_dir.join("ordersctl.log");
    if args.headless {
        crate::init_logging("info");
    } else {
        std::fs::create_dir_all(&args.data_dir)
            .with_context(|| format!("creating {}", args.data_dir.display()))?;
        crate::console::init_file_logging(&log_file)?;
    }
    let shutdown = CancellationToken::new();
    let hurry = CancellationToken::new();
    cancel_on_signals_then_hurry(shutdown.clone(), hurry.clone());

    let mut options = LocalOptions::new(args.data_dir.join("orders.db"));
    options.producer = Some(ProducerConfig {
        topic: options.orders_topic.clone(),
        pace: Pace::Rate(args.rate),
        max_orders: args.orders,
        seed: args
            .seed
            .unwrap_or_else(|| orders_core::domain::Timestamp::now().micros() as u64),
        canary_interval: args.canary.interval(),
    });
    options.payment.delay = Duration::from_millis(args.payment_delay_ms);
    if let Some(url) = &args.postgres {
        let source = PostgresSource::new(Some(url), &|k| std::env::var(k).ok())?;
        options.ingest = Some((IngestConfig::new(&options.orders_topic), source));
    }
    let ingest_from = options
        .ingest
        .as_ref()
        .map(|(_, source)| source.describe().to_owned());
    options.drain_grace = Duration::from_secs(args.drain_seconds);
    let orders_topic = options.orders_topic.clone();
    let mut pipeline = LocalPipeline::start(options)
        .await
        .with_context(|| format!("starting the local pipeline in {}", args.data_dir.display()))?;

    let listener = match tokio::net::TcpListener::bind(("127.0.0.1", args.port)).await {
        Ok(l) => l,
        Err(e) => {
            hurry.cancel(); // nothing was produced that anyone could see
            let _ = pipeline.stop_with(hurry).await;
            bail!(
                "cannot serve the API on 127.0.0.1:{}: {e} (pick another with --port)",
                args.port
            );
        }
    };
    let api_addr = listener.local_addr()?;
    let api = format!("http://{api_addr}");
    let auth = orders_api::auth::AuthArgs {
        tokens: args.tokens.clone(),
        ..Default::default()
    };
    let access = match auth.access_for(api_addr) {
        Ok(a) => a,
        Err(e) => {
            hurry.cancel();
            let _ = pipeline.stop_with(hurry).await;
            return Err(e.into());
        }
    };
    let state = orders_api::AppState::new(pipeline.store.clone())
        .with_kafka(pipeline.kafka(), "orders")
        .with_progress(pipeline.progress.clone())
        .with_access(access)
        .with_canary_sla(args.canary_sla.sla());
    let console_kafka = pipeline.kafka();
    let api_stop = CancellationToken::new();
    let api_task = tokio::spawn(orders_api::serve(listener, state, api_stop.clone()));
    let info = UpInfo {
        api: api.clone(),
        kafka: pipeline.bootstrap_servers().to_owned(),
    };
    info.write(&args.data_dir)
        .with_context(|| format!("writing {}", UpInfo::path(&args.data_dir).display()))?;
    println!("orders is up");
    println!("  api:                     {}", info.api);
    println!("  web view:                {}/", info.api);
    println!("  kafka bootstrap servers: {}", info.kafka);
    if !args.tokens.tokens().is_empty() {
        println!("  api authentication:      a bearer token from ORDERS_API_TOKENS");
    }
    if let Some(db) = &ingest_from {
        println!("  orders from postgres:    {db}");
    }
    println!(
        "  store:                   {}",
        pipeline.store.path().display()
    );
    println!(
        "  attach info:             {}",
        UpInfo::path(&args.data_dir).display()
    );
    println!("Ctrl-C stops everything.");
    if !args.headless {
        println!("  log:                     {}", log_file.display());
    }

    let progress = pipeline.progress.clone();
    let mut failed: Option<RoleFailed> = None;
    let monitor = async {
        let mut report = tokio::time::interval(Duration::from_secs(10));
        report.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = report.tick() => {
                    tracing::info!(
                        produced = progress.orders_produced.load(Ordering::Relaxed),
                        stored = progress.orders_stored.load(Ordering::Relaxed),
                        fraud_done = progress.fraud.orders_done.load(Ordering::Relaxed),
                        payments_done = progress.payments.orders_done.load(Ordering::Relaxed),
                        "pipeline"
                    );
                }
                finished = pipeline.next_finished() => {
                    match finished {
                        Some((role, Ok(()))) => tracing::info!(?role, "daemon finished"),
                        Some((role, Err(error))) => {
                            tracing::error!(%role, error = %error, "daemon failed; stopping");
                            failed = Some(RoleFailed { role, error });
                            break;
                        }
                        None => break,
                    }
                }
            }
        }
    };
    let mut console_result = Ok(());
    let mut console = crate::console::ConsoleOptions::new(&api);
    console.token = args.tokens.tokens().into_iter().next();
    console.dead_letter_actions = crate::console::dead_letter_actions::DeadLetterActions::new(
        console_kafka,
        &orders_topic,
        &crate::dlq::operator(None),
    );
    if args.headless {
        monitor.await;
    } else {
        // Quitting the console stops everything.
        tokio::select! {
            r = crate::console::run_console_with(console, shutdown.clone()) => console_result = r,
            _ = monitor => {}
        }
    }
    shutdown.cancel();
    println!(
        "stopping: the producer first, then up to {} s for the consumers to finish what was \
         produced (Ctrl-C again to skip)",
        args.drain_seconds
    );
    // The API goes last: the console and scripts can watch the drain.
    let stopped = pipeline.stop_with(hurry).await;
    api_stop.cancel();
    match api_task.await {
        Ok(Err(e)) => tracing::warn!(error = %e, "api stopped with an error"),
        Err(e) => tracing::warn!(error = %e, "api task failed"),
        Ok(Ok(())) => {}
    }
    UpInfo::remove(&args.data_dir);
    console_result?;
    if let Some(failed) = failed {
        bail!(failed);
    }
    stopped?;
    println!("orders stopped cleanly");
    Ok(())
}
