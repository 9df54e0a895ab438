//! The dead-letter overlay: one record, where it is, why it is there, what was done with it,
//! its headers and its value.

use super::parts::block;
use crate::console::api::DeadLetter;
use crate::console::layout;
use crate::console::state::App;
use crate::console::theme::Theme;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph, Wrap};
use ratatui::Frame;

/// Draws the overlay of dead letter `d`, scrolled down `scroll` lines.
pub(super) fn draw(f: &mut Frame, app: &App, d: &DeadLetter, scroll: u16, area: Rect) {
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

/// One dead letter: where it is, why it is there, what was done with it, its headers and
/// its value.
fn dead_letter_lines(theme: Theme, d: &DeadLetter) -> Vec<Line<'static>> {
    let mut lines = record_lines(theme, d);
    lines.push(Line::from(""));
    lines.extend(content_lines(theme, d));
    lines
}

/// Where the letter is, why, where it was read from, and whether it was handled.
fn record_lines(theme: Theme, d: &DeadLetter) -> Vec<Line<'static>> {
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
    lines
}

/// The letter's headers and its value, a line of the value per line.
fn content_lines(theme: Theme, d: &DeadLetter) -> Vec<Line<'static>> {
    let mut lines = vec![Line::from(Span::styled("Headers", theme.title()))];
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
