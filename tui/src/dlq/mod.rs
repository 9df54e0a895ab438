//! `ordersctl dlq`: list, show, redrive and discard dead letters, as text or one JSON
//! document on stdout (`--json`), with the exit codes of `ordersctl audit` (docs/dlq.md).

pub mod redrive;

use crate::audit::{EXIT_FAILED, EXIT_UNREACHABLE, EXIT_USAGE};
use clap::{Args, Subcommand};
use orders_core::config::{KafkaArgs, StoreArgs};
use orders_core::dead_letters::{
    parse_since, Coordinates, DeadLetter, DeadLetterError, DeadLetterFilter, DeadLetterReader,
    DEFAULT_REDRIVE_LIMIT,
};
use orders_core::kafka::KafkaSettings;
use orders_daemons::cli::kafka_settings;
use orders_daemons::confirmed_producer::ProduceError;
use redrive::{ActionResult, Outcome, Redriver};
use serde::Serialize;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Done: listed, shown, or every selected record handled (or handled already).
pub const EXIT_OK: u8 = 0;
/// At least one selected record was refused (the loop guard, a truncated value, no source).
pub const EXIT_REFUSED: u8 = 1;
/// No dead letter at the given coordinates.
pub const EXIT_NOT_FOUND: u8 = 3;

/// Dead letters listed when `--limit` is not given.
pub const DEFAULT_LIST_LIMIT: usize = 100;

#[derive(Debug, Clone, Args)]
pub struct DlqArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Only `--data-dir`: where a local `ordersctl up` publishes its broker's address.
    #[command(flatten)]
    pub store: StoreArgs,
    /// One JSON document on stdout instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Seconds Kafka may stay silent (reads, and acknowledgements of what is sent).
    #[arg(long, global = true, env = "ORDERS_DLQ_TIMEOUT_SECONDS", default_value_t = 15,
          value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub timeout_seconds: u64,
    /// Who acts, as the ledger and the log record it [default: the login name].
    #[arg(long, global = true, env = "ORDERS_OPERATOR")]
    pub operator: Option<String>,
    #[command(subcommand)]
    pub command: DlqCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum DlqCommand {
    /// Lists dead letters not yet handled, the oldest first, with their reasons.
    List {
        #[command(flatten)]
        select: Selection,
        /// Include those already redriven or discarded.
        #[arg(long)]
        handled: bool,
    },
    /// Shows one dead letter: its value, every header, and what was done with it.
    Show {
        #[command(flatten)]
        at: At,
    },
    /// Sends dead letters back to their source topic (one by coordinates, or every one the
    /// filters select), with provenance headers; each record is sent once.
    Redrive {
        #[command(flatten)]
        target: Target,
        /// Say what would be sent; send nothing, record nothing.
        #[arg(long)]
        dry_run: bool,
        /// Refuse a record already redriven this many times (the loop guard).
        #[arg(long, env = "ORDERS_DLQ_MAX_REDRIVES", default_value_t = DEFAULT_REDRIVE_LIMIT,
              value_parser = clap::value_parser!(u32).range(1..=1_000))]
        max_redrives: u32,
        /// Send this file's content (`-`: stdin) as the value instead of the dead letter's:
        /// a corrected record. Only with coordinates.
        #[arg(long, value_name = "FILE")]
        value: Option<PathBuf>,
    },
    /// Marks dead letters as handled without sending them (they leave the default list).
    Discard {
        #[command(flatten)]
        target: Target,
        /// Say what would be discarded; record nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Which dead letters: filters shared by `list`, `redrive` and `discard`.
#[derive(Debug, Clone, Default, Args)]
pub struct Selection {
    /// A dead-letter topic (`orders.dlq`) or the source topic (`orders`).
    #[arg(long)]
    pub topic: Option<String>,
    /// A reason code: not-json, schema, invalid-value, empty, oversized, id-conflict.
    #[arg(long)]
    pub reason: Option<String>,
    /// Dead-lettered at or after: RFC 3339 or an age (`90s`, `30m`, `6h`, `2d`).
    #[arg(long)]
    pub since: Option<String>,
    /// At most this many, the oldest first [list: 100; redrive and discard: all].
    #[arg(long)]
    pub limit: Option<usize>,
}

/// `TOPIC PARTITION OFFSET` of one dead letter.
#[derive(Debug, Clone, Args)]
pub struct At {
    /// The dead-letter topic (`orders.dlq`).
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// One dead letter by coordinates, or every one the filters select.
#[derive(Debug, Clone, Args)]
pub struct Target {
    /// The dead-letter topic, then PARTITION and OFFSET; omit all three to select with
    /// the filters.
    #[arg(requires = "partition")]
    pub dead_letter_topic: Option<String>,
    #[arg(requires = "offset")]
    pub partition: Option<i32>,
    pub offset: Option<i64>,
    #[command(flatten)]
    pub select: Selection,
    /// Select every dead letter not yet handled (needed when no filter is given).
    #[arg(long, conflicts_with = "dead_letter_topic")]
    pub all: bool,
}

impl Target {
    fn at(&self) -> Option<Coordinates> {
        match (&self.dead_letter_topic, self.partition, self.offset) {
            (Some(topic), Some(partition), Some(offset)) => Some(Coordinates {
                topic: topic.clone(),
                partition,
                offset,
            }),
            _ => None,
        }
    }
}

/// A failure: what to print and how to exit.
struct Failure(u8, String);

impl Failure {
    fn usage(m: impl std::fmt::Display) -> Self {
        Failure(EXIT_USAGE, m.to_string())
    }
}

impl From<DeadLetterError> for Failure {
    fn from(e: DeadLetterError) -> Self {
        let code = match &e {
            e if e.is_unreachable() => EXIT_UNREACHABLE,
            DeadLetterError::NotFound(_) => EXIT_NOT_FOUND,
            DeadLetterError::NotADeadLetterTopic(..) => EXIT_USAGE,
            _ => EXIT_FAILED,
        };
        Failure(code, e.to_string())
    }
}

impl From<ProduceError> for Failure {
    fn from(e: ProduceError) -> Self {
        let code = match &e {
            ProduceError::Cancelled | ProduceError::Kafka(_) => EXIT_UNREACHABLE,
            ProduceError::Rejected { .. } => EXIT_FAILED,
        };
        let message = match e {
            ProduceError::Cancelled => {
                "Kafka did not acknowledge in time; nothing further was sent".to_owned()
            }
            other => other.to_string(),
        };
        Failure(code, message)
    }
}

/// The filter a selection stands for.
fn filter(select: &Selection, default_limit: Option<usize>) -> Result<DeadLetterFilter, Failure> {
    let now_ms = orders_core::domain::Timestamp::now().0.timestamp_millis();
    let since_ms = select
        .since
        .as_deref()
        .map(|s| parse_since(s, now_ms))
        .transpose()
        .map_err(|e| Failure::usage(format!("--since: {e}")))?;
    Ok(DeadLetterFilter {
        topic: select.topic.clone(),
        reason: select.reason.clone(),
        since_ms,
        limit: select.limit.or(default_limit),
        include_handled: false,
    })
}

/// Who acts: `--operator`/`ORDERS_OPERATOR`, else the login name.
pub(crate) fn operator(given: Option<&str>) -> String {
    given
        .map(str::to_owned)
        .into_iter()
        .chain(
            ["USER", "USERNAME"]
                .iter()
                .filter_map(|v| std::env::var(v).ok()),
        )
        .find(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Runs `ordersctl dlq`; the exit code says what happened.
pub fn run(args: DlqArgs) -> ExitCode {
    crate::init_logging("warn,ordersctl=info");
    match run_checked(&args) {
        Ok(code) => ExitCode::from(code),
        Err(Failure(code, message)) => {
            eprintln!("ordersctl dlq: {message}");
            ExitCode::from(code)
        }
    }
}

fn run_checked(args: &DlqArgs) -> Result<u8, Failure> {
    // Usage mistakes first, before anything is contacted.
    let value = check_usage(args)?;
    let runtime =
        tokio::runtime::Runtime::new().map_err(|e| Failure(EXIT_FAILED, e.to_string()))?;
    runtime.block_on(async {
        let session = Session::connect(args).await?;
        match &args.command {
            DlqCommand::List { select, handled } => session.list(select, *handled).await,
            DlqCommand::Show { at } => session.show(at).await,
            DlqCommand::Redrive {
                target,
                dry_run,
                max_redrives,
                ..
            } => {
                session
                    .redrive(target, value.as_deref(), *dry_run, *max_redrives)
                    .await
            }
            DlqCommand::Discard { target, dry_run } => session.discard(target, *dry_run).await,
        }
    })
}

/// Checks the flags without contacting anything; the replacement value `--value` names.
fn check_usage(args: &DlqArgs) -> Result<Option<Vec<u8>>, Failure> {
    KafkaSettings::from_args(&args.kafka).map_err(Failure::usage)?;
    Ok(match &args.command {
        DlqCommand::List { select, .. } => {
            filter(select, None)?;
            None
        }
        DlqCommand::Show { .. } => None,
        DlqCommand::Redrive { target, value, .. } => {
            check_target(target)?;
            match value {
                Some(_) if target.at().is_none() => {
                    return Err(Failure::usage(
                        "--value replaces one record's value: give TOPIC PARTITION OFFSET",
                    ))
                }
                Some(path) => Some(read_value(path)?),
                None => None,
            }
        }
        DlqCommand::Discard { target, .. } => {
            check_target(target)?;
            None
        }
    })
}

/// One `ordersctl dlq` command's connection to Kafka and its dead-letter reader.
struct Session<'a> {
    args: &'a DlqArgs,
    kafka: KafkaSettings,
    reader: std::sync::Arc<DeadLetterReader>,
    timeout: Duration,
}

impl<'a> Session<'a> {
    async fn connect(args: &'a DlqArgs) -> Result<Self, Failure> {
        let mut kafka = kafka_settings(&args.kafka, &args.store)
            .map_err(|e| Failure(EXIT_UNREACHABLE, format!("{e:#}")))?;
        let timeout = Duration::from_secs(args.timeout_seconds);
        kafka.message_timeout_ms = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
        let reader = {
            let kafka = kafka.clone();
            let topic = args.kafka.topic_name.clone();
            blocking(move || DeadLetterReader::new(&kafka, &topic, timeout)).await?
        };
        Ok(Self {
            args,
            kafka,
            reader: std::sync::Arc::new(reader),
            timeout,
        })
    }

    async fn list(&self, select: &Selection, handled: bool) -> Result<u8, Failure> {
        let mut f = filter(select, Some(DEFAULT_LIST_LIMIT))?;
        f.include_handled = handled;
        let letters = blocking({
            let reader = self.reader.clone();
            move || reader.list(&f)
        })
        .await?;
        print(
            self.args.json,
            &ListReport {
                dead_letters: &letters,
            },
            || list_text(&letters),
        )?;
        Ok(EXIT_OK)
    }

    async fn show(&self, at: &At) -> Result<u8, Failure> {
        let at = Coordinates {
            topic: at.topic.clone(),
            partition: at.partition,
            offset: at.offset,
        };
        let reader = self.reader.clone();
        let d = blocking(move || reader.get(&at)).await?;
        print(self.args.json, &d, || show_text(&d))?;
        Ok(EXIT_OK)
    }

    fn redriver(&self, max_redrives: u32) -> Result<Redriver, Failure> {
        Ok(Redriver::new(
            &self.kafka,
            &self.args.kafka.topic_name,
            &operator(self.args.operator.as_deref()),
            max_redrives,
        )?)
    }

    async fn redrive(
        &self,
        target: &Target,
        value: Option<&[u8]>,
        dry_run: bool,
        max_redrives: u32,
    ) -> Result<u8, Failure> {
        let letters = select(&self.reader, target).await?;
        let redriver = self.redriver(max_redrives)?;
        let shutdown = deadline(self.timeout);
        let results = redriver
            .redrive(&letters, value, dry_run, &shutdown)
            .await?;
        redriver.flush();
        report(self.args.json, dry_run, &results)
    }

    async fn discard(&self, target: &Target, dry_run: bool) -> Result<u8, Failure> {
        let letters = select(&self.reader, target).await?;
        let redriver = self.redriver(DEFAULT_REDRIVE_LIMIT)?;
        let shutdown = deadline(self.timeout);
        let results = redriver.discard(&letters, dry_run, &shutdown).await?;
        redriver.flush();
        report(self.args.json, dry_run, &results)
    }
}

/// Coordinates, or filters, or `--all`: never an unfiltered bulk action by accident.
fn check_target(target: &Target) -> Result<(), Failure> {
    let s = &target.select;
    let filtered = s.topic.is_some() || s.reason.is_some() || s.since.is_some();
    if target.at().is_some() {
        if filtered || s.limit.is_some() {
            return Err(Failure::usage(
                "give either TOPIC PARTITION OFFSET or filters, not both",
            ));
        }
        return Ok(());
    }
    if !filtered && !target.all {
        return Err(Failure::usage(
            "name a dead letter (TOPIC PARTITION OFFSET), select with --topic/--reason/--since, \
             or pass --all",
        ));
    }
    filter(s, None).map(|_| ())
}

fn read_value(path: &PathBuf) -> Result<Vec<u8>, Failure> {
    let read = if path.as_os_str() == "-" {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut v).map(|_| v)
    } else {
        std::fs::read(path)
    };
    read.map_err(|e| Failure::usage(format!("--value {}: {e}", path.display())))
}

/// The dead letters a target names: the one at its coordinates (handled or not), or
/// those its filters select that are not handled yet.
async fn select(
    reader: &std::sync::Arc<DeadLetterReader>,
    target: &Target,
) -> Result<Vec<DeadLetter>, Failure> {
    let reader = reader.clone();
    match target.at() {
        Some(at) => Ok(vec![blocking(move || reader.get(&at)).await?]),
        None => {
            let f = filter(&target.select, None)?;
            Ok(blocking(move || reader.list(&f)).await?)
        }
    }
}

/// A token cancelled when the timeout passes or on Ctrl-C: a send waits no longer.
fn deadline(timeout: Duration) -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::time::sleep(timeout * 2) => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        t.cancel();
    });
    token
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, DeadLetterError> + Send + 'static,
) -> Result<T, Failure> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Failure(EXIT_FAILED, e.to_string()))?
        .map_err(Failure::from)
}

#[derive(Serialize)]
struct ListReport<'a> {
    dead_letters: &'a [DeadLetter],
}

/// What a redrive or discard did, for scripts.
#[derive(Serialize)]
struct ActionReport<'a> {
    dry_run: bool,
    /// Sent (or would be), discarded (or would be), refused, and the idempotent rest.
    acted: usize,
    refused: usize,
    unchanged: usize,
    results: &'a [ActionResult],
}

fn report(json: bool, dry_run: bool, results: &[ActionResult]) -> Result<u8, Failure> {
    let refused = results.iter().filter(|r| r.outcome.is_failure()).count();
    let acted = results
        .iter()
        .filter(|r| {
            matches!(
                r.outcome,
                Outcome::Sent { .. }
                    | Outcome::WouldSend { .. }
                    | Outcome::Discarded
                    | Outcome::WouldDiscard
            )
        })
        .count();
    let r = ActionReport {
        dry_run,
        acted,
        refused,
        unchanged: results.len() - acted - refused,
        results,
    };
    print(json, &r, || action_text(&r))?;
    Ok(if refused > 0 { EXIT_REFUSED } else { EXIT_OK })
}

/// JSON (one line) or text on stdout; a reader that closed stdout early is not an error.
fn print<T: Serialize>(
    json: bool,
    value: &T,
    text: impl FnOnce() -> String,
) -> Result<(), Failure> {
    let printed = (|| -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        if json {
            serde_json::to_writer(&mut out, value)?;
            out.write_all(b"\n")?;
        } else {
            out.write_all(text().as_bytes())?;
        }
        out.flush()
    })();
    match printed {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Failure(EXIT_FAILED, e.to_string()))
        }
        _ => Ok(()),
    }
}

fn state(d: &DeadLetter) -> String {
    match &d.handled {
        None => "pending".to_owned(),
        Some(h) => format!("{} by {}", h.action, h.by),
    }
}

fn list_text(letters: &[DeadLetter]) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<22} {:<24} {:<13} {:<15} {:<10} {:<18} {:>8}  STATE",
        "DEAD LETTER", "AT", "REASON", "GROUP", "KEY", "SOURCE", "REDRIVES"
    );
    for d in letters {
        let _ = writeln!(
            s,
            "{:<22} {:<24} {:<13} {:<15} {:<10} {:<18} {:>8}  {}",
            d.at.to_string(),
            d.timestamp.as_deref().unwrap_or("-"),
            d.reason,
            d.group.as_deref().unwrap_or("-"),
            d.key.as_deref().unwrap_or("-"),
            d.source
                .as_ref()
                .map(Coordinates::to_string)
                .unwrap_or_else(|| "-".into()),
            d.redrive_count,
            state(d)
        );
    }
    let _ = writeln!(s, "{} dead letters", letters.len());
    s
}

fn show_text(d: &DeadLetter) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let or = |v: Option<&str>| v.unwrap_or("-").to_owned();
    let _ = writeln!(s, "dead letter   {}", d.at);
    let _ = writeln!(s, "at            {}", or(d.timestamp.as_deref()));
    let _ = writeln!(s, "reason        {}", d.reason);
    let _ = writeln!(s, "error         {}", or(d.error.as_deref()));
    let _ = writeln!(s, "group         {}", or(d.group.as_deref()));
    let _ = writeln!(
        s,
        "source        {}",
        d.source
            .as_ref()
            .map(Coordinates::to_string)
            .unwrap_or_else(|| "-".into())
    );
    let _ = writeln!(s, "key           {}", or(d.key.as_deref()));
    let _ = writeln!(s, "redrives      {}", d.redrive_count);
    let _ = writeln!(s, "state         {}", state(d));
    if let Some(h) = &d.handled {
        let _ = writeln!(s, "handled at    {}", h.at);
    }
    let _ = writeln!(s, "headers");
    for h in &d.headers {
        let _ = writeln!(s, "  {} = {}", h.key, or(h.value.as_deref()));
    }
    let truncated = if d.truncated { " (truncated)" } else { "" };
    let _ = writeln!(s, "value ({} bytes){truncated}", d.value_bytes);
    let _ = writeln!(s, "{}", d.value);
    s
}

fn action_text(r: &ActionReport<'_>) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    for result in r.results {
        let what = match &result.outcome {
            Outcome::Sent { to, redrive_count } => {
                format!("sent to {to} (redrive {redrive_count})")
            }
            Outcome::WouldSend { to, redrive_count } => {
                format!("would send to {to} (redrive {redrive_count})")
            }
            Outcome::Discarded => "discarded".to_owned(),
            Outcome::WouldDiscard => "would discard".to_owned(),
            Outcome::Refused { detail, .. } => format!("refused: {detail}"),
            Outcome::SameRecord { with } => format!("same record as {with}"),
        };
        let _ = writeln!(s, "{:<22} {what}", result.dead_letter);
    }
    let dry = if r.dry_run { " (dry run)" } else { "" };
    let _ = writeln!(
        s,
        "{} acted on, {} refused, {} unchanged{dry}",
        r.acted, r.refused, r.unchanged
    );
    s
}
