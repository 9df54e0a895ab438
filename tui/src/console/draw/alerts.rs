//! The fraud-alerts pane: the newest alerts first, the selected one highlighted.

use super::parts::block;
use crate::console::state::{App, Overlay, Pane};
use crate::console::text;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::Style;
use ratatui::text::Line;
use ratatui::widgets::{Cell, Paragraph, Row, Table};
use ratatui::Frame;

/// Draws the alerts pane.
pub(super) fn draw(f: &mut Frame, app: &App, area: Rect) {
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
