//! The web view at `/`: one server-rendered page (no script, no build step) with totals,
//! consumer lag, the latest orders and fraud alerts, refreshing itself every few seconds.
//!
//! Every value is escaped: order fields come from Kafka and may hold anything.

use crate::model::{AlertJson, GroupLagJson, OrderJson, TotalsBody};
use orders_core::canary::is_canary_id;
use orders_core::domain::{Timestamp, CANARY_ORDER_IDS};
use std::fmt::Write as _;

/// The `Content-Security-Policy` of every answer: nothing may load or run but the page's
/// own stylesheet (by its hash), no form posts anywhere, and no page may frame this one.
pub fn content_security_policy() -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    let style = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(STYLE));
    format!(
        "default-src 'none'; style-src 'sha256-{style}'; img-src 'self'; base-uri 'none'; \
         form-action 'none'; frame-ancestors 'none'"
    )
}

/// Seconds between refreshes.
pub const REFRESH_SECONDS: u32 = 5;

/// What the page shows; a missing part is shown as unavailable with its reason.
pub struct Dashboard {
    pub generated_at: String,
    pub totals: Result<TotalsBody, String>,
    pub orders: Result<Vec<OrderJson>, String>,
    pub alerts: Result<Vec<AlertJson>, String>,
    /// `None`: this server watches no Kafka.
    pub lag: Option<Result<Vec<GroupLagJson>, String>>,
    /// Asked for with `?canaries=true`: the canary orders' journeys, which are never
    /// among the orders or in the totals.
    pub canaries: Option<Result<crate::model::CanaryBody, String>>,
}

fn seconds(s: Option<f64>) -> String {
    s.map(|s| format!("{s:.2} s"))
        .unwrap_or_else(|| "—".to_owned())
}

fn canaries_section(out: &mut String, canaries: &Option<Result<crate::model::CanaryBody, String>>) {
    let Some(canaries) = canaries else {
        out.push_str("<p class=\"muted\"><a href=\"?canaries=true\">Show the canary orders</a> (they never count among the orders or in the totals).</p>");
        return;
    };
    out.push_str("<section><h2>Canary orders <a href=\"/\">hide</a></h2>");
    match canaries {
        Err(e) => {
            let _ = write!(out, "<p class=\"error\">{}</p>", escape(e));
        }
        Ok(c) => {
            let _ = write!(
                out,
                "<p>SLA {:.0} s · {} pending · {} lost in the last {} · p50/p99 stored {} / {}</p>",
                c.sla_seconds,
                c.pending,
                c.lost_in_window,
                c.window,
                seconds(c.percentiles.stored.p50),
                seconds(c.percentiles.stored.p99),
            );
            if c.canaries.is_empty() {
                out.push_str("<p class=\"muted\">No canary yet.</p>");
            } else {
                out.push_str("<div class=\"scroll\"><table><thead><tr><th>Canary</th><th>State</th><th>Decided</th><th>Paid</th><th>Stored</th></tr></thead><tbody>");
                for j in &c.canaries {
                    let _ = write!(
                        out,
                        "<tr class=\"canary\" data-order-id=\"{}\"><td>{}</td><td>{}</td>\
                         <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
                        j.order_id,
                        escape(&canary_label(j.order_id, j.created_at.as_deref())),
                        escape(j.state.unwrap_or("—")),
                        seconds(j.decision_seconds),
                        seconds(j.paid_seconds),
                        seconds(j.stored_seconds),
                    );
                }
                out.push_str("</tbody></table></div>");
            }
        }
    }
    out.push_str("</section>");
}

/// A canary as a person reads it: "canary" and the time it was made (its `created_at`, or
/// the time its id carries when analytics has not read it yet), never its id: canary ids
/// (2^51 and up) say nothing to an operator and look like a gap in the orders.
fn canary_label(order_id: u64, created_at: Option<&str>) -> String {
    let made = created_at.map(str::to_owned).or_else(|| {
        let millis = order_id.checked_sub(CANARY_ORDER_IDS.start)?;
        let micros = i64::try_from(millis).ok()?.checked_mul(1_000)?;
        Timestamp::from_micros(micros)
            .filter(|_| is_canary_id(order_id))
            .map(|t| t.to_rfc3339())
    });
    match made {
        Some(t) => format!("canary {}", short_time(&t)),
        None => "canary".to_owned(),
    }
}

/// How an order is named in a table: `#id`, or as a canary when the id is in their range.
fn order_label(order_id: u64) -> String {
    if is_canary_id(order_id) {
        canary_label(order_id, None)
    } else {
        format!("#{order_id}")
    }
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// `2024-01-15T10:30:00.123Z` as `2024-01-15 10:30:00`.
fn short_time(rfc3339: &str) -> String {
    rfc3339.replace('T', " ").chars().take(19).collect()
}

/// At most `max` characters, with an ellipsis when cut.
fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(max).collect();
        out.push('…');
        out
    }
}

fn money(dollars: f64) -> String {
    // Two decimals with thousands separators: 1234567.5 -> 1,234,567.50
    let cents = (dollars * 100.0).round() as i64;
    let (sign, cents) = if cents < 0 {
        ("-", -cents)
    } else {
        ("", cents)
    };
    let whole = (cents / 100).to_string();
    let mut grouped = String::new();
    for (i, ch) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(ch);
    }
    format!("{sign}${grouped}.{:02}", cents % 100)
}

fn count(n: u64) -> String {
    money(n as f64)
        .trim_start_matches('$')
        .trim_end_matches(".00")
        .to_owned()
}

const STYLE: &str = r#"
:root { color-scheme: light; --ink:#1d2330; --muted:#5f6b7a; --line:#e3e7ee; --bg:#f5f7fa;
  --ok:#1a7f37; --warn:#9a6700; --bad:#cf222e; --card:#fff; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
  color:var(--ink); background:var(--bg); }
header { padding:14px 20px; background:#1d2330; color:#fff; display:flex; flex-wrap:wrap;
  align-items:baseline; gap:4px 16px; }
header h1 { margin:0; font-size:20px; }
header span { color:#b8c1cc; font-size:13px; }
main { padding:16px 20px 32px; max-width:1200px; margin:0 auto; }
h2 { font-size:16px; margin:22px 0 8px; }
.cards { display:grid; grid-template-columns:repeat(auto-fit,minmax(150px,1fr)); gap:10px; }
.card { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:10px 12px; }
.card .label { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.04em; }
.card .value { font-size:22px; font-weight:600; font-variant-numeric:tabular-nums; overflow-wrap:anywhere; }
.scroll { overflow-x:auto; background:var(--card); border:1px solid var(--line); border-radius:8px; }
table { border-collapse:collapse; width:100%; font-variant-numeric:tabular-nums; }
th, td { text-align:left; padding:6px 10px; border-bottom:1px solid var(--line); white-space:nowrap; }
th { font-size:12px; color:var(--muted); text-transform:uppercase; letter-spacing:.04em; background:#fafbfc; }
tr:last-child td { border-bottom:none; }
td.num, th.num { text-align:right; }
.badge { display:inline-block; padding:1px 8px; border-radius:10px; font-size:12px; font-weight:600; }
.b-ok { background:#dafbe1; color:var(--ok); } .b-warn { background:#fff8c5; color:var(--warn); }
.b-bad { background:#ffebe9; color:var(--bad); } .b-muted { background:#eef1f4; color:var(--muted); }
.error { background:#ffebe9; color:var(--bad); border:1px solid #ffcecb; border-radius:8px; padding:8px 12px; }
.empty { color:var(--muted); padding:10px 12px; }
.muted { color:var(--muted); }
.grid2 { display:grid; grid-template-columns:1fr; gap:0 20px; }
.grid2 > div { min-width:0; }
@media (min-width: 1000px) { .grid2 { grid-template-columns:1fr 1fr; } }
@media (max-width: 480px) { main { padding:10px 12px 24px; } header { padding:12px; }
  .card .value { font-size:18px; } th, td { padding:6px 8px; } }
"#;

fn badge(text: &str, class: &str) -> String {
    format!("<span class=\"badge {class}\">{}</span>", escape(text))
}

fn unavailable(out: &mut String, what: &str, why: &str) {
    let _ = write!(
        out,
        "<p class=\"error\" role=\"alert\">{} unavailable: {}</p>",
        escape(what),
        escape(why)
    );
}

fn totals_section(out: &mut String, totals: &Result<TotalsBody, String>) {
    out.push_str("<section id=\"totals\"><h2>Totals</h2>");
    match totals {
        Ok(t) => {
            let cards = [
                ("orders", "Orders", count(t.order_count)),
                ("sales", "Total sales", money(t.total_sales)),
                ("average", "Average order", money(t.average_order_value)),
                (
                    "fraud",
                    "Fraud alerts",
                    format!(
                        "{} <small class=\"muted\">({:.1}%)</small>",
                        count(t.fraud_count),
                        t.fraud_rate_by_count * 100.0
                    ),
                ),
                (
                    "paid",
                    "Paid",
                    format!(
                        "{} <small class=\"muted\">of {}</small>",
                        count(t.paid_count),
                        count(t.payment_count)
                    ),
                ),
            ];
            out.push_str("<div class=\"cards\">");
            for (id, label, value) in cards {
                // `value` is built from numbers only.
                let _ = write!(
                    out,
                    "<div class=\"card\" id=\"total-{id}\"><div class=\"label\">{label}</div>\
                     <div class=\"value\">{value}</div></div>"
                );
            }
            out.push_str("</div>");
        }
        Err(e) => unavailable(out, "Totals", e),
    }
    out.push_str("</section>");
}

fn lag_section(out: &mut String, lag: &Option<Result<Vec<GroupLagJson>, String>>) {
    out.push_str("<section id=\"lag\"><h2>Consumer lag</h2>");
    match lag {
        None => out.push_str("<p class=\"empty\">Kafka is not configured for this server.</p>"),
        Some(Err(e)) => unavailable(out, "Lag", e),
        Some(Ok(groups)) => {
            out.push_str(
                "<div class=\"scroll\"><table><thead><tr><th>Group</th><th>Status</th>\
                 <th class=\"num\">Lag</th><th class=\"num\">Oldest</th><th>Why</th></tr></thead><tbody>",
            );
            for g in groups {
                let class = match g.status.as_str() {
                    "OK" => "b-ok",
                    "WARN" => "b-warn",
                    _ => "b-bad",
                };
                let oldest = g
                    .max_lag_seconds
                    .map_or_else(|| "?".to_owned(), |s| format!("{s:.1} s"));
                let _ = write!(
                    out,
                    "<tr class=\"lag-group\" data-group=\"{group}\"><td>{group}</td><td>{}</td>\
                     <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"muted\">{}</td></tr>",
                    badge(g.status.as_str(), class),
                    count(g.total_lag.max(0) as u64),
                    escape(&oldest),
                    escape(&g.reason),
                    group = escape(&g.group),
                );
            }
            out.push_str("</tbody></table></div>");
        }
    }
    out.push_str("</section>");
}

fn orders_section(out: &mut String, orders: &Result<Vec<OrderJson>, String>) {
    out.push_str("<section id=\"orders\"><h2>Latest orders</h2>");
    match orders {
        Err(e) => unavailable(out, "Orders", e),
        Ok(orders) if orders.is_empty() => {
            out.push_str("<div class=\"scroll\"><p class=\"empty\">No orders yet.</p></div>")
        }
        Ok(orders) => {
            out.push_str(
                "<div class=\"scroll\"><table><thead><tr><th class=\"num\">Order</th>\
                 <th class=\"num\">Customer</th><th class=\"num\">Amount</th><th>Country</th>\
                 <th>Status</th><th>Fraud</th><th>Payment</th><th>Created</th></tr></thead><tbody>",
            );
            for o in orders {
                let fraud = match &o.fraud_reason {
                    Some(reason) => badge(reason, "b-bad"),
                    None => String::new(),
                };
                let payment = match o.payment_status.as_deref() {
                    Some("PAID") => badge("PAID", "b-ok"),
                    Some(other) => badge(other, "b-bad"),
                    None => badge("pending", "b-muted"),
                };
                let amount = if o.currency == "USD" {
                    money(o.amount)
                } else {
                    format!("{:.2} {}", o.amount, escape(&shorten(&o.currency, 8)))
                };
                let _ = write!(
                    out,
                    "<tr class=\"order\" data-order-id=\"{id}\"><td class=\"num\">{label}</td>\
                     <td class=\"num\">{}</td><td class=\"num\">{amount}</td><td>{}</td><td>{}</td>\
                     <td>{fraud}</td><td>{payment}</td><td class=\"muted\">{}</td></tr>",
                    o.customer_id,
                    escape(&o.country),
                    escape(&o.status),
                    escape(&short_time(&o.created_at)),
                    id = o.order_id,
                    label = escape(&order_label(o.order_id)),
                );
            }
            out.push_str("</tbody></table></div>");
        }
    }
    out.push_str("</section>");
}

fn alerts_section(out: &mut String, alerts: &Result<Vec<AlertJson>, String>) {
    out.push_str("<section id=\"alerts\"><h2>Latest fraud alerts</h2>");
    match alerts {
        Err(e) => unavailable(out, "Fraud alerts", e),
        Ok(alerts) if alerts.is_empty() => {
            out.push_str("<div class=\"scroll\"><p class=\"empty\">No fraud alerts.</p></div>")
        }
        Ok(alerts) => {
            out.push_str(
                "<div class=\"scroll\"><table><thead><tr><th class=\"num\">Order</th>\
                 <th class=\"num\">Amount</th><th>Country</th><th>Reason</th></tr></thead><tbody>",
            );
            for a in alerts {
                let _ = write!(
                    out,
                    "<tr class=\"alert\" data-order-id=\"{id}\"><td class=\"num\">{label}</td>\
                     <td class=\"num\">{}</td><td>{}</td><td>{}</td></tr>",
                    money(a.amount),
                    escape(&a.country),
                    escape(&a.reason),
                    id = a.order_id,
                    label = escape(&order_label(a.order_id)),
                );
            }
            out.push_str("</tbody></table></div>");
        }
    }
    out.push_str("</section>");
}

/// The whole page.
pub fn render(d: &Dashboard) -> String {
    let mut out = String::with_capacity(32 * 1024);
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">\
         <title>orders</title><style>{STYLE}</style></head><body>\
         <header><h1>orders</h1><span id=\"updated\">updated {} UTC · refreshes every {REFRESH_SECONDS} s</span></header><main>",
        escape(&short_time(&d.generated_at))
    );
    totals_section(&mut out, &d.totals);
    out.push_str("<div class=\"grid2\"><div>");
    lag_section(&mut out, &d.lag);
    out.push_str("</div><div>");
    alerts_section(&mut out, &d.alerts);
    out.push_str("</div></div>");
    orders_section(&mut out, &d.orders);
    canaries_section(&mut out, &d.canaries);
    out.push_str("</main></body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(id: u64, source: &str, currency: &str) -> OrderJson {
        OrderJson {
            order_id: id,
            customer_id: 1234,
            amount: 350.5,
            currency: currency.into(),
            country: "DE".into(),
            status: "CREATED".into(),
            created_at: "2024-01-15T10:30:00Z".into(),
            source: Some(source.into()),
            kafka_partition: 0,
            kafka_offset: 1,
            processed_at: "2024-01-15T10:30:01Z".into(),
            fraud: true,
            fraud_reason: Some("<img src=x onerror=alert(1)>".into()),
            payment_status: None,
        }
    }

    #[test]
    fn escapes_everything_that_came_from_kafka() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        let d = Dashboard {
            generated_at: "2024-01-15T10:30:02Z".into(),
            totals: Err("<b>boom</b>".into()),
            orders: Ok(vec![order(7, "x", "<script>alert(1)</script>")]),
            alerts: Ok(vec![]),
            lag: None,
            canaries: None,
        };
        let html = render(&d);
        assert!(!html.contains("<script>"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(!html.contains("<b>boom"), "{html}");
        assert!(html.contains("&lt;script&gt;"));
        assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"));
        assert!(html.contains("data-order-id=\"7\""));
        assert!(html.contains("No fraud alerts."));
    }

    /// The policy allows the page's stylesheet by its hash: the hash of what the rendered
    /// page has between `<style>` and `</style>`, byte for byte.
    #[test]
    fn the_policy_allows_exactly_the_page_stylesheet_and_no_script() {
        use base64::Engine as _;
        use sha2::Digest as _;
        let html = render(&Dashboard {
            generated_at: "2024-01-15T10:30:02Z".into(),
            totals: Err("down".into()),
            orders: Ok(vec![]),
            alerts: Ok(vec![]),
            lag: None,
            canaries: None,
        });
        let start = html.find("<style>").unwrap() + "<style>".len();
        let end = html.find("</style>").unwrap();
        assert_eq!(html.matches("<style").count(), 1);
        assert!(
            !html.contains(" style="),
            "inline style attributes are not allowed"
        );
        let hash = base64::engine::general_purpose::STANDARD
            .encode(sha2::Sha256::digest(&html.as_bytes()[start..end]));
        let csp = content_security_policy();
        assert!(csp.contains(&format!("style-src 'sha256-{hash}'")), "{csp}");
        assert!(csp.contains("default-src 'none'"), "{csp}");
        assert!(
            !csp.contains("script-src") && !csp.contains("unsafe"),
            "{csp}"
        );
    }

    /// A canary is shown as "canary" with the time it was made, never as its id (2^51 and
    /// up: sixteen digits that read as a gap in the orders), in every table of the page.
    #[test]
    fn canaries_are_named_by_their_time_not_their_id() {
        use crate::model::{CanaryBody, CanaryJson, CanaryPercentiles, LegPercentiles};
        // Made at 2024-01-15T10:30:00Z, an id of the canaries' range.
        let made_ms: u64 = 1_705_314_600_000;
        let id = CANARY_ORDER_IDS.start + made_ms;
        let journey = |order_id: u64, created_at: Option<&str>| CanaryJson {
            order_id,
            state: Some("pending"),
            created_at: created_at.map(str::to_owned),
            decided_at: None,
            flagged: None,
            paid_at: None,
            stored_at: None,
            decision_seconds: None,
            paid_seconds: None,
            stored_seconds: None,
        };
        let none = LegPercentiles {
            p50: None,
            p99: None,
        };
        let body = CanaryBody {
            sla_seconds: 30.0,
            window: 100,
            polled_at: None,
            last: None,
            pending: 2,
            lost_in_window: 0,
            lost_total: 0,
            samples: 0,
            percentiles: CanaryPercentiles {
                decision: none.clone(),
                paid: none.clone(),
                stored: none,
            },
            canaries: vec![
                journey(id, Some("2024-01-15T10:30:00.000001Z")),
                // Not yet read by analytics: the time comes from the id.
                journey(id + 1, None),
            ],
        };
        let mut alert_order = order(id + 2, "canary", "USD");
        alert_order.created_at = "2024-01-15T10:30:00Z".into();
        let html = render(&Dashboard {
            generated_at: "2024-01-15T10:30:02Z".into(),
            totals: Err("down".into()),
            orders: Ok(vec![alert_order, order(7, "x", "USD")]),
            alerts: Ok(vec![]),
            lag: None,
            canaries: Some(Ok(body)),
        });
        assert!(!html.contains(&format!("#{id}")), "{html}");
        assert!(!html.contains(&format!("#{}", id + 1)), "{html}");
        assert!(!html.contains(&format!("#{}", id + 2)), "{html}");
        assert_eq!(
            html.matches("canary 2024-01-15 10:30:00").count(),
            3,
            "{html}"
        );
        assert!(html.contains("#7"), "an order keeps its id: {html}");
    }

    #[test]
    fn money_and_counts_read_well() {
        assert_eq!(money(1234567.5), "$1,234,567.50");
        assert_eq!(money(0.0), "$0.00");
        assert_eq!(money(999.999), "$1,000.00");
        assert_eq!(money(-12.3), "-$12.30");
        assert_eq!(count(1_000_000), "1,000,000");
        assert_eq!(count(0), "0");
        assert_eq!(
            short_time("2024-01-15T10:30:00.123456Z"),
            "2024-01-15 10:30:00"
        );
        assert_eq!(shorten("EUR", 8), "EUR");
        assert_eq!(shorten("ABCDEFGHIJ", 8), "ABCDEFGH…");
    }
}
