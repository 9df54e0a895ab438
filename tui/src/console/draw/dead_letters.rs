//! The dead-letter pane: what the pipeline could not use and nobody has handled yet,
//! oldest first, a row each.

use super::parts::block;
use crate::console::api::DeadLetter;
use crate::console::state::{App, Overlay};
use crate::console::text;
use crate::console::theme::Theme;
use orders_core::Timestamp;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table, Wrap};
use ratatui::Frame;

const KEY_WIDTH: usize = 9;
const FROM_WIDTH: usize = 16;
const REASON_WIDTH: usize = 16;

/// Draws the dead-letter pane: what the pipeline could not use, not yet handled, oldest
/// first.
pub(super) fn draw(f: &mut Frame, app: &App, area: Rect) {
    let theme = app.theme;
    let focused = matches!(app.overlay, Overlay::None);
    let outer = block(theme, title(app), focused);
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
    draw_table(f, app, letters, inner, focused);
}

/// The pane's title: how many letters wait, and the action under way.
fn title(app: &App) -> Line<'static> {
    let theme = app.theme;
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
    Line::from(title)
}

/// The letters that fit, a row each, under a header.
fn draw_table(f: &mut Frame, app: &App, letters: &[DeadLetter], inner: Rect, focused: bool) {
    let theme = app.theme;
    let scroll = app.dead_letters_scroll;
    let coordinates = letters
        .iter()
        .map(|d| d.coordinates().to_string().chars().count())
        .max()
        .unwrap_or(0)
        .clamp(11, 28);
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
            let selected = focused && i == scroll.selected;
            letter_row(theme, d, coordinates, error_width, selected)
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

/// One letter's row: when, where, why, its key, who dead-lettered it and the error, each
/// cut to its column.
fn letter_row(
    theme: Theme,
    d: &DeadLetter,
    coordinates: usize,
    error_width: usize,
    selected: bool,
) -> Row<'static> {
    let style = if selected {
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
}
