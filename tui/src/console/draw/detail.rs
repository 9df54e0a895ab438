//! The order detail overlay: the order's facts and its journey through the pipeline, step
//! by step, with the consumer groups not yet past it.

use super::parts::{block, label, value};
use crate::console::api::{FraudDecision, OrderDetail};
use crate::console::layout;
use crate::console::state::{App, DetailData, DetailView};
use crate::console::text;
use crate::console::theme::Theme;
use orders_core::Timestamp;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph};
use ratatui::Frame;

/// Draws the detail overlay.
pub(super) fn draw(f: &mut Frame, app: &App, view: &DetailView, area: Rect) {
    let theme = app.theme;
    let title = match &view.data {
        DetailData::Loaded(d) if d.order.fraud => Line::from(vec![
            Span::raw(format!(" Order #{} ", view.order_id)),
            Span::styled("! FRAUD ", theme.fraud()),
            Span::raw("· Esc closes "),
        ]),
        _ => Line::from(format!(" Order #{} · Esc closes ", view.order_id)),
    };
    let lines = match &view.data {
        DetailData::Loading => vec![Line::from(Span::styled("loading…", theme.dim()))],
        DetailData::NotFound => vec![Line::from(format!(
            "The API has no order #{}.",
            view.order_id
        ))],
        DetailData::Failed(e) => vec![Line::from(Span::styled(
            format!("Could not load the order: {e}"),
            theme.warn(),
        ))],
        DetailData::Loaded(detail) => {
            let inner = layout::overlay(area, 84, area.height)
                .width
                .saturating_sub(2);
            detail_lines(app, detail, usize::from(inner))
        }
    };
    let rect = layout::overlay(area, 84, lines.len() as u16 + 2);
    f.render_widget(Clear, rect);
    f.render_widget(
        Paragraph::new(lines)
            .block(block(theme, title, true))
            .scroll((view.scroll, 0)),
        rect,
    );
}

/// The detail's lines for an overlay `width` wide inside.
fn detail_lines(app: &App, detail: &OrderDetail, width: usize) -> Vec<Line<'static>> {
    let theme = app.theme;
    let payment = payment_status(detail);
    let mut lines = order_lines(theme, detail);
    lines.extend(fraud_lines(theme, detail, width));
    lines.push(Line::from(vec![
        label(theme, "Payment   "),
        Span::styled(payment.clone(), theme.payment(Some(&payment))),
    ]));
    lines.push(Line::from(""));
    lines.push(Line::from(Span::styled(
        format!("{:<20}{:<12}{:>10}", "Journey", "time (UTC)", "after"),
        theme.title(),
    )));
    lines.extend(journey_lines(app, detail, payment));
    lines
}

/// The order's facts: customer, country, status, amount, source and where it is in Kafka.
fn order_lines(theme: Theme, detail: &OrderDetail) -> Vec<Line<'static>> {
    let o = &detail.order;
    vec![
        Line::from(vec![
            label(theme, "Customer  "),
            value(theme, format!("{:<10}", o.customer_id)),
            label(theme, "Country  "),
            value(theme, format!("{:<6}", o.country)),
            label(theme, "Status  "),
            value(theme, o.status.clone()),
        ]),
        Line::from(vec![
            label(theme, "Amount    "),
            value(theme, format!("{:<10}", text::money(o.amount))),
            label(theme, "Currency "),
            value(theme, format!("{:<6}", o.currency)),
            label(theme, "Source  "),
            Span::raw(o.source.clone().unwrap_or_else(|| "-".to_owned())),
        ]),
        Line::from(vec![
            label(theme, "Kafka     "),
            Span::raw(match (o.kafka_partition, o.kafka_offset) {
                (Some(p), Some(off)) => {
                    format!("orders partition {p}, offset {}", text::thousands_i(off))
                }
                _ => "-".to_owned(),
            }),
        ]),
    ]
}

/// Whether the order was flagged, why and by which rule (on a line of its own when it does
/// not fit in `width`).
fn fraud_lines(theme: Theme, detail: &OrderDetail, width: usize) -> Vec<Line<'static>> {
    let o = &detail.order;
    let j = &detail.journey;
    let mut lines = Vec::new();
    let reason = j.fraud.reason.clone().or_else(|| o.fraud_reason.clone());
    if o.fraud {
        let mut fraud = Line::from(vec![
            label(theme, "Fraud     "),
            Span::styled("! FLAGGED ", theme.fraud()),
            Span::raw(reason.clone().unwrap_or_default()),
        ]);
        if let Some(rule) = &j.fraud.rule_id {
            let rule = format!("rule {rule}");
            if fraud.width() + 3 + rule.len() <= width {
                fraud.push_span(Span::styled(format!(" · {rule}"), theme.dim()));
                lines.push(fraud);
            } else {
                lines.push(fraud);
                lines.push(Line::from(vec![
                    Span::raw("          "),
                    Span::styled(rule, theme.dim()),
                ]));
            }
        } else {
            lines.push(fraud);
        }
    } else {
        lines.push(Line::from(vec![
            label(theme, "Fraud     "),
            Span::raw("not flagged"),
        ]));
    }
    lines
}

/// The payment's status: the journey's, else the order's, else PENDING.
fn payment_status(detail: &OrderDetail) -> String {
    detail
        .journey
        .payment
        .status
        .clone()
        .or_else(|| detail.order.payment_status.clone())
        .unwrap_or_else(|| "PENDING".to_owned())
}

/// The journey's steps (created, fraud decision, payment, stored) and the groups not yet
/// past the order.
fn journey_lines(app: &App, detail: &OrderDetail, payment: String) -> Vec<Line<'static>> {
    let theme = app.theme;
    let o = &detail.order;
    let j = &detail.journey;
    let behind = groups_behind(app, detail);
    let waiting_for = |group: &str| behind.as_ref().map(|p| p.iter().any(|g| g == group));
    let created = j.created.at.as_ref().or(o.created_at.as_ref());
    let date = created.map(|t| t.0.format("%Y-%m-%d").to_string());
    let mut lines = vec![step(
        theme,
        "created",
        created,
        created,
        created.is_some(),
        date.unwrap_or_default(),
    )];

    let (done, what) = fraud_decision(detail, waiting_for("fraud-group"));
    lines.push(step(
        theme,
        "fraud decision",
        j.fraud.at.as_ref(),
        created,
        done,
        what,
    ));

    let paid = !payment.eq_ignore_ascii_case("PENDING");
    let what = match (paid, waiting_for("payments-group")) {
        (true, _) => payment,
        (false, Some(true)) => "waiting for payments-group".to_owned(),
        (false, _) => "no result stored yet".to_owned(),
    };
    lines.push(step(
        theme,
        "payment",
        j.payment.at.as_ref(),
        created,
        paid,
        what,
    ));

    let stored = j.stored.at.as_ref().or(o.processed_at.as_ref());
    lines.push(step(
        theme,
        "stored",
        stored,
        created,
        stored.is_some(),
        if stored.is_some() {
            "by analytics-group".to_owned()
        } else {
            "waiting for analytics-group".to_owned()
        },
    ));
    lines.push(Line::from(""));
    lines.push(progress_line(theme, detail, behind));
    lines
}

/// Whether the fraud decision is made and what it was, given whether fraud-group has yet
/// to pass the order (`None`: unknown).
fn fraud_decision(detail: &OrderDetail, fraud_group_waiting: Option<bool>) -> (bool, String) {
    let o = &detail.order;
    let j = &detail.journey;
    match j.fraud.decision {
        _ if o.fraud || j.fraud.decision == FraudDecision::Alert => {
            (true, "alert raised".to_owned())
        }
        FraudDecision::Clear => (true, "clear: passed, no alert".to_owned()),
        // fraud-group past it: its alert, if any, is on its way to the store.
        FraudDecision::Pending if fraud_group_waiting == Some(false) => {
            (false, "waiting for analytics-group".to_owned())
        }
        FraudDecision::Pending => (false, "waiting for fraud-group".to_owned()),
        FraudDecision::Alert | FraudDecision::Unknown => match fraud_group_waiting {
            Some(true) => (false, "waiting for fraud-group".to_owned()),
            Some(false) => (true, "clear: passed, no alert".to_owned()),
            None => (false, "no alert; fraud-group progress unknown".to_owned()),
        },
    }
}

/// Which groups are not yet past the order's offset, as of when the offsets were read.
fn progress_line(theme: Theme, detail: &OrderDetail, behind: Option<Vec<String>>) -> Line<'static> {
    let sampled = detail
        .journey
        .offsets_sampled_at
        .as_ref()
        .map(|t| format!(" (offsets read {})", text::time_of_day(t)))
        .unwrap_or_default();
    match behind {
        Some(p) if p.is_empty() => Line::from(vec![
            Span::styled("Every consumer group is past this order.", theme.good()),
            Span::styled(sampled, theme.dim()),
        ]),
        Some(p) => Line::from(vec![
            Span::raw("Not yet past its offset: "),
            Span::styled(p.join(", "), theme.warn()),
            Span::styled(sampled, theme.dim()),
        ]),
        None => Line::from(Span::styled(
            "Group progress unknown: the API has no consumer offsets.",
            theme.dim(),
        )),
    }
}

/// One step of the journey: done or not, when, how long after creation, what happened.
fn step(
    theme: Theme,
    name: &'static str,
    at: Option<&Timestamp>,
    created: Option<&Timestamp>,
    done: bool,
    what: String,
) -> Line<'static> {
    let mark = if done {
        Span::styled("  ✓ ", theme.good())
    } else {
        Span::styled("  … ", theme.warn())
    };
    let when = at.map(text::time_of_day_ms).unwrap_or_default();
    let after = match (created, at) {
        (Some(c), Some(t)) if name != "created" => text::delta(*c, *t),
        _ => String::new(),
    };
    Line::from(vec![
        mark,
        Span::styled(format!("{name:<16}"), theme.value()),
        Span::raw(format!("{when:<12}{after:>10}  ")),
        Span::raw(what),
    ])
}

/// The groups that have not yet consumed the order's record: the API's word when it gives
/// one, else what the lag figures say; never a group whose effect the detail shows.
fn groups_behind(app: &App, detail: &OrderDetail) -> Option<Vec<String>> {
    let j = &detail.journey;
    let seen = orders_core::lag::SeenEffects {
        stored: j.stored.at.is_some() || detail.order.processed_at.is_some(),
        alerted: detail.order.fraud || j.fraud.decision == FraudDecision::Alert,
        payment_stored: j
            .payment
            .status
            .as_deref()
            .or(detail.order.payment_status.as_deref())
            .is_some_and(|s| !s.eq_ignore_ascii_case("PENDING")),
    };
    let mut behind = match &j.groups_behind {
        Some(p) => p.clone(),
        None => lag_groups_behind(app, detail)?,
    };
    behind.retain(|g| !seen.prove_past(g));
    Some(behind)
}

/// The groups the lag figures show not yet past the order's record.
fn lag_groups_behind(app: &App, detail: &OrderDetail) -> Option<Vec<String>> {
    let (partition, offset) = (detail.order.kafka_partition?, detail.order.kafka_offset?);
    let known: Vec<(String, bool)> = app
        .lag
        .iter()
        .filter_map(|g| Some((g.group.clone(), g.has_passed(partition, offset)?)))
        .collect();
    (!known.is_empty()).then(|| {
        known
            .into_iter()
            .filter(|(_, passed)| !passed)
            .map(|(g, _)| g)
            .collect()
    })
}
