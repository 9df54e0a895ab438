//! `ordersd <role>`: one daemon of the orders pipeline.

use std::process::ExitCode;

// Rust-side allocations only: librdkafka and SQLite keep the system allocator (librdkafka's
// raw produce+consume measured slower with mimalloc in its place).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = match orders_daemons::cli::parse_json_logged() {
        Some(Ok(cli)) => cli,
        // Asked for JSON logs: the usage error is one, and stderr carries nothing else.
        Some(Err(e)) => {
            orders_daemons::cli::init_tracing(orders_daemons::cli::LogFormat::Json);
            tracing::error!(error = %e, "ordersd stopped");
            return ExitCode::from(2);
        }
        None => orders_core::config::parse_args_or_exit(),
    };
    let log_format = cli.log_format;
    orders_daemons::cli::init_tracing(log_format);
    let result = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(orders_daemons::cli::run(cli)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Printed once: as a JSON log line when stderr carries JSON, else as plain text.
            match log_format {
                orders_daemons::cli::LogFormat::Json => {
                    tracing::error!(error = %format!("{e:#}"), "ordersd stopped")
                }
                orders_daemons::cli::LogFormat::Text => eprintln!("ordersd: {e:#}"),
            }
            ExitCode::FAILURE
        }
    }
}
