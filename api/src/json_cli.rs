//! `ordersctl json`: the API's answers as JSON on stdout, for scripts and CI jobs. This is
//! a contract (schemas and exit codes in `docs/json.md`): only JSON on stdout, one object
//! per line; diagnostics on stderr; a closed pipe (`| head`) is a normal end.
//!
//! Mounted in a binary as a subcommand:
//!
//! ```text
//! #[derive(clap::Subcommand)]
//! enum Command { Json(orders_api::json_cli::JsonArgs), /* ... */ }
//! // ...
//! Command::Json(args) => {
//!     let code = orders_api::json_cli::run_json(args, &mut std::io::stdout().lock()).await;
//!     return Ok(code.into()); // std::process::ExitCode
//! }
//! ```

use crate::client::{ApiClient, ApiResponse, ClientError, TokenArgs, DEFAULT_API_URL};
use std::io::{ErrorKind, Write};
use std::time::Duration;

/// How `ordersctl json` ends. The numbers are the process exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonExit {
    /// The answer was printed (or stdout was closed by the reader).
    Ok = 0,
    /// stdout could not be written (other than a closed pipe).
    Output = 1,
    /// Bad usage: a bad flag (reported by clap, which also exits 2), a bad API URL, or a
    /// request the API rejected as invalid (400, 405, 414).
    Usage = 2,
    /// The order (or endpoint) does not exist (404).
    NotFound = 3,
    /// The API could not be reached (connection refused, DNS, timeout).
    Unreachable = 4,
    /// The API answered with an error (5xx, e.g. store or Kafka down; 429, over this
    /// client's rate; `health`: not ready), or with something that is not JSON.
    ApiError = 5,
    /// The API refused the credentials (401, 403): set `ORDERS_API_TOKEN` or `--token`.
    Unauthorised = 6,
}

impl JsonExit {
    pub fn code(self) -> u8 {
        self as u8
    }
}

impl From<JsonExit> for std::process::ExitCode {
    fn from(e: JsonExit) -> Self {
        std::process::ExitCode::from(e.code())
    }
}

/// `ordersctl json <what> [--api URL] [--watch]`.
#[derive(Debug, Clone, clap::Args)]
pub struct JsonArgs {
    #[command(subcommand)]
    pub what: JsonWhat,

    /// Base URL of the API.
    #[arg(long, env = "ORDERS_API_URL", default_value = DEFAULT_API_URL, global = true)]
    pub api: String,

    #[command(flatten)]
    pub auth: TokenArgs,

    /// Keep polling; print one JSON object per line each time the answer changes.
    #[arg(long, global = true)]
    pub watch: bool,

    /// Seconds between polls with --watch.
    #[arg(long, global = true, default_value_t = 2.0, value_parser = parse_interval)]
    pub interval: f64,

    /// With --watch: stop after printing this many objects.
    #[arg(long, global = true, value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
}

/// What to print.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum JsonWhat {
    /// Latest orders, newest first (one page).
    Orders(OrdersArgs),
    /// One order with its journey through the pipeline.
    Order {
        /// The order id.
        #[arg(value_parser = clap::value_parser!(u64).range(1..))]
        id: u64,
    },
    /// Latest fraud alerts.
    Alerts {
        /// How many, 1 to 1000.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=1000))]
        limit: u64,
    },
    /// Latest payment results.
    Payments {
        /// How many, 1 to 1000.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=1000))]
        limit: u64,
    },
    /// Totals: count, sales, average, by country and status, fraud rate, payments.
    Totals,
    /// Consumer lag per group and partition, with each group's status.
    Lag,
    /// Readiness of the API and what it depends on.
    Health,
}

/// Filters of `orders`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct OrdersArgs {
    /// How many, 1 to 1000.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub limit: u64,
    /// Only this country (two upper-case letters, e.g. US).
    #[arg(long, value_parser = parse_country)]
    pub country: Option<String>,
    /// Only this order status.
    #[arg(long, value_parser = ["CREATED", "CONFIRMED", "CANCELLED"])]
    pub status: Option<String>,
    /// Only orders with (true) or without (false) a fraud alert.
    #[arg(long)]
    pub fraud: Option<bool>,
    /// Only this payment result.
    #[arg(long, value_parser = ["PAID", "FAILED"])]
    pub payment_status: Option<String>,
    /// Only orders stored before the order with this id (the `next_before` of the previous
    /// page).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub before: Option<u64>,
}

fn parse_interval(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.1..=3600.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a number of seconds from 0.1 to 3600")),
    }
}

fn parse_country(s: &str) -> Result<String, String> {
    s.parse::<orders_core::Country>()
        .map(|c| c.as_str().to_owned())
}

/// The request behind each subcommand.
fn request(what: &JsonWhat) -> (String, Vec<(&'static str, String)>) {
    match what {
        JsonWhat::Orders(f) => {
            let mut q = vec![("limit", f.limit.to_string())];
            if let Some(c) = &f.country {
                q.push(("country", c.clone()));
            }
            if let Some(s) = &f.status {
                q.push(("status", s.clone()));
            }
            if let Some(b) = f.fraud {
                q.push(("fraud", b.to_string()));
            }
            if let Some(p) = &f.payment_status {
                q.push(("payment_status", p.clone()));
            }
            if let Some(b) = f.before {
                q.push(("before", b.to_string()));
            }
            ("api/orders".into(), q)
        }
        JsonWhat::Order { id } => (format!("api/orders/{id}"), vec![]),
        JsonWhat::Alerts { limit } => ("api/alerts".into(), vec![("limit", limit.to_string())]),
        JsonWhat::Payments { limit } => ("api/payments".into(), vec![("limit", limit.to_string())]),
        JsonWhat::Totals => ("api/totals".into(), vec![]),
        JsonWhat::Lag => ("api/lag".into(), vec![]),
        JsonWhat::Health => ("readyz".into(), vec![]),
    }
}

/// What an answer means for the caller.
enum Outcome {
    /// Print the body; end with this code (`health` prints its 503 body too).
    Print(JsonExit),
    /// Print nothing; say why on stderr; end with this code.
    Fail(JsonExit, String),
}

fn judge(what: &JsonWhat, r: &ApiResponse) -> Outcome {
    let message = || {
        format!(
            "the API answered {}: {}",
            r.status,
            r.error_message().unwrap_or("(no message)")
        )
    };
    match r.status {
        200..=299 => Outcome::Print(JsonExit::Ok),
        503 if matches!(what, JsonWhat::Health) && r.body.get("checks").is_some() => {
            Outcome::Print(JsonExit::ApiError)
        }
        404 => Outcome::Fail(JsonExit::NotFound, message()),
        401 | 403 => Outcome::Fail(
            JsonExit::Unauthorised,
            format!(
                "not authorised (the API answered {}): set ORDERS_API_TOKEN or --token",
                r.status
            ),
        ),
        // Over the client's rate: not the request's fault; later it will be answered.
        429 => Outcome::Fail(JsonExit::ApiError, message()),
        400..=499 => Outcome::Fail(JsonExit::Usage, message()),
        _ => Outcome::Fail(JsonExit::ApiError, message()),
    }
}

fn diag(message: &str) {
    eprintln!("ordersctl json: {message}");
}

/// Writes one line; `Err` carries how to end when stdout is gone or broken.
fn emit(out: &mut impl Write, body: &serde_json::Value) -> Result<(), JsonExit> {
    let mut line = body.to_string();
    line.push('\n');
    match out.write_all(line.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Err(JsonExit::Ok),
        Err(e) => {
            diag(&format!("cannot write to stdout: {e}"));
            Err(JsonExit::Output)
        }
    }
}

/// Runs `ordersctl json` with parsed arguments, writing JSON to `out`.
pub async fn run_json(args: JsonArgs, out: &mut impl Write) -> JsonExit {
    let client = match ApiClient::new(&args.api).and_then(|c| {
        let token = args.auth.token_for(c.base())?;
        Ok(c.with_token(token))
    }) {
        Ok(c) => c,
        Err(e) => {
            diag(&e.to_string());
            return JsonExit::Usage;
        }
    };
    let (path, query) = request(&args.what);
    if !args.watch {
        return match client.get(&path, &query).await {
            Ok(r) => match judge(&args.what, &r) {
                Outcome::Print(code) => emit(out, &r.body).err().unwrap_or(code),
                Outcome::Fail(code, message) => {
                    diag(&message);
                    code
                }
            },
            Err(e) => {
                diag(&e.to_string());
                match e {
                    ClientError::BadUrl { .. } | ClientError::TokenInClear { .. } => {
                        JsonExit::Usage
                    }
                    ClientError::Unreachable { .. } => JsonExit::Unreachable,
                    ClientError::NotJson { .. } => JsonExit::ApiError,
                }
            }
        };
    }
    watch(&client, &args, &path, &query, out).await
}

/// Polls until `--count` objects were printed, stdout closes, or the request is invalid or
/// refused (401, 403). Unreachable API, server errors and 404 (an order not stored yet) are
/// reported once on stderr and polled through.
async fn watch(
    client: &ApiClient,
    args: &JsonArgs,
    path: &str,
    query: &[(&'static str, String)],
    out: &mut impl Write,
) -> JsonExit {
    let interval = Duration::from_secs_f64(args.interval);
    let mut last_printed: Option<serde_json::Value> = None;
    let mut last_problem: Option<String> = None;
    let mut printed = 0_u64;
    loop {
        let problem = match client.get(path, query).await {
            Ok(r) => match judge(&args.what, &r) {
                Outcome::Print(_) => {
                    if last_printed.as_ref() != Some(&r.body) {
                        if let Err(code) = emit(out, &r.body) {
                            return code;
                        }
                        printed += 1;
                        if args.count.is_some_and(|n| printed >= n) {
                            return JsonExit::Ok;
                        }
                        last_printed = Some(r.body);
                    }
                    None
                }
                Outcome::Fail(code @ (JsonExit::Usage | JsonExit::Unauthorised), message) => {
                    diag(&message);
                    return code;
                }
                Outcome::Fail(_, message) => Some(message),
            },
            Err(e @ ClientError::BadUrl { .. }) => {
                diag(&e.to_string());
                return JsonExit::Usage;
            }
            Err(e) => Some(e.to_string()),
        };
        if let Some(p) = &problem {
            if last_problem.as_ref() != Some(p) {
                diag(&format!("{p} (still watching)"));
            }
        }
        last_problem = problem;
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        json: JsonArgs,
    }

    fn parse(args: &[&str]) -> Result<JsonArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("json").chain(args.iter().copied())).map(|c| c.json)
    }

    #[test]
    fn parses_subcommands_and_filters() {
        let a = parse(&[
            "orders",
            "--limit",
            "5",
            "--country",
            "DE",
            "--status",
            "CREATED",
            "--fraud",
            "true",
            "--api",
            "http://h:1",
        ])
        .unwrap();
        assert_eq!(a.api, "http://h:1");
        let (path, q) = request(&a.what);
        assert_eq!(path, "api/orders");
        assert_eq!(
            q,
            vec![
                ("limit", "5".to_owned()),
                ("country", "DE".to_owned()),
                ("status", "CREATED".to_owned()),
                ("fraud", "true".to_owned())
            ]
        );
        let a = parse(&["--watch", "order", "42"]).unwrap();
        assert!(a.watch);
        assert_eq!(request(&a.what).0, "api/orders/42");
        assert_eq!(request(&parse(&["health"]).unwrap().what).0, "readyz");
    }

    #[test]
    fn usage_errors_exit_2() {
        for bad in [
            &["orders", "--limit", "0"][..],
            &["orders", "--country", "usa"],
            &["orders", "--status", "SHIPPED"],
            &["order", "abc"],
            &["order", "0"],
            &["alerts", "--limit", "1001"],
            &["nothing"],
            &[],
            &["totals", "--interval", "0"],
        ] {
            let e = parse(bad).err().unwrap_or_else(|| panic!("{bad:?} parsed"));
            assert_eq!(e.exit_code(), 2, "{bad:?}");
        }
    }

    #[test]
    fn exit_codes_are_the_documented_numbers() {
        let codes: Vec<u8> = [
            JsonExit::Ok,
            JsonExit::Output,
            JsonExit::Usage,
            JsonExit::NotFound,
            JsonExit::Unreachable,
            JsonExit::ApiError,
            JsonExit::Unauthorised,
        ]
        .iter()
        .map(|e| e.code())
        .collect();
        assert_eq!(codes, vec![0, 1, 2, 3, 4, 5, 6]);
    }

    struct ClosedPipe;
    impl Write for ClosedPipe {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::new(ErrorKind::BrokenPipe, "closed"))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    struct FullDisk;
    impl Write for FullDisk {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("no space left"))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn closed_pipe_is_a_normal_end() {
        let v = serde_json::json!({"a": 1});
        assert_eq!(emit(&mut ClosedPipe, &v), Err(JsonExit::Ok));
        assert_eq!(emit(&mut FullDisk, &v), Err(JsonExit::Output));
        let mut buf = Vec::new();
        emit(&mut buf, &v).unwrap();
        assert_eq!(buf, b"{\"a\":1}\n");
    }
}
