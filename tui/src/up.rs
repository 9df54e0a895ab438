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

/// Starts the pipeline and the API, shows the console (or waits, headless) until a signal, a
/// failed daemon or the console's quit, then drains and stops.
pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    // One owner per data dir: a second `up` would produce the same order ids and take over
    // its up.json. Held until this process exits.
    let _owner = DataDirLock::acquire(&args.data_dir)?;
    let log_file = start_logging(&args)?;
    let shutdown = CancellationToken::new();
    let hurry = CancellationToken::new();
    cancel_on_signals_then_hurry(shutdown.clone(), hurry.clone());

    let options = pipeline_options(&args)?;
    let ingest_from = options
        .ingest
        .as_ref()
        .map(|(_, source)| source.describe().to_owned());
    let orders_topic = options.orders_topic.clone();
    let mut pipeline = LocalPipeline::start(options)
        .await
        .with_context(|| format!("starting the local pipeline in {}", args.data_dir.display()))?;
    let api = match RunningApi::start(&args, &pipeline).await {
        Ok(api) => api,
        Err(e) => {
            hurry.cancel(); // nothing was produced that anyone could see
            let _ = pipeline.stop_with(hurry).await;
            return Err(e);
        }
    };
    let info = UpInfo {
        api: api.url.clone(),
        kafka: pipeline.bootstrap_servers().to_owned(),
    };
    info.write(&args.data_dir)
        .with_context(|| format!("writing {}", UpInfo::path(&args.data_dir).display()))?;
    print_banner(&args, &info, &pipeline, ingest_from.as_deref(), &log_file);

    let mut console_result = Ok(());
    let mut failed: Option<RoleFailed> = None;
    let console = console_options(&args, &api.url, &pipeline, &orders_topic);
    if args.headless {
        failed = monitor(&mut pipeline, &shutdown).await;
    } else {
        // Quitting the console stops everything.
        tokio::select! {
            r = crate::console::run_console_with(console, shutdown.clone()) => console_result = r,
            f = monitor(&mut pipeline, &shutdown) => failed = f,
        }
    }
    shutdown.cancel();
    let stopped = stop(&args, &mut pipeline, hurry, api).await;
    UpInfo::remove(&args.data_dir);
    console_result?;
    if let Some(failed) = failed {
        bail!(failed);
    }
    stopped?;
    println!("orders stopped cleanly");
    Ok(())
}

/// Logs to stderr when headless; with the console on this terminal, to a file (never onto
/// the screen it draws). The log file's path.
fn start_logging(args: &UpArgs) -> anyhow::Result<PathBuf> {
    let log_file = args.data_dir.join("ordersctl.log");
    if args.headless {
        crate::init_logging("info");
    } else {
        std::fs::create_dir_all(&args.data_dir)
            .with_context(|| format!("creating {}", args.data_dir.display()))?;
        crate::console::init_file_logging(&log_file)?;
    }
    Ok(log_file)
}

/// The local pipeline as the flags ask: producer, payment delay, ingest, drain.
fn pipeline_options(args: &UpArgs) -> anyhow::Result<LocalOptions> {
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
    options.drain_grace = Duration::from_secs(args.drain_seconds);
    Ok(options)
}

/// The HTTP API serving the pipeline's store, lag and progress on 127.0.0.1.
struct RunningApi {
    url: String,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), orders_api::ApiError>>,
}

impl RunningApi {
    async fn start(args: &UpArgs, pipeline: &LocalPipeline) -> anyhow::Result<Self> {
        let listener = match tokio::net::TcpListener::bind(("127.0.0.1", args.port)).await {
            Ok(l) => l,
            Err(e) => bail!(
                "cannot serve the API on 127.0.0.1:{}: {e} (pick another with --port)",
                args.port
            ),
        };
        let api_addr = listener.local_addr()?;
        let auth = orders_api::auth::AuthArgs {
            tokens: args.tokens.clone(),
            ..Default::default()
        };
        let access = auth.access_for(api_addr)?;
        let state = orders_api::AppState::new(pipeline.store.clone())
            .with_kafka(pipeline.kafka(), "orders")
            .with_progress(pipeline.progress.clone())
            .with_access(access)
            .with_canary_sla(args.canary_sla.sla());
        let stop = CancellationToken::new();
        let task = tokio::spawn(orders_api::serve(listener, state, stop.clone()));
        Ok(Self {
            url: format!("http://{api_addr}"),
            stop,
            task,
        })
    }
}

/// Tells the operator where everything is.
fn print_banner(
    args: &UpArgs,
    info: &UpInfo,
    pipeline: &LocalPipeline,
    ingest_from: Option<&str>,
    log_file: &std::path::Path,
) {
    println!("orders is up");
    println!("  api:                     {}", info.api);
    println!("  web view:                {}/", info.api);
    println!("  kafka bootstrap servers: {}", info.kafka);
    if !args.tokens.tokens().is_empty() {
        println!("  api authentication:      a bearer token from ORDERS_API_TOKENS");
    }
    if let Some(db) = ingest_from {
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
}

/// The console on the local API, with dead-letter actions on the local broker.
fn console_options(
    args: &UpArgs,
    api: &str,
    pipeline: &LocalPipeline,
    orders_topic: &str,
) -> crate::console::ConsoleOptions {
    let mut console = crate::console::ConsoleOptions::new(api);
    console.token = args.tokens.tokens().into_iter().next();
    console.dead_letter_actions = crate::console::dead_letter_actions::DeadLetterActions::new(
        pipeline.kafka(),
        orders_topic,
        &crate::dlq::operator(None),
    );
    console
}

/// Logs progress every 10 s until shutdown or a daemon fails (which it returns).
async fn monitor(pipeline: &mut LocalPipeline, shutdown: &CancellationToken) -> Option<RoleFailed> {
    let progress = pipeline.progress.clone();
    let mut report = tokio::time::interval(Duration::from_secs(10));
    report.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return None,
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
                        return Some(RoleFailed { role, error });
                    }
                    None => return None,
                }
            }
        }
    }
}

/// Drains the pipeline, then stops the API (last: the console and scripts can watch the
/// drain); how the pipeline stopped.
async fn stop(
    args: &UpArgs,
    pipeline: &mut LocalPipeline,
    hurry: CancellationToken,
    api: RunningApi,
) -> Result<(), orders_daemons::local_pipeline::StopError> {
    println!(
        "stopping: the producer first, then up to {} s for the consumers to finish what was \
         produced (Ctrl-C again to skip)",
        args.drain_seconds
    );
    let stopped = pipeline.stop_with(hurry).await;
    api.stop.cancel();
    match api.task.await {
        Ok(Err(e)) => tracing::warn!(error = %e, "api stopped with an error"),
        Err(e) => tracing::warn!(error = %e, "api task failed"),
        Ok(Ok(())) => {}
    }
    stopped
}
