//! Render benchmark of the console: one full frame at 160×48 with 100,000 orders held.
//!
//! `cargo bench -p ordersctl --bench render` prints the time per frame (min, median, p99,
//! max) for the main screen, a filtered view and the detail overlay, and what applying one
//! update of 500 orders costs the update side (merge and re-filter).

use orders_core::lag::PartitionLag;
use orders_core::{Cents, Timestamp};
use ordersctl::console::api::{Alert, GroupLag, LagStatus, OrderDocument, Totals};
use ordersctl::console::draw;
use ordersctl::console::fetch::Update;
use ordersctl::console::filter::Filter;
use ordersctl::console::state::App;
use ordersctl::console::theme::Theme;
use ratatui::backend::TestBackend;
use ratatui::Terminal;
use std::time::{Duration, Instant};

const HELD: u64 = 100_000;
const FRAMES: usize = 2_000;
const WIDTH: u16 = 160;
const HEIGHT: u16 = 48;

fn order(id: u64) -> OrderDocument {
    const COUNTRIES: [&str; 8] = ["US", "CA", "DE", "IN", "GB", "FR", "CN", "BR"];
    const STATUSES: [&str; 3] = ["CREATED", "CONFIRMED", "CANCELLED"];
    let amount = Cents(1000 + (id * 7919 % 49_001) as i64);
    let country = COUNTRIES[(id % 8) as usize];
    let fraud = amount.0 > 30_000 && country != "US" && country != "CA";
    OrderDocument {
        order_id: id,
        customer_id: 1000 + id % 9000,
        amount,
        currency: "USD".into(),
        country: country.into(),
        status: STATUSES[(id % 3) as usize].into(),
        created_at: Timestamp::from_micros(1_705_314_600_000_000 + id as i64 * 1_000),
        source: Some("order-service".into()),
        kafka_partition: Some((id % 6) as i32),
        kafka_offset: Some((id / 6) as i64),
        processed_at: Timestamp::from_micros(1_705_314_600_020_000 + id as i64 * 1_000),
        fraud,
        fraud_reason: fraud.then(|| "HIGH_AMOUNT_RISKY_COUNTRY".into()),
        payment_status: Some(
            if id.is_multiple_of(9) {
                "FAILED"
            } else {
                "PAID"
            }
            .into(),
        ),
    }
}

fn loaded_app() -> App {
    let t0 = Instant::now();
    let mut app = App::new(
        "http://127.0.0.1:8000",
        Theme { color: true },
        HELD as usize,
        t0,
    );
    app.resize(WIDTH, HEIGHT);
    for s in 0..=300u64 {
        let totals = Totals {
            order_count: HELD - 300 * 40 + s * 40,
            total_sales: Cents(2_500_000_000),
            fraud_count: 12_000,
            fraud_sales: Cents(400_000_000),
            payment_count: 99_000,
            paid_count: 98_000,
            ..Totals::default()
        };
        app.apply(Update::Totals(t0 + Duration::from_secs(s), totals));
    }
    app.apply(Update::Orders((1..=HELD).map(order).collect()));
    app.apply(Update::Alerts(
        (1..=HELD)
            .rev()
            .map(order)
            .filter(|o| o.fraud)
            .take(200)
            .map(|o| Alert {
                order_id: o.order_id,
                reason: "HIGH_AMOUNT_RISKY_COUNTRY".into(),
                amount: o.amount,
                country: o.country,
                detected_at: o.created_at,
                ..Alert::default()
            })
            .collect(),
    ));
    app.apply(Update::Lag(
        ["fraud-group", "payments-group", "analytics-group"]
            .into_iter()
            .map(|g| GroupLag {
                group: g.into(),
                topics: vec!["orders".into()],
                status: LagStatus::Ok,
                total_lag: 12,
                max_lag_seconds: Some(0.2),
                partitions: (0..6)
                    .map(|p| PartitionLag::new("orders", p, Some(16_000), 0, 16_002))
                    .collect(),
                ..GroupLag::default()
            })
            .collect(),
    ));
    app.apply(Update::Connected(t0 + Duration::from_secs(300)));
    app.tick(t0 + Duration::from_secs(301));
    assert_eq!(app.orders.len(), HELD as usize);
    app
}

struct Figures {
    min: Duration,
    median: Duration,
    p99: Duration,
    max: Duration,
}

fn figures(mut times: Vec<Duration>) -> Figures {
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    Figures {
        min: times[0],
        median: at(0.5),
        p99: at(0.99),
        max: times[times.len() - 1],
    }
}

fn print(name: &str, f: &Figures) {
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "{name:<44} min {:>7.1} µs  median {:>7.1} µs  p99 {:>7.1} µs  max {:>7.1} µs",
        us(f.min),
        us(f.median),
        us(f.p99),
        us(f.max)
    );
}

/// Times `FRAMES` full frames; between frames the selection moves, so every frame redraws
/// the rows and the terminal has a real difference to flush.
fn frames(app: &mut App) -> Figures {
    let mut terminal = Terminal::new(TestBackend::new(WIDTH, HEIGHT)).unwrap_or_else(|e| {
        eprintln!("test backend: {e}");
        std::process::exit(1)
    });
    let mut times = Vec::with_capacity(FRAMES);
    for i in 0..FRAMES + 100 {
        let step = if (i / 20) % 2 == 0 { 1 } else { -1 };
        let rows = app.order_rows();
        let len = app.view().len();
        app.orders_scroll.move_by(step, len, rows);
        let start = Instant::now();
        if let Err(e) = terminal.draw(|f| draw::render(f, app)) {
            eprintln!("draw: {e}");
            std::process::exit(1);
        }
        // The first 100 frames warm caches and allocations up.
        if i >= 100 {
            times.push(start.elapsed());
        }
    }
    figures(times)
}

fn main() {
    println!(
        "console render, {WIDTH}×{HEIGHT}, {HELD} orders held, {FRAMES} frames ({} build)",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    let mut app = loaded_app();
    print("main screen", &frames(&mut app));

    let mut filtered = app.clone();
    filtered.set_filter(Filter::parse("DE CN fraud").unwrap_or_default());
    let matching = filtered.view().len();
    print(
        &format!("filtered \"DE CN fraud\" ({matching} match)"),
        &frames(&mut filtered),
    );

    let mut detail = app.clone();
    detail.open_detail(HELD);
    print(
        "detail overlay (loading) over the table",
        &frames(&mut detail),
    );

    // The update side, for scale: merging one page of 500 new orders and re-filtering.
    let mut times = Vec::new();
    let mut next = HELD + 1;
    for _ in 0..200 {
        let page: Vec<OrderDocument> = (next..next + 500).map(order).collect();
        next += 500;
        let start = Instant::now();
        app.apply(Update::Orders(page));
        times.push(start.elapsed());
    }
    print("update: merge 500 orders into 100,000", &figures(times));
}
