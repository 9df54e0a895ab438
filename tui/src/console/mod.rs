//! `ordersctl tui`: the operator console — totals, consumer lag, live orders and fraud alerts
//! from the HTTP API, in one terminal screen.
//!
//! State (`state`), update (`keys`, [`state::App::apply`]) and drawing (`draw`) are apart;
//! a background task (`fetch`) does all network work and sends what it learns over a
//! channel, so drawing never waits on the API.

pub mod api;
pub mod dead_letter_actions;
pub mod draw;
pub mod fetch;
pub mod filter;
pub mod keys;
pub mod layout;
pub mod state;
pub mod terminal;
pub mod text;
pub mod theme;

use anyhow::Context;
use clap::Args;
use crossterm::event::{Event, EventStream};
use futures::StreamExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// Where the console talks to unless told otherwise.
pub const DEFAULT_API_URL: &str = "http://127.0.0.1:8000";

/// How often the screen is redrawn when nothing else happens (ages, countdowns).
const REDRAW_EVERY: Duration = Duration::from_millis(250);

#[derive(Debug, Clone, Args)]
pub struct TuiArgs {
    /// Base URL of the orders HTTP API.
    #[arg(long = "api", env = "ORDERS_API_URL", default_value = DEFAULT_API_URL)]
    pub api: String,
    #[command(flatten)]
    pub auth: orders_api::client::TokenArgs,
    /// Log file (the console never logs to the screen it draws on)
    /// [default: ordersctl-tui.log in the system temporary directory].
    #[arg(long, env = "ORDERS_TUI_LOG_FILE")]
    pub log_file: Option<PathBuf>,
    /// Most orders held in memory; the newest are kept.
    #[arg(long, env = "ORDERS_TUI_MAX_ORDERS", default_value_t = state::DEFAULT_MAX_ORDERS)]
    pub max_orders: usize,
    /// How often to poll the API, in milliseconds.
    #[arg(long, env = "ORDERS_TUI_REFRESH_MS", default_value_t = 1000)]
    pub refresh_ms: u64,
    /// Kafka for redriving and discarding dead letters from the console (the API only reads
    /// them): the task's own settings, or the broker of a local `ordersctl up`.
    #[command(flatten)]
    pub kafka: orders_core::config::KafkaArgs,
    /// Where a local `ordersctl up` publishes its broker's address (`up.json`).
    #[arg(long, env = "ORDERS_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// Who acts on dead letters, as the ledger and the log record it [default: the login name].
    #[arg(long, env = "ORDERS_OPERATOR")]
    pub operator: Option<String>,
}

/// How the console runs.
#[derive(Debug, Clone)]
pub struct ConsoleOptions {
    pub api_url: String,
    /// Sent as a bearer token.
    pub token: Option<orders_core::config::Secret>,
    pub max_orders: usize,
    pub fetch: fetch::FetchSettings,
    /// How the dead-letter pane's redrive and discard reach Kafka.
    pub dead_letter_actions: dead_letter_actions::DeadLetterActions,
}

impl ConsoleOptions {
    pub fn new(api_url: &str) -> Self {
        ConsoleOptions {
            api_url: api_url.trim_end_matches('/').to_owned(),
            token: None,
            max_orders: state::DEFAULT_MAX_ORDERS,
            fetch: fetch::FetchSettings::default(),
            dead_letter_actions: dead_letter_actions::DeadLetterActions::Unavailable(
                "no Kafka configured".to_owned(),
            ),
        }
    }
}

/// The default log file: `ordersctl-tui.log` in the system temporary directory.
pub fn default_log_file() -> PathBuf {
    std::env::temp_dir().join("ordersctl-tui.log")
}

/// Sends this process's logs to `path` (appending), filtered by `RUST_LOG` (default `info`).
/// Call before [`run_console_with`] whenever anything else might log to the terminal.
pub fn init_file_logging(path: &Path) -> anyhow::Result<()> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening the log file {}", path.display()))?;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(file))
        .try_init();
    Ok(())
}

/// `ordersctl tui`: logs to a file, stops on q, Ctrl-C or SIGTERM.
pub async fn run(args: TuiArgs) -> anyhow::Result<()> {
    let log_file = args.log_file.clone().unwrap_or_else(default_log_file);
    init_file_logging(&log_file)?;
    let shutdown = CancellationToken::new();
    orders_daemons::signals::cancel_on_signals(shutdown.clone());
    let mut options = ConsoleOptions::new(&args.api);
    options.token = args.auth.token();
    options.max_orders = args.max_orders.max(1);
    options.fetch.interval = Duration::from_millis(args.refresh_ms.clamp(100, 60_000));
    options.dead_letter_actions =
        match orders_daemons::cli::kafka_settings_in(&args.kafka, &args.data_dir) {
            Ok(kafka) => dead_letter_actions::DeadLetterActions::new(
                kafka,
                &args.kafka.topic_name,
                &crate::dlq::operator(args.operator.as_deref()),
            ),
            Err(e) => dead_letter_actions::DeadLetterActions::Unavailable(format!("{e:#}")),
        };
    tracing::info!(api = %options.api_url, log = %log_file.display(), "console starting");
    let result = run_console_with(options, shutdown).await;
    tracing::info!(ok = result.is_ok(), "console stopped");
    result
}

/// Runs the console on this terminal against the API at `options.api_url` until the
/// operator quits (q, Ctrl-C) or `shutdown` is cancelled; the terminal is restored on every
/// way out.
///
/// It does not install a log subscriber: a caller whose logs would go to the terminal should
/// call [`init_file_logging`] first.
pub async fn run_console_with(
    options: ConsoleOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let client = api::ApiClient::new(&options.api_url, options.token.clone())?;
    let mut app = state::App::new(
        options.api_url.clone(),
        theme::Theme::from_env(),
        options.max_orders,
        Instant::now(),
    );
    let mut guard = terminal::TerminalGuard::enter()?;
    let size = guard.terminal.size()?;
    app.resize(size.width, size.height);

    // The fetch task stops with the console, whichever way the console ends.
    let stop_fetch = shutdown.child_token();
    let _stop_fetch_on_exit = stop_fetch.clone().drop_guard();
    let (control_tx, control_rx) = watch::channel(app.control());
    let (updates_tx, mut updates) = mpsc::channel(256);
    let acted = updates_tx.clone();
    let fetcher = tokio::spawn(fetch::poll(
        client,
        options.fetch.clone(),
        control_rx,
        updates_tx,
        stop_fetch,
    ));

    let mut events = EventStream::new();
    let mut redraw = tokio::time::interval(REDRAW_EVERY);
    redraw.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        app.tick(Instant::now());
        guard.terminal.draw(|f| draw::render(f, &app))?;
        tokio::select! {
            _ = shutdown.cancelled() => break,
            event = events.next() => match event {
                Some(Ok(Event::Key(key))) => app.on_key(key),
                Some(Ok(Event::Resize(w, h))) => app.resize(w, h),
                Some(Ok(Event::Paste(text))) => app.on_paste(&text),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(anyhow::Error::from(e).context("reading the terminal")),
                None => break,
            },
            Some(update) = updates.recv() => {
                app.apply(update);
                // Take everything already waiting, then draw once.
                while let Ok(update) = updates.try_recv() {
                    app.apply(update);
                }
            }
            _ = redraw.tick() => {}
        }
        if app.quit {
            break;
        }
        if let Some(request) = app.take_request() {
            let (actions, acted) = (options.dead_letter_actions.clone(), acted.clone());
            tokio::spawn(async move {
                let result = actions.act(&request).await;
                let _ = acted.send(fetch::Update::DeadLetterActed(result)).await;
            });
        }
        control_tx.send_if_modified(|c| {
            let wanted = app.control();
            let changed = *c != wanted;
            *c = wanted;
            changed
        });
    }
    drop(guard);
    fetcher.abort();
    Ok(())
}
