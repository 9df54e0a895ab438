//! The consumer-lag pane: each group's records and seconds behind and its status; on a wide
//! screen its lag by partition of the orders topic and why a group is not OK.

use super::parts::block;
use crate::console::api::{GroupLag, LagStatus};
use crate::console::state::App;
use crate::console::text;
use crate::console::theme::Theme;
use ratatui::layout::{Constraint, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table};
use ratatui::Frame;

/// Draws the lag pane.
pub(super) fn draw(f: &mut Frame, app: &App, area: Rect, wide: bool) {
    let theme = app.theme;
    let outer = block(theme, title(app), false);
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
    let (header, widths) = header(theme, wide);
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
        let rest = Rect {
            y: inner.y + table_height + 1,
            height: inner.height - table_height - 1,
            ..inner
        };
        f.render_widget(Paragraph::new(reasons(app)), rest);
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

/// The pane's title: the worst status when it is not OK, STALE while the API does not
/// answer.
fn title(app: &App) -> Line<'static> {
    let theme = app.theme;
    let worst = app.lag.iter().map(|g| g.status).max_by_key(|s| match s {
        LagStatus::Ok => 1,
        LagStatus::Unknown => 0,
        LagStatus::Warn => 2,
        LagStatus::Stall => 3,
        LagStatus::Stop => 4,
    });
    match worst {
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
    }
}

/// The table's header and column widths; a wide screen adds the lag by partition.
fn header(theme: Theme, wide: bool) -> (Row<'static>, Vec<Constraint>) {
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
    (header, widths)
}

/// Why each group that is not OK is not, a line each.
fn reasons(app: &App) -> Vec<Line<'static>> {
    let theme = app.theme;
    app.lag
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
        .collect()
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
