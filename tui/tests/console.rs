//! The operator console (`ordersctl tui`): rendering snapshots on a test backend (fixture
//! JSON in the API's shapes), the console's client against the real API, and a smoke test
//! of the real binary in a real terminal (tmux) against the real API over the embedded
//! pipeline.
#![allow(clippy::unwrap_used)]

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use orders_api::{AppState, LagOptions};
use orders_core::store::{OrderQuery, OrderStore};
use orders_core::Timestamp;
use orders_daemons::local_pipeline::{LocalOptions, LocalPipeline};
use orders_daemons::producer::{Pace, ProducerConfig};
use ordersctl::console::api::{
    Alert, ApiClient, CanaryStatus, DeadLetter, FraudDecision, GroupLag, LagStatus, OrderDetail,
    OrdersPage, Totals,
};
use ordersctl::console::draw;
use ordersctl::console::fetch::Update;
use ordersctl::console::state::App;
use ordersctl::console::theme::Theme;
use ratatui::backend::TestBackend;
use ratatui::style::{Color, Modifier};
use ratatui::Terminal;
use serde::Deserialize;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

fn resource(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/resources")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[derive(Deserialize)]
struct AlertsBody {
    alerts: Vec<Alert>,
}

#[derive(Deserialize)]
struct LagBody {
    groups: Vec<GroupLag>,
}

/// The fixture data, read through the console's own wire types.
struct Fixture {
    orders: OrdersPage,
    totals: Totals,
    alerts: Vec<Alert>,
    lag: Vec<GroupLag>,
}

fn fixture() -> Fixture {
    Fixture {
        orders: serde_json::from_str(&resource("orders.json")).unwrap(),
        totals: serde_json::from_str(&resource("totals.json")).unwrap(),
        alerts: serde_json::from_str::<AlertsBody>(&resource("alerts.json"))
            .unwrap()
            .alerts,
        lag: serde_json::from_str::<LagBody>(&resource("lag.json"))
            .unwrap()
            .groups,
    }
}

/// The detail of one fixture order, with the journey the API would give it.
fn detail_json(order: &Value) -> Value {
    let mut d = order.clone();
    let fraud = order["fraud"].as_bool().unwrap_or(false);
    let paid = order["payment_status"].as_str();
    let created = order["created_at"].as_str().unwrap().to_owned();
    let shifted = |ms: i64| {
        let t: chrono::DateTime<chrono::Utc> = created.parse().unwrap();
        (t + chrono::Duration::milliseconds(ms))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    d["journey"] = json!({
        "created": {"at": created},
        "fraud": if fraud {
            json!({"decision": "alert", "reason": "HIGH_AMOUNT_RISKY_COUNTRY",
                   "rule_id": "high-amount-risky-country", "at": shifted(5)})
        } else {
            json!({"decision": "clear", "reason": null, "rule_id": null, "at": null})
        },
        "payment": match paid {
            Some(s) => json!({"status": s, "at": shifted(112)}),
            None => json!({"status": "PENDING", "at": null}),
        },
        "stored": {"at": order["processed_at"]},
        "groups_behind": if paid.is_some() { json!([]) } else { json!(["payments-group"]) },
        "offsets_sampled_at": "2024-01-15T10:30:15Z",
    });
    d
}

fn order_json(id: u64) -> Value {
    let orders: Value = serde_json::from_str(&resource("orders.json")).unwrap();
    orders["orders"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["order_id"] == id)
        .unwrap()
        .clone()
}

/// Seconds of orders/s history before the snapshot's "now".
const HISTORY: u64 = 300;

/// A console fed with the fixture: five minutes of totals (a varying rate, ending at the
/// fixture's count), the orders, alerts and lag; "now" one second after the last answer.
/// Every time is relative to one `Instant`, so ages on screen are fixed.
fn loaded_app(width: u16, height: u16) -> App {
    let fx = fixture();
    let t0 = Instant::now();
    let mut app = App::new("http://127.0.0.1:8000", Theme::mono(), 10_000, t0);
    app.resize(width, height);
    let rate = |s: u64| 3 + (s / 20) % 5 + u64::from(s > 240) * 4;
    let mut count = fx.totals.order_count - (1..=HISTORY).map(rate).sum::<u64>();
    for s in 0..=HISTORY {
        if s > 0 {
            count += rate(s);
        }
        let mut totals = fx.totals.clone();
        totals.order_count = count;
        app.apply(Update::Totals(t0 + Duration::from_secs(s), totals));
    }
    app.apply(Update::Orders(fx.orders.orders));
    app.apply(Update::Alerts(fx.alerts));
    app.apply(Update::Lag(fx.lag));
    app.apply(Update::Connected(t0 + Duration::from_secs(HISTORY)));
    app.tick(t0 + Duration::from_secs(HISTORY + 1));
    app
}

fn render(app: &App) -> Terminal<TestBackend> {
    let mut terminal = Terminal::new(TestBackend::new(app.size.width, app.size.height)).unwrap();
    terminal.draw(|f| draw::render(f, app)).unwrap();
    terminal
}

fn screen(app: &App) -> String {
    render(app).backend().to_string()
}

/// The rows of a buffer as text, one character per cell, so a character index is a column.
fn rows_of(buffer: &ratatui::buffer::Buffer) -> Vec<String> {
    (0..buffer.area.height)
        .map(|y| {
            (0..buffer.area.width)
                .map(|x| buffer[(x, y)].symbol())
                .collect()
        })
        .collect()
}

/// The cell where `needle` starts on the first row that has it.
fn find(rows: &[String], needle: &str) -> (u16, u16) {
    let y = rows.iter().position(|r| r.contains(needle)).unwrap();
    let byte = rows[y].find(needle).unwrap();
    (rows[y][..byte].chars().count() as u16, y as u16)
}

fn press(app: &mut App, keys: &str) {
    for c in keys.chars() {
        app.on_key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE));
    }
}

fn key(app: &mut App, code: KeyCode) {
    app.on_key(KeyEvent::new(code, KeyModifiers::NONE));
}

#[test]
fn main_screen_80x24() {
    let app = loaded_app(80, 24);
    let s = screen(&app);
    assert!(s.contains("#1060"), "{s}");
    insta::assert_snapshot!(s);
}

#[test]
fn main_screen_160x48() {
    let app = loaded_app(160, 48);
    let s = screen(&app);
    assert!(s.contains("payments-group"), "{s}");
    insta::assert_snapshot!(s);
}

/// `/api/canary` as the API answers it: the last canary in `state`, with its legs.
fn canary_status(state: &str, paid_seconds: Option<f64>) -> CanaryStatus {
    serde_json::from_value(json!({
        "sla_seconds": 30.0, "window": 100, "polled_at": "2024-01-15T10:31:00Z",
        "last": {"order_id": 1061, "state": state, "created_at": "2024-01-15T10:30:00Z",
                 "decided_at": "2024-01-15T10:30:00.012Z", "flagged": false,
                 "paid_at": null, "stored_at": "2024-01-15T10:30:00.031Z",
                 "decision_seconds": 0.012, "paid_seconds": paid_seconds, "stored_seconds": 0.031},
        "pending": 1, "lost_in_window": if state == "lost" { 1 } else { 0 },
        "lost_total": if state == "lost" { 1 } else { 0 }, "samples": 40,
        "percentiles": {"decision": {"p50": 0.011, "p99": 0.02},
                        "paid": {"p50": 0.118, "p99": 0.241},
                        "stored": {"p50": 0.03, "p99": 0.06}},
        "canaries": []
    }))
    .unwrap()
}

#[test]
fn canary_journey_in_the_status_line_160x48() {
    let mut app = loaded_app(160, 48);
    app.apply(Update::Canary(Some(canary_status("complete", Some(0.123)))));
    let s = screen(&app);
    assert!(s.contains(" connected "), "{s}");
    assert!(s.contains("canary 0.12s p50 0.12s p99 0.24s"), "{s}");
    insta::assert_snapshot!(s);
}

#[test]
fn a_lost_canary_turns_the_status_red_160x48() {
    let mut app = loaded_app(160, 48);
    app.apply(Update::Canary(Some(canary_status("lost", None))));
    let s = screen(&app);
    assert!(s.contains(" CANARY LOST "), "{s}");
    assert!(s.contains("canary #1061 lost"), "{s}");
    insta::assert_snapshot!(s);
    app.theme = Theme { color: true };
    let terminal = render(&app);
    let buffer = terminal.backend().buffer();
    let rows = rows_of(buffer);
    assert_eq!(buffer[find(&rows, "CANARY LOST")].fg, Color::LightRed);
    assert_eq!(buffer[find(&rows, "#1061 lost")].fg, Color::LightRed);
    // Back to green once a canary completes again.
    app.apply(Update::Canary(Some(canary_status("complete", Some(0.2)))));
    let terminal = render(&app);
    let buffer = terminal.backend().buffer();
    assert_eq!(
        buffer[find(&rows_of(buffer), "connected ")].fg,
        Color::Green
    );
}

#[test]
fn starting_up_before_the_api_answers() {
    let mut app = App::new(
        "http://127.0.0.1:8000",
        Theme::mono(),
        10_000,
        Instant::now(),
    );
    app.resize(80, 24);
    insta::assert_snapshot!(screen(&app));
}

#[test]
fn order_detail_with_its_journey() {
    let mut app = loaded_app(80, 24);
    // The third newest order is flagged and not yet paid.
    press(&mut app, "jj");
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.control().detail, Some(1058));
    let detail: OrderDetail = serde_json::from_value(detail_json(&order_json(1058))).unwrap();
    app.apply(Update::Detail(1058, Ok(Some(Box::new(detail)))));
    insta::assert_snapshot!(screen(&app));
}

#[test]
fn order_detail_of_a_paid_order_160x48() {
    let mut app = loaded_app(160, 48);
    app.open_detail(1057);
    let detail: OrderDetail = serde_json::from_value(detail_json(&order_json(1057))).unwrap();
    app.apply(Update::Detail(1057, Ok(Some(Box::new(detail)))));
    insta::assert_snapshot!(screen(&app));
}

#[derive(Deserialize)]
struct DeadLettersBody {
    dead_letters: Vec<DeadLetter>,
}

/// The fixture console with its dead-letter pane focused and loaded.
fn dead_letter_app(width: u16, height: u16) -> App {
    let mut app = loaded_app(width, height);
    key(&mut app, KeyCode::Tab);
    key(&mut app, KeyCode::Tab);
    let body: DeadLettersBody = serde_json::from_str(&resource("dead_letters.json")).unwrap();
    app.apply(Update::DeadLetters(body.dead_letters));
    app
}

#[test]
fn dead_letter_pane_160x48() {
    let app = dead_letter_app(160, 48);
    assert!(app.control().dead_letters, "fetched only while shown");
    insta::assert_snapshot!(screen(&app));
}

#[test]
fn dead_letter_pane_80x24_record_and_confirmation() {
    let mut app = dead_letter_app(80, 24);
    key(&mut app, KeyCode::Down);
    key(&mut app, KeyCode::Enter);
    insta::assert_snapshot!("dead_letter_record", screen(&app));
    press(&mut app, "R");
    insta::assert_snapshot!("dead_letter_redrive_confirmation", screen(&app));
    press(&mut app, "y");
    let request = app.take_request().unwrap();
    assert_eq!(request.at.to_string(), "orders.dlq/2/5");
    insta::assert_snapshot!("dead_letter_redriving", screen(&app));
    app.apply(Update::DeadLetterActed(Err(
        "redrive orders.dlq/2/5 refused: redriven 3 times already (the loop guard)".into(),
    )));
    insta::assert_snapshot!("dead_letter_refused", screen(&app));
}

#[test]
fn dead_letters_unavailable_say_why() {
    let mut app = loaded_app(80, 24);
    key(&mut app, KeyCode::BackTab);
    app.apply(Update::Failed(
        ordersctl::console::fetch::Panel::DeadLetters,
        "HTTP 503 Kafka not available: no Kafka configured".into(),
    ));
    let s = screen(&app);
    assert!(s.contains("dead letters unavailable: HTTP 503"), "{s}");
}

/// A console started a moment ago draws the last hours' orders per minute at once: the
/// history is the store's (`/api/totals/windows`), not what this console happened to see.
#[test]
fn a_fresh_console_draws_the_stored_per_minute_history() {
    let t0 = Instant::now();
    let mut app = App::new("http://127.0.0.1:8000", Theme::mono(), 10_000, t0);
    app.resize(160, 48);
    let start = Timestamp::from_micros(1_705_314_600_000_000)
        .unwrap()
        .micros();
    let windows = (0..180i64)
        .map(|m| ordersctl::console::api::MinuteWindow {
            minute: Timestamp::from_micros(start + m * 60_000_000),
            order_count: (300 + (m % 30) * 10) as u64,
            total_sales: orders_core::Cents(0),
        })
        .collect();
    app.apply(Update::Windows(windows));
    app.apply(Update::Totals(t0, fixture().totals));
    app.apply(Update::Connected(t0));
    let s = screen(&app);
    let rows: Vec<&str> = s.lines().collect();
    let title = rows.iter().find(|r| r.contains("Orders/min")).unwrap();
    assert!(title.contains("Orders/min · last 32 min"), "{title}");
    assert!(s.contains("peak 590/min"), "{s}");
    let (x, y) = find(&rows_of(render(&app).backend().buffer()), "Orders/min");
    // The chart's bottom row, just above the pane's border: a bar for every minute.
    let bars: String = rows_of(render(&app).backend().buffer())[usize::from(y) + 7]
        .chars()
        .skip(usize::from(x))
        .take(30)
        .collect();
    assert_eq!(
        bars.chars().filter(|c| "▁▂▃▄▅▆▇█".contains(*c)).count(),
        30,
        "the sparkline is drawn: {bars:?}"
    );
}

/// The help overlay shows each of its lines whole, from 80×24 up: it once cut "detail of
/// the selected order, alert or dead lett" and dropped its last line at 80×24.
#[test]
fn help_overlay_shows_its_whole_text_at_80x24_and_larger() {
    use ordersctl::console::keys::{FILTER_HELP, HELP};
    for (width, height) in [(80, 24), (100, 30), (120, 40), (160, 48)] {
        let mut app = loaded_app(width, height);
        press(&mut app, "?");
        let s = screen(&app);
        for (k, what) in HELP.iter().chain(FILTER_HELP) {
            let line = format!("  {k:<20}{what}");
            assert!(s.contains(&line), "{width}×{height}: {line:?}\n{s}");
        }
        for line in [
            "Keys",
            "Filter words (after /)",
            "! and bold mark flagged orders. Lag: OK, WARN, STALL, STOP.",
        ] {
            assert!(s.contains(line), "{width}×{height}: {line:?}\n{s}");
        }
    }
}

#[test]
fn help_overlay() {
    let mut app = loaded_app(80, 24);
    press(&mut app, "?");
    insta::assert_snapshot!(screen(&app));
}

/// The screen of a loaded console whose API stopped answering 41 s after the last data.
fn disconnected_screen(width: u16, height: u16) -> String {
    let mut app = loaded_app(width, height);
    app.tick(app.now + Duration::from_secs(41));
    app.apply(Update::Disconnected {
        error: "cannot connect: connection refused".into(),
        retry_at: app.now + Duration::from_secs(3),
    });
    let s = screen(&app);
    assert!(s.contains("API UNREACHABLE"), "{s}");
    assert!(s.contains("DISCONNECTED"), "{s}");
    // Lag and rate are the last known, not live: said so, and how to retry at once.
    assert!(s.contains("Consumer lag · STALE"), "{s}");
    assert!(s.contains("stale"), "{s}");
    assert!(!s.contains("10.2/s"), "no rate shown as live: {s}");
    assert!(s.contains("r retry now"), "{s}");
    s
}

/// `r` while disconnected asks the fetcher to retry now instead of waiting out the backoff.
#[test]
fn r_retries_now_while_disconnected() {
    let mut app = loaded_app(80, 24);
    let before = app.control();
    press(&mut app, "r");
    assert_eq!(app.control(), before, "connected: nothing to retry");
    app.apply(Update::Disconnected {
        error: "cannot connect: connection refused".into(),
        retry_at: app.now + Duration::from_secs(8),
    });
    press(&mut app, "r");
    assert_ne!(app.control(), before, "the fetcher is woken");
    assert!(screen(&app).contains("retrying now"));
}

#[test]
fn disconnected_keeps_the_last_data_under_a_banner() {
    insta::assert_snapshot!(disconnected_screen(80, 24));
}

/// A console whose API refused its credentials: a banner that says what to do, and no
/// countdown to a retry (there is none).
#[test]
fn unauthorised_shows_a_banner_that_names_the_token() {
    let mut app = App::new(
        "https://orders.example.com",
        Theme::mono(),
        10_000,
        Instant::now(),
    );
    app.resize(80, 24);
    app.apply(Update::Unauthorised(
        "HTTP 401: the API refused the request without a token".into(),
    ));
    let s = screen(&app);
    assert!(s.contains("NOT AUTHORISED: set ORDERS_API_TOKEN"), "{s}");
    assert!(!s.contains("retrying"), "{s}");
    insta::assert_snapshot!(s);
}

/// The console's client against an API that asks for a token: refused without it or with
/// another, answered with it; and the fetch task reports the refusal once and stops asking.
#[tokio::test]
async fn a_refused_token_is_reported_once_and_not_retried() {
    use orders_api::auth::{Access, Credentials};
    use orders_core::config::Secret;
    use ordersctl::console::api::ApiError;
    use ordersctl::console::fetch::{poll, Control, FetchSettings};
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(
        orders_core::store::SqliteStore::open(dir.path().join("orders.db")).unwrap(),
    );
    let access = Access::Required(std::sync::Arc::new(Credentials::new(
        &[Secret::new("console-token")],
        None,
    )));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let server = tokio::spawn(orders_api::serve(
        listener,
        AppState::new(store).with_access(access),
        stop.clone(),
    ));

    let with = |token: Option<&str>| ApiClient::new(&url, token.map(Secret::new)).unwrap();
    assert!(matches!(
        with(None).totals().await,
        Err(ApiError::Unauthorised(_))
    ));
    assert!(matches!(
        with(Some("another")).totals().await,
        Err(ApiError::Unauthorised(_))
    ));
    assert_eq!(
        with(Some("console-token"))
            .totals()
            .await
            .unwrap()
            .order_count,
        0
    );

    let settings = FetchSettings {
        interval: Duration::from_millis(1),
        ..FetchSettings::default()
    };
    let (_control_tx, control_rx) = tokio::sync::watch::channel(Control::default());
    let (updates_tx, mut updates) = tokio::sync::mpsc::channel(64);
    let fetch_stop = CancellationToken::new();
    let fetcher = tokio::spawn(poll(
        with(Some("wrong")),
        settings,
        control_rx,
        updates_tx,
        fetch_stop.clone(),
    ));
    match updates.recv().await.unwrap() {
        Update::Unauthorised(e) => assert!(e.contains("401"), "{e}"),
        other => panic!("expected the refusal, got {other:?}"),
    }
    // Time for many rounds at a 1 ms interval, had the task kept asking.
    for _ in 0..20 {
        with(Some("console-token")).totals().await.unwrap();
    }
    fetch_stop.cancel();
    fetcher.await.unwrap();
    assert!(updates.try_recv().is_err(), "nothing after the refusal");
    let metrics = reqwest::Client::new()
        .get(format!("{url}/metrics"))
        .bearer_auth("console-token")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // One round (totals, orders, alerts, lag, canary) and the two refused calls above.
    assert!(
        metrics.contains("orders_api_auth_failures_total{reason=\"bad_token\"} 6"),
        "{metrics}"
    );
    stop.cancel();
    server.await.unwrap().unwrap();
}

#[test]
fn filtered_view_while_typing_and_applied() {
    let mut app = loaded_app(80, 24);
    press(&mut app, "/FR fraud");
    let typing = screen(&app);
    insta::assert_snapshot!("filter_being_typed", typing);
    key(&mut app, KeyCode::Enter);
    let s = screen(&app);
    assert!(s.contains("match “FR fraud”"), "{s}");
    insta::assert_snapshot!("filter_applied", s);
}

#[test]
fn help_overlay_160x48() {
    let mut app = loaded_app(160, 48);
    press(&mut app, "?");
    let s = screen(&app);
    assert!(s.contains("filter"), "{s}");
    insta::assert_snapshot!(s);
}

#[test]
fn disconnected_160x48() {
    insta::assert_snapshot!(disconnected_screen(160, 48));
}

#[test]
fn filtered_view_160x48() {
    let mut app = loaded_app(160, 48);
    press(&mut app, "/DE CANCELLED");
    key(&mut app, KeyCode::Enter);
    let s = screen(&app);
    assert!(s.contains("match “DE CANCELLED”"), "{s}");
    insta::assert_snapshot!(s);
}

#[test]
fn a_terminal_too_small_says_so() {
    let mut app = loaded_app(80, 24);
    app.resize(40, 10);
    let s = screen(&app);
    assert!(s.contains("too small"), "{s}");
}

/// Without colour every distinction is still on screen: words for the lag status, `!` and
/// bold for flagged orders, reverse video for the selection.
#[test]
fn monochrome_screen_uses_no_colour_and_marks_fraud_in_bold() {
    let app = loaded_app(80, 24);
    let terminal = render(&app);
    let buffer = terminal.backend().buffer();
    for cell in buffer.content() {
        assert_eq!(
            cell.fg,
            Color::Reset,
            "colour used without colour: {cell:?}"
        );
        assert_eq!(
            cell.bg,
            Color::Reset,
            "colour used without colour: {cell:?}"
        );
    }
    let rows = rows_of(buffer);
    // #1058 is flagged, #1057 is not.
    let (id_x, fraud_row) = find(&rows, "#1058");
    let (_, clean_row) = find(&rows, "#1057");
    assert_eq!(buffer[(1, fraud_row)].symbol(), "!");
    assert!(buffer[(id_x, fraud_row)].modifier.contains(Modifier::BOLD));
    assert!(!buffer[(id_x, clean_row)].modifier.contains(Modifier::BOLD));
    // The selected (newest) row is in reverse video.
    let (x, selected) = find(&rows, "#1060");
    assert!(buffer[(x, selected)].modifier.contains(Modifier::REVERSED));
    let (x, y) = find(&rows, "WARN");
    assert!(buffer[(x, y)].modifier.contains(Modifier::BOLD));
}

#[test]
fn colour_repeats_what_the_words_say() {
    let mut app = loaded_app(80, 24);
    app.theme = Theme { color: true };
    let terminal = render(&app);
    let buffer = terminal.backend().buffer();
    let rows = rows_of(buffer);
    assert_eq!(buffer[find(&rows, "#1058")].fg, Color::LightRed);
    assert_eq!(buffer[find(&rows, "WARN")].fg, Color::Yellow);
    assert_eq!(buffer[find(&rows, "connected ")].fg, Color::Green);
}

/// Many orders held: only the newest that fit are drawn.
#[test]
fn many_orders_held_draw_the_same_visible_rows() {
    let mut app = loaded_app(80, 24);
    let fx = fixture();
    let template = fx.orders.orders[3].clone();
    // Stored an hour before the fixture's orders.
    let earlier = template
        .processed_at
        .and_then(|t| orders_core::Timestamp::from_micros(t.micros() - 3_600_000_000));
    app.apply(Update::Orders(
        (1..=900)
            .map(|id| {
                let mut d = template.clone();
                d.order_id = id;
                d.processed_at = earlier;
                d
            })
            .collect(),
    ));
    assert_eq!(app.orders.len(), 960);
    let s = screen(&app);
    assert!(s.contains("#1060") && s.contains("960 held"), "{s}");
    assert!(!s.contains("#900 "), "{s}");
}

// ---------------------------------------------------------------------------------------
// Against the real read side: the embedded pipeline (librdkafka's mock cluster over TCP,
// the daemons, a SQLite file) and the `orders-api` server over it.

/// A pipeline that has produced, processed and stored `orders` orders, and the HTTP API
/// over its store and consumer groups on 127.0.0.1.
struct RealApi {
    _dir: tempfile::TempDir,
    pipeline: LocalPipeline,
    state: AppState,
    addr: SocketAddr,
    stop: CancellationToken,
    server: tokio::task::JoinHandle<Result<(), orders_api::ApiError>>,
}

/// The most any single wait in these tests may take.
const WAIT: Duration = Duration::from_secs(60);

impl RealApi {
    async fn start(orders: u64) -> RealApi {
        let dir = tempfile::tempdir().unwrap();
        let mut options = LocalOptions::new(dir.path().join("orders.db"));
        options.producer = Some(ProducerConfig {
            topic: "orders".into(),
            pace: Pace::Rate(0.0),
            max_orders: Some(orders),
            seed: 42,
            canary_interval: None,
        });
        options.payment.delay = Duration::from_millis(5);
        let pipeline = LocalPipeline::start(options).await.unwrap();
        // Everything produced, judged, paid and stored.
        let deadline = Instant::now() + WAIT;
        loop {
            let t = pipeline.store.totals().await.unwrap();
            if t.order_count == orders && t.payment_count == orders {
                break;
            }
            assert!(Instant::now() < deadline, "pipeline stuck at {t:?}");
            pipeline.progress.changed(Duration::from_millis(50)).await;
        }
        let state = AppState::new(pipeline.store.clone()).with_kafka_options(
            pipeline.kafka(),
            "orders",
            LagOptions {
                interval: Duration::from_millis(200),
                window: 5,
                kafka_timeout: Duration::from_secs(5),
            },
        );
        let stop = CancellationToken::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(orders_api::serve(listener, state.clone(), stop.clone()));
        let api = RealApi {
            _dir: dir,
            pipeline,
            state,
            addr,
            stop,
            server,
        };
        // Every group has committed past every order (offsets commit once a second).
        let client = ApiClient::new(&api.url(), None).unwrap();
        loop {
            let lag = client.lag().await;
            let caught_up = lag
                .as_ref()
                .is_ok_and(|groups| groups.len() == 3 && groups.iter().all(|g| g.total_lag == 0));
            if caught_up {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "groups never caught up: {lag:#?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        api
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The API goes away (the pipeline keeps running).
    async fn stop_api(&mut self) {
        self.stop.cancel();
        (&mut self.server).await.unwrap().unwrap();
    }

    /// The API comes back on the same address.
    async fn restart_api(&mut self) {
        self.stop = CancellationToken::new();
        let listener = tokio::net::TcpListener::bind(self.addr).await.unwrap();
        self.server = tokio::spawn(orders_api::serve(
            listener,
            self.state.clone(),
            self.stop.clone(),
        ));
    }

    async fn shut_down(mut self) {
        self.stop_api().await;
        self.pipeline.stop().await.unwrap();
    }
}

async fn raw(url: &str) -> Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

/// The keys of a JSON object, sorted.
fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .map(String::as_str)
        .collect();
    k.sort_unstable();
    k
}

fn sorted<'a>(names: &[&'a str]) -> Vec<&'a str> {
    let mut v = names.to_vec();
    v.sort_unstable();
    v
}

/// The fields the console's types read from each answer of the API. When the API grows a
/// field, this test fails, so the console decides whether to show it.
const ORDER_FIELDS: &[&str] = &[
    "order_id",
    "customer_id",
    "amount",
    "currency",
    "country",
    "status",
    "created_at",
    "source",
    "kafka_partition",
    "kafka_offset",
    "processed_at",
    "fraud",
    "fraud_reason",
    "payment_status",
];
const TOTALS_FIELDS: &[&str] = &[
    "order_count",
    "total_sales",
    "average_order_value",
    "by_country",
    "by_status",
    "fraud_count",
    "fraud_sales",
    "fraud_rate_by_count",
    "fraud_rate_by_sales",
    "payment_count",
    "paid_count",
    "failed_count",
];
const ALERT_FIELDS: &[&str] = &[
    "order_id",
    "reason",
    "amount",
    "country",
    "rule_id",
    "detected_at",
    "stored_at",
];
/// `sampled_at` and `window` are read by nobody here: the console shows ages of its own.
const LAG_FIELDS: &[&str] = &["sampled_at", "window", "groups"];
const GROUP_FIELDS: &[&str] = &[
    "group",
    "topics",
    "status",
    "reason",
    "total_lag",
    "max_lag_seconds",
    "partitions",
];
const PARTITION_FIELDS: &[&str] = &[
    "topic",
    "partition",
    "committed",
    "low_watermark",
    "high_watermark",
    "lag",
    "lag_seconds",
];
const JOURNEY_FIELDS: &[&str] = &[
    "created",
    "fraud",
    "payment",
    "stored",
    "groups_behind",
    "offsets_sampled_at",
];

#[test]
fn the_real_api_answers_in_the_shapes_the_console_reads() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        const N: u64 = 40;
        let api = RealApi::start(N).await;
        let url = api.url();
        let store = api.pipeline.store.clone();

        let totals = raw(&format!("{url}/api/totals")).await;
        assert_eq!(keys(&totals), sorted(TOTALS_FIELDS));
        assert_eq!(
            keys(
                &totals["by_country"]
                    .as_object()
                    .unwrap()
                    .values()
                    .next()
                    .unwrap()
                    .clone()
            ),
            sorted(&["order_count", "total_sales"])
        );
        let page = raw(&format!("{url}/api/orders?limit=5")).await;
        assert_eq!(keys(&page), sorted(&["orders", "next_before"]));
        assert_eq!(keys(&page["orders"][0]), sorted(ORDER_FIELDS));
        let alerts = raw(&format!("{url}/api/alerts?limit=5")).await;
        assert_eq!(keys(&alerts), vec!["alerts"]);
        assert_eq!(keys(&alerts["alerts"][0]), sorted(ALERT_FIELDS));
        let lag = raw(&format!("{url}/api/lag")).await;
        assert_eq!(keys(&lag), sorted(LAG_FIELDS));
        assert_eq!(keys(&lag["groups"][0]), sorted(GROUP_FIELDS));
        assert_eq!(
            keys(&lag["groups"][0]["partitions"][0]),
            sorted(PARTITION_FIELDS)
        );
        let flagged = alerts["alerts"][0]["order_id"].as_u64().unwrap();
        let detail = raw(&format!("{url}/api/orders/{flagged}")).await;
        let mut detail_fields = ORDER_FIELDS.to_vec();
        detail_fields.push("journey");
        assert_eq!(keys(&detail), sorted(&detail_fields));
        assert_eq!(keys(&detail["journey"]), sorted(JOURNEY_FIELDS));
        assert_eq!(
            keys(&detail["journey"]["fraud"]),
            sorted(&["decision", "reason", "rule_id", "at"])
        );
        assert_eq!(
            keys(&detail["journey"]["payment"]),
            sorted(&["status", "at"])
        );
        assert_eq!(keys(&detail["journey"]["created"]), vec!["at"]);
        assert_eq!(keys(&detail["journey"]["stored"]), vec!["at"]);

        // The same answers through the console's client carry the store's values.
        let client = ApiClient::new(&url, None).unwrap();
        let expected = store.totals().await.unwrap();
        let t = client.totals().await.unwrap();
        assert_eq!(t.order_count, N);
        assert_eq!(t.total_sales, expected.total_sales);
        assert_eq!(t.average_order_value, expected.average());
        assert_eq!(t.fraud_count, expected.fraud_count);
        assert_eq!(t.paid_count, expected.paid_count);
        assert_eq!(t.failed(), N - expected.paid_count);
        let de = t.by_country.get("DE").map(|c| c.order_count);
        assert_eq!(de, expected.by_country.get("DE").map(|c| c.count));
        // The per-minute history: every order of the pipeline (created just now) is in it.
        let windows = client.windows(10).await.unwrap();
        assert_eq!(windows.len(), 10);
        assert_eq!(windows.iter().map(|w| w.order_count).sum::<u64>(), N);
        assert_eq!(
            windows.iter().map(|w| w.total_sales.0).sum::<i64>(),
            expected.total_sales.0
        );

        let stored = store
            .latest_orders(&OrderQuery {
                limit: 1000,
                ..OrderQuery::default()
            })
            .await
            .unwrap();
        let page = client.orders(15, None).await.unwrap();
        assert_eq!(page.orders.len(), 15);
        let rest = client.orders(1000, page.next_before).await.unwrap();
        assert_eq!(page.orders.len() + rest.orders.len(), N as usize);
        assert_eq!(rest.next_before, None);
        for (got, want) in page.orders.iter().chain(&rest.orders).zip(&stored) {
            assert_eq!(got.order_id, want.order.order_id);
            assert_eq!(got.amount, want.order.amount);
            assert_eq!(got.country, want.order.country.as_str());
            assert_eq!(got.status, want.order.status.as_str());
            assert_eq!(got.created_at, Some(want.order.created_at));
            assert_eq!(got.kafka_partition, Some(want.kafka_partition));
            assert_eq!(got.kafka_offset, Some(want.kafka_offset));
            assert_eq!(got.fraud, want.fraud);
            assert_eq!(got.fraud_reason, want.fraud_reason);
            assert_eq!(
                got.payment_status.as_deref(),
                want.payment_status.map(|s| s.as_str())
            );
        }

        let d = client.order(flagged).await.unwrap().unwrap();
        assert_eq!(d.order.order_id, flagged);
        assert!(d.order.fraud);
        assert_eq!(d.journey.fraud.decision, FraudDecision::Alert);
        assert_eq!(
            d.journey.fraud.reason.as_deref(),
            Some("HIGH_AMOUNT_RISKY_COUNTRY")
        );
        assert!(d.journey.fraud.at.is_some() && d.journey.stored.at.is_some());
        assert_eq!(d.journey.groups_behind, Some(vec![]));
        assert!(
            client.order(N + 1000).await.unwrap().is_none(),
            "404 is None"
        );

        let alerts = client.alerts(200).await.unwrap();
        assert_eq!(alerts.len() as u64, expected.fraud_count);
        // Stored last first (docs/json.md), exactly the store's alerts.
        let arrival = |a: &ordersctl::console::api::Alert| (a.stored_at, a.order_id);
        assert!(alerts.windows(2).all(|w| arrival(&w[0]) > arrival(&w[1])));
        let want = store.latest_alerts(200).await.unwrap();
        let want_ids: Vec<u64> = want.iter().map(|a| a.alert.order_id).collect();
        let got_ids: Vec<u64> = alerts.iter().map(|a| a.order_id).collect();
        assert_eq!(got_ids, want_ids);

        // The status is judged over a window of samples: wait (bounded) until the window
        // holds only caught-up samples.
        let deadline = Instant::now() + WAIT;
        let lag = loop {
            let lag = client.lag().await.unwrap();
            if lag.iter().all(|g| g.status == LagStatus::Ok) {
                break lag;
            }
            assert!(Instant::now() < deadline, "groups never all OK: {lag:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let names: Vec<&str> = lag.iter().map(|g| g.group.as_str()).collect();
        assert_eq!(names, ["fraud-group", "payments-group", "analytics-group"]);

        api.shut_down().await;
    });
}

/// A tmux server of its own (private socket), one session of a fixed size running `sh`.
struct Tmux {
    socket: PathBuf,
}

const SESSION: &str = "console-smoke";

impl Tmux {
    fn start(dir: &Path, width: u16, height: u16) -> Tmux {
        let found = std::process::Command::new("tmux").arg("-V").output();
        assert!(
            found.is_ok_and(|o| o.status.success()),
            "the console smoke test needs tmux (apt-get install -y tmux)"
        );
        let tmux = Tmux {
            socket: dir.join("tmux.sock"),
        };
        tmux.run(&[
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-s",
            SESSION,
            "-x",
            &width.to_string(),
            "-y",
            &height.to_string(),
            "env PS1='smoke$ ' TERM=xterm-256color sh",
        ]);
        tmux
    }

    fn run(&self, args: &[&str]) -> String {
        let out = std::process::Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Types `text` literally, then presses Enter when asked.
    fn type_text(&self, text: &str, enter: bool) {
        self.run(&["send-keys", "-t", SESSION, "-l", text]);
        if enter {
            self.key("Enter");
        }
    }

    fn key(&self, key: &str) {
        self.run(&["send-keys", "-t", SESSION, key]);
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", SESSION])
    }

    /// The screen with its attributes as escape sequences.
    fn screen_with_attributes(&self) -> String {
        self.run(&["capture-pane", "-p", "-e", "-t", SESSION])
    }

    fn alternate_screen_on(&self) -> bool {
        self.run(&["display-message", "-p", "-t", SESSION, "#{alternate_on}"])
            .trim()
            == "1"
    }

    /// Polls the screen until `done` holds; fails with the last screen after [`WAIT`].
    fn wait_for(&self, what: &str, done: impl Fn(&Tmux, &str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let screen = self.screen();
            if done(self, &screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "waited {WAIT:?} for {what}; the screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = std::process::Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .output();
    }
}

/// Whether any SGR sequence on the screen sets a foreground or background colour.
fn uses_colour(screen: &str) -> bool {
    screen.split("\x1b[").skip(1).any(|seq| {
        let Some(params) = seq.split_once('m').map(|(p, _)| p) else {
            return false;
        };
        if params.contains(|c: char| !(c.is_ascii_digit() || c == ';')) {
            return false;
        }
        params.split(';').any(|p| {
            matches!(
                p.parse::<u16>(),
                Ok(30..=38 | 40..=48 | 90..=97 | 100..=107)
            )
        })
    })
}

/// The order ids in the rows of the orders table, top to bottom.
fn table_ids(screen: &str) -> Vec<(u64, &str)> {
    screen
        .lines()
        .skip_while(|l| !l.contains("Orders · newest first"))
        .skip(2)
        .take_while(|l| !l.starts_with('└'))
        .filter_map(|l| {
            let after = l.split_once('#')?.1;
            let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
            Some((digits.parse().ok()?, l))
        })
        .collect()
}

/// After the console exits, the shell is back on the normal screen and the terminal is in
/// cooked mode again: a typed command echoes and runs.
fn assert_terminal_restored(tmux: &Tmux, marker: u32) {
    tmux.wait_for("the console to leave the alternate screen", |t, _| {
        !t.alternate_screen_on()
    });
    tmux.type_text(&format!("echo restored-$(({marker} + 1))"), true);
    // Only running the command prints the sum; its echo shows the expression.
    let want = format!("restored-{}", marker + 1);
    let screen = tmux.wait_for("the shell to run a command", |_, s| {
        s.lines().any(|l| l.trim_end().ends_with(&want))
    });
    assert!(!screen.contains("newest first"), "{screen}");
}

#[test]
fn smoke_in_tmux_against_the_real_api() {
    const N: u64 = 120;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut api = rt.block_on(RealApi::start(N));
    // What the table must show once filtered by the newest order's country.
    let stored = rt
        .block_on(api.pipeline.store.latest_orders(&OrderQuery {
            limit: 1000,
            ..OrderQuery::default()
        }))
        .unwrap();
    // Newest by arrival, which need not be order N: orders stored in a later batch (from
    // another partition) arrive after it.
    assert_eq!(stored.len() as u64, N);
    let newest = &stored[0].order;
    let country = newest.country.as_str().to_owned();
    let same_country: Vec<u64> = stored
        .iter()
        .filter(|d| d.order.country.as_str() == country)
        .map(|d| d.order.order_id)
        .collect();

    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("tui.log");
    let command = format!(
        "{} tui --api {} --refresh-ms 200 --log-file {}",
        env!("CARGO_BIN_EXE_ordersctl"),
        api.url(),
        log.display()
    );
    let tmux = Tmux::start(dir.path(), 100, 30);
    tmux.wait_for("the shell prompt", |_, s| s.contains("smoke$"));
    tmux.type_text(&command, true);

    // Rows appear, newest first, with the consumer groups and the totals.
    let screen = tmux.wait_for("order rows", |_, s| {
        table_ids(s).len() >= 10 && s.contains(" connected ") && s.contains("analytics")
    });
    assert!(tmux.alternate_screen_on());
    assert!(uses_colour(&tmux.screen_with_attributes()));
    let ids: Vec<u64> = table_ids(&screen).iter().map(|(id, _)| *id).collect();
    // Newest first by arrival, as the store lists them (not by id: orders stored in
    // different batches under load arrive out of id order).
    let by_arrival: Vec<u64> = stored.iter().take(10).map(|d| d.order.order_id).collect();
    assert_eq!(ids[..10], by_arrival[..], "{screen}");
    assert!(screen.contains(&format!("Orders    {N}")), "{screen}");

    // `/` narrows the table to the orders of one country.
    tmux.type_text("/", false);
    tmux.type_text(&country, false);
    tmux.key("Enter");
    let title = format!("{} of {N} match “{country}”", same_country.len());
    // The whole table, not only its title: a capture can land mid-frame.
    let screen = tmux.wait_for("the filter to apply", |_, s| {
        s.contains(&title)
            && table_ids(s)
                .iter()
                .all(|(_, r)| r.contains(&format!(" {country} ")))
    });
    let rows = table_ids(&screen);
    assert!(!rows.is_empty(), "{screen}");
    assert!(
        rows.iter()
            .all(|(_, r)| r.contains(&format!(" {country} "))),
        "{screen}"
    );
    let shown: Vec<u64> = rows.iter().map(|(id, _)| *id).collect();
    assert_eq!(shown[..], same_country[..shown.len()], "{screen}");

    // Enter opens the selected order's detail, with its journey.
    tmux.key("Enter");
    let screen = tmux.wait_for("the detail", |_, s| {
        s.contains(&format!("Order #{}", newest.order_id)) && s.contains("fraud decision")
    });
    assert!(
        screen.contains("Journey") && screen.contains("stored"),
        "{screen}"
    );
    tmux.wait_for("the groups to be known past the order", |_, s| {
        s.contains("Every consumer group is past this order")
    });
    tmux.key("Escape");
    tmux.wait_for("the detail to close", |_, s| !s.contains("Journey"));

    // The API goes away: a banner, and the console comes back by itself when it returns.
    rt.block_on(api.stop_api());
    tmux.wait_for("the disconnected banner", |_, s| {
        s.contains("API UNREACHABLE")
    });
    rt.block_on(api.restart_api());
    tmux.wait_for("the console to reconnect", |_, s| {
        !s.contains("API UNREACHABLE") && s.contains(" connected ")
    });

    // q quits and gives the terminal back.
    tmux.type_text("q", false);
    assert_terminal_restored(&tmux, 41);

    // With NO_COLOR the screen has no colour at all, and the lag status still reads;
    // SIGTERM (how ECS and Docker stop things) also gives the terminal back.
    let pid_file = dir.path().join("pid");
    tmux.type_text(
        &format!(
            "NO_COLOR=1 sh -c 'echo $$ > {}; exec {command}'",
            pid_file.display()
        ),
        true,
    );
    tmux.wait_for("order rows again", |_, s| {
        table_ids(s).len() >= 10 && s.contains(" OK ") && s.contains(" connected ")
    });
    let attributes = tmux.screen_with_attributes();
    assert!(!uses_colour(&attributes), "{attributes:?}");
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", pid.trim()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert_terminal_restored(&tmux, 42);

    // The console logged to its file, not to the screen.
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("console starting"), "{logged}");
    assert!(logged.contains("API unreachable"), "{logged}");
    rt.block_on(api.shut_down());
}

/// `ordersctl up` without `--headless`: the console opens on the embedded pipeline, and
/// quitting it stops everything (the API, the daemons) with a clean exit.
#[test]
fn up_opens_the_console_and_quitting_it_stops_everything() {
    const N: u64 = 150;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let tmux = Tmux::start(dir.path(), 120, 36);
    tmux.wait_for("the shell prompt", |_, s| s.contains("smoke$"));
    tmux.type_text(
        &format!(
            "{} up --orders {N} --rate 0 --payment-delay-ms 5 --port 0 --data-dir {}; \
             echo \"up-exited-$((0 + $?))\"",
            env!("CARGO_BIN_EXE_ordersctl"),
            data.display()
        ),
        true,
    );
    let screen = tmux.wait_for("the console with every order", |_, s| {
        // The totals count every order. The table is by arrival and shows the latest
        // screenful: orders stored in a later batch may push order N off it, so it must
        // only list orders of this run (or canaries, in their own id range).
        let ids = table_ids(s);
        s.contains(&format!("Orders    {N}"))
            && !ids.is_empty()
            && ids
                .iter()
                .all(|(id, _)| *id <= N || orders_core::canary::is_canary_id(*id))
    });
    assert!(tmux.alternate_screen_on(), "{screen}");
    assert!(screen.contains(" connected "), "{screen}");
    let up: Value =
        serde_json::from_str(&std::fs::read_to_string(data.join("up.json")).unwrap()).unwrap();
    let api = up["api"].as_str().unwrap().to_owned();
    let addr = api.trim_start_matches("http://").to_owned();
    assert!(
        std::net::TcpStream::connect(&addr).is_ok(),
        "the API serves"
    );

    tmux.type_text("q", false);
    tmux.wait_for("up to exit", |_, s| s.contains("up-exited-0"));
    assert!(!tmux.alternate_screen_on());
    assert!(
        std::net::TcpStream::connect(&addr).is_err(),
        "the API stopped with the console"
    );
    assert!(!data.join("up.json").exists(), "up.json is removed");
    // The daemons logged to the file, never onto the screen the console drew.
    let log = std::fs::read_to_string(data.join("ordersctl.log")).unwrap();
    assert!(log.contains("api stopped"), "{log}");
    let after = tmux.screen();
    assert!(!after.contains(" INFO "), "{after}");
}

/// The snapshot fixtures have the same fields as the real API's answers above.
#[test]
fn the_fixtures_have_the_real_api_shapes() {
    let totals: Value = serde_json::from_str(&resource("totals.json")).unwrap();
    assert_eq!(keys(&totals), sorted(TOTALS_FIELDS));
    let orders: Value = serde_json::from_str(&resource("orders.json")).unwrap();
    assert_eq!(keys(&orders), sorted(&["orders", "next_before"]));
    for o in orders["orders"].as_array().unwrap() {
        assert_eq!(keys(o), sorted(ORDER_FIELDS));
        let journey = detail_json(o)["journey"].clone();
        assert_eq!(keys(&journey), sorted(JOURNEY_FIELDS));
    }
    let alerts: Value = serde_json::from_str(&resource("alerts.json")).unwrap();
    for a in alerts["alerts"].as_array().unwrap() {
        assert_eq!(keys(a), sorted(ALERT_FIELDS));
    }
    let lag: Value = serde_json::from_str(&resource("lag.json")).unwrap();
    assert_eq!(keys(&lag), sorted(LAG_FIELDS));
    for g in lag["groups"].as_array().unwrap() {
        assert_eq!(keys(g), sorted(GROUP_FIELDS));
        for p in g["partitions"].as_array().unwrap() {
            assert_eq!(keys(p), sorted(PARTITION_FIELDS));
        }
    }
}

/// Set in the child run of [`a_panic_inside_the_console_restores_the_terminal`].
const PANIC_CHILD: &str = "ORDERSCTL_CONSOLE_PANIC_CHILD";

/// Run normally, this test starts itself again inside a tmux pane, where it takes the
/// terminal over as the console does, draws, and panics: the panic hook must give the
/// shell a normal screen in cooked mode, with the panic message readable on it.
#[test]
fn a_panic_inside_the_console_restores_the_terminal() {
    if std::env::var_os(PANIC_CHILD).is_some() {
        let mut guard = ordersctl::console::terminal::TerminalGuard::enter().unwrap();
        guard
            .terminal
            .draw(|f| {
                f.render_widget(ratatui::widgets::Paragraph::new("console drawn"), f.area());
            })
            .unwrap();
        panic!("a deliberate panic with the terminal in raw mode");
    }
    let dir = tempfile::tempdir().unwrap();
    let tmux = Tmux::start(dir.path(), 100, 30);
    tmux.wait_for("the shell prompt", |_, s| s.contains("smoke$"));
    let me = std::env::current_exe().unwrap();
    tmux.type_text(
        &format!(
            "{PANIC_CHILD}=1 {} a_panic_inside_the_console_restores_the_terminal --exact \
             --nocapture --test-threads 1",
            me.display()
        ),
        true,
    );
    let screen = tmux.wait_for("the child to panic and end", |_, s| {
        s.contains("a deliberate panic with the terminal in raw mode")
            && s.contains("test result: FAILED")
    });
    assert!(!screen.contains("console drawn"), "{screen}");
    assert_terminal_restored(&tmux, 43);
}

/// At 120×40 the `P@OFFSET` column is narrow: a value is shown whole or cut with an
/// ellipsis, never cut silently into another value (`3@1` for offset 121).
#[test]
fn main_screen_120x40_cuts_offsets_visibly() {
    let app = loaded_app(120, 40);
    let s = screen(&app);
    let rows: Vec<&str> = s.lines().collect();
    assert!(
        s.contains(" P…│") || s.contains("P@OFFSET"),
        "header cut visibly: {s}"
    );
    for doc in app.orders.newest_first() {
        let (Some(p), Some(o)) = (doc.kafka_partition, doc.kafka_offset) else {
            continue;
        };
        // The orders pane is the left one.
        let id = format!("#{} ", doc.order_id);
        let Some(pane) = rows
            .iter()
            .map(|r| r.split("││").next().unwrap())
            .find(|pane| pane.contains(&id))
        else {
            continue;
        };
        let place = format!("{p}@{o}");
        let last = pane
            .trim_end_matches(['"', '│', ' '])
            .rsplit(' ')
            .next()
            .unwrap();
        assert!(
            last == place || (last.ends_with('…') && place.starts_with(last.trim_end_matches('…'))),
            "{place} shown as {last:?} in {pane}"
        );
    }
    insta::assert_snapshot!(s);
}

/// The journey reads one consistent view: an offsets sample older than the order lists
/// every group as behind, but an alert, a payment and the stored order prove their groups
/// past it; and a pending fraud decision with fraud-group past waits on analytics, not on
/// fraud-group.
#[test]
fn journey_never_contradicts_itself() {
    let mut app = loaded_app(160, 48);
    app.open_detail(1058);
    let mut detail: OrderDetail = serde_json::from_value(detail_json(&order_json(1058))).unwrap();
    detail.order.payment_status = Some("PAID".into());
    detail.journey.payment.status = Some("PAID".into());
    detail.journey.groups_behind = Some(
        ["fraud-group", "payments-group", "analytics-group"]
            .map(String::from)
            .to_vec(),
    );
    app.apply(Update::Detail(1058, Ok(Some(Box::new(detail.clone())))));
    let s = screen(&app);
    assert!(s.contains("Every consumer group is past this order"), "{s}");

    detail.order.fraud = false;
    detail.journey.fraud.decision = FraudDecision::Pending;
    detail.journey.fraud.at = None;
    detail.journey.groups_behind = Some(vec![]);
    app.apply(Update::Detail(1058, Ok(Some(Box::new(detail)))));
    let s = screen(&app);
    assert!(!s.contains("waiting for fraud-group"), "{s}");
    assert!(s.contains("Every consumer group is past this order"), "{s}");
}
