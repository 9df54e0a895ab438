//! The help overlay: the keys, the filter words and what the marks mean.

use super::parts::block;
use crate::console::keys::{FILTER_HELP, HELP};
use crate::console::layout;
use crate::console::theme::Theme;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph};
use ratatui::Frame;

/// The help overlay, sized to its text: as wide as its widest line and as tall as its
/// lines, without the blank lines between sections when the screen is too short for them
/// (at 80×24 every line still shows whole).
pub(super) fn draw(f: &mut Frame, theme: Theme, area: Rect) {
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
