//! Drawing the console from [`App`]: free functions that only read the state.
//!
//! Only the rows on screen are built, so a frame costs the same with 100 or 100,000 orders
//! held.

use super::api::{
    CanaryStatus, DeadLetter, FraudDecision, GroupLag, LagStatus, OrderDetail, OrderDocument,
    Totals,
};
use super::keys::{FILTER_HELP, HELP};
use super::layout::{self, Areas};
use super::state::{
    App, Connection, DeadLetterActionKind, DeadLetterRequest, DetailData, DetailView, Overlay, Pane,
};
use super::text;
use super::theme::Theme;
use orders_core::Timestamp;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Clear, Paragraph, Row, Sparkline, Table, Wrap};
use ratatui::Frame;
use std::time::Duration;

/// The span the orders/s history covers.
const SPARK_WINDOW: Duration = Duration::from_secs(5 * 60);

/// Draws the whole screen.
pub fn render(f: &mut Frame, app: &App) {
    let area = f.area();
    if layout::too_small(area) {
        let msg = format!(
            "Terminal too small: {}×{}, the console needs {}×{}. q quits.",
            area.width,
            area.height,
            layout::MIN_WIDTH,
            layout::MIN_HEIGHT
        );
        f.render_widget(Paragraph::new(msg).wrap(Wrap { trim: true }), area);
        return;
    }
    let areas = layout::areas(area, app.banner_shown());
    let wide = layout::is_wide(area);
    if let Some(banner) = areas.banner {
        draw_banner(f, app, banner);
    }
    draw_totals(f, app, &areas, wide);
    if let Some(rate) = areas.rate {
        draw_rate(f, app, rate);
    }
    draw_lag(f, app, areas.lag, wide);
    if app.focus == Pane::DeadLetters {
        draw_dead_letters(f, app, areas.orders.union(areas.alerts));
    } else {
        draw_orders(f, app, areas.orders, wide);
        draw_alerts(f, app, areas.alerts);
    }
    draw_status(f, app, areas.status);
    match &app.overlay {
        Overlay::None => {}
        Overlay::Help => draw_help(f, app.theme, area),
        Overlay::Detail(view) => draw_detail(f, app, view, area),
        Overlay::DeadLetter { letter, scroll } => draw_dead_letter(f, app, letter, *scroll, area),
        Overlay::Confirm(request) => draw_confirm(f, app.theme, request, area),
    }
}

fn block(theme: Theme, title: impl Into<Line<'static>>, focused: bool) -> Block<'static> {
    Block::bordered()
        .border_style(theme.border(focused))
        .title(title.into().style(theme.title()))
}

fn draw_banner(f: &mut Frame, app: &App, area: Rect) {
    if let Connection::Unauthorised(error) = &app.connection {
        let msg = format!(" NOT AUTHORISED: set ORDERS_API_TOKEN (or --token) · {error}");
        f.render_widget(Paragraph::new(msg).style(app.theme.banner()), area);
        return;
    }
    let Connection::Disconnected { error, retry_at } = &app.connection else {
        return;
    };
    let retry = match retry_at.checked_duration_since(app.now) {
        Some(d) if !d.is_zero() => {
            format!("retrying in {}", text::age(d + Duration::from_millis(999)))
        }
        _ => "retrying now".to_owned(),
    };
    // The retry first and the cause after, as a narrow screen cuts the end; the age of
    // the data on screen is in the status line.
    let msg = format!(" API UNREACHABLE · {retry} · r retry now · {error}");
    f.render_widget(Paragraph::new(msg).style(app.theme.banner()), area);
}

fn label(theme: Theme, s: &'static str) -> Span<'static> {
    Span::styled(s, theme.label())
}

fn value(theme: Theme, s: String) -> Span<'static> {
    Span::styled(s, theme.value())
}

/// The history the sparkline draws: orders per minute from the store (one bar a minute,
/// the current one last; it survives a console restart), or, from an API without them,
/// the orders/s this console has seen over the last five minutes.
enum Spark {
    PerMinute(Vec<Option<u64>>),
    /// Tenths of orders per second.
    PerSecond(Vec<Option<u64>>),
}

impl Spark {
    fn of(app: &App, width: usize) -> Spark {
        if app.windows.is_empty() {
            return Spark::PerSecond(
                app.rate
                    .buckets(app.now, SPARK_WINDOW, width)
                    .into_iter()
                    .map(|b| b.map(|r| (r * 10.0).round() as u64))
                    .collect(),
            );
        }
        let skip = app.windows.len().saturating_sub(width);
        let mut bars: Vec<Option<u64>> = vec![None; width.saturating_sub(app.windows.len())];
        bars.extend(app.windows[skip..].iter().map(|w| Some(w.order_count)));
        Spark::PerMinute(bars)
    }

    fn bars(self) -> Vec<Option<u64>> {
        match self {
            Spark::PerMinute(b) | Spark::PerSecond(b) => b,
        }
    }
}

fn spark_data(app: &App, width: usize) -> Vec<Option<u64>> {
    Spark::of(app, width).bars()
}

fn draw_totals(f: &mut Frame, app: &App, areas: &Areas, wide: bool) {
    let theme = app.theme;
    let outer = block(theme, " Totals ", false);
    let inner = outer.inner(areas.totals);
    f.render_widget(outer, areas.totals);
    let Some(t) = &app.totals else {
        let msg = app
            .errors
            .totals
            .clone()
            .unwrap_or_else(|| "waiting for the API…".to_owned());
        f.render_widget(Paragraph::new(msg).style(theme.dim()), inner);
        return;
    };
    let rate = rate_now(app);
    let fraud = Line::from(vec![
        label(theme, "Fraud     "),
        value(theme, text::percent(t.fraud_share_by_count())),
        Span::raw(" of orders · "),
        value(theme, text::percent(t.fraud_share_by_sales())),
        Span::raw(" of $"),
    ]);
    let mut lines = Vec::new();
    if wide {
        lines.push(Line::from(vec![
            label(theme, "Orders    "),
            value(theme, format!("{:<16}", text::thousands(t.order_count))),
            label(theme, "Rate  "),
            value(theme, rate),
        ]));
        lines.push(Line::from(vec![
            label(theme, "Sales     "),
            value(theme, format!("{:<16}", text::money(t.total_sales))),
            label(theme, "Avg   "),
            value(theme, text::money(t.average_order_value)),
        ]));
        lines.push(Line::from(vec![
            label(theme, "Fraud     "),
            value(theme, text::thousands(t.fraud_count)),
            Span::raw(" · "),
            value(theme, text::percent(t.fraud_share_by_count())),
            Span::raw(" of orders · "),
            value(theme, text::percent(t.fraud_share_by_sales())),
            Span::raw(" of $"),
        ]));
        lines.push(paid_line(theme, t, wide));
        lines.push(breakdown(theme, "Status    ", &t.by_status, usize::MAX));
        // Countries, busiest first, on as many lines as are left.
        let mut countries: Vec<(&String, u64)> = t
            .by_country
            .iter()
            .map(|(c, v)| (c, v.order_count))
            .collect();
        countries.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let per_line = 4;
        for (i, chunk) in countries.chunks(per_line).enumerate() {
            let mut spans = vec![label(
                theme,
                if i == 0 { "Countries " } else { "          " },
            )];
            for (c, n) in chunk {
                spans.push(Span::raw(format!("{c} ")));
                spans.push(value(theme, format!("{:<7}", text::thousands(*n))));
            }
            lines.push(Line::from(spans));
        }
        f.render_widget(Paragraph::new(lines), inner);
    } else {
        let head = format!("{:<10}", text::thousands(t.order_count));
        let first = Line::from(vec![
            label(theme, "Orders    "),
            value(theme, head),
            value(theme, format!("{rate:>8} ")),
        ]);
        let used = first.width() as u16;
        lines.push(first);
        lines.push(Line::from(vec![
            label(theme, "Sales     "),
            value(theme, text::money(t.total_sales)),
            Span::raw("  avg "),
            value(theme, text::money(t.average_order_value)),
        ]));
        lines.push(fraud);
        lines.push(paid_line(theme, t, wide));
        f.render_widget(Paragraph::new(lines), inner);
        // The orders/s history fills the rest of the first line.
        if inner.width > used + 4 {
            let spark = Rect {
                x: inner.x + used,
                y: inner.y,
                width: inner.width - used,
                height: 1,
            };
            let data = spark_data(app, usize::from(spark.width));
            f.render_widget(
                Sparkline::default().data(data).style(theme.sparkline()),
                spark,
            );
        }
    }
}

fn paid_line(theme: Theme, t: &Totals, wide: bool) -> Line<'static> {
    Line::from(vec![
        label(theme, "Paid      "),
        value(theme, text::thousands(t.paid_count)),
        Span::raw(format!(
            " of {}{} · {} failed",
            text::thousands(t.payment_count),
            if wide { " payments" } else { "" },
            text::thousands(t.failed())
        )),
    ])
}

fn breakdown(
    theme: Theme,
    name: &'static str,
    map: &std::collections::BTreeMap<String, super::api::CountSales>,
    max: usize,
) -> Line<'static> {
    let mut spans = vec![label(theme, name)];
    for (i, (k, v)) in map.iter().take(max).enumerate() {
        if i > 0 {
            spans.push(Span::raw("  "));
        }
        spans.push(Span::raw(format!("{k} ")));
        spans.push(value(theme, text::thousands(v.order_count)));
    }
    Line::from(spans)
}

/// Orders per second now; "stale" while the API does not answer (the last rate is not now).
fn rate_now(app: &App) -> String {
    match app.rate.rate_now() {
        _ if app.is_stale() => "stale".to_owned(),
        Some(rate) => text::rate(rate),
        None => "-/s".to_owned(),
    }
}

fn draw_rate(f: &mut Frame, app: &App, area: Rect) {
    let theme = app.theme;
    let width = usize::from(area.width.saturating_sub(2));
    let (title, peak, data) = match Spark::of(app, width) {
        Spark::PerMinute(bars) => {
            let peak = bars.iter().flatten().max().copied().unwrap_or(0);
            (
                format!(" Orders/min · last {} min ", bars.len()),
                format!("{}/min", text::thousands(peak)),
                bars,
            )
        }
        Spark::PerSecond(bars) => {
            let peak = bars.iter().flatten().max().copied().unwrap_or(0) as f64 / 10.0;
            (" Orders/s · last 5 min ".to_owned(), text::rate(peak), bars)
        }
    };
    let outer = block(theme, title, false);
    let inner = outer.inner(area);
    f.render_widget(outer, area);
    if inner.height < 2 {
        return;
    }
    let now = rate_now(app);
    let [head, chart] = Layout::vertical([Constraint::Length(1), Constraint::Fill(1)]).areas(inner);
    f.render_widget(
        Paragraph::new(Line::from(vec![
            label(theme, "now "),
            value(theme, now),
            label(theme, "   peak "),
            value(theme, peak),
        ])),
        head,
    );
    f.render_widget(
        Sparkline::default().data(data).style(theme.sparkline()),
        chart,
    );
}

fn group_name(group: &str, wide: bool) -> &str {
    if wide {
        group
    } else {
        group.strip_suffix("-group").unwrap_or(group)
    }
}

fn lag_row(theme: Theme, g: &GroupLag, wide: bool, stale: bool) -> Row<'static> {
    let behind = g
        .max_lag_seconds
        .map(text::seconds)
        .unwrap_or_else(|| "-".to_owned());
    let mut cells = vec![
        Cell::from(group_name(&g.group, wide).to_owned()),
        Cell::from(Line::from(text::compact(g.total_lag)).right_aligned()),
        Cell::from(Line::from(behind).right_aligned()),
        Cell::from(g.status.as_str()).style(if stale {
            theme.dim()
        } else {
            theme.lag_status(g.status)
        }),
    ];
    if wide {
        // The orders topic only: analytics also reads alerts and payments, whose lag is
        // in the group's total.
        let orders = g.topics.first();
        let parts: Vec<String> = g
            .partitions
            .iter()
            .filter(|p| orders.is_none_or(|t| *t == p.topic))
            .map(|p| text::compact(p.lag))
            .collect();
        cells.push(Cell::from(parts.join(" ")).style(theme.dim()));
    }
    Row::new(cells)
}

fn draw_lag(f: &mut Frame, app: &App, area: Rect, wide: bool) {
    let theme = app.theme;
    let worst = app.lag.iter().map(|g| g.status).max_by_key(|s| match s {
        LagStatus::Ok => 1,
        LagStatus::Unknown => 0,
        LagStatus::Warn => 2,
        LagStatus::Stall => 3,
        LagStatus::Stop => 4,
    });
    let title = match worst {
        // The last known statuses, not live: an OK there would be a guess.
        _ if app.is_stale() && !app.lag.is_empty() => Line::from(vec![
            Span::raw(" Consumer lag · "),
            Span::styled("STALE", theme.warn()),
            Span::raw(" "),
        ]),
        Some(s @ (LagStatus::Warn | LagStatus::Stall | LagStatus::Stop)) => Line::from(vec![
            Span::raw(" Consumer lag · "),
            Span::styled(s.as_str(), theme.lag_status(s)),
            Span::raw(" "),
        ]),
        _ => Line::from(" Consumer lag "),
    };
    let outer = block(theme, title, false);
    let inner = outer.inner(area);
    f.render_widget(outer, area);
    if app.lag.is_empty() {
        let msg = app
            .errors
            .lag
            .clone()
            .unwrap_or_else(|| "waiting for the API…".to_owned());
        f.render_widget(Paragraph::new(msg).style(theme.dim()), inner);
        return;
    }
    let mut header = vec!["GROUP", "RECORDS", "BEHIND", "STATUS"];
    let mut widths = vec![
        Constraint::Length(if wide { 15 } else { 9 }),
        Constraint::Length(7),
        Constraint::Length(6),
        Constraint::Length(6),
    ];
    if wide {
        header.push("ORDERS LAG BY PARTITION");
        widths.push(Constraint::Fill(1));
    }
    let header = Row::new(
        header
            .into_iter()
            .enumerate()
            .map(|(i, h)| match i {
                1 | 2 => Cell::from(Line::from(h).right_aligned()),
                _ => Cell::from(h),
            })
            .collect::<Vec<_>>(),
    )
    .style(theme.header());
    let stale = app.is_stale();
    let rows: Vec<Row> = app
        .lag
        .iter()
        .map(|g| lag_row(theme, g, wide, stale))
        .collect();
    let table = Table::new(rows, widths).header(header).column_spacing(1);
    f.render_widget(table, inner);
    // Wide screens have room to say why a group is not OK.
    let table_height = app.lag.len() as u16 + 1;
    if wide && inner.height > table_height + 1 {
        let reasons: Vec<Line> = app
            .lag
            .iter()
            .filter(|g| g.status != LagStatus::Ok && !g.reason.is_empty())
            .map(|g| {
                Line::from(vec![
                    Span::styled(
                        format!("{} ", g.status.as_str()),
                        theme.lag_status(g.status),
                    ),
                    Span::raw(format!("{}: {}", g.group, g.reason)),
                ])
            })
            .collect();
        let rest = Rect {
            y: inner.y + table_height + 1,
            height: inner.height - table_height - 1,
            ..inner
        };
        f.render_widget(Paragraph::new(reasons), rest);
    }
    if let Some(e) = &app.errors.lag {
        let line_area = Rect {
            y: inner.y + inner.height.saturating_sub(1),
            height: 1,
            ..inner
        };
        if inner.height > app.lag.len() as u16 + 1 {
            f.render_widget(
                Paragraph::new(format!("stale: {e}")).style(theme.warn()),
                line_area,
            );
        }
    }
}

fn payment_word(doc: &OrderDocument) -> &str {
    doc.payment_status.as_deref().unwrap_or("-")
}

fn draw_orders(f: &mut Frame, app: &App, area: Rect, wide: bool) {
    let theme = app.theme;
    let focused = app.focus == Pane::Orders && matches!(app.overlay, Overlay::None);
    let shown = app.view().len();
    let mut title = vec![Span::raw(" Orders · newest first")];
    if !app.filter.is_empty() {
        title.push(Span::raw(format!(
            " · {} of {} match “{}”",
            text::thousands(shown as u64),
            text::thousands(app.orders.len() as u64),
            app.filter.text()
        )));
    } else {
        title.push(Span::raw(format!(
            " · {} held",
            text::thousands(app.orders.len() as u64)
        )));
    }
    title.push(Span::raw(if app.follow {
        " · following"
    } else {
        " · not following"
    }));
    if app.paused {
        title.push(Span::styled(" · PAUSED", theme.warn()));
    }
    title.push(Span::raw(" "));
    let outer = block(theme, Line::from(title), focused);
    let inner = outer.inner(area);
    f.render_widget(outer, area);

    let rows = usize::from(inner.height.saturating_sub(1));
    let scroll = app.orders_scroll;
    let id_width = app
        .view()
        .first()
        .map(|id| id.to_string().len())
        .unwrap_or(2)
        .max(2) as u16
        + 1;
    // Wide screens get milliseconds and the fraud reason instead of the bare word, when the
    // pane itself has room for them: a squeezed column would cut figures short.
    let wide_columns: u16 = 1 + id_width + 12 + 4 + 9 + 2 + 9 + 25 + 6 + 9 + 8;
    let wide = wide && inner.width >= wide_columns;
    let header = [
        "",
        "ID",
        if wide { "TIME (UTC)" } else { "TIME UTC" },
        "CUST",
        "AMOUNT",
        "CC",
        "STATUS",
        if wide { "FRAUD REASON" } else { "FRAUD" },
        "PAY",
        if wide { "PART@OFFSET" } else { "P@OFFSET" },
    ];
    let widths = [
        Constraint::Length(1),
        Constraint::Length(id_width),
        Constraint::Length(if wide { 12 } else { 8 }),
        Constraint::Length(4),
        Constraint::Length(9),
        Constraint::Length(2),
        Constraint::Length(9),
        Constraint::Length(if wide { 25 } else { 5 }),
        Constraint::Length(6),
        Constraint::Fill(1),
    ];
    // What is left for the last column (each column but the first is one space apart), so
    // a place that does not fit is cut visibly rather than read as another offset.
    let fixed: u16 = widths
        .iter()
        .map(|c| match c {
            Constraint::Length(n) => n + 1,
            _ => 0,
        })
        .sum();
    let place_width = usize::from(inner.width.saturating_sub(fixed));
    let last = header.len() - 1;
    let header = Row::new(
        header
            .into_iter()
            .enumerate()
            .map(|(i, h)| match i {
                1 | 4 => Cell::from(Line::from(h).right_aligned()),
                i if i == last => Cell::from(text::fit(h, place_width)),
                _ => Cell::from(h),
            })
            .collect::<Vec<_>>(),
    )
    .style(theme.header());
    let body: Vec<Row> = app
        .visible_orders(scroll.offset, rows)
        .enumerate()
        .map(|(i, doc)| {
            let time = doc
                .created_at
                .as_ref()
                .map(|t| {
                    if wide {
                        text::time_of_day_ms(t)
                    } else {
                        text::time_of_day(t)
                    }
                })
                .unwrap_or_default();
            let fraud = match (doc.fraud, wide) {
                (false, _) => String::new(),
                (true, true) => doc
                    .fraud_reason
                    .clone()
                    .unwrap_or_else(|| "FRAUD".to_owned()),
                (true, false) => "FRAUD".to_owned(),
            };
            let place = match (doc.kafka_partition, doc.kafka_offset) {
                (Some(p), Some(o)) => text::fit(&format!("{p}@{o}"), place_width),
                _ => String::new(),
            };
            let cells = vec![
                Cell::from(if doc.fraud { "!" } else { " " }),
                Cell::from(Line::from(format!("#{}", doc.order_id)).right_aligned()),
                Cell::from(time),
                Cell::from(doc.customer_id.to_string()),
                Cell::from(Line::from(text::money(doc.amount)).right_aligned()),
                Cell::from(doc.country.clone()),
                Cell::from(doc.status.clone()),
                Cell::from(fraud),
                Cell::from(payment_word(doc).to_owned())
                    .style(theme.payment(doc.payment_status.as_deref())),
                Cell::from(place),
            ];
            let mut style = if doc.fraud {
                theme.fraud()
            } else {
                Style::new()
            };
            if focused && scroll.offset + i == scroll.selected {
                style = style.patch(theme.selected());
            }
            Row::new(cells).style(style)
        })
        .collect();
    let empty = body.is_empty();
    let table = Table::new(body, widths).header(header).column_spacing(1);
    f.render_widget(table, inner);
    if empty {
        let msg = if let Some(e) = &app.errors.orders {
            format!("orders unavailable: {e}")
        } else if !app.filter.is_empty() && !app.orders.is_empty() {
            "no held order matches the filter (Esc clears it)".to_owned()
        } else if app.totals.is_some() {
            "no orders yet".to_owned()
        } else {
            "waiting for the API…".to_owned()
        };
        let line = Rect {
            y: inner.y + 1,
            height: 1,
            ..inner
        };
        f.render_widget(Paragraph::new(msg).style(theme.dim()), line);
    }
}

fn draw_alerts(f: &mut Frame, app: &App, area: Rect) {
    let theme = app.theme;
    let focused = app.focus == Pane::Alerts && matches!(app.overlay, Overlay::None);
    let title = format!(
        " Fraud alerts · newest first · {} ",
        text::thousands(app.alerts.len() as u64)
    );
    let outer = block(theme, title, focused);
    let inner = outer.inner(area);
    f.render_widget(outer, area);
    let scroll = app.alerts_scroll;
    let rows: Vec<Row> = app
        .alerts
        .iter()
        .enumerate()
        .skip(scroll.offset)
        .take(usize::from(inner.height))
        .map(|(i, a)| {
            let when = a
                .detected_at
                .as_ref()
                .or(a.stored_at.as_ref())
                .map(text::time_of_day)
                .unwrap_or_default();
            let style = if focused && i == scroll.selected {
                theme.selected()
            } else {
                Style::new()
            };
            Row::new(vec![
                Cell::from(when),
                Cell::from(Line::from(format!("#{}", a.order_id)).right_aligned()),
                Cell::from(a.country.clone()),
                Cell::from(Line::from(text::money(a.amount)).right_aligned()),
                Cell::from(a.reason.clone()).style(theme.fraud()),
            ])
            .style(style)
        })
        .collect();
    if rows.is_empty() {
        let msg = match &app.errors.alerts {
            Some(e) => format!("alerts unavailable: {e}"),
            None if app.totals.is_some() => "no fraud alerts".to_owned(),
            None => "waiting for the API…".to_owned(),
        };
        f.render_widget(Paragraph::new(msg).style(theme.dim()), inner);
        return;
    }
    let id_width = app
        .alerts
        .iter()
        .map(|a| a.order_id)
        .max()
        .unwrap_or(0)
        .to_string()
        .len() as u16
        + 1;
    let widths = [
        Constraint::Length(8),
        Constraint::Length(id_width),
        Constraint::Length(2),
        Constraint::Length(9),
        Constraint::Fill(1),
    ];
    f.render_widget(Table::new(rows, widths).column_spacing(1), inner);
}

fn draw_status(f: &mut Frame, app: &App, area: Rect) {
    let theme = app.theme;
    if let Some(input) = &app.input {
        let mut spans = vec![
            Span::styled("/", theme.key()),
            Span::raw(input.text.clone()),
            Span::styled("█", Style::new().add_modifier(Modifier::SLOW_BLINK)),
        ];
        match &input.error {
            Some(e) => spans.push(Span::styled(format!("  {e}"), theme.warn())),
            None => spans.push(Span::styled(
                "  Enter apply · Esc cancel · words: DE CANCELLED fraud paid #123",
                theme.dim(),
            )),
        }
        f.render_widget(Paragraph::new(Line::from(spans)), area);
        return;
    }
    let canary_lost = app
        .canary
        .as_ref()
        .and_then(|c| c.last.as_ref())
        .is_some_and(|l| l.is_lost());
    let (word, style) = match app.connection {
        Connection::Connecting => ("connecting", theme.warn()),
        // A lost canary: something in the pipeline does not answer in time.
        Connection::Connected if canary_lost => ("CANARY LOST", theme.bad()),
        Connection::Connected => ("connected", theme.good()),
        Connection::Disconnected { .. } => ("DISCONNECTED", theme.bad()),
        Connection::Unauthorised(_) => ("NOT AUTHORISED", theme.bad()),
    };
    let mut left = vec![Span::styled(format!(" {word} "), style)];
    // An operator's action was answered: say how, in place of where and when.
    if let Some(notice) = app.current_notice() {
        let room = usize::from(area.width).saturating_sub(word.chars().count() + 3);
        left.push(Span::styled(
            text::fit(&notice.text, room),
            if notice.ok { theme.good() } else { theme.bad() },
        ));
    } else {
        left.push(Span::raw(app.api_url.clone()));
    }
    match app.last_ok {
        _ if app.current_notice().is_some() => {}
        Some(t) => left.push(Span::raw(format!(
            " · updated {} ago",
            text::age(app.now.saturating_duration_since(t))
        ))),
        None => left.push(Span::raw(" · no data yet")),
    }
    if app.paused {
        left.push(Span::raw(" · "));
        left.push(Span::styled("PAUSED", theme.warn()));
    }
    if let Some(canary) = &app.canary {
        left.extend(canary_spans(theme, canary));
    }
    let left = Line::from(left);
    let used = left.width();
    let dead_letter_hints: &[(&str, &str)] = &[
        ("R", "redrive"),
        ("D", "discard"),
        ("Enter", "record"),
        ("Tab", "pane"),
        ("?", "help"),
        ("q", "quit"),
    ];
    let hints: &[(&str, &str)] = if app.focus == Pane::DeadLetters {
        dead_letter_hints
    } else {
        &[
            ("q", "quit"),
            ("?", "help"),
            ("/", "filter"),
            ("Tab", "pane"),
            ("Enter", "detail"),
            ("f", "follow"),
            ("p", "pause"),
        ]
    };
    let retry: &[(&str, &str)] = match app.connection {
        Connection::Disconnected { .. } => &[("r", "retry now")],
        _ => &[],
    };
    // As many hints as fit, most important first, two spaces from the left part.
    let mut right: Vec<Span> = Vec::new();
    let mut width = 0;
    for (k, what) in retry.iter().chain(hints) {
        let w = 2 + k.chars().count() + 1 + what.len();
        if used + width + w + 1 > usize::from(area.width) {
            break;
        }
        width += w;
        right.push(Span::raw("  "));
        right.push(Span::styled(*k, theme.key()));
        right.push(Span::styled(format!(" {what}"), theme.dim()));
    }
    let [l, r] =
        Layout::horizontal([Constraint::Fill(1), Constraint::Length(width as u16 + 1)]).areas(area);
    f.render_widget(Paragraph::new(left), l);
    f.render_widget(Paragraph::new(Line::from(right)), r);
}

/// ` · canary 0.42s p50 0.40s p99 0.95s`: the last canary's journey (its slowest leg) and
/// the percentiles of the slowest leg over the API's window; `lost` in red.
fn canary_spans(theme: Theme, canary: &CanaryStatus) -> Vec<Span<'static>> {
    let secs = |s: Option<f64>| s.map_or_else(|| "-".to_owned(), |s| format!("{s:.2}s"));
    let mut spans = vec![Span::raw(" · canary ")];
    match &canary.last {
        None => spans.push(Span::styled("none yet", theme.dim())),
        Some(last) if last.is_lost() => spans.push(Span::styled(
            format!("#{} lost", last.order_id),
            theme.bad(),
        )),
        Some(last) => spans.push(Span::raw(secs(last.seconds()))),
    }
    let p = &canary.percentiles;
    if canary.samples > 0 {
        spans.push(Span::styled(
            format!(
                " p50 {} p99 {}",
                secs(p.slowest(|l| l.p50)),
                secs(p.slowest(|l| l.p99))
            ),
            theme.dim(),
        ));
    }
    spans
}

/// The help overlay, sized to its text: as wide as its widest line and as tall as its
/// lines, without the blank lines between sections when the screen is too short for them
/// (at 80×24 every line still shows whole).
fn draw_help(f: &mut Frame, theme: Theme, area: Rect) {
    let spaced = help_lines(theme, true);
    let lines = if spaced.len() as u16 + 2 <= area.height.saturating_sub(2) {
        spaced
    } else {
        help_lines(theme, false)
    };
    let width = lines.iter().map(Line::width).max().unwrap_or(0) as u16 + 2;
    let rect = layout::overlay(area, width, lines.len() as u16 + 2);
    f.render_widget(Clear, rect);
    f.render_widget(
        Paragraph::new(lines).block(block(theme, " Help · Esc closes ", true)),
        rect,
    );
}

/// The help's lines: the keys, the filter words and a note, with a blank line between
/// sections when `spaced`.
fn help_lines(theme: Theme, spaced: bool) -> Vec<Line<'static>> {
    let entry = |(k, what): &(&str, &'static str)| {
        Line::from(vec![
            Span::styled(format!("  {k:<20}"), theme.key()),
            Span::raw(*what),
        ])
    };
    let gap = || spaced.then(|| Line::from(""));
    let mut lines = vec![Line::from(Span::styled("Keys", theme.title()))];
    lines.extend(HELP.iter().map(entry));
    lines.extend(gap());
    lines.push(Line::from(Span::styled(
        "Filter words (after /)",
        theme.title(),
    )));
    lines.extend(FILTER_HELP.iter().map(entry));
    lines.extend(gap());
    lines.push(Line::from(Span::styled(
        "! and bold mark flagged orders. Lag: OK, WARN, STALL, STOP.",
        theme.dim(),
    )));
    lines
}

/// One step of the journey: done or not, when, how long after creation, what happened.
fn step(
    theme: Theme,
    name: &'static str,
    at: Option<&Timestamp>,
    created: Option<&Timestamp>,
    done: bool,
    what: String,
) -> Line<'static> {
    let mark = if done {
        Span::styled("  ✓ ", theme.good())
    } else {
        Span::styled("  … ", theme.warn())
    };
    let when = at.map(text::time_of_day_ms).unwrap_or_default();
    let after = match (created, at) {
        (Some(c), Some(t)) if name != "created" => text::delta(*c, *t),
        _ => String::new(),
    };
    Line::from(vec![
        mark,
        Span::styled(format!("{name:<16}"), theme.value()),
        Span::raw(format!("{when:<12}{after:>10}  ")),
        Span::raw(what),
    ])
}

/// The groups that have not yet consumed the order's record: the API's word when it gives
/// one, else what the lag figures say; never a group whose effect the detail shows.
fn groups_behind(app: &App, detail: &OrderDetail) -> Option<Vec<String>> {
    let j = &detail.journey;
    let seen = orders_core::lag::SeenEffects {
        stored: j.stored.at.is_some() || detail.order.processed_at.is_some(),
        alerted: detail.order.fraud || j.fraud.decision == FraudDecision::Alert,
        payment_stored: j
            .payment
            .status
            .as_deref()
            .or(detail.order.payment_status.as_deref())
            .is_some_and(|s| !s.eq_ignore_ascii_case("PENDING")),
    };
    let mut behind = match &j.groups_behind {
        Some(p) => p.clone(),
        None => lag_groups_behind(app, detail)?,
    };
    behind.retain(|g| !seen.prove_past(g));
    Some(behind)
}

/// The groups the lag figures show not yet past the order's record.
fn lag_groups_behind(app: &App, detail: &OrderDetail) -> Option<Vec<String>> {
    let (partition, offset) = (detail.order.kafka_partition?, detail.order.kafka_offset?);
    let known: Vec<(String, bool)> = app
        .lag
        .iter()
        .filter_map(|g| Some((g.group.clone(), g.has_passed(partition, offset)?)))
        .collect();
    (!known.is_empty()).then(|| {
        known
            .into_iter()
            .filter(|(_, passed)| !passed)
            .map(|(g, _)| g)
            .collect()
    })
}

/// The detail's lines for an overlay `width` wide inside.
fn detail_lines(app: &App, detail: &OrderDetail, width: usize) -> Vec<Line<'static>> {
    let theme = app.theme;
    let o = &detail.order;
    let j = &detail.journey;
    let mut lines = vec![
        Line::from(vec![
            label(theme, "Customer  "),
            value(theme, format!("{:<10}", o.customer_id)),
            label(theme, "Country  "),
            value(theme, format!("{:<6}", o.country)),
            label(theme, "Status  "),
            value(theme, o.status.clone()),
        ]),
        Line::from(vec![
            label(theme, "Amount    "),
            value(theme, format!("{:<10}", text::money(o.amount))),
            label(theme, "Currency "),
            value(theme, format!("{:<6}", o.currency)),
            label(theme, "Source  "),
            Span::raw(o.source.clone().unwrap_or_else(|| "-".to_owned())),
        ]),
        Line::from(vec![
            label(theme, "Kafka     "),
            Span::raw(match (o.kafka_partition, o.kafka_offset) {
                (Some(p), Some(off)) => {
                    format!("orders partition {p}, offset {}", text::thousands_i(off))
                }
                _ => "-".to_owned(),
            }),
        ]),
    ];
    let reason = j.fraud.reason.clone().or_else(|| o.fraud_reason.clone());
    if o.fraud {
        let mut fraud = Line::from(vec![
            label(theme, "Fraud     "),
            Span::styled("! FLAGGED ", theme.fraud()),
            Span::raw(reason.clone().unwrap_or_default()),
        ]);
        if let Some(rule) = &j.fraud.rule_id {
            let rule = format!("rule {rule}");
            if fraud.width() + 3 + rule.len() <= width {
                fraud.push_span(Span::styled(format!(" · {rule}"), theme.dim()));
                lines.push(fraud);
            } else {
                lines.push(fraud);
                lines.push(Line::from(vec![
                    Span::raw("          "),
                    Span::styled(rule, theme.dim()),
                ]));
            }
        } else {
            lines.push(fraud);
        }
    } else {
        lines.push(Line::from(vec![
            label(theme, "Fraud     "),
            Span::raw("not flagged"),
        ]));
    }
    let payment = j
        .payment
        .status
        .clone()
        .or_else(|| o.payment_status.clone())
        .unwrap_or_else(|| "PENDING".to_owned());
    lines.push(Line::from(vec![
        label(theme, "Payment   "),
        Span::styled(payment.clone(), theme.payment(Some(&payment))),
    ]));
    lines.push(Line::from(""));
    lines.push(Line::from(Span::styled(
        format!("{:<20}{:<12}{:>10}", "Journey", "time (UTC)", "after"),
        theme.title(),
    )));

    let behind = groups_behind(app, detail);
    let waiting_for = |group: &str| behind.as_ref().map(|p| p.iter().any(|g| g == group));
    let created = j.created.at.as_ref().or(o.created_at.as_ref());
    let date = created.map(|t| t.0.format("%Y-%m-%d").to_string());
    lines.push(step(
        theme,
        "created",
        created,
        created,
        created.is_some(),
        date.unwrap_or_default(),
    ));

    let (done, what) = match j.fraud.decision {
        _ if o.fraud || j.fraud.decision == FraudDecision::Alert => {
            (true, "alert raised".to_owned())
        }
        FraudDecision::Clear => (true, "clear: passed, no alert".to_owned()),
        // fraud-group past it: its alert, if any, is on its way to the store.
        FraudDecision::Pending if waiting_for("fraud-group") == Some(false) => {
            (false, "waiting for analytics-group".to_owned())
        }
        FraudDecision::Pending => (false, "waiting for fraud-group".to_owned()),
        FraudDecision::Alert | FraudDecision::Unknown => match waiting_for("fraud-group") {
            Some(true) => (false, "waiting for fraud-group".to_owned()),
            Some(false) => (true, "clear: passed, no alert".to_owned()),
            None => (false, "no alert; fraud-group progress unknown".to_owned()),
        },
    };
    lines.push(step(
        theme,
        "fraud decision",
        j.fraud.at.as_ref(),
        created,
        done,
        what,
    ));

    let paid = !payment.eq_ignore_ascii_case("PENDING");
    let what = match (paid, waiting_for("payments-group")) {
        (true, _) => payment,
        (false, Some(true)) => "waiting for payments-group".to_owned(),
        (false, _) => "no result stored yet".to_owned(),
    };
    lines.push(step(
        theme,
        "payment",
        j.payment.at.as_ref(),
        created,
        paid,
        what,
    ));

    let stored = j.stored.at.as_ref().or(o.processed_at.as_ref());
    lines.push(step(
        theme,
        "stored",
        stored,
        created,
        stored.is_some(),
        if stored.is_some() {
            "by analytics-group".to_owned()
        } else {
            "waiting for analytics-group".to_owned()
        },
    ));
    lines.push(Line::from(""));
    let sampled = j
        .offsets_sampled_at
        .as_ref()
        .map(|t| format!(" (offsets read {})", text::time_of_day(t)))
        .unwrap_or_default();
    lines.push(match behind {
        Some(p) if p.is_empty() => Line::from(vec![
            Span::styled("Every consumer group is past this order.", theme.good()),
            Span::styled(sampled, theme.dim()),
        ]),
        Some(p) => Line::from(vec![
            Span::raw("Not yet past its offset: "),
            Span::styled(p.join(", "), theme.warn()),
            Span::styled(sampled, theme.dim()),
        ]),
        None => Line::from(Span::styled(
            "Group progress unknown: the API has no consumer offsets.",
            theme.dim(),
        )),
    });
    lines
}

fn draw_detail(f: &mut Frame, app: &App, view: &DetailView, area: Rect) {
    let theme = app.theme;
    let title = match &view.data {
        DetailData::Loaded(d) if d.order.fraud => Line::from(vec![
            Span::raw(format!(" Order #{} ", view.order_id)),
            Span::styled("! FRAUD ", theme.fraud()),
            Span::raw("· Esc closes "),
        ]),
        _ => Line::from(format!(" Order #{} · Esc closes ", view.order_id)),
    };
    let lines = match &view.data {
        DetailData::Loading => vec![Line::from(Span::styled("loading…", theme.dim()))],
        DetailData::NotFound => vec![Line::from(format!(
            "The API has no order #{}.",
            view.order_id
        ))],
        DetailData::Failed(e) => vec![Line::from(Span::styled(
            format!("Could not load the order: {e}"),
            theme.warn(),
        ))],
        DetailData::Loaded(detail) => {
            let inner = layout::overlay(area, 84, area.height)
                .width
                .saturating_sub(2);
            detail_lines(app, detail, usize::from(inner))
        }
    };
    let rect = layout::overlay(area, 84, lines.len() as u16 + 2);
    f.render_widget(Clear, rect);
    f.render_widget(
        Paragraph::new(lines)
            .block(block(theme, title, true))
            .scroll((view.scroll, 0)),
        rect,
    );
}

/// The dead-letter pane: what the pipeline could not use, not yet handled, oldest first.
fn draw_dead_letters(f: &mut Frame, app: &App, area: Rect) {
    let theme = app.theme;
    let focused = matches!(app.overlay, Overlay::None);
    let mut title = vec![Span::raw(" Dead letters · not handled · oldest first")];
    if let Some(letters) = &app.dead_letters {
        title.push(Span::raw(format!(
            " · {}",
            text::thousands(letters.len() as u64)
        )));
    }
    if let Some(acting) = &app.acting {
        title.push(Span::styled(
            format!(" · {} {}…", acting.kind.doing(), acting.at),
            theme.warn(),
        ));
    }
    title.push(Span::raw(" "));
    let outer = block(theme, Line::from(title), focused);
    let inner = outer.inner(area);
    f.render_widget(outer, area);
    let letters = match (&app.dead_letters, &app.errors.dead_letters) {
        (_, Some(e)) => {
            let msg = format!("dead letters unavailable: {e}");
            f.render_widget(
                Paragraph::new(msg)
                    .style(theme.warn())
                    .wrap(Wrap { trim: true }),
                inner,
            );
            return;
        }
        (None, None) => {
            f.render_widget(
                Paragraph::new("reading the dead-letter topics…").style(theme.dim()),
                inner,
            );
            return;
        }
        (Some(l), None) if l.is_empty() => {
            f.render_widget(
                Paragraph::new("no dead letters waiting: every record was used or handled")
                    .style(theme.dim()),
                inner,
            );
            return;
        }
        (Some(l), None) => l,
    };
    let scroll = app.dead_letters_scroll;
    let coordinates = letters
        .iter()
        .map(|d| d.coordinates().to_string().chars().count())
        .max()
        .unwrap_or(0)
        .clamp(11, 28);
    const KEY_WIDTH: usize = 9;
    const FROM_WIDTH: usize = 16;
    const REASON_WIDTH: usize = 16;
    let error_width = usize::from(inner.width)
        .saturating_sub(8 + coordinates + REASON_WIDTH + KEY_WIDTH + FROM_WIDTH + 5);
    let header = Row::new(vec![
        "when",
        "dead letter",
        "reason",
        "key",
        "from",
        "error",
    ])
    .style(theme.header());
    let rows: Vec<Row> = letters
        .iter()
        .enumerate()
        .skip(scroll.offset)
        .take(usize::from(inner.height.saturating_sub(1)))
        .map(|(i, d)| {
            let style = if focused && i == scroll.selected {
                theme.selected()
            } else {
                Style::new()
            };
            let when = d
                .timestamp
                .as_deref()
                .and_then(|t| t.parse::<Timestamp>().ok())
                .map(|t| text::time_of_day(&t))
                .unwrap_or_default();
            let from = match (&d.group, &d.source) {
                (Some(g), _) => g.clone(),
                (None, Some(s)) => s.topic.clone(),
                (None, None) => String::new(),
            };
            // ↻N: redriven N times already and back again.
            let mut reason = d.reason.clone();
            if d.redrive_count > 0 {
                reason.push_str(&format!(" ↻{}", d.redrive_count));
            }
            Row::new(vec![
                Cell::from(when),
                Cell::from(text::fit(&d.coordinates().to_string(), coordinates)),
                Cell::from(text::fit(&reason, REASON_WIDTH)).style(theme.fraud()),
                Cell::from(text::fit(d.key.as_deref().unwrap_or("—"), KEY_WIDTH)),
                Cell::from(text::fit(&from, FROM_WIDTH)),
                Cell::from(text::fit(
                    d.error.as_deref().unwrap_or_default(),
                    error_width,
                ))
                .style(theme.dim()),
            ])
            .style(style)
        })
        .collect();
    let widths = [
        Constraint::Length(8),
        Constraint::Length(coordinates as u16),
        Constraint::Length(REASON_WIDTH as u16),
        Constraint::Length(KEY_WIDTH as u16),
        Constraint::Length(FROM_WIDTH as u16),
        Constraint::Fill(1),
    ];
    f.render_widget(
        Table::new(rows, widths).header(header).column_spacing(1),
        inner,
    );
}

/// One dead letter: where it is, why it is there, what was done with it, its headers and
/// its value.
fn dead_letter_lines(theme: Theme, d: &DeadLetter) -> Vec<Line<'static>> {
    let field = |name: &'static str, v: String| {
        Line::from(vec![
            Span::styled(format!("{name:<14}"), theme.label()),
            Span::raw(v),
        ])
    };
    let mut lines = vec![
        field("dead letter", d.coordinates().to_string()),
        field(
            "reason",
            match &d.error {
                Some(e) => format!("{} — {e}", d.reason),
                None => d.reason.clone(),
            },
        ),
        field("key", d.key.clone().unwrap_or_else(|| "(none)".to_owned())),
    ];
    if let Some(t) = &d.timestamp {
        lines.push(field("dead-lettered", t.clone()));
    }
    if let Some(g) = &d.group {
        lines.push(field("by group", g.clone()));
    }
    match &d.source {
        Some(s) => lines.push(field(
            "read from",
            format!("{} partition {} offset {}", s.topic, s.partition, s.offset),
        )),
        None => lines.push(Line::from(Span::styled(
            "no source header: it cannot be redriven, only discarded",
            theme.warn(),
        ))),
    }
    if d.redrive_count > 0 {
        lines.push(field(
            "redriven",
            format!(
                "{} time(s) before, last from {}",
                d.redrive_count,
                d.redriven_from.as_deref().unwrap_or("?")
            ),
        ));
    }
    match &d.handled {
        Some(h) => lines.push(Line::from(Span::styled(
            format!(
                "{} by {} at {}{}",
                h.action,
                h.by,
                h.at,
                h.sent_to
                    .as_deref()
                    .map(|t| format!(" to {t}"))
                    .unwrap_or_default()
            ),
            theme.good(),
        ))),
        None => lines.push(Line::from(vec![
            Span::styled("not handled", theme.warn()),
            Span::styled(" · R redrives it, D discards it", theme.dim()),
        ])),
    }
    lines.push(Line::from(""));
    lines.push(Line::from(Span::styled("Headers", theme.title())));
    for h in &d.headers {
        lines.push(Line::from(vec![
            Span::styled(format!("  {:<20}", h.key), theme.key()),
            Span::raw(h.value.clone().unwrap_or_else(|| "(null)".to_owned())),
        ]));
    }
    lines.push(Line::from(""));
    let mut value_title = format!("Value · {} bytes", d.value_bytes);
    if d.truncated {
        value_title.push_str(" · cut to fit the dead-letter topic");
    }
    lines.push(Line::from(Span::styled(value_title, theme.title())));
    if d.value.is_empty() {
        lines.push(Line::from(Span::styled("(empty)", theme.dim())));
    }
    lines.extend(d.value.lines().map(|l| Line::from(l.to_owned())));
    lines
}

fn draw_dead_letter(f: &mut Frame, app: &App, d: &DeadLetter, scroll: u16, area: Rect) {
    let theme = app.theme;
    let lines = dead_letter_lines(theme, d);
    let rect = layout::overlay(area, 96, lines.len() as u16 + 2);
    f.render_widget(Clear, rect);
    f.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(block(
                theme,
                format!(" Dead letter {} · Esc closes ", d.coordinates()),
                true,
            ))
            .scroll((scroll, 0)),
        rect,
    );
}

fn draw_confirm(f: &mut Frame, theme: Theme, r: &DeadLetterRequest, area: Rect) {
    let what = match r.kind {
        DeadLetterActionKind::Redrive => format!(
            "Send {} back to {}?",
            r.at,
            r.to.as_deref().unwrap_or("its source topic")
        ),
        DeadLetterActionKind::Discard => format!("Mark {} handled without sending it?", r.at),
    };
    let lines = vec![
        Line::from(what),
        Line::from(Span::styled(
            format!(
                "reason {} · key {}",
                r.reason,
                r.key.as_deref().unwrap_or("(none)")
            ),
            theme.dim(),
        )),
        Line::from(Span::styled(
            "It is recorded with your name in the dead-letter ledger.",
            theme.dim(),
        )),
        Line::from(""),
        Line::from(vec![
            Span::styled("y", theme.key()),
            Span::raw(format!(" {}  ", r.kind.verb())),
            Span::styled("any other key", theme.key()),
            Span::raw(" cancel"),
        ]),
    ];
    let rect = layout::overlay(area, 72, lines.len() as u16 + 2);
    f.render_widget(Clear, rect);
    let title = match r.kind {
        DeadLetterActionKind::Redrive => " Redrive? ",
        DeadLetterActionKind::Discard => " Discard? ",
    };
    f.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: true })
            .block(block(theme, title, true)),
        rect,
    );
}
