//! The confirmation asked before a dead letter is redriven or discarded.

use super::parts::block;
use crate::console::layout;
use crate::console::state::{DeadLetterActionKind, DeadLetterRequest};
use crate::console::theme::Theme;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph, Wrap};
use ratatui::Frame;

/// Draws the confirmation overlay: what the action does to which record, and the key that
/// does it.
pub(super) fn draw(f: &mut Frame, theme: Theme, r: &DeadLetterRequest, area: Rect) {
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
