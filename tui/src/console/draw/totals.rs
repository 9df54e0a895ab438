//! The totals pane: orders, sales, fraud and payments so far; on a narrow screen with the
//! orders/s history beside the count, on a wide one with the breakdowns by status and by
//! country.

use super::parts::{block, label, value};
use super::rate::{rate_now, spark_data};
use crate::console::api::{CountSales, Totals};
use crate::console::layout::Areas;
use crate::console::state::App;
use crate::console::text;
use crate::console::theme::Theme;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Sparkline};
use ratatui::Frame;

/// Draws the totals pane.
pub(super) fn draw(f: &mut Frame, app: &App, areas: &Areas, wide: bool) {
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
    if wide {
        f.render_widget(Paragraph::new(wide_lines(app, t)), inner);
    } else {
        draw_narrow(f, app, t, inner);
    }
}

/// A wide screen's lines: a figure and its companion on each line, then the breakdowns by
/// status and by country.
fn wide_lines(app: &App, t: &Totals) -> Vec<Line<'static>> {
    let theme = app.theme;
    let rate = rate_now(app);
    let mut lines = vec![
        Line::from(vec![
            label(theme, "Orders    "),
            value(theme, format!("{:<16}", text::thousands(t.order_count))),
            label(theme, "Rate  "),
            value(theme, rate),
        ]),
        Line::from(vec![
            label(theme, "Sales     "),
            value(theme, format!("{:<16}", text::money(t.total_sales))),
            label(theme, "Avg   "),
            value(theme, text::money(t.average_order_value)),
        ]),
        Line::from(vec![
            label(theme, "Fraud     "),
            value(theme, text::thousands(t.fraud_count)),
            Span::raw(" · "),
            value(theme, text::percent(t.fraud_share_by_count())),
            Span::raw(" of orders · "),
            value(theme, text::percent(t.fraud_share_by_sales())),
            Span::raw(" of $"),
        ]),
        paid_line(theme, t, true),
        breakdown(theme, "Status    ", &t.by_status, usize::MAX),
    ];
    lines.extend(country_lines(theme, t));
    lines
}

/// Countries, busiest first, on as many lines as are left.
fn country_lines(theme: Theme, t: &Totals) -> Vec<Line<'static>> {
    let mut countries: Vec<(&String, u64)> = t
        .by_country
        .iter()
        .map(|(c, v)| (c, v.order_count))
        .collect();
    countries.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let per_line = 4;
    let mut lines = Vec::new();
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
    lines
}

/// A narrow screen's four lines, the orders/s history filling the rest of the first.
fn draw_narrow(f: &mut Frame, app: &App, t: &Totals, inner: Rect) {
    let theme = app.theme;
    let rate = rate_now(app);
    let head = format!("{:<10}", text::thousands(t.order_count));
    let first = Line::from(vec![
        label(theme, "Orders    "),
        value(theme, head),
        value(theme, format!("{rate:>8} ")),
    ]);
    let used = first.width() as u16;
    let lines = vec![
        first,
        Line::from(vec![
            label(theme, "Sales     "),
            value(theme, text::money(t.total_sales)),
            Span::raw("  avg "),
            value(theme, text::money(t.average_order_value)),
        ]),
        Line::from(vec![
            label(theme, "Fraud     "),
            value(theme, text::percent(t.fraud_share_by_count())),
            Span::raw(" of orders · "),
            value(theme, text::percent(t.fraud_share_by_sales())),
            Span::raw(" of $"),
        ]),
        paid_line(theme, t, false),
    ];
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
    map: &std::collections::BTreeMap<String, CountSales>,
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
