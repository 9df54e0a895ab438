//! The operator console (`ordersctl tui`): rendering snapshots on a test backend, and a
//! smoke test of the real binary in a real terminal (tmux) against a fixture API.
#![allow(clippy::unwrap_used)]

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ordersctl::console::api::{Alert, GroupLag, OrderDetail, OrdersPage, Totals};
use ordersctl::console::draw;
use ordersctl::console::fetch::Update;
use ordersctl::console::state::App;
use ordersctl::console::theme::Theme;
use ratatui::backend::TestBackend;
use ratatui::style::{Color, Modifier};
use ratatui::Terminal;
use serde::Deserialize;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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

#[test]
fn help_overlay() {
    let mut app = loaded_app(80, 24);
    press(&mut app, "?");
    insta::assert_snapshot!(screen(&app));
}

#[test]
fn disconnected_keeps_the_last_data_under_a_banner() {
    let mut app = loaded_app(80, 24);
    app.tick(app.now + Duration::from_secs(41));
    app.apply(Update::Disconnected {
        error: "cannot connect: connection refused".into(),
        retry_at: app.now + Duration::from_secs(3),
    });
    let s = screen(&app);
    assert!(s.contains("API UNREACHABLE"), "{s}");
    assert!(s.contains("DISCONNECTED"), "{s}");
    insta::assert_snapshot!(s);
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
    app.apply(Update::Orders(
        (1..=900)
            .map(|id| {
                let mut d = template.clone();
                d.order_id = id;
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
// The real binary in a real terminal.

/// A fixture API: the endpoints the console reads, answering from the JSON resources.
mod fixture_api {
    use super::{detail_json, resource};
    use axum::extract::{Path, Query, State};
    use axum::http::StatusCode;
    use axum::response::{IntoResponse, Response};
    use axum::routing::get;
    use axum::{Json, Router};
    use serde_json::{json, Value};
    use std::collections::HashMap;
    use std::net::SocketAddr;
    use std::sync::Arc;
    use tokio_util::sync::CancellationToken;

    struct Data {
        orders: Vec<Value>,
        totals: Value,
        alerts: Value,
        lag: Value,
    }

    fn router() -> Router {
        let orders: Value = serde_json::from_str(&resource("orders.json")).unwrap();
        let data = Arc::new(Data {
            orders: orders["orders"].as_array().unwrap().clone(),
            totals: serde_json::from_str(&resource("totals.json")).unwrap(),
            alerts: serde_json::from_str(&resource("alerts.json")).unwrap(),
            lag: serde_json::from_str(&resource("lag.json")).unwrap(),
        });
        Router::new()
            .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
            .route(
                "/api/totals",
                get(|State(d): State<Arc<Data>>| async move { Json(d.totals.clone()) }),
            )
            .route(
                "/api/alerts",
                get(|State(d): State<Arc<Data>>| async move { Json(d.alerts.clone()) }),
            )
            .route(
                "/api/lag",
                get(|State(d): State<Arc<Data>>| async move { Json(d.lag.clone()) }),
            )
            .route("/api/orders", get(orders_page))
            .route("/api/orders/{id}", get(order))
            .with_state(data)
    }

    async fn orders_page(
        State(d): State<Arc<Data>>,
        Query(q): Query<HashMap<String, String>>,
    ) -> Json<Value> {
        let limit: usize = q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(50);
        let before: u64 = q
            .get("before")
            .and_then(|b| b.parse().ok())
            .unwrap_or(u64::MAX);
        let older: Vec<&Value> = d
            .orders
            .iter()
            .filter(|o| o["order_id"].as_u64().unwrap() < before)
            .collect();
        let page: Vec<Value> = older.iter().take(limit).map(|o| (*o).clone()).collect();
        let next_before = (older.len() > limit).then(|| page.last().unwrap()["order_id"].clone());
        Json(json!({"orders": page, "next_before": next_before}))
    }

    async fn order(State(d): State<Arc<Data>>, Path(id): Path<u64>) -> Response {
        match d.orders.iter().find(|o| o["order_id"] == id) {
            Some(o) => Json(detail_json(o)).into_response(),
            None => (
                StatusCode::NOT_FOUND,
                Json(json!({"error": {"code": "not_found", "message": format!("no order {id}")}})),
            )
                .into_response(),
        }
    }

    /// Serves on `addr` (port 0: any) until `stop`; returns the address and the task.
    pub async fn start(
        addr: SocketAddr,
        stop: CancellationToken,
    ) -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, router())
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
                .unwrap();
        });
        (addr, task)
    }
}

/// A tmux server of its own (private socket), one session of a fixed size running `sh`.
struct Tmux {
    socket: PathBuf,
}

const SESSION: &str = "console-smoke";
/// The most any single wait in the smoke test may take.
const WAIT: Duration = Duration::from_secs(30);

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

/// Rows of the orders table: an order id, and not an alert (alerts carry the reason).
fn order_rows(screen: &str) -> Vec<&str> {
    screen
        .lines()
        .filter(|l| l.contains(" #10") && !l.contains("HIGH_AMOUNT") && !l.contains("Order #"))
        .collect()
}

/// After the console exits, the shell is back on the normal screen and the terminal is in
/// cooked mode again: a typed command echoes and runs.
fn assert_terminal_restored(tmux: &Tmux, marker: u32) {
    tmux.wait_for("the console to leave the alternate screen", |t, _| {
        !t.alternate_screen_on()
    });
    tmux.type_text(&format!("echo restored-$(({marker} + 1))"), true);
    let want = format!("restored-{}", marker + 1);
    let screen = tmux.wait_for("the shell to run a command", |_, s| {
        s.lines().any(|l| l.trim() == want)
    });
    assert!(!screen.contains("newest first"), "{screen}");
}

#[test]
fn smoke_in_tmux_rows_filter_detail_outage_quit_no_color_and_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let (addr, server) = rt.block_on(fixture_api::start(
        "127.0.0.1:0".parse().unwrap(),
        stop.clone(),
    ));
    let log = dir.path().join("tui.log");
    let command = format!(
        "'{}' tui --api http://{addr} --refresh-ms 200 --log-file '{}'",
        env!("CARGO_BIN_EXE_ordersctl"),
        log.display()
    );

    let tmux = Tmux::start(dir.path(), 100, 30);
    tmux.wait_for("the shell prompt", |_, s| s.contains("smoke$"));
    tmux.type_text(&command, true);

    // Rows appear, newest first, from more than one country.
    let screen = tmux.wait_for("order rows", |_, s| {
        s.contains("#1060") && s.contains("connected") && order_rows(s).len() >= 5
    });
    assert!(tmux.alternate_screen_on());
    assert!(uses_colour(&tmux.screen_with_attributes()));
    let rows = order_rows(&screen);
    assert!(rows[0].contains("#1060"), "{screen}");
    let countries = ["US", "CA", "DE", "IN", "GB", "FR", "CN", "BR"];
    let seen = countries
        .iter()
        .filter(|c| rows.iter().any(|r| r.contains(&format!(" {c} "))))
        .count();
    assert!(seen >= 3, "{screen}");

    // `/` narrows the table to one country.
    tmux.type_text("/", false);
    tmux.type_text("FR", false);
    tmux.key("Enter");
    let screen = tmux.wait_for("the filter to apply", |_, s| s.contains("match “FR”"));
    let rows = order_rows(&screen);
    assert!(!rows.is_empty(), "{screen}");
    assert!(rows.iter().all(|r| r.contains(" FR ")), "{screen}");
    assert!(screen.contains("9 of 60"), "{screen}");
    assert!(rows[0].contains("#1059"), "{screen}");

    // Enter opens the selected order's detail, with its journey.
    tmux.key("Enter");
    let screen = tmux.wait_for("the detail", |_, s| {
        s.contains("Order #1059") && s.contains("Journey") && s.contains("fraud decision")
    });
    assert!(screen.contains("payments-group"), "{screen}");
    tmux.key("Escape");
    tmux.wait_for("the detail to close", |_, s| !s.contains("Journey"));

    // The API goes away: a banner, and the console comes back by itself when it returns.
    stop.cancel();
    rt.block_on(server).unwrap();
    tmux.wait_for("the disconnected banner", |_, s| {
        s.contains("API UNREACHABLE")
    });
    let stop = tokio_util::sync::CancellationToken::new();
    let (_, server) = rt.block_on(fixture_api::start(addr, stop.clone()));
    tmux.wait_for("the console to reconnect", |_, s| {
        !s.contains("API UNREACHABLE") && s.contains(" connected ")
    });

    // q quits and gives the terminal back.
    tmux.type_text("q", false);
    assert_terminal_restored(&tmux, 41);

    // With NO_COLOR the screen has no colour at all; SIGTERM (how ECS and Docker stop
    // things) also gives the terminal back.
    let pid_file = dir.path().join("pid");
    tmux.type_text(
        &format!(
            "NO_COLOR=1 sh -c 'echo $$ > {}; exec {}'",
            pid_file.display(),
            command.replace('\'', "")
        ),
        true,
    );
    let screen = tmux.wait_for("order rows again", |_, s| {
        s.contains("#1060") && s.contains("WARN") && s.contains("connected")
    });
    assert!(screen.contains("! #1058"), "{screen}");
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
    stop.cancel();
    rt.block_on(server).unwrap();
}
