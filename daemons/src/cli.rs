//! `ordersd`: runs one role of the pipeline, headless, as ECS runs it.

use crate::analytics::{self, AnalyticsConfig, AnalyticsDeps};
use crate::fraud::{self, FraudConfig, FraudDeps};
use crate::ingest::postgres::PostgresSource;
use crate::ingest::{self, IngestConfig, IngestDeps};
use crate::payment::{self, PaymentConfig, PaymentDeps};
use crate::producer::{self, Pace, ProducerConfig, ProducerDeps};
use crate::progress::Progress;
use crate::signals::cancel_on_signals;
use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand, ValueEnum};
use orders_core::config::{DataDirLock, KafkaArgs, Secret, StoreArgs, UpInfo};
use orders_core::domain::Country;
use orders_core::fraud::{FraudRule, FraudRules};
use orders_core::kafka::{pipeline_topics, KafkaSettings};
use orders_core::money::Cents;
use orders_core::store::{CouchbaseConfig, CouchbaseStore, OrderStore, SqliteStore};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(
    name = "ordersd",
    version,
    about = "Runs one daemon of the orders pipeline"
)]
pub struct Cli {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Log format on stderr.
    #[arg(long, env = "ORDERS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    #[command(flatten)]
    pub ops: OpsArgs,
    #[command(subcommand)]
    pub role: RoleCommand,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum RoleCommand {
    /// Generates orders onto the orders topic.
    Producer(ProducerArgs),
    /// Raises fraud alerts (group fraud-group).
    Fraud(FraudArgs),
    /// Simulates payments (group payments-group).
    Payment(PaymentArgs),
    /// Stores orders, alerts and payments and publishes totals (group analytics-group).
    Analytics,
    /// Serves the HTTP API, the web view and /healthz over the store.
    Api(ApiArgs),
    /// Publishes the rows inserted into an orders table in PostgreSQL to the orders topic
    /// (logical decoding; docs/ingest.md).
    Ingest(IngestArgs),
    /// Publishes the rows of an id range from the orders table, then exits, printing what it
    /// did as JSON: the gap a lost replication slot leaves (docs/ingest.md, "A lost slot").
    IngestRecover(IngestRecoverArgs),
    /// Asks the /healthz of the daemon on this machine's ops port (--ops-addr): exit 0
    /// when it is live, 1 otherwise. For container health checks (no curl in the image).
    Healthcheck,
}

/// Where a daemon serves /healthz, /readyz and /metrics, and when it counts as wedged.
#[derive(Debug, Clone, Args)]
pub struct OpsArgs {
    /// Address of the ops server (/healthz, /readyz, /metrics) of every role; the api's
    /// /metrics there is its whole exposition (lag, dead letters, canaries), with no token.
    #[arg(long, env = "ORDERS_OPS_ADDR", default_value = orders_api::ops_server::DEFAULT_OPS_ADDR, global = true)]
    pub ops_addr: std::net::SocketAddr,
    /// /healthz fails once a consumer loop has not polled, or a store write or a produce
    /// has waited, for this many seconds.
    #[arg(long, env = "ORDERS_WEDGED_AFTER_SECONDS", default_value_t = 120,
          value_parser = clap::value_parser!(u64).range(1..=86_400), global = true)]
    pub wedged_after_seconds: u64,
}

/// Where the ingest role reads orders from.
#[derive(Debug, Clone, Args)]
pub struct IngestArgs {
    /// The database: a libpq URL (`postgresql://user:password@host:5432/db?sslmode=require`)
    /// or `key=value` string; libpq's PG* variables (PGHOST, PGUSER, PGPASSWORD, ...) fill
    /// in what it leaves out.
    #[arg(long, env = "POSTGRES_URL", hide_env_values = true)]
    pub postgres_url: Option<Secret>,
    /// The orders table (`name` or `schema.name`).
    #[arg(long, env = "ORDERS_INGEST_TABLE", default_value = "orders")]
    pub ingest_table: String,
    /// The logical replication slot (pgoutput) the ingest reads and advances.
    #[arg(long, env = "ORDERS_INGEST_SLOT", default_value = "orders_ingest")]
    pub ingest_slot: String,
    /// The publication that publishes the table's inserts.
    #[arg(
        long,
        env = "ORDERS_INGEST_PUBLICATION",
        default_value = "orders_ingest"
    )]
    pub ingest_publication: String,
    /// Most records decoded and not yet acknowledged by Kafka (bounds the memory, whatever
    /// the size of one transaction).
    #[arg(long, env = "ORDERS_INGEST_CHUNK", default_value_t = 5_000,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub ingest_chunk: u32,
}

/// The id range `ordersd ingest-recover` publishes from the table.
#[derive(Debug, Clone, Args)]
pub struct IngestRecoverArgs {
    #[command(flatten)]
    pub ingest: IngestArgs,
    /// The first order id to publish.
    #[arg(long)]
    pub from_id: u64,
    /// The last order id to publish (default: the end of the database's id range).
    #[arg(long, default_value_t = *orders_core::domain::DATABASE_ORDER_IDS.end())]
    pub to_id: u64,
}

impl IngestArgs {
    /// The settings and the database, checked without connecting.
    pub fn prepare(&self, topic: &str) -> anyhow::Result<(IngestConfig, PostgresSource)> {
        let config = IngestConfig {
            table: self.ingest_table.clone(),
            slot: self.ingest_slot.clone(),
            publication: self.ingest_publication.clone(),
            chunk_changes: self.ingest_chunk,
            ..IngestConfig::new(topic)
        };
        config.validate().map_err(anyhow::Error::msg)?;
        let postgres = PostgresSource::new(self.postgres_url.as_ref(), &|k| std::env::var(k).ok())?;
        Ok((config, postgres))
    }
}

#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    /// Address to listen on.
    #[arg(long, env = "ORDERS_API_ADDR", default_value = "0.0.0.0:8000")]
    pub addr: std::net::SocketAddr,
    #[command(flatten)]
    pub auth: orders_api::auth::AuthArgs,
    #[command(flatten)]
    pub limits: orders_api::limits::LimitArgs,
    #[command(flatten)]
    pub canary: CanarySlaArgs,
}

/// When the api counts a canary lost.
#[derive(Debug, Clone, Args)]
pub struct CanarySlaArgs {
    /// A canary order not through fraud, payment and analytics within this many seconds
    /// is lost (orders_canary_lost_total).
    #[arg(long, env = "ORDERS_CANARY_SLA_SECONDS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub canary_sla_seconds: u64,
}

impl CanarySlaArgs {
    pub fn sla(&self) -> Duration {
        Duration::from_secs(self.canary_sla_seconds)
    }
}

/// How often the producer emits a canary order.
#[derive(Debug, Clone, Args)]
pub struct CanaryIntervalArgs {
    /// Seconds between canary orders (0 = no canaries; at most 86400). A canary flows
    /// through fraud, payment and analytics like any order but never counts in totals.
    #[arg(long, env = "ORDERS_CANARY_INTERVAL_SECONDS", default_value_t = 5.0,
          value_parser = parse_sleep_seconds)]
    pub canary_interval_seconds: f64,
}

impl CanaryIntervalArgs {
    /// `None` when canaries are off.
    pub fn interval(&self) -> Option<Duration> {
        Duration::try_from_secs_f64(self.canary_interval_seconds)
            .ok()
            .filter(|d| !d.is_zero())
    }
}

/// The longest pause between two orders: a day. Beyond it a pause is a typo, not a pace.
pub const MAX_SLEEP_SECONDS: f64 = 86_400.0;
/// The slowest rate (one order a day) and the fastest (far beyond what one producer does).
pub const MIN_RATE: f64 = 1.0 / 86_400.0;
pub const MAX_RATE: f64 = 10_000_000.0;
/// The longest simulated payment: an hour.
pub const MAX_PAYMENT_DELAY_MS: u64 = 3_600_000;

/// A pause between orders in seconds: 0 to a day.
pub fn parse_sleep_seconds(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(0.0..=MAX_SLEEP_SECONDS).contains(&v) {
        return Err(format!(
            "{s} is out of range: give 0 to {MAX_SLEEP_SECONDS} seconds"
        ));
    }
    Ok(v)
}

/// Orders per second: 0 (as fast as possible), or one a day up to ten million.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of orders per second"))?;
    if v != 0.0 && !(MIN_RATE..=MAX_RATE).contains(&v) {
        return Err(format!(
            "{s} is out of range: give 0 (as fast as possible) or {MIN_RATE:.6} (one a day) to \
             {MAX_RATE} orders per second"
        ));
    }
    Ok(v)
}

#[derive(Debug, Clone, Args)]
pub struct ProducerArgs {
    /// Pause between orders, in seconds (0 to 86400).
    #[arg(long, env = "SLEEP_SECONDS", default_value_t = 2.0, value_parser = parse_sleep_seconds)]
    pub sleep_seconds: f64,
    /// Orders per second instead of a pause (0 = as fast as possible).
    #[arg(long, env = "ORDERS_RATE", value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// Stop after this many orders.
    #[arg(long, env = "ORDERS_COUNT")]
    pub orders: Option<u64>,
    /// Seed of the order generator (same seed, same orders).
    #[arg(long, env = "ORDERS_SEED")]
    pub seed: Option<u64>,
    #[command(flatten)]
    pub canary: CanaryIntervalArgs,
}

impl ProducerArgs {
    pub fn pace(&self) -> anyhow::Result<Pace> {
        // The parsers bound both; `try_from` keeps a value that slipped past them an error.
        match self.rate {
            Some(r) => Ok(Pace::Rate(
                parse_rate(&r.to_string()).map_err(anyhow::Error::msg)?,
            )),
            None => Ok(Pace::Sleep(
                Duration::try_from_secs_f64(self.sleep_seconds)
                    .context("SLEEP_SECONDS is out of range")?,
            )),
        }
    }

    pub fn config(&self, topic: &str) -> anyhow::Result<ProducerConfig> {
        Ok(ProducerConfig {
            topic: topic.to_owned(),
            pace: self.pace()?,
            max_orders: self.orders,
            seed: self
                .seed
                .unwrap_or_else(|| chrono::Utc::now().timestamp_micros() as u64),
            canary_interval: self.canary.interval(),
        })
    }
}

#[derive(Debug, Clone, Args)]
pub struct FraudArgs {
    /// Alert on orders above this amount (dollars) from outside the safe countries.
    #[arg(long, env = "FRAUD_THRESHOLD", default_value_t = 300.0)]
    pub fraud_threshold: f64,
    /// Countries exempt from the amount rule.
    #[arg(
        long,
        env = "FRAUD_SAFE_COUNTRIES",
        value_delimiter = ',',
        default_value = "US,CA"
    )]
    pub fraud_safe_countries: Vec<String>,
    /// Extra rules as a JSON array: [{"id","reason","above","except_countries","only_countries"}].
    #[arg(long, env = "FRAUD_RULES")]
    pub fraud_rules: Option<String>,
}

impl FraudArgs {
    pub fn rules(&self) -> anyhow::Result<FraudRules> {
        let above = Cents::from_dollars(self.fraud_threshold)
            .filter(|c| !c.is_negative())
            .with_context(|| {
                format!(
                    "--fraud-threshold must be a non-negative amount, got {}",
                    self.fraud_threshold
                )
            })?;
        let safe: BTreeSet<Country> = self
            .fraud_safe_countries
            .iter()
            .filter(|c| !c.trim().is_empty())
            .map(|c| c.trim().parse::<Country>().map_err(anyhow::Error::msg))
            .collect::<anyhow::Result<_>>()
            .context("--fraud-safe-countries")?;
        let mut rules = vec![FraudRule::high_amount_risky_country(above, safe)];
        if let Some(json) = &self.fraud_rules {
            rules.extend(FraudRules::parse_json(json).map_err(anyhow::Error::msg)?);
        }
        Ok(FraudRules(rules))
    }
}

#[derive(Debug, Clone, Args)]
pub struct PaymentArgs {
    /// Simulated processing time of one payment, in milliseconds.
    #[arg(long, env = "PAYMENT_DELAY_MS", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(0..=MAX_PAYMENT_DELAY_MS))]
    pub payment_delay_ms: u64,
    /// Most payments in processing at once.
    #[arg(long, env = "PAYMENT_CONCURRENCY", default_value_t = 20_000,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub payment_concurrency: u64,
}

impl PaymentArgs {
    pub fn config(&self, topic: &str) -> PaymentConfig {
        PaymentConfig {
            orders_topic: topic.to_owned(),
            delay: Duration::from_millis(self.payment_delay_ms),
            concurrency: self.payment_concurrency as usize,
        }
    }
}

/// With JSON logs asked for (`ORDERS_LOG_FORMAT=json`, or `--log-format json` on the
/// command line), the parsed command line or the usage error's first line, so that it
/// can be logged as JSON; `None` otherwise (and for `--help` and `--version`, which
/// print as usual).
pub fn parse_json_logged() -> Option<Result<Cli, String>> {
    let args: Vec<String> = std::env::args().collect();
    let flag = args
        .windows(2)
        .any(|w| w[0] == "--log-format" && w[1] == "json")
        || args.iter().any(|a| a == "--log-format=json");
    let env = std::env::var("ORDERS_LOG_FORMAT").is_ok_and(|v| v == "json");
    if !(flag || env) {
        return None;
    }
    match Cli::try_parse_from(&args) {
        Ok(cli) => Some(Ok(cli)),
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                return None;
            }
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            Some(Err(format!(
                "{} (see --help)",
                first.trim_start_matches("error: ")
            )))
        }
    }
}

/// Whether log lines on stderr carry colour: only on a terminal, and never with
/// `NO_COLOR` set to anything non-empty (<https://no-color.org>). A log file or a
/// container's log driver gets plain text.
pub fn log_colour() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Sets up logging to stderr (`RUST_LOG` filters; default `info`).
pub fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(log_colour())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// The Kafka to use: the configured cluster, or the one a running `ordersctl up` published.
pub fn kafka_settings(kafka: &KafkaArgs, store: &StoreArgs) -> anyhow::Result<KafkaSettings> {
    kafka_settings_in(kafka, &store.data_dir)
}

/// [`kafka_settings`], for a command that has a data directory but no store.
pub fn kafka_settings_in(
    kafka: &KafkaArgs,
    data_dir: &std::path::Path,
) -> anyhow::Result<KafkaSettings> {
    if let Some(settings) = KafkaSettings::from_args(kafka)? {
        return Ok(settings);
    }
    match UpInfo::read(data_dir) {
        Ok(up) => {
            tracing::info!(kafka = %up.kafka, "attaching to the embedded broker of a running `ordersctl up`");
            Ok(orders_core::kafka::embedded_settings(up.kafka))
        }
        Err(_) => bail!(
            "no Kafka: set KAFKA_BOOTSTRAP_SERVERS, or start the local pipeline with `ordersctl up` \
             (its broker address is read from {})",
            UpInfo::path(data_dir).display()
        ),
    }
}

/// How long the producer waits for Couchbase before giving up with the reason.
const STORE_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Opens the configured store: Couchbase when COUCHBASE_HOST is set (connecting in the
/// background: until it is ready every call answers "unavailable", which pauses the
/// analytics writer without committing offsets), else the embedded SQLite file.
/// Needs a Tokio runtime.
pub fn open_store(store: &StoreArgs) -> anyhow::Result<Arc<dyn OrderStore>> {
    if let Some(couchbase) = open_couchbase(store)? {
        return Ok(Arc::new(couchbase));
    }
    let path = store.sqlite_path();
    let sqlite = SqliteStore::open(&path)
        .with_context(|| format!("opening the store at {}", path.display()))?;
    Ok(Arc::new(sqlite))
}

/// The Couchbase store, when COUCHBASE_HOST is set.
fn open_couchbase(store: &StoreArgs) -> anyhow::Result<Option<CouchbaseStore>> {
    let Some(config) = CouchbaseConfig::from_store_args(store)? else {
        return Ok(None);
    };
    tracing::info!(
        connection = %config.connection_string,
        bucket = %config.bucket,
        "connecting to couchbase in the background"
    );
    Ok(Some(CouchbaseStore::connect(config)?))
}

/// The store the producer reads its first id from: it must answer before the first order,
/// so this waits for Couchbase (failing with the reason, e.g. a wrong host or password).
async fn open_store_ready(store: &StoreArgs) -> anyhow::Result<Arc<dyn OrderStore>> {
    match open_couchbase(store)? {
        Some(couchbase) => {
            couchbase
                .wait_ready(STORE_READY_TIMEOUT)
                .await
                .context("waiting for couchbase")?;
            Ok(Arc::new(couchbase))
        }
        None => open_store(store),
    }
}

/// A role's settings, validated before any network call.
enum Prepared {
    Producer(ProducerConfig),
    Fraud(FraudConfig),
    Payment(PaymentConfig),
    Analytics(AnalyticsConfig),
    Ingest(Box<(IngestConfig, PostgresSource)>),
}

impl Prepared {
    fn from_cli(cli: &Cli) -> anyhow::Result<Option<Prepared>> {
        let topic = &cli.kafka.topic_name;
        // Couchbase settings (host, bucket, credentials) are checked here too, not after
        // a 15 s Kafka check.
        CouchbaseConfig::from_store_args(&cli.store)?;
        Ok(Some(match &cli.role {
            RoleCommand::Producer(args) => Prepared::Producer(args.config(topic)?),
            RoleCommand::Fraud(args) => Prepared::Fraud(FraudConfig {
                orders_topic: topic.clone(),
                rules: args.rules()?,
            }),
            RoleCommand::Payment(args) => Prepared::Payment(args.config(topic)),
            RoleCommand::Analytics => Prepared::Analytics(AnalyticsConfig {
                orders_topic: topic.clone(),
            }),
            RoleCommand::Ingest(args) => Prepared::Ingest(Box::new(args.prepare(topic)?)),
            RoleCommand::Api(_) | RoleCommand::Healthcheck | RoleCommand::IngestRecover(_) => {
                return Ok(None)
            }
        }))
    }
}

/// Runs the chosen role until SIGTERM or Ctrl-C.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    cancel_on_signals(shutdown.clone());
    let topic = cli.kafka.topic_name.clone();
    // Every setting is checked before the first network call: Kafka's first.
    KafkaSettings::from_args(&cli.kafka)?;
    let Some(prepared) = Prepared::from_cli(&cli)? else {
        return match &cli.role {
            RoleCommand::Api(args) => serve_api(&cli, args, shutdown).await,
            RoleCommand::Healthcheck => crate::healthcheck::check(cli.ops.ops_addr).await,
            RoleCommand::IngestRecover(args) => recover_ingest(&cli, args, shutdown).await,
            _ => bail!("no settings for this role"),
        };
    };
    let kafka = kafka_settings(&cli.kafka, &cli.store)?;
    // A producer on the embedded store owns the data dir's order ids, as `ordersctl up`
    // does: two of them would publish the same ids.
    let _owner = match (&prepared, &cli.store.couchbase_host) {
        (Prepared::Producer(_), None) => Some(DataDirLock::acquire(&cli.store.data_dir)?),
        _ => None,
    };
    let progress = Arc::new(Progress::default());
    let store = match &prepared {
        Prepared::Analytics(_) => Some(open_store(&cli.store)?),
        _ => None,
    };
    let mut ops = orders_api::ops_server::OpsState::new(progress.clone())
        .with_kafka(kafka.clone(), topic.clone())
        .with_wedged_after(Duration::from_secs(cli.ops.wedged_after_seconds));
    if let Some(store) = &store {
        ops = ops.with_store(store.clone());
    }
    if matches!(prepared, Prepared::Ingest(_)) {
        // Readiness covers the database from the start.
        progress
            .ingest
            .active
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
    let ops_listener = tokio::net::TcpListener::bind(cli.ops.ops_addr)
        .await
        .with_context(|| format!("cannot listen on {} (ORDERS_OPS_ADDR)", cli.ops.ops_addr))?;
    let ops_stop = CancellationToken::new();
    let ops_server = tokio::spawn(orders_api::ops_server::serve(
        ops_listener,
        ops,
        ops_stop.clone(),
    ));
    let result = run_role(&cli, prepared, kafka, store, progress, shutdown, topic).await;
    ops_stop.cancel();
    match ops_server.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "ops server failed"),
        Err(e) => tracing::warn!(error = %e, "ops server task failed"),
    }
    result
}

/// `ordersd ingest-recover`: the id range published, and a JSON line saying what was.
async fn recover_ingest(
    cli: &Cli,
    args: &IngestRecoverArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if args.from_id > args.to_id {
        bail!("--from-id {} is above --to-id {}", args.from_id, args.to_id);
    }
    let (config, postgres) = args.ingest.prepare(&cli.kafka.topic_name)?;
    let kafka = kafka_settings(&cli.kafka, &cli.store)?;
    let done = ingest::recover::run(
        &config,
        &postgres,
        &kafka,
        args.from_id..=args.to_id,
        &shutdown,
    )
    .await?;
    println!("{}", serde_json::to_string(&done)?);
    Ok(())
}

/// Runs one headless role until `shutdown`.
async fn run_role(
    cli: &Cli,
    prepared: Prepared,
    kafka: KafkaSettings,
    store: Option<Arc<dyn OrderStore>>,
    progress: Arc<Progress>,
    shutdown: CancellationToken,
    topic: String,
) -> anyhow::Result<()> {
    let required: Vec<String> = pipeline_topics(&topic)
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    {
        let bootstrap = kafka.bootstrap_servers.clone();
        let kafka = kafka.clone();
        tokio::task::spawn_blocking(move || {
            let names: Vec<&str> = required.iter().map(String::as_str).collect();
            kafka.ensure_topics(&names, Duration::from_secs(15))
        })
        .await?
        .with_context(|| format!("checking the topics on Kafka at {bootstrap}"))?;
    }
    match prepared {
        Prepared::Producer(config) => {
            let store = if cli.store.couchbase_host.is_none() && !cli.store.sqlite_path().exists() {
                None
            } else {
                Some(open_store_ready(&cli.store).await?)
            };
            let deps = ProducerDeps {
                kafka,
                store,
                progress,
                flow_window: None,
            };
            producer::run(config, deps, shutdown).await?;
        }
        Prepared::Fraud(config) => {
            fraud::run(config, FraudDeps { kafka, progress }, shutdown).await?;
        }
        Prepared::Payment(config) => {
            payment::run(config, PaymentDeps { kafka, progress }, shutdown).await?;
        }
        Prepared::Ingest(ingest) => {
            let (config, postgres) = *ingest;
            let deps = IngestDeps {
                postgres,
                kafka,
                progress,
            };
            ingest::run(config, deps, shutdown).await?;
        }
        Prepared::Analytics(config) => {
            let store = match store {
                Some(store) => store,
                None => open_store(&cli.store)?,
            };
            analytics::run(
                config,
                AnalyticsDeps {
                    kafka,
                    store,
                    progress,
                },
                shutdown,
            )
            .await?;
        }
    }
    Ok(())
}

/// The api role: the store is required; without Kafka the API still serves the store and
/// reports lag as unavailable.
async fn serve_api(cli: &Cli, args: &ApiArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let access = args.auth.access_for(args.addr)?;
    let store = open_store(&cli.store)?;
    let mut state = orders_api::AppState::new(store.clone())
        .with_access(access)
        .with_limits(orders_api::limits::ClientLimits::new(&args.limits))
        .with_canary_sla(args.canary.sla());
    match kafka_settings(&cli.kafka, &cli.store) {
        Ok(kafka) => state = state.with_kafka(kafka, cli.kafka.topic_name.clone()),
        Err(e) => {
            tracing::warn!(error = %e, "no Kafka: serving the store, but /readyz answers 503 and lag is unavailable")
        }
    }
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.addr))?;
    let ops = api_ops_server(cli, &state, store, shutdown.clone()).await?;
    let served = orders_api::serve(listener, state, shutdown).await;
    ops.abort();
    served?;
    Ok(())
}

/// The api's ops port (ORDERS_OPS_ADDR), as every daemon has: `/healthz` for the container
/// health check, `/readyz`, and `/metrics` with the api's whole exposition without a token
/// (the lag, dead-letter and canary metrics a scraper on the ops port needs).
async fn api_ops_server(
    cli: &Cli,
    state: &orders_api::AppState,
    store: Arc<dyn OrderStore>,
    shutdown: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<std::io::Result<()>>> {
    let mut ops = orders_api::ops_server::OpsState::new(Arc::new(Progress::default()))
        .with_store(store)
        .with_api_metrics(state.clone());
    if let Some(kafka) = state.kafka() {
        ops = ops.with_kafka(kafka.clone(), cli.kafka.topic_name.clone());
    }
    let listener = tokio::net::TcpListener::bind(cli.ops.ops_addr)
        .await
        .with_context(|| format!("cannot listen on {} (ORDERS_OPS_ADDR)", cli.ops.ops_addr))?;
    Ok(tokio::spawn(orders_api::ops_server::serve(
        listener, ops, shutdown,
    )))
}
