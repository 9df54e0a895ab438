//! The orders pane: the orders held, newest first, as many as fit, with their fraud and
//! payment results and where they are in Kafka; the selected one highlighted.

use super::parts::block;
use crate::console::api::OrderDocument;
use crate::console::state::{App, Overlay, Pane};
use crate::console::text;
use crate::console::theme::Theme;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table};
use ratatui::Frame;

/// Draws the orders pane.
pub(super) fn draw(f: &mut Frame, app: &App, area: Rect, wide: bool) {
    let theme = app.theme;
    let focused = app.focus == Pane::Orders && matches!(app.overlay, Overlay::None);
    let outer = block(theme, title(app), focused);
    let inner = outer.inner(area);
    f.render_widget(outer, area);

    let rows = usize::from(inner.height.saturating_sub(1));
    let scroll = app.orders_scroll;
    let columns = Columns::new(app, inner.width, wide);
    let header = columns.header(theme);
    let body: Vec<Row> = app
        .visible_orders(scroll.offset, rows)
        .enumerate()
        .map(|(i, doc)| {
            let selected = focused && scroll.offset + i == scroll.selected;
            order_row(theme, doc, &columns, selected)
        })
        .collect();
    let empty = body.is_empty();
    let table = Table::new(body, columns.widths)
        .header(header)
        .column_spacing(1);
    f.render_widget(table, inner);
    if empty {
        let line = Rect {
            y: inner.y + 1,
            height: 1,
            ..inner
        };
        f.render_widget(Paragraph::new(empty_message(app)).style(theme.dim()), line);
    }
}

/// The pane's title: how many orders are held (or match the filter), whether the view
/// follows the newest, and whether polling is paused.
fn title(app: &App) -> Line<'static> {
    let theme = app.theme;
    let shown = app.view().len();
    let mut title = vec![Span::raw(" Orders · newest first")];
    if !app.filter.is_empty() {
        title.push(Span::raw(format!(
            " · {} of {} match “{}”",
            text::thousands(shown as u64),
            text::thousands(app.orders.len() as u64),
            app.filter.text()
        )));
    } else {
        title.push(Span::raw(format!(
            " · {} held",
            text::thousands(app.orders.len() as u64)
        )));
    }
    title.push(Span::raw(if app.follow {
        " · following"
    } else {
        " · not following"
    }));
    if app.paused {
        title.push(Span::styled(" · PAUSED", theme.warn()));
    }
    title.push(Span::raw(" "));
    Line::from(title)
}

/// The table's columns for the pane's width.
struct Columns {
    /// Milliseconds and the fraud reason instead of the bare word.
    wide: bool,
    widths: [Constraint; 10],
    /// What is left for the last column (partition@offset).
    place_width: usize,
}

impl Columns {
    fn new(app: &App, width: u16, wide: bool) -> Self {
        let id_width = app
            .view()
            .first()
            .map(|id| id.to_string().len())
            .unwrap_or(2)
            .max(2) as u16
            + 1;
        // Wide screens get milliseconds and the fraud reason instead of the bare word, when
        // the pane itself has room for them: a squeezed column would cut figures short.
        let wide_columns: u16 = 1 + id_width + 12 + 4 + 9 + 2 + 9 + 25 + 6 + 9 + 8;
        let wide = wide && width >= wide_columns;
        let widths = [
            Constraint::Length(1),
            Constraint::Length(id_width),
            Constraint::Length(if wide { 12 } else { 8 }),
            Constraint::Length(4),
            Constraint::Length(9),
            Constraint::Length(2),
            Constraint::Length(9),
            Constraint::Length(if wide { 25 } else { 5 }),
            Constraint::Length(6),
            Constraint::Fill(1),
        ];
        // What is left for the last column (each column but the first is one space apart),
        // so a place that does not fit is cut visibly rather than read as another offset.
        let fixed: u16 = widths
            .iter()
            .map(|c| match c {
                Constraint::Length(n) => n + 1,
                _ => 0,
            })
            .sum();
        let place_width = usize::from(width.saturating_sub(fixed));
        Columns {
            wide,
            widths,
            place_width,
        }
    }

    fn header(&self, theme: Theme) -> Row<'static> {
        let wide = self.wide;
        let header = [
            "",
            "ID",
            if wide { "TIME (UTC)" } else { "TIME UTC" },
            "CUST",
            "AMOUNT",
            "CC",
            "STATUS",
            if wide { "FRAUD REASON" } else { "FRAUD" },
            "PAY",
            if wide { "PART@OFFSET" } else { "P@OFFSET" },
        ];
        let last = header.len() - 1;
        Row::new(
            header
                .into_iter()
                .enumerate()
                .map(|(i, h)| match i {
                    1 | 4 => Cell::from(Line::from(h).right_aligned()),
                    i if i == last => Cell::from(text::fit(h, self.place_width)),
                    _ => Cell::from(h),
                })
                .collect::<Vec<_>>(),
        )
        .style(theme.header())
    }
}

/// One order's row: flagged ones marked and bold, the selected one highlighted.
fn order_row(theme: Theme, doc: &OrderDocument, columns: &Columns, selected: bool) -> Row<'static> {
    let wide = columns.wide;
    let time = doc
        .created_at
        .as_ref()
        .map(|t| {
            if wide {
                text::time_of_day_ms(t)
            } else {
                text::time_of_day(t)
            }
        })
        .unwrap_or_default();
    let fraud = match (doc.fraud, wide) {
        (false, _) => String::new(),
        (true, true) => doc
            .fraud_reason
            .clone()
            .unwrap_or_else(|| "FRAUD".to_owned()),
        (true, false) => "FRAUD".to_owned(),
    };
    let place = match (doc.kafka_partition, doc.kafka_offset) {
        (Some(p), Some(o)) => text::fit(&format!("{p}@{o}"), columns.place_width),
        _ => String::new(),
    };
    let cells = vec![
        Cell::from(if doc.fraud { "!" } else { " " }),
        Cell::from(Line::from(format!("#{}", doc.order_id)).right_aligned()),
        Cell::from(time),
        Cell::from(doc.customer_id.to_string()),
        Cell::from(Line::from(text::money(doc.amount)).right_aligned()),
        Cell::from(doc.country.clone()),
        Cell::from(doc.status.clone()),
        Cell::from(fraud),
        Cell::from(payment_word(doc).to_owned())
            .style(theme.payment(doc.payment_status.as_deref())),
        Cell::from(place),
    ];
    let mut style = if doc.fraud {
        theme.fraud()
    } else {
        Style::new()
    };
    if selected {
        style = style.patch(theme.selected());
    }
    Row::new(cells).style(style)
}

/// What the pane says when no row shows: why.
fn empty_message(app: &App) -> String {
    if let Some(e) = &app.errors.orders {
        format!("orders unavailable: {e}")
    } else if !app.filter.is_empty() && !app.orders.is_empty() {
        "no held order matches the filter (Esc clears it)".to_owned()
    } else if app.totals.is_some() {
        "no orders yet".to_owned()
    } else {
        "waiting for the API…".to_owned()
    }
}

fn payment_word(doc: &OrderDocument) -> &str {
    doc.payment_status.as_deref().unwrap_or("-")
}
