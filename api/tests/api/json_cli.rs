//! `ordersctl json` against a running API (a temporary SQLite store and the embedded
//! broker): each command's output is checked against the schemas in `docs/json.md`, which
//! this test reads, so the contract and the program cannot drift apart.

use crate::common::*;
use clap::Parser;
use orders_api::json_cli::{run_json, JsonArgs, JsonExit, JsonWhat, OrdersArgs};
use orders_api::{AppState, LagOptions};
use orders_core::kafka::{pipeline_topics, EmbeddedBroker};
use orders_core::store::OrderStore;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

const DOC: &str = include_str!("../../../docs/json.md");

/// The schemas and the command → schema table of `docs/json.md`.
struct Contract {
    types: BTreeMap<String, Vec<(String, String)>>,
    prints: BTreeMap<String, String>,
}

fn cells(line: &str) -> Vec<String> {
    line.trim()
        .trim_matches('|')
        .split('|')
        .map(|c| c.trim().trim_matches('`').to_owned())
        .collect()
}

fn contract() -> Contract {
    let mut types: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut prints = BTreeMap::new();
    let mut section = String::new();
    for line in DOC.lines() {
        if let Some(h) = line.strip_prefix("## ") {
            section = h.to_owned();
        } else if let Some(h) = line.strip_prefix("### ") {
            section = h.trim_matches('`').to_owned();
            types.insert(section.clone(), Vec::new());
        } else if line.starts_with('|') && !line.starts_with("|---") {
            let c = cells(line);
            if c[0] == "field" || c[0] == "command" {
                continue;
            }
            if section == "What each command prints" {
                let cmd = c[0].split_whitespace().next().unwrap().to_owned();
                prints.insert(cmd, c[2].clone());
            } else if let Some(fields) = types.get_mut(&section) {
                fields.push((c[0].clone(), c[1].clone()));
            }
        }
    }
    assert!(types.len() > 10 && prints.len() == 7, "the doc parses");
    Contract { types, prints }
}

impl Contract {
    fn fields(&self, name: &str) -> Vec<(String, String)> {
        let own = self
            .types
            .get(name)
            .unwrap_or_else(|| panic!("docs/json.md has no schema {name}"));
        let mut out = Vec::new();
        for (field, ty) in own {
            if field.starts_with("(all fields of") {
                out.extend(self.fields(ty));
            } else {
                out.push((field.clone(), ty.clone()));
            }
        }
        out
    }

    fn check(&self, ty: &str, v: &Value, path: &str) {
        let (base, nullable) = match ty.strip_suffix(" or null") {
            Some(b) => (b, true),
            None => (ty, false),
        };
        if v.is_null() {
            assert!(nullable, "{path}: null but {ty}");
            return;
        }
        let ok = match base {
            "integer" => v.is_i64() || v.is_u64(),
            "number" => v.is_number(),
            "string" => v.is_string(),
            "boolean" => v.is_boolean(),
            _ => {
                if let Some(inner) = base.strip_prefix("array of ") {
                    let items = v
                        .as_array()
                        .unwrap_or_else(|| panic!("{path}: not an array"));
                    for (i, item) in items.iter().enumerate() {
                        self.check(inner, item, &format!("{path}[{i}]"));
                    }
                } else if let Some(inner) = base.strip_prefix("map of ") {
                    let map = v.as_object().unwrap_or_else(|| panic!("{path}: not a map"));
                    for (k, item) in map {
                        self.check(inner, item, &format!("{path}.{k}"));
                    }
                } else {
                    self.check_object(base, v, path);
                }
                true
            }
        };
        assert!(ok, "{path}: {v} is not {ty}");
    }

    fn check_object(&self, name: &str, v: &Value, path: &str) {
        let obj = v
            .as_object()
            .unwrap_or_else(|| panic!("{path}: not an object ({name})"));
        let fields = self.fields(name);
        for (field, ty) in &fields {
            let value = obj
                .get(field)
                .unwrap_or_else(|| panic!("{path}: {name}.{field} missing in {v}"));
            self.check(ty, value, &format!("{path}.{field}"));
        }
        for key in obj.keys() {
            assert!(
                fields.iter().any(|(f, _)| f == key),
                "{path}: {name} has an undocumented field {key}"
            );
        }
    }
}

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    json: JsonArgs,
}

fn args(api: &str, rest: &[&str]) -> JsonArgs {
    let head = ["json", "--api", api];
    let argv = head.iter().chain(rest.iter()).copied();
    Cli::try_parse_from(argv).unwrap().json
}

async fn run(a: JsonArgs) -> (JsonExit, String) {
    let mut out = Vec::new();
    let code = run_json(a, &mut out).await;
    (code, String::from_utf8(out).unwrap())
}

fn one_object(stdout: &str) -> Value {
    assert!(stdout.ends_with('\n'), "{stdout:?}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    serde_json::from_str(lines[0]).unwrap()
}

async fn broker() -> EmbeddedBroker {
    tokio::task::spawn_blocking(|| EmbeddedBroker::start(&pipeline_topics("orders")).unwrap())
        .await
        .unwrap()
}

fn fast_lag() -> LagOptions {
    LagOptions {
        interval: Duration::from_millis(200),
        window: 5,
        kafka_timeout: Duration::from_secs(5),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_prints_its_documented_schema() {
    let contract = contract();
    let f = filled_store(60).await;
    let broker = broker().await;
    let state =
        AppState::new(f.store.clone()).with_kafka_options(broker.settings(), "orders", fast_lag());
    let monitor = state.lag_monitor().unwrap().clone();
    let server = RunningServer::start(state).await;
    eventually("a lag sample", Duration::from_secs(30), || {
        let m = monitor.clone();
        async move { m.latest().is_ok() }
    })
    .await;
    let api = server.url();
    let alert_id = f.batch.alerts[0].order_id.to_string();
    let runs: Vec<(&str, Vec<&str>)> = vec![
        (
            "orders",
            vec!["orders", "--limit", "7", "--status", "CREATED"],
        ),
        ("order", vec!["order", &alert_id]),
        ("alerts", vec!["alerts", "--limit", "3"]),
        ("payments", vec!["payments"]),
        ("totals", vec!["totals"]),
        ("lag", vec!["lag"]),
        ("health", vec!["health"]),
    ];
    assert_eq!(
        runs.len(),
        contract.prints.len(),
        "one run per documented command"
    );
    let mut outputs = BTreeMap::new();
    for (cmd, argv) in runs {
        let (code, stdout) = run(args(&api, &argv)).await;
        assert_eq!(code, JsonExit::Ok, "{cmd}: {stdout}");
        let v = one_object(&stdout);
        contract.check(&contract.prints[cmd], &v, cmd);
        outputs.insert(cmd, v);
    }
    // The checks above ran over real content, not empty lists.
    let orders = outputs["orders"]["orders"].as_array().unwrap();
    assert_eq!(orders.len(), 7);
    assert!(orders.iter().all(|o| o["status"] == "CREATED"));
    assert!(outputs["orders"]["next_before"].is_u64());
    assert_eq!(outputs["alerts"]["alerts"].as_array().unwrap().len(), 3);
    assert_eq!(
        outputs["payments"]["payments"].as_array().unwrap().len(),
        50
    );
    assert_eq!(outputs["totals"]["order_count"], 60);
    assert_eq!(outputs["order"]["journey"]["fraud"]["decision"], "alert");
    // No group has committed on the embedded broker, but this order is stored, alerted and
    // paid: those effects prove every group past it (one consistent journey).
    assert_ne!(outputs["order"]["journey"]["payment"]["status"], "PENDING");
    assert_eq!(
        outputs["order"]["journey"]["groups_behind"],
        serde_json::json!([])
    );
    let groups = outputs["lag"]["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 3);
    assert_eq!(groups[2]["partitions"].as_array().unwrap().len(), 18);
    assert!(groups
        .iter()
        .all(|g| g["status"] == "OK" && g["total_lag"] == 0));
    assert_eq!(outputs["health"]["status"], "ready");
    assert_eq!(outputs["health"]["checks"]["kafka"], "ok");
    server.stop().await;
}

#[tokio::test]
async fn unknown_order_exits_3_with_nothing_on_stdout() {
    let f = filled_store(5).await;
    let server = RunningServer::start(AppState::new(f.store.clone())).await;
    let (code, stdout) = run(args(&server.url(), &["order", "424242"])).await;
    assert_eq!(code, JsonExit::NotFound);
    assert_eq!(code.code(), 3);
    assert!(stdout.is_empty(), "{stdout}");
    server.stop().await;
}

#[tokio::test]
async fn refused_credentials_exit_6_and_the_right_token_gets_in() {
    let f = filled_store(5).await;
    let access = orders_api::auth::Access::Required(Arc::new(orders_api::auth::Credentials::new(
        &[orders_core::config::Secret::new("t-good")],
        None,
    )));
    let server = RunningServer::start(AppState::new(f.store.clone()).with_access(access)).await;
    let url = server.url();
    for extra in [
        &[][..],
        &["--token", "t-bad"],
        &["--token", "t-bad", "--watch"],
    ] {
        let mut argv = vec!["totals"];
        argv.extend_from_slice(extra);
        let (code, stdout) = run(args(&url, &argv)).await;
        assert_eq!(code, JsonExit::Unauthorised, "{argv:?}");
        assert_eq!(code.code(), 6);
        assert!(stdout.is_empty(), "{stdout}");
    }
    let (code, stdout) = run(args(&url, &["totals", "--token", "t-good"])).await;
    assert_eq!(code, JsonExit::Ok);
    assert_eq!(one_object(&stdout)["order_count"], 5);
    // Readiness is a probe: it answers without a token.
    let (code, stdout) = run(args(&url, &["health"])).await;
    assert_eq!(code, JsonExit::ApiError, "no Kafka in this test: not ready");
    assert_eq!(one_object(&stdout)["checks"]["store"], "ok");
    server.stop().await;
}

#[tokio::test]
async fn unreachable_api_exits_4() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let (code, stdout) = run(args(&format!("http://{addr}"), &["totals"])).await;
    assert_eq!(code, JsonExit::Unreachable);
    assert_eq!(code.code(), 4);
    assert!(stdout.is_empty());
}

#[tokio::test]
async fn rejected_request_exits_2_and_server_errors_exit_5() {
    let f = filled_store(5).await;
    let server = RunningServer::start(AppState::new(f.store.clone())).await;
    // A value clap would have refused, sent anyway: the API rejects it.
    let bad = JsonArgs {
        what: JsonWhat::Orders(OrdersArgs {
            limit: 5,
            country: Some("usa".into()),
            ..OrdersArgs::default()
        }),
        api: server.url(),
        auth: Default::default(),
        watch: false,
        interval: 2.0,
        count: None,
    };
    let (code, stdout) = run(bad).await;
    assert_eq!(code, JsonExit::Usage);
    assert!(stdout.is_empty());
    // Lag without Kafka configured: 503.
    let (code, stdout) = run(args(&server.url(), &["lag"])).await;
    assert_eq!(code, JsonExit::ApiError);
    assert!(stdout.is_empty());
    server.stop().await;

    let down = RunningServer::start(AppState::new(Arc::new(DownStore))).await;
    let (code, stdout) = run(args(&down.url(), &["totals"])).await;
    assert_eq!((code, stdout.as_str()), (JsonExit::ApiError, ""));
    // `health` prints the readiness document even when not ready.
    let (code, stdout) = run(args(&down.url(), &["health"])).await;
    assert_eq!(code, JsonExit::ApiError);
    let v = one_object(&stdout);
    contract().check("Health", &v, "health");
    assert_eq!(v["status"], "not_ready");
    assert_eq!(v["checks"]["store"], "unavailable");
    down.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prints_one_line_per_change() {
    let f = filled_store(10).await;
    let server = RunningServer::start(AppState::new(f.store.clone())).await;
    let watch = args(
        &server.url(),
        &["totals", "--watch", "--interval", "0.1", "--count", "2"],
    );
    let out = SharedOut::default();
    let task = {
        let mut out = out.clone();
        tokio::spawn(async move { run_json(watch, &mut out).await })
    };
    // Change the store only once the first answer is out.
    eventually("the first line", Duration::from_secs(30), || {
        let out = out.clone();
        async move { out.text().ends_with('\n') }
    })
    .await;
    let more = orders_api::sample_data::batch(SEED, 11..=15, orders_core::Timestamp::now());
    f.store.apply(Arc::new(more)).await.unwrap();
    let code = tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("watch ends after --count objects")
        .unwrap();
    assert_eq!(code, JsonExit::Ok);
    let stdout = out.text();
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert_eq!(lines[0]["order_count"], 10);
    assert_eq!(lines[1]["order_count"], 15);
    server.stop().await;
}

/// A stdout the test can read while the command still writes to it.
#[derive(Clone, Default)]
struct SharedOut(Arc<std::sync::Mutex<Vec<u8>>>);

impl SharedOut {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

impl std::io::Write for SharedOut {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Why the API cannot be reached, named: refused, unresolvable, or silent (real sockets).
#[tokio::test]
async fn unreachable_names_the_cause() {
    use orders_api::client::{ApiClient, ClientError};
    async fn reason(url: &str) -> String {
        let client = ApiClient::new(url)
            .unwrap()
            .with_timeout(std::time::Duration::from_secs(1))
            .unwrap();
        match client.get("api/totals", &[]).await {
            Err(ClientError::Unreachable { reason, .. }) => reason,
            other => panic!("{url}: {other:?}"),
        }
    }
    // A closed port.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed = listener.local_addr().unwrap();
    drop(listener);
    let r = reason(&format!("http://{closed}")).await;
    assert_eq!(r, format!("connection refused by {closed}"));
    // A name that cannot resolve (RFC 6761 reserves `.invalid`).
    let r = reason("http://orders-api.invalid:8000").await;
    assert_eq!(r, "cannot resolve orders-api.invalid");
    // A listener that accepts and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let r = reason(&format!("http://{addr}")).await;
    assert_eq!(r, format!("no answer from {addr}: timed out after 1 s"));
    hold.abort();
}
