//! The orders-rate pane: orders per minute from the store, or per second as this console
//! saw them, as a sparkline with the rate now and the peak. The totals pane shows the same
//! history beside its count on a narrow screen.

use super::parts::{block, label, value};
use crate::console::state::App;
use crate::console::text;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::Line;
use ratatui::widgets::{Paragraph, Sparkline};
use ratatui::Frame;
use std::time::Duration;

/// The span the orders/s history covers.
const SPARK_WINDOW: Duration = Duration::from_secs(5 * 60);

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

/// The sparkline's bars for `width` columns.
pub(super) fn spark_data(app: &App, width: usize) -> Vec<Option<u64>> {
    Spark::of(app, width).bars()
}

/// Orders per second now; "stale" while the API does not answer (the last rate is not now).
pub(super) fn rate_now(app: &App) -> String {
    match app.rate.rate_now() {
        _ if app.is_stale() => "stale".to_owned(),
        Some(rate) => text::rate(rate),
        None => "-/s".to_owned(),
    }
}

/// Draws the rate pane.
pub(super) fn draw(f: &mut Frame, app: &App, area: Rect) {
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
