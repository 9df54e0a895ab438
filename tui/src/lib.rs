//! The `ordersctl` command: `up` runs everything locally, `bench` measures the pipeline,
//! `tui` watches it, `audit` checks the topics against the store.

pub mod audit;
pub mod bench;
pub mod chaos;
pub mod console;
pub mod dlq;
pub mod store_init;
pub mod up;

use clap::{Parser, Subcommand};

use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "ordersctl",
    version,
    about = "Run, benchmark and watch the orders pipeline"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs the whole pipeline in this process on the embedded broker and store.
    Up(up::UpArgs),
    /// Pushes orders through a fresh embedded pipeline as fast as it can and prints figures.
    Bench(bench::BenchArgs),
    /// Runs the pipeline under random faults (seeded), then drains and audits it; prints one
    /// JSON summary and exits 1 unless everything recovered and the audit is clean.
    Chaos(chaos::ChaosArgs),
    /// The operator console: totals, consumer lag, live orders and fraud alerts from the API.
    Tui(console::TuiArgs),
    /// Prints the API's answers as JSON, for scripts (schemas and exit codes: docs/json.md).
    Json(orders_api::json_cli::JsonArgs),
    /// Reconciles the topics with the store; one JSON report (fields and exit codes:
    /// docs/audit.md).
    Audit(Box<audit::AuditArgs>),
    /// Lists, shows, redrives and discards dead letters (docs/dlq.md).
    #[command(subcommand_required = true)]
    Dlq(Box<dlq::DlqArgs>),
    /// Prepares the Couchbase store: `store init` creates, builds and waits for its
    /// indexes (once per deploy; docs/deploy.md).
    Store(Box<store_init::StoreCommandArgs>),
}

/// Logs go to stderr, filtered by `RUST_LOG` (default: `default`).
pub fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(orders_daemons::cli::log_colour())
        .with_writer(std::io::stderr)
        .try_init();
}

/// Parses the command line and runs it; errors print one line on stderr.
pub fn main() -> ExitCode {
    let cli: Cli = orders_core::config::parse_args_or_exit();
    let cli = match cli.command {
        Command::Json(args) => return run_json(args),
        Command::Audit(args) => return audit::run(*args),
        Command::Dlq(args) => return dlq::run(*args),
        Command::Store(args) => return store_init::run(*args),
        // Checked before the console takes the screen: a usage error, as `json` says; and no
        // token leaves over plain http:// for another machine unless asked for.
        Command::Tui(args) => match orders_api::client::api_base_url(&args.api)
            .and_then(|base| args.auth.token_for(&base))
        {
            Err(e) => {
                eprintln!("ordersctl tui: {e}");
                return ExitCode::from(2);
            }
            Ok(_) => Cli {
                command: Command::Tui(args),
            },
        },
        command => Cli { command },
    };
    let result = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|rt| {
            rt.block_on(async {
                match cli.command {
                    Command::Up(args) => up::run(args).await,
                    Command::Bench(args) => bench::run(args).await,
                    Command::Chaos(args) => match chaos::run(args).await {
                        Ok(true) => Ok(()),
                        Ok(false) => Err(anyhow::anyhow!(
                            "the chaos run was not clean (see the summary on stdout)"
                        )),
                        Err(e) => Err(e),
                    },
                    Command::Tui(args) => console::run(args).await,
                    Command::Json(_) | Command::Audit(_) | Command::Dlq(_) | Command::Store(_) => {
                        Ok(())
                    }
                }
            })
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ordersctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `ordersctl json`: only JSON on stdout, diagnostics on stderr, documented exit codes.
fn run_json(args: orders_api::json_cli::JsonArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ordersctl: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout().lock();
    runtime
        .block_on(orders_api::json_cli::run_json(args, &mut stdout))
        .into()
}
