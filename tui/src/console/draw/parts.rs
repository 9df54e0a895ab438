//! The pieces every pane draws with: its bordered, titled block and the label and value
//! spans of its figures.

use crate::console::theme::Theme;
use ratatui::text::{Line, Span};
use ratatui::widgets::Block;

/// A pane's border, highlighted when `focused`, with its title.
pub(super) fn block(
    theme: Theme,
    title: impl Into<Line<'static>>,
    focused: bool,
) -> Block<'static> {
    Block::bordered()
        .border_style(theme.border(focused))
        .title(title.into().style(theme.title()))
}

/// The name of a figure.
pub(super) fn label(theme: Theme, s: &'static str) -> Span<'static> {
    Span::styled(s, theme.label())
}

/// A figure.
pub(super) fn value(theme: Theme, s: String) -> Span<'static> {
    Span::styled(s, theme.value())
}
