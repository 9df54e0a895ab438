//! `ordersctl audit`: reconciles the topics with the store and prints one JSON report on
//! stdout (a summary on stderr), with exit codes for scripts (docs/audit.md).

use clap::Args;
use orders_core::audit::{audit, AuditOptions, AuditReport};
use orders_core::config::{KafkaArgs, StoreArgs};
use orders_core::kafka::KafkaSettings;
use orders_core::store::CouchbaseConfig;
use orders_daemons::cli::{kafka_settings, open_store, FraudArgs};
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

/// The topics and the store agree.
pub const EXIT_CONSISTENT: u8 = 0;
/// At least one discrepancy (listed in the report).
pub const EXIT_DISCREPANCY: u8 = 1;
/// A bad flag or value.
pub const EXIT_USAGE: u8 = 2;
/// Kafka or the store could not be reached (or a pipeline topic does not exist).
pub const EXIT_UNREACHABLE: u8 = 4;
/// The audit could not finish for another reason (the store failed a query, held data it
/// cannot read, or stdout could not be written).
pub const EXIT_FAILED: u8 = 5;

#[derive(Debug, Clone, Args)]
pub struct AuditArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub fraud: FraudArgs,
    /// Order ids listed per kind of discrepancy, the lowest first (counts are complete).
    #[arg(long, env = "ORDERS_AUDIT_MAX_IDS", default_value_t = 20)]
    pub max_ids: usize,
    /// Records per page of the store's scans.
    #[arg(long, env = "ORDERS_AUDIT_PAGE_SIZE", default_value_t = 5_000,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub page_size: u64,
    /// Seconds Kafka may stay silent, and seconds to wait for the store to answer.
    #[arg(long, env = "ORDERS_AUDIT_TIMEOUT_SECONDS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub timeout_seconds: u64,
}

/// A failure before the audit starts: what to print and how to exit.
fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("ordersctl audit: {message}");
    ExitCode::from(code)
}

/// Runs the audit; the exit code says what it found.
pub fn run(args: AuditArgs) -> ExitCode {
    crate::init_logging("warn");
    // Configuration mistakes are usage errors, found before anything is contacted.
    let rules = match args.fraud.rules() {
        Ok(rules) => rules,
        Err(e) => return fail(EXIT_USAGE, format!("{e:#}")),
    };
    if let Err(e) = KafkaSettings::from_args(&args.kafka) {
        return fail(EXIT_USAGE, e);
    }
    if let Err(e) = CouchbaseConfig::from_store_args(&args.store) {
        return fail(EXIT_USAGE, e);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => return fail(EXIT_FAILED, e),
    };
    runtime.block_on(async {
        let kafka = match kafka_settings(&args.kafka, &args.store) {
            Ok(kafka) => kafka,
            Err(e) => return fail(EXIT_UNREACHABLE, format!("{e:#}")),
        };
        // Opening SQLite creates the file: an audit must not invent an empty store.
        let sqlite = args.store.sqlite_path();
        if args.store.couchbase_host.is_none() && !sqlite.exists() {
            return fail(
                EXIT_UNREACHABLE,
                format!(
                    "no store at {} (set --data-dir or ORDERS_DATA_DIR, or COUCHBASE_HOST)",
                    sqlite.display()
                ),
            );
        }
        let store = match open_store(&args.store) {
            Ok(store) => store,
            Err(e) => return fail(EXIT_UNREACHABLE, format!("{e:#}")),
        };
        let options = AuditOptions {
            orders_topic: args.kafka.topic_name.clone(),
            max_ids: args.max_ids,
            page_size: usize::try_from(args.page_size).unwrap_or(usize::MAX),
            timeout: Duration::from_secs(args.timeout_seconds),
        };
        match audit(&kafka, store.as_ref(), &rules, &options).await {
            Ok(report) => report_and_exit(&report),
            Err(e) if e.is_unreachable() => fail(EXIT_UNREACHABLE, e),
            Err(e) => fail(EXIT_FAILED, e),
        }
    })
}

/// The report as one line of JSON on stdout, the summary on stderr. A reader that closed
/// stdout early does not change the exit code.
fn report_and_exit(report: &AuditReport) -> ExitCode {
    eprint!("{}", report.summary());
    let code = if report.is_clean() {
        EXIT_CONSISTENT
    } else {
        EXIT_DISCREPANCY
    };
    let printed = (|| -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        serde_json::to_writer(&mut out, report)?;
        out.write_all(b"\n")?;
        out.flush()
    })();
    match printed {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => fail(EXIT_FAILED, e),
        _ => ExitCode::from(code),
    }
}
