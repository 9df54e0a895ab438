//! `ordersctl dlq` against the real pipeline (`LocalPipeline`: the embedded broker over TCP,
//! the daemons, a SQLite file), attached through `up.json` as a developer's shell is:
//! poison records land in `orders.dlq` and are listed with their reasons; a dry run sends
//! nothing; a corrected record is redriven, stored, and not sent twice; the loop guard
//! refuses a record that keeps failing; a discard hides it; the audit ends clean.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use orders_core::audit::{audit, AuditOptions};
use orders_core::config::UpInfo;
use orders_core::fraud::FraudRules;
use orders_core::kafka::{KafkaSettings, LagReader};
use orders_core::store::OrderStore;
use orders_daemons::local_pipeline::{LocalOptions, LocalPipeline};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Every variable `ordersctl dlq` reads, so the tests' environment cannot leak in.
const CONFIG_VARS: &[&str] = &[
    "KAFKA_BOOTSTRAP_SERVERS",
    "CONFLUENT_API_KEY",
    "CONFLUENT_API_SECRET",
    "TOPIC_NAME",
    "COUCHBASE_HOST",
    "ORDERS_DATA_DIR",
    "ORDERS_DLQ_TIMEOUT_SECONDS",
    "ORDERS_DLQ_MAX_REDRIVES",
    "ORDERS_OPERATOR",
];

fn ordersctl_dlq(data_dir: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ordersctl"));
    cmd.arg("dlq").args(args);
    for var in CONFIG_VARS {
        cmd.env_remove(var);
    }
    cmd.env("ORDERS_DATA_DIR", data_dir)
        .env("ORDERS_OPERATOR", "test-operator")
        .env("RUST_LOG", "warn");
    cmd.output().unwrap()
}

/// Runs `ordersctl dlq ARGS --json` off the runtime; the exit code and the JSON document.
async fn dlq(data_dir: &Path, args: &[&str]) -> (i32, Value) {
    let data_dir = data_dir.to_owned();
    let mut args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    args.push("--json".into());
    let out = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ordersctl_dlq(&data_dir, &args)
    })
    .await
    .unwrap();
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stdout.lines().count(),
        1,
        "one line of JSON: {stdout} {stderr}"
    );
    (
        out.status.code().unwrap(),
        serde_json::from_str(&stdout).unwrap(),
    )
}

fn order_json(order_id: u64, amount: &str) -> String {
    format!(
        r#"{{"order_id":{order_id},"customer_id":5678,"amount":{amount},"currency":"USD","country":"US","status":"CREATED","created_at":"2024-01-15T10:30:00Z","source":"dlq-test"}}"#
    )
}

async fn produce(kafka: &KafkaSettings, key: &str, value: &str, headers: &[(&str, &str)]) {
    let producer: FutureProducer = kafka.producer_config("dlq-test").create().unwrap();
    let headers = headers.iter().fold(OwnedHeaders::new(), |h, (key, v)| {
        h.insert(Header {
            key,
            value: Some(*v),
        })
    });
    producer
        .send(
            FutureRecord::to("orders")
                .key(key)
                .payload(value)
                .headers(headers),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
}

/// Records on `topic`, over all partitions.
async fn records_on(kafka: &KafkaSettings, topic: &str) -> i64 {
    let kafka = kafka.clone();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let t = Duration::from_secs(10);
        let reader = LagReader::new(&kafka).unwrap();
        let parts = reader.partitions(&[topic.as_str()], t).unwrap();
        let marks = reader.watermarks(&parts, t).unwrap();
        marks.values().map(|(low, high)| high - low).sum()
    })
    .await
    .unwrap()
}

/// Waits (bounded) until `topic` holds `n` records.
async fn wait_for_records(kafka: &KafkaSettings, topic: &str, n: i64) {
    let start = Instant::now();
    loop {
        let now = records_on(kafka, topic).await;
        if now >= n {
            assert_eq!(now, n, "{topic} holds more records than expected");
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{topic} holds {now} records, not {n}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The coordinates of the first listed dead letter whose `field` is `value`.
fn first_where<'a>(list: &'a Value, field: &str, value: &str) -> &'a Value {
    list["dead_letters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d[field] == value)
        .unwrap_or_else(|| panic!("no dead letter with {field} = {value} in {list}"))
}

fn at(d: &Value) -> [String; 3] {
    [
        d["topic"].as_str().unwrap().to_owned(),
        d["partition"].to_string(),
        d["offset"].to_string(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dead_letters_are_listed_redriven_once_guarded_and_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let mut pipeline = LocalPipeline::start(LocalOptions::new(dir.path().join("orders.db")))
        .await
        .unwrap();
    let kafka = pipeline.kafka();
    UpInfo {
        api: "http://127.0.0.1:1".into(),
        kafka: pipeline.bootstrap_servers().to_owned(),
    }
    .write(dir.path())
    .unwrap();
    let data = dir.path();

    // Two poison records: an amount as a string (fixable), and not JSON at all (with a
    // header of its own, which must travel with it). Each of the three groups
    // dead-letters each record.
    produce(&kafka, "9000001", &order_json(9_000_001, "\"12.50\""), &[]).await;
    produce(&kafka, "9000002", "not json", &[("trace-id", "t-9")]).await;
    wait_for_records(&kafka, "orders.dlq", 6).await;

    let (code, list) = dlq(data, &["list"]).await;
    assert_eq!(code, 0);
    let letters = list["dead_letters"].as_array().unwrap();
    assert_eq!(letters.len(), 6, "{list}");
    let mut reasons: Vec<(&str, &str)> = letters
        .iter()
        .map(|d| (d["key"].as_str().unwrap(), d["reason"].as_str().unwrap()))
        .collect();
    reasons.sort();
    reasons.dedup();
    assert_eq!(reasons, [("9000001", "schema"), ("9000002", "not-json")]);
    let mut groups: Vec<&str> = letters
        .iter()
        .map(|d| d["group"].as_str().unwrap())
        .collect();
    groups.sort();
    groups.dedup();
    assert_eq!(groups.len(), 3, "every group dead-letters: {list}");
    assert!(letters.iter().all(|d| d["source"]["topic"] == "orders"
        && d["handled"].is_null()
        && d["redrive_count"] == 0));
    let text = {
        let data = data.to_owned();
        tokio::task::spawn_blocking(move || ordersctl_dlq(&data, &["list"]))
            .await
            .unwrap()
    };
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.starts_with("DEAD LETTER"), "{text}");
    assert!(text.ends_with("6 dead letters\n"), "{text}");
    assert_eq!(text.matches(" pending").count(), 6, "{text}");
    let (_, only) = dlq(data, &["list", "--reason", "not-json", "--limit", "2"]).await;
    assert_eq!(only["dead_letters"].as_array().unwrap().len(), 2);

    let bad = at(first_where(&list, "key", "9000002"));
    let bad: Vec<&str> = bad.iter().map(String::as_str).collect();
    let (code, shown) = dlq(data, &[&["show"], &bad[..]].concat()).await;
    assert_eq!(code, 0);
    assert_eq!(shown["value"], "not json");
    let headers = shown["headers"].as_array().unwrap();
    assert!(headers
        .iter()
        .any(|h| h["key"] == "trace-id" && h["value"] == "t-9"));
    assert!(headers
        .iter()
        .any(|h| h["key"] == "dlq.reason" && h["value"] == "not-json"));

    let missing = {
        let data = data.to_owned();
        tokio::task::spawn_blocking(move || {
            ordersctl_dlq(&data, &["show", "orders.dlq", "0", "999"])
        })
        .await
        .unwrap()
    };
    assert_eq!(missing.status.code(), Some(3), "no such offset");
    assert!(missing.stdout.is_empty());

    // A dry run says what it would send, and sends and records nothing.
    let orders_before = records_on(&kafka, "orders").await;
    let (code, dry) = dlq(data, &["redrive", "--reason", "schema", "--dry-run"]).await;
    assert_eq!(code, 0, "{dry}");
    assert_eq!(
        (dry["acted"].as_u64(), dry["unchanged"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(dry["results"][0]["outcome"], "would-send");
    assert_eq!(dry["results"][1]["outcome"], "same-record");
    assert_eq!(records_on(&kafka, "orders").await, orders_before);
    assert_eq!(records_on(&kafka, "orders.dlq.handled").await, 0);

    // The fixable one, corrected and redriven: back on `orders` and stored.
    let fixable = at(first_where(&list, "key", "9000001"));
    let fixable: Vec<&str> = fixable.iter().map(String::as_str).collect();
    let fixed = dir.path().join("fixed.json");
    std::fs::write(&fixed, order_json(9_000_001, "12.50")).unwrap();
    let redrive_fixed = [
        &["redrive"],
        &fixable[..],
        &["--value", fixed.to_str().unwrap()],
    ]
    .concat();
    let (code, sent) = dlq(data, &redrive_fixed).await;
    assert_eq!(code, 0, "{sent}");
    assert_eq!(sent["results"][0]["outcome"], "sent");
    assert_eq!(sent["results"][0]["to"], "orders");
    assert_eq!(records_on(&kafka, "orders").await, orders_before + 1);
    let start = Instant::now();
    while pipeline.store.order(9_000_001).await.unwrap().is_none() {
        assert!(start.elapsed() < Duration::from_secs(60), "never stored");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Sent once: again by coordinates, or in bulk, sends nothing (and is no failure).
    let (code, again) = dlq(data, &redrive_fixed).await;
    assert_eq!(code, 0, "{again}");
    assert_eq!(again["results"][0]["outcome"], "refused");
    assert_eq!(again["results"][0]["reason"], "already-redriven");
    let (code, bulk) = dlq(data, &["redrive", "--reason", "schema"]).await;
    assert_eq!((code, bulk["acted"].as_u64()), (0, Some(0)), "{bulk}");
    assert_eq!(records_on(&kafka, "orders").await, orders_before + 1);
    let (_, shown) = dlq(data, &[&["show"], &fixable[..]].concat()).await;
    assert_eq!(shown["handled"]["action"], "redriven");
    assert_eq!(shown["handled"]["by"], "test-operator");
    assert_eq!(shown["handled"]["corrected"], true);

    // The one that stays broken: each redrive comes back, counted, with its own header
    // and its provenance, until the loop guard refuses it.
    let mut dead = 6;
    for round in 1..=3 {
        let (code, r) = dlq(data, &["redrive", "--reason", "not-json"]).await;
        assert_eq!(code, 0, "{r}");
        assert_eq!(r["acted"], 1, "{r}");
        assert_eq!(r["results"][0]["redrive_count"], round);
        dead += 3;
        wait_for_records(&kafka, "orders.dlq", dead).await;
    }
    let (_, list) = dlq(data, &["list", "--reason", "not-json"]).await;
    let back = list["dead_letters"].as_array().unwrap();
    assert_eq!(back.len(), 3, "only the last round is pending: {list}");
    assert!(back.iter().all(|d| d["redrive_count"] == 3
        && d["redriven_from"]
            .as_str()
            .unwrap()
            .starts_with("orders.dlq/0/")
        && d["headers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["key"] == "trace-id" && h["value"] == "t-9")));
    let orders_now = records_on(&kafka, "orders").await;
    let (code, guarded) = dlq(data, &["redrive", "--reason", "not-json"]).await;
    assert_eq!(code, 1, "{guarded}");
    assert_eq!(guarded["results"][0]["reason"], "loop-guard");
    assert_eq!(records_on(&kafka, "orders").await, orders_now);

    // Discarded: out of the default list, still listed with --handled.
    let (code, discarded) = dlq(data, &["discard", "--reason", "not-json"]).await;
    assert_eq!(
        (code, discarded["acted"].as_u64()),
        (0, Some(1)),
        "{discarded}"
    );
    let (_, pending) = dlq(data, &["list"]).await;
    assert_eq!(
        pending["dead_letters"].as_array().unwrap().len(),
        0,
        "{pending}"
    );
    let (_, all) = dlq(data, &["list", "--handled"]).await;
    assert_eq!(all["dead_letters"].as_array().unwrap().len(), 15);

    // Every dead letter handled, the corrected order through the pipeline: clean.
    let deadline = Instant::now() + Duration::from_secs(60);
    let report = loop {
        let report = audit(
            &kafka,
            pipeline.store.as_ref(),
            &FraudRules::default(),
            &AuditOptions::default(),
        )
        .await
        .unwrap();
        if report.is_clean() || Instant::now() > deadline {
            break report;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(report.is_clean(), "{}", report.summary());
    assert_eq!(
        (report.dead_letters.records, report.dead_letters.handled),
        (15, 15)
    );
    pipeline.stop().await.unwrap();
}

/// The ingest's dead letter for an order updated in its table (`source-update`), as the
/// ingest makes it: a redrive is refused (`source-change`) and sends nothing, also with a
/// corrected value; a discard handles it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingest_change_dead_letter_is_refused_a_redrive_and_discarded() {
    use orders_daemons::confirmed_producer::ConfirmedProducer;
    use orders_daemons::ingest::pgoutput::{ChangedRow, Lsn, OldRow, RowKind};
    let dir = tempfile::tempdir().unwrap();
    let mut topics = orders_core::kafka::pipeline_topics("orders");
    topics.extend(orders_core::kafka::operator_topics("orders"));
    let broker = orders_core::kafka::EmbeddedBroker::start(&topics).unwrap();
    let kafka = broker.settings();
    UpInfo {
        api: "http://127.0.0.1:1".into(),
        kafka: broker.bootstrap_servers().to_owned(),
    }
    .write(dir.path())
    .unwrap();
    let row = |status: &str| -> Vec<(String, Option<String>)> {
        [
            ("order_id", "4503599627370502"),
            ("customer_id", "5678"),
            ("amount", "41.01"),
            ("status", status),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Some((*v).to_owned())))
        .collect()
    };
    let change = ChangedRow {
        kind: RowKind::Update,
        table: "public.orders".into(),
        lsn: Lsn(0x16_B374_D848),
        old: Some(OldRow {
            key_only: false,
            columns: row("CREATED"),
        }),
        new: row("CANCELLED"),
        unchanged: Vec::new(),
    };
    let letter = orders_daemons::ingest::records::for_change("orders", &change).unwrap();
    ConfirmedProducer::new(&kafka, "dlq-test")
        .unwrap()
        .send_all(
            &[letter.record],
            &tokio_util::sync::CancellationToken::new(),
        )
        .await
        .unwrap();
    let data = dir.path();
    let (code, list) = dlq(data, &["list"]).await;
    assert_eq!(code, 0);
    let shown = first_where(&list, "reason", "source-update");
    assert_eq!(shown["key"], "4503599627370502");
    assert!(
        shown["error"]
            .as_str()
            .unwrap()
            .contains("status CREATED → CANCELLED"),
        "{shown}"
    );
    let fixed = dir.path().join("fixed.json");
    std::fs::write(&fixed, order_json(4_503_599_627_370_502, "41.01")).unwrap();
    for extra in [&[][..], &["--value", fixed.to_str().unwrap()][..]] {
        let coordinates = at(shown);
        let coordinates: Vec<&str> = coordinates.iter().map(String::as_str).collect();
        let args = [&["redrive"][..], &coordinates[..], extra].concat();
        let (code, r) = dlq(data, &args).await;
        assert_eq!(code, 1, "{r}");
        assert_eq!(r["results"][0]["outcome"], "refused", "{r}");
        assert_eq!(r["results"][0]["reason"], "source-change", "{r}");
    }
    let (code, bulk) = dlq(data, &["redrive", "--reason", "source-update"]).await;
    assert_eq!((code, bulk["acted"].as_u64()), (1, Some(0)), "{bulk}");
    assert_eq!(records_on(&kafka, "orders").await, 0, "nothing sent");
    let (code, discarded) = dlq(data, &["discard", "--reason", "source-update"]).await;
    assert_eq!(
        (code, discarded["acted"].as_u64()),
        (0, Some(1)),
        "{discarded}"
    );
    let (_, pending) = dlq(data, &["list"]).await;
    assert_eq!(pending["dead_letters"].as_array().unwrap().len(), 0);
}

#[test]
fn bad_flags_are_one_line_and_exit_2_and_no_kafka_exits_4() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["redrive"][..],
        &["discard", "--since", "soon"],
        &["redrive", "--all", "--value", "x.json"],
        &["list", "--limit", "many"],
        &["show", "orders.dlq", "zero", "1"],
    ] {
        let out = ordersctl_dlq(dir.path(), args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(out.stdout.is_empty());
    }
    // No KAFKA_BOOTSTRAP_SERVERS and no `ordersctl up` in the data dir.
    let out = ordersctl_dlq(dir.path(), &["list"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("up.json"));
    assert!(out.stdout.is_empty());
}

/// The console's dead-letter pane end to end: the list through the real API (`/api/dlq`),
/// the keys that select, confirm and redrive or discard, the action carried out on the real
/// broker with the operator's name in the ledger, and refused when done already.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_console_lists_redrives_and_discards_dead_letters() {
    use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
    use ordersctl::console::api::ApiClient;
    use ordersctl::console::dead_letter_actions::DeadLetterActions;
    use ordersctl::console::fetch::Update;
    use ordersctl::console::state::{App, Overlay, Pane};
    use ordersctl::console::theme::Theme;

    let dir = tempfile::tempdir().unwrap();
    let mut pipeline = LocalPipeline::start(LocalOptions::new(dir.path().join("orders.db")))
        .await
        .unwrap();
    let kafka = pipeline.kafka();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api_url = format!("http://{}", listener.local_addr().unwrap());
    let state =
        orders_api::AppState::new(pipeline.store.clone()).with_kafka(kafka.clone(), "orders");
    let api_stop = tokio_util::sync::CancellationToken::new();
    let api = tokio::spawn(orders_api::serve(listener, state, api_stop.clone()));
    UpInfo {
        api: api_url.clone(),
        kafka: pipeline.bootstrap_servers().to_owned(),
    }
    .write(dir.path())
    .unwrap();

    produce(&kafka, "9000003", "not json", &[]).await;
    produce(&kafka, "9000004", "{also not json", &[]).await;
    wait_for_records(&kafka, "orders.dlq", 6).await;

    // What the pane shows is what the API lists.
    let client = ApiClient::new(&api_url, None).unwrap();
    let letters = client.dead_letters(100).await.unwrap();
    assert_eq!(letters.len(), 6, "{letters:?}");
    assert!(letters
        .iter()
        .all(|d| d.reason == "not-json" && d.handled.is_none() && d.source.is_some()));

    let mut app = App::new(&api_url, Theme::mono(), 100, Instant::now());
    app.resize(120, 40);
    let press = |app: &mut App, code: KeyCode| app.on_key(KeyEvent::new(code, KeyModifiers::NONE));
    press(&mut app, KeyCode::Tab);
    press(&mut app, KeyCode::Tab);
    assert_eq!(app.focus, Pane::DeadLetters);
    assert!(app.control().dead_letters, "the pane asks for dead letters");
    app.apply(Update::DeadLetters(letters.clone()));
    let redriven = letters
        .iter()
        .position(|d| d.key.as_deref() == Some("9000003"))
        .unwrap();
    app.dead_letters_scroll.selected = redriven;

    // A no leaves everything as it was; a yes hands over one request.
    press(&mut app, KeyCode::Char('R'));
    assert!(matches!(app.overlay, Overlay::Confirm(_)));
    press(&mut app, KeyCode::Char('n'));
    assert_eq!(app.overlay, Overlay::None);
    assert!(app.take_request().is_none());
    press(&mut app, KeyCode::Char('R'));
    press(&mut app, KeyCode::Char('y'));
    let request = app.take_request().expect("a confirmed redrive");
    assert_eq!(request.at, letters[redriven].coordinates());
    assert!(app.take_request().is_none(), "handed over once");

    let orders_before = records_on(&kafka, "orders").await;
    let actions = DeadLetterActions::new(kafka.clone(), "orders", "console-op");
    let done = actions.act(&request).await;
    assert!(
        done.as_ref()
            .is_ok_and(|s| s.starts_with("redrove") && s.contains("to orders")),
        "{done:?}"
    );
    assert_eq!(records_on(&kafka, "orders").await, orders_before + 1);
    app.apply(Update::DeadLetterActed(done));
    assert!(app.acting.is_none());
    assert!(app.current_notice().is_some_and(|n| n.ok));

    // Done already: refused, nothing sent again.
    let again = actions.act(&request).await;
    assert!(
        again
            .as_ref()
            .is_err_and(|e| e.contains("already redriven")),
        "{again:?}"
    );
    assert_eq!(records_on(&kafka, "orders").await, orders_before + 1);

    // The other record, discarded from the record's own overlay.
    let discarded = letters
        .iter()
        .position(|d| d.key.as_deref() == Some("9000004"))
        .unwrap();
    app.dead_letters_scroll.selected = discarded;
    press(&mut app, KeyCode::Enter);
    assert!(matches!(app.overlay, Overlay::DeadLetter { .. }));
    press(&mut app, KeyCode::Char('D'));
    press(&mut app, KeyCode::Char('y'));
    let request = app.take_request().expect("a confirmed discard");
    let done = actions.act(&request).await;
    assert_eq!(done, Ok(format!("discarded {}", request.at)));
    assert_eq!(records_on(&kafka, "orders").await, orders_before + 1);

    // The ledger names the operator; the redriven record came back as a dead letter again
    // (it is still not JSON), counted.
    wait_for_records(&kafka, "orders.dlq", 9).await;
    let (_, all) = dlq(dir.path(), &["list", "--handled"]).await;
    let all = all["dead_letters"].as_array().unwrap().clone();
    let by_console: Vec<&Value> = all
        .iter()
        .filter(|d| d["handled"]["by"] == "console-op")
        .collect();
    assert_eq!(
        by_console.len(),
        6,
        "both records, each in three groups: {all:?}"
    );
    assert_eq!(
        all.iter().filter(|d| d["redrive_count"] == 1).count(),
        3,
        "{all:?}"
    );

    // A console without Kafka says so and what to run instead.
    let none = DeadLetterActions::Unavailable("no Kafka configured".into());
    let why = none.act(&request).await.unwrap_err();
    assert!(why.contains("ordersctl dlq discard orders.dlq"), "{why}");

    api_stop.cancel();
    api.await.unwrap().unwrap();
    pipeline.stop().await.unwrap();
}
