//! The status line: the filter being typed, or the connection, the last update, the canary
//! and the keys that fit.

use crate::console::api::CanaryStatus;
use crate::console::state::{App, Connection, FilterInput, Pane};
use crate::console::text;
use crate::console::theme::Theme;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

/// A key and what it does.
type Hint = (&'static str, &'static str);

/// Draws the status line.
pub(super) fn draw(f: &mut Frame, app: &App, area: Rect) {
    if let Some(input) = &app.input {
        draw_input(f, app.theme, input, area);
        return;
    }
    let left = state_line(app, area);
    let used = left.width();
    let (right, width) = hints(app, used, area);
    let [l, r] =
        Layout::horizontal([Constraint::Fill(1), Constraint::Length(width as u16 + 1)]).areas(area);
    f.render_widget(Paragraph::new(left), l);
    f.render_widget(Paragraph::new(Line::from(right)), r);
}

/// The filter being typed, with what is wrong with it or how to use it.
fn draw_input(f: &mut Frame, theme: Theme, input: &FilterInput, area: Rect) {
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
}

/// The left part: the connection, then an operator's action answered or the API's address
/// and the age of the data, then PAUSED and the canary.
fn state_line(app: &App, area: Rect) -> Line<'static> {
    let theme = app.theme;
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
    Line::from(left)
}

/// As many key hints as fit beside the `used` columns of the left part, most important
/// first, two spaces apart; and the columns they take.
fn hints(app: &App, used: usize, area: Rect) -> (Vec<Span<'static>>, usize) {
    let theme = app.theme;
    let dead_letter_hints: &[Hint] = &[
        ("R", "redrive"),
        ("D", "discard"),
        ("Enter", "record"),
        ("Tab", "pane"),
        ("?", "help"),
        ("q", "quit"),
    ];
    let hints: &[Hint] = if app.focus == Pane::DeadLetters {
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
    let retry: &[Hint] = match app.connection {
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
    (right, width)
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
