//! A row of the orders table as an order of the SPEC, or the reason it cannot be one.
//!
//! The ingest role is a source of orders, so it holds rows to what the SPEC says an order
//! is (readers downstream are more lenient): customer 1000–9999, amount 10.00–500.00 with
//! at most two decimals, one of the eight countries, a known status, a time, and an id of
//! the database's range. A row that breaks a rule goes to the dead-letter topic instead.

use super::pgoutput::{ChangedRow, InsertedRow, RowKind};
use orders_core::domain::{
    DecodeError, Order, OrderStatus, Timestamp, COUNTRIES, DATABASE_ORDER_IDS,
};
use orders_core::money::Cents;

/// The columns the table must have: the SPEC's order field names.
pub const COLUMNS: [&str; 7] = [
    "order_id",
    "customer_id",
    "amount",
    "currency",
    "country",
    "status",
    "created_at",
];

/// What every published order says it came from (the SPEC's `source` field).
pub const SOURCE: &str = "postgres";

const CUSTOMER_IDS: std::ops::RangeInclusive<u32> = 1000..=9999;
const AMOUNTS: std::ops::RangeInclusive<i64> = 1_000..=50_000;

/// The row's value of `column`: `Err(schema)` when the column is absent or NULL.
fn required<'a>(row: &'a InsertedRow, column: &str) -> Result<&'a str, DecodeError> {
    match row.columns.iter().find(|(name, _)| name == column) {
        None => Err(DecodeError::Schema(format!(
            "the table has no column {column}"
        ))),
        Some((_, None)) => Err(DecodeError::Schema(format!("{column} is null"))),
        Some((_, Some(v))) => Ok(v.as_str()),
    }
}

/// The order id the row carries, when it has one (the dead letter's key).
pub fn order_id_text(row: &InsertedRow) -> Option<&str> {
    required(row, "order_id").ok()
}

/// The row as an order, or why it is not one.
pub fn to_order(row: &InsertedRow) -> Result<Order, DecodeError> {
    let order_id_text = required(row, "order_id")?;
    let order_id: u64 = order_id_text
        .parse()
        .map_err(|_| DecodeError::Schema(format!("order_id {order_id_text:?} is not an id")))?;
    if !DATABASE_ORDER_IDS.contains(&order_id) {
        return Err(DecodeError::Invalid(format!(
            "order_id {order_id} is outside the database's id range {}..={} (the producer's \
             ids are below it; docs/ingest.md)",
            DATABASE_ORDER_IDS.start(),
            DATABASE_ORDER_IDS.end()
        )));
    }
    let customer = required(row, "customer_id")?;
    let customer_id: u32 = customer
        .parse()
        .map_err(|_| DecodeError::Schema(format!("customer_id {customer:?} is not an integer")))
        .and_then(|c| {
            if CUSTOMER_IDS.contains(&c) {
                Ok(c)
            } else {
                Err(DecodeError::Invalid(format!(
                    "customer_id {c} is outside 1000-9999"
                )))
            }
        })?;
    let amount_text = required(row, "amount")?;
    let amount = parse_amount(amount_text)?;
    if !AMOUNTS.contains(&amount.0) {
        return Err(DecodeError::Invalid(format!(
            "amount {amount} is outside 10.00-500.00"
        )));
    }
    let currency = required(row, "currency")?.trim();
    if !(currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_uppercase())) {
        return Err(DecodeError::Invalid(format!(
            "currency {currency:?} is not a three-letter code"
        )));
    }
    let country_text = required(row, "country")?.trim();
    if !COUNTRIES.contains(&country_text) {
        return Err(DecodeError::Invalid(format!(
            "country {country_text:?} is not one of {}",
            COUNTRIES.join(" ")
        )));
    }
    let country = country_text.parse().map_err(DecodeError::Invalid)?;
    let status_text = required(row, "status")?.trim();
    let status: OrderStatus = status_text.parse().map_err(DecodeError::Invalid)?;
    let created_text = required(row, "created_at")?;
    let created_at = parse_timestamp(created_text)?;
    Ok(Order {
        order_id,
        customer_id,
        amount,
        currency: currency.to_owned(),
        country,
        status,
        created_at,
        source: Some(SOURCE.to_owned()),
    })
}

/// A decimal as PostgreSQL prints it (`249.99`, `10`, `12.500`) in exact cents; more than
/// two decimals is an error unless the rest are zeros.
pub fn parse_amount(text: &str) -> Result<Cents, DecodeError> {
    let bad = || DecodeError::Schema(format!("amount {text:?} is not a decimal number"));
    let t = text.trim();
    let (negative, t) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t),
    };
    let (whole, fraction) = t.split_once('.').unwrap_or((t, ""));
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let (cents_digits, rest) = fraction.split_at(fraction.len().min(2));
    if rest.bytes().any(|b| b != b'0') {
        return Err(DecodeError::Invalid(format!(
            "amount {text} has more than two decimals"
        )));
    }
    let whole: i64 = whole.parse().map_err(|_| bad())?;
    let cents: i64 = format!("{cents_digits:0<2}").parse().map_err(|_| bad())?;
    let value = whole
        .checked_mul(100)
        .and_then(|w| w.checked_add(cents))
        .ok_or_else(bad)?;
    Ok(Cents(if negative { -value } else { value }))
}

/// A time as PostgreSQL prints it with `DateStyle = ISO` (`2024-01-15 10:30:00.5+00`; a
/// `timestamp` without time zone is taken as UTC), or RFC 3339 (a text column).
pub fn parse_timestamp(text: &str) -> Result<Timestamp, DecodeError> {
    use chrono::{DateTime, NaiveDateTime, Utc};
    let t = text.trim();
    let parsed = DateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f%#z")
        .map(|d| d.with_timezone(&Utc))
        .or_else(|_| NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f").map(|n| n.and_utc()))
        .or_else(|_| DateTime::parse_from_rfc3339(t).map(|d| d.with_timezone(&Utc)))
        .map_err(|_| DecodeError::Schema(format!("created_at {t:?} is not a time")))?;
    // The wire and the store keep microseconds.
    Timestamp::from_micros(parsed.timestamp_micros())
        .ok_or_else(|| DecodeError::Invalid(format!("created_at {t:?} is out of range")))
}

/// Most bytes of one SPEC column's value a dead letter keeps.
pub const DEAD_LETTER_VALUE_BYTES: usize = 1024;
/// Most bytes of another column's value a dead letter keeps.
pub const DEAD_LETTER_OTHER_BYTES: usize = 256;
/// Most other columns a dead letter lists.
pub const DEAD_LETTER_OTHER_COLUMNS: usize = 16;

/// `text` cut to at most `max` bytes (on a character boundary) with a marker saying how
/// long it was: `…[cut: 2097152 bytes]`.
pub fn cut(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return text.into();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…[cut: {} bytes]", &text[..end], text.len()).into()
}

/// The row as the dead letter's value, always a few kilobytes at most whatever the row
/// holds: the SPEC's columns as PostgreSQL printed them (text, or null; each cut to 1 KiB
/// with a marker), and under `other_columns` the first 16 other columns cut to 256 bytes
/// (`omitted_columns` counts the rest).
pub fn dead_letter_value(row: &InsertedRow) -> Vec<u8> {
    use serde_json::Value;
    let text = |value: &Option<String>, max| {
        value
            .as_ref()
            .map_or(Value::Null, |v| Value::from(cut(v, max).into_owned()))
    };
    let mut object = serde_json::Map::new();
    for name in COLUMNS {
        if let Some((_, value)) = row.columns.iter().find(|(n, _)| n == name) {
            object.insert(name.to_owned(), text(value, DEAD_LETTER_VALUE_BYTES));
        }
    }
    let others: Vec<&(String, Option<String>)> = row
        .columns
        .iter()
        .filter(|(n, _)| !COLUMNS.contains(&n.as_str()))
        .collect();
    if !others.is_empty() {
        let listed: serde_json::Map<String, Value> = others
            .iter()
            .take(DEAD_LETTER_OTHER_COLUMNS)
            .map(|(n, v)| (cut(n, 64).into_owned(), text(v, DEAD_LETTER_OTHER_BYTES)))
            .collect();
        object.insert("other_columns".into(), Value::Object(listed));
        if others.len() > DEAD_LETTER_OTHER_COLUMNS {
            object.insert(
                "omitted_columns".into(),
                Value::from(others.len() - DEAD_LETTER_OTHER_COLUMNS),
            );
        }
    }
    serde_json::to_vec(&object).unwrap_or_default()
}

/// An update or delete of a row, as its dead letter says it.
#[derive(Debug, Clone, PartialEq)]
pub struct DescribedChange {
    /// The order id the row had (before the change, when the log says), as printed.
    pub order_id: String,
    /// One line for the `dlq.error` header and the log.
    pub summary: String,
    /// The dead letter's value: JSON, a few kilobytes at most whatever the row holds.
    pub value: Vec<u8>,
}

/// The value of `column` in `columns`: `None` when the table has no such column.
fn lookup<'a>(columns: &'a [(String, Option<String>)], column: &str) -> Option<&'a Option<String>> {
    columns.iter().find(|(n, _)| n == column).map(|(_, v)| v)
}

/// The order columns an update changed, `(column, old, new)`, as far as the old row is
/// known: all of them with a whole old row, the key's with a key-only one.
fn changed_columns(c: &ChangedRow) -> Vec<(&'static str, Option<String>, Option<String>)> {
    let Some(old) = &c.old else {
        return Vec::new();
    };
    COLUMNS
        .iter()
        .filter(|name| !c.unchanged.iter().any(|u| u == *name))
        .filter_map(|name| {
            let before = lookup(&old.columns, name)?;
            let after = lookup(&c.new, name)?;
            let known = !old.key_only || before.is_some();
            (known && before != after).then(|| (*name, before.clone(), after.clone()))
        })
        .collect()
}

/// How an update or delete reads in its dead letter; `None` for an update that left every
/// order column as it was (the whole old row says so): no order differs from the table.
pub fn describe_change(c: &ChangedRow) -> Option<DescribedChange> {
    use serde_json::{json, Value};
    let order_id = changed_order_id(c);
    let whole = c.old.as_ref().is_some_and(|o| !o.key_only);
    let changed = changed_columns(c);
    if c.kind == RowKind::Update && whole && changed.is_empty() {
        return None;
    }
    let (change, row, summary) = if c.kind == RowKind::Delete {
        let row = c.old.as_ref().map(|o| row_json(c, &o.columns));
        (
            "delete",
            row.unwrap_or_default(),
            delete_summary(c, &order_id),
        )
    } else {
        let summary = update_summary(c, &order_id, &changed, whole);
        ("update", row_json(c, &c.new), summary)
    };
    let old_row = match &c.old {
        None => "none",
        Some(o) if o.key_only => "key",
        Some(_) => "whole",
    };
    let mut value = json!({
        "change": change,
        "order_id": cut(&order_id, DEAD_LETTER_VALUE_BYTES),
        "old_row": old_row,
        "row": row,
    });
    if c.kind == RowKind::Update {
        value["changed"] = changed_json(&changed);
    }
    if !c.unchanged.is_empty() {
        let names: Vec<Value> = c
            .unchanged
            .iter()
            .take(DEAD_LETTER_OTHER_COLUMNS)
            .map(|n| Value::from(cut(n, 64)))
            .collect();
        value["unchanged_columns"] = Value::Array(names);
    }
    Some(DescribedChange {
        order_id,
        summary,
        value: serde_json::to_vec(&value).unwrap_or_default(),
    })
}

/// The changed row's order id: the old row's when the log has it, else the new row's.
fn changed_order_id(c: &ChangedRow) -> String {
    let old_id = c
        .old
        .as_ref()
        .and_then(|o| lookup(&o.columns, "order_id"))
        .cloned()
        .flatten();
    old_id
        .or_else(|| lookup(&c.new, "order_id").cloned().flatten())
        .unwrap_or_default()
}

/// What a change did not publish, as each summary ends.
const KEPT: &str = "not published: the orders topic and the store keep the order as \
                    inserted (docs/ingest.md)";

/// The summary of a delete.
fn delete_summary(c: &ChangedRow, order_id: &str) -> String {
    format!(
        "order {} deleted from {}; {KEPT}",
        printed(Some(order_id)),
        c.table
    )
}

/// The summary of an update: each changed column, old → new.
fn update_summary(
    c: &ChangedRow,
    order_id: &str,
    changed: &[(&str, Option<String>, Option<String>)],
    whole: bool,
) -> String {
    let mut said: Vec<String> = changed
        .iter()
        .map(|(name, before, after)| {
            format!(
                "{name} {} → {}",
                printed(before.as_deref()),
                printed(after.as_deref())
            )
        })
        .collect();
    if !whole {
        said.push(
            "its other old values are not in the log (the table's replica identity is its \
             key; REPLICA IDENTITY FULL adds them)"
                .into(),
        );
    }
    format!(
        "order {} updated in {}: {}; {KEPT}",
        printed(Some(order_id)),
        c.table,
        said.join(", ")
    )
}

/// A value in a dead letter: cut to `max` bytes; JSON null for SQL NULL.
fn text_json(v: &Option<String>, max: usize) -> serde_json::Value {
    v.as_ref().map_or(serde_json::Value::Null, |v| {
        serde_json::Value::from(cut(v, max))
    })
}

/// A value in a summary: cut to 64 bytes; `null` for SQL NULL.
fn printed(v: Option<&str>) -> String {
    v.map_or_else(|| "null".to_owned(), |v| cut(v, 64).into_owned())
}

/// The order columns of `columns` as a dead letter shows them; a delete with only the
/// key of its old row leaves out the columns the log does not hold.
fn row_json(
    c: &ChangedRow,
    columns: &[(String, Option<String>)],
) -> serde_json::Map<String, serde_json::Value> {
    let hidden = c.old.as_ref().is_some_and(|o| o.key_only) && c.kind == RowKind::Delete;
    COLUMNS
        .iter()
        .filter_map(|name| {
            let value = lookup(columns, name)?;
            (!hidden || value.is_some()).then(|| {
                (
                    (*name).to_owned(),
                    text_json(value, DEAD_LETTER_VALUE_BYTES),
                )
            })
        })
        .collect()
}

/// The columns an update changed, each with its old and new value.
fn changed_json(changed: &[(&str, Option<String>, Option<String>)]) -> serde_json::Value {
    let max = DEAD_LETTER_VALUE_BYTES;
    let changed: serde_json::Map<String, serde_json::Value> = changed
        .iter()
        .map(|(name, before, after)| {
            (
                (*name).to_owned(),
                serde_json::json!({"old": text_json(before, max), "new": text_json(after, max)}),
            )
        })
        .collect();
    serde_json::Value::Object(changed)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::ingest::pgoutput::Lsn;

    fn row(overrides: &[(&str, Option<&str>)]) -> InsertedRow {
        let mut columns: Vec<(String, Option<String>)> = [
            ("order_id", Some("4503599627370496")),
            ("customer_id", Some("5678")),
            ("amount", Some("249.99")),
            ("currency", Some("USD")),
            ("country", Some("US")),
            ("status", Some("CREATED")),
            ("created_at", Some("2024-01-15 10:30:00+00")),
            ("note", Some("extra columns are ignored")),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.map(str::to_owned)))
        .collect();
        for (k, v) in overrides {
            match columns.iter_mut().find(|(name, _)| name == k) {
                Some(c) => c.1 = v.map(str::to_owned),
                None => panic!("no column {k}"),
            }
        }
        InsertedRow {
            table: "public.orders".into(),
            lsn: Lsn(1),
            columns,
        }
    }

    #[test]
    fn a_good_row_is_the_specs_order() {
        let order = to_order(&row(&[])).unwrap();
        assert_eq!(
            String::from_utf8(order.to_json()).unwrap(),
            r#"{"order_id":4503599627370496,"customer_id":5678,"amount":249.99,"currency":"USD","country":"US","status":"CREATED","created_at":"2024-01-15T10:30:00Z","source":"postgres"}"#
        );
        assert_eq!(order.key(), "4503599627370496");
    }

    #[test]
    fn times_in_every_form_postgres_prints_them() {
        for (text, want) in [
            ("2024-01-15 10:30:00+00", "2024-01-15T10:30:00Z"),
            (
                "2024-01-15 10:30:00.123456+00",
                "2024-01-15T10:30:00.123456Z",
            ),
            ("2024-01-15 12:30:00.5+02", "2024-01-15T10:30:00.500Z"),
            ("2024-01-15 16:00:00+05:30", "2024-01-15T10:30:00Z"),
            ("2024-01-15 10:30:00", "2024-01-15T10:30:00Z"),
            ("2024-01-15T10:30:00Z", "2024-01-15T10:30:00Z"),
        ] {
            assert_eq!(parse_timestamp(text).unwrap().to_rfc3339(), want, "{text}");
        }
        assert!(parse_timestamp("infinity").is_err());
    }

    #[test]
    fn amounts_are_exact_cents() {
        assert_eq!(parse_amount("249.99").unwrap(), Cents(24_999));
        assert_eq!(parse_amount("10").unwrap(), Cents(1_000));
        assert_eq!(parse_amount("10.5").unwrap(), Cents(1_050));
        assert_eq!(parse_amount("12.500").unwrap(), Cents(1_250));
        assert_eq!(parse_amount("-3.10").unwrap(), Cents(-310));
        assert_eq!(parse_amount("12.345").unwrap_err().code(), "invalid-value");
        for bad in ["", ".5", "1e3", "NaN", "12.3.4", "9999999999999999999"] {
            assert_eq!(parse_amount(bad).unwrap_err().code(), "schema", "{bad}");
        }
    }

    #[test]
    fn rows_the_spec_forbids_are_refused_with_the_reason() {
        for (overrides, code, says) in [
            (
                vec![("amount", Some("600.00"))],
                "invalid-value",
                "amount 600.00",
            ),
            (
                vec![("amount", Some("9.99"))],
                "invalid-value",
                "outside 10.00-500.00",
            ),
            (
                vec![("amount", Some("-20"))],
                "invalid-value",
                "amount -20.00",
            ),
            (
                vec![("country", Some("XX"))],
                "invalid-value",
                "country \"XX\"",
            ),
            (vec![("customer_id", None)], "schema", "customer_id is null"),
            (
                vec![("customer_id", Some("999"))],
                "invalid-value",
                "customer_id 999",
            ),
            (
                vec![("status", Some("SHIPPED"))],
                "invalid-value",
                "SHIPPED",
            ),
            (
                vec![("currency", Some("dollars"))],
                "invalid-value",
                "currency",
            ),
            (vec![("created_at", None)], "schema", "created_at is null"),
            (
                vec![("order_id", Some("42"))],
                "invalid-value",
                "outside the database's id range",
            ),
        ] {
            let err = to_order(&row(&overrides)).unwrap_err();
            assert_eq!(err.code(), code, "{overrides:?}: {err}");
            assert!(err.to_string().contains(says), "{overrides:?}: {err}");
        }
        let mut missing = row(&[]);
        missing.columns.retain(|(name, _)| name != "status");
        assert_eq!(
            to_order(&missing).unwrap_err().to_string(),
            "schema: the table has no column status"
        );
    }

    #[test]
    fn a_dead_letter_keeps_the_row_as_printed() {
        let value = dead_letter_value(&row(&[("customer_id", None)]));
        let v: serde_json::Value = serde_json::from_slice(&value).unwrap();
        assert_eq!(v["customer_id"], serde_json::Value::Null);
        assert_eq!(v["amount"], "249.99");
        assert_eq!(v["order_id"], "4503599627370496");
        assert_eq!(v["other_columns"]["note"], "extra columns are ignored");
    }

    fn change(
        kind: RowKind,
        old: Option<(bool, InsertedRow)>,
        new: Option<InsertedRow>,
    ) -> ChangedRow {
        use crate::ingest::pgoutput::OldRow;
        ChangedRow {
            kind,
            table: "public.orders".into(),
            lsn: Lsn(7),
            old: old.map(|(key_only, r)| OldRow {
                key_only,
                columns: r.columns,
            }),
            new: new.map(|r| r.columns).unwrap_or_default(),
            unchanged: Vec::new(),
        }
    }

    fn key_only(id: &str) -> InsertedRow {
        let mut r = row(&[]);
        for (name, value) in &mut r.columns {
            if name != "order_id" {
                *value = None;
            }
        }
        r.columns[0].1 = Some(id.to_owned());
        r
    }

    #[test]
    fn an_update_or_delete_says_which_order_and_what_changed() {
        let cancelled = row(&[("status", Some("CANCELLED")), ("note", Some("x"))]);
        let whole = change(
            RowKind::Update,
            Some((false, row(&[]))),
            Some(cancelled.clone()),
        );
        let d = describe_change(&whole).unwrap();
        assert_eq!(d.order_id, "4503599627370496");
        assert!(
            d.summary.contains("status CREATED → CANCELLED;"),
            "{}",
            d.summary
        );
        let v: serde_json::Value = serde_json::from_slice(&d.value).unwrap();
        assert_eq!(
            v["changed"],
            serde_json::json!({"status": {"old": "CREATED", "new": "CANCELLED"}})
        );
        assert_eq!(
            (v["change"].as_str(), v["old_row"].as_str()),
            (Some("update"), Some("whole"))
        );
        // Another column only: no order differs.
        let note = change(
            RowKind::Update,
            Some((false, row(&[]))),
            Some(row(&[("note", Some("changed"))])),
        );
        assert_eq!(describe_change(&note), None);
        // The default replica identity: old values unknown, said so; a new key is named.
        let unknown = change(RowKind::Update, None, Some(cancelled.clone()));
        let d = describe_change(&unknown).unwrap();
        assert!(d.summary.contains("not in the log"), "{}", d.summary);
        let v: serde_json::Value = serde_json::from_slice(&d.value).unwrap();
        assert_eq!(
            (v["old_row"].as_str(), v["row"]["status"].as_str()),
            (Some("none"), Some("CANCELLED"))
        );
        let rekeyed = change(
            RowKind::Update,
            Some((true, key_only("4503599627370400"))),
            Some(cancelled),
        );
        let d = describe_change(&rekeyed).unwrap();
        assert_eq!(
            d.order_id, "4503599627370400",
            "the key the order was published with"
        );
        assert!(
            d.summary
                .contains("order_id 4503599627370400 → 4503599627370496"),
            "{}",
            d.summary
        );
        // Deletes: the key, or the whole row.
        let d = describe_change(&change(
            RowKind::Delete,
            Some((true, key_only("4503599627370499"))),
            None,
        ))
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&d.value).unwrap();
        assert_eq!(
            v["row"],
            serde_json::json!({"order_id": "4503599627370499"})
        );
        assert!(d
            .summary
            .starts_with("order 4503599627370499 deleted from public.orders"));
        let d = describe_change(&change(RowKind::Delete, Some((false, row(&[]))), None)).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&d.value).unwrap();
        assert_eq!(v["row"]["amount"], "249.99");
        // Bounded whatever the row holds.
        let huge = "é".repeat(1 << 20);
        let big = change(
            RowKind::Update,
            Some((false, row(&[("country", Some(huge.as_str()))]))),
            Some(row(&[("country", Some(&huge[2..]))])),
        );
        let d = describe_change(&big).unwrap();
        assert!(
            d.value.len() < 16 * 1024 && d.summary.len() < 1024,
            "{}",
            d.value.len()
        );
    }

    #[test]
    fn a_dead_letter_stays_small_whatever_the_row_holds() {
        let huge = "é".repeat(1 << 20);
        let mut r = row(&[("country", Some(huge.as_str()))]);
        for i in 0..40 {
            r.columns.push((format!("extra_{i}"), Some(huge.clone())));
        }
        let value = dead_letter_value(&r);
        assert!(value.len() < 16 * 1024, "{} bytes", value.len());
        let v: serde_json::Value = serde_json::from_slice(&value).unwrap();
        let country = v["country"].as_str().unwrap();
        assert!(country.ends_with("…[cut: 2097152 bytes]"), "{country:.40}");
        assert_eq!(v["order_id"], "4503599627370496");
        assert_eq!(v["omitted_columns"], 41 - DEAD_LETTER_OTHER_COLUMNS);
        assert_eq!(cut("abc", 3), "abc");
    }
}
