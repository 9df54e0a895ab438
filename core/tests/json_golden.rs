//! The SPEC's JSON examples parse and serialize field for field; unknown fields are accepted;
//! records a reader cannot use are rejected with a reason.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use orders_core::domain::{
    AnalyticsTotals, CountryTotals, DecodeError, FraudAlert, Order, Payment, MAX_AMOUNT,
    MAX_ORDER_ID,
};
use orders_core::money::Cents;
use serde_json::Value;

fn resource(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/resources/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// Serializing what was parsed gives back the same JSON value, field for field.
fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(text: &str) -> T {
    let parsed: T = serde_json::from_str(text).unwrap();
    let back: Value = serde_json::to_value(&parsed).unwrap();
    let original: Value = serde_json::from_str(text).unwrap();
    assert_eq!(back, original, "round trip of {text}");
    parsed
}

#[test]
fn order_example() {
    let text = resource("order.json");
    let order: Order = round_trip(&text);
    assert_eq!(order.order_id, 123);
    assert_eq!(order.amount, Cents(24_999));
    assert_eq!(order.country.as_str(), "US");
    assert_eq!(order.created_at.to_rfc3339(), "2024-01-15T10:30:00Z");
    assert_eq!(Order::decode(Some(text.as_bytes())).unwrap(), order);
}

#[test]
fn fraud_alert_example() {
    let alert: FraudAlert = round_trip(&resource("fraud_alert.json"));
    assert_eq!(alert.amount, Cents(35_000));
    assert_eq!(alert.reason, "HIGH_AMOUNT_RISKY_COUNTRY");
}

#[test]
fn payment_example() {
    let payment: Payment = round_trip(&resource("payment.json"));
    assert_eq!(payment.timestamp, 1705314600.123);
}

#[test]
fn analytics_example() {
    let totals: AnalyticsTotals = round_trip(&resource("analytics.json"));
    assert_eq!(totals.total_sales, Cents(1_234_567));
    assert_eq!(totals.order_count, 89);
}

#[test]
fn analytics_country_example() {
    let country: CountryTotals = round_trip(&resource("analytics_country.json"));
    assert_eq!(country.country.as_str(), "DE");
    assert_eq!(country.key(), "DE");
    assert_eq!(country.order_count, 12);
    assert_eq!(country.total_sales, Cents(345_678));
}

#[test]
fn unknown_fields_are_accepted() {
    let mut v: Value = serde_json::from_str(&resource("order.json")).unwrap();
    v["coupon"] = Value::from("SPRING");
    v["lines"] = serde_json::json!([{"sku": 1}]);
    let order = Order::decode(Some(v.to_string().as_bytes())).unwrap();
    assert_eq!(order.order_id, 123);
    let mut a: Value = serde_json::from_str(&resource("fraud_alert.json")).unwrap();
    a["score"] = Value::from(0.97);
    FraudAlert::decode(Some(a.to_string().as_bytes())).unwrap();
}

#[test]
fn the_seeds_order_without_source_is_accepted() {
    let text = r#"{"order_id": 1, "customer_id": 5678, "amount": 249.99, "currency": "USD",
                   "country": "US", "status": "CREATED", "created_at": "2024-01-15T10:30:00Z"}"#;
    assert_eq!(Order::decode(Some(text.as_bytes())).unwrap().source, None);
}

#[test]
fn unusable_records_are_rejected_with_a_reason() {
    let base: Value = serde_json::from_str(&resource("order.json")).unwrap();
    let with = |field: &str, value: Value| {
        let mut v = base.clone();
        v[field] = value;
        v.to_string()
    };
    let without = |field: &str| {
        let mut v = base.clone();
        v.as_object_mut().unwrap().remove(field);
        v.to_string()
    };
    let cases: Vec<(String, &str)> = vec![
        ("not json at all".into(), "not-json"),
        ("{\"order_id\": 1".into(), "not-json"),
        ("[1, 2]".into(), "schema"),
        (without("amount"), "schema"),
        (without("created_at"), "schema"),
        (with("order_id", Value::from("123")), "schema"),
        (with("amount", Value::from("12.50")), "schema"),
        (with("country", Value::from("usa")), "schema"),
        (with("status", Value::from("SHIPPED")), "schema"),
        (with("created_at", Value::from("yesterday")), "schema"),
        (with("order_id", Value::from(-4)), "schema"),
        (with("order_id", Value::from(0)), "invalid-value"),
        (with("amount", Value::from(-0.01)), "invalid-value"),
        // Ids no JSON reader holds exactly, and one past the bound.
        (with("order_id", Value::from(u64::MAX)), "invalid-value"),
        (
            with("order_id", Value::from(MAX_ORDER_ID + 1)),
            "invalid-value",
        ),
        // An amount whose totals would overflow.
        (with("amount", Value::from(1e13)), "invalid-value"),
        (with("amount", Value::from(10_000_000.01)), "invalid-value"),
    ];
    for (text, code) in cases {
        let err = Order::decode(Some(text.as_bytes())).unwrap_err();
        assert_eq!(err.code(), code, "{text} -> {err}");
        assert!(!err.to_string().is_empty());
    }
    assert_eq!(Order::decode(None).unwrap_err(), DecodeError::Empty);
    let huge = format!("{{\"pad\": \"{}\"}}", "x".repeat(1_000_001));
    assert_eq!(
        Order::decode(Some(huge.as_bytes())).unwrap_err().code(),
        "oversized"
    );
    let mut at_bounds = base.clone();
    at_bounds["order_id"] = Value::from(MAX_ORDER_ID);
    at_bounds["amount"] = Value::from(10_000_000.0);
    let order = Order::decode(Some(at_bounds.to_string().as_bytes())).unwrap();
    assert_eq!((order.order_id, order.amount), (MAX_ORDER_ID, MAX_AMOUNT));

    // Alerts and payments are held to the same bounds.
    let alert = |id: u64, amount: f64| {
        serde_json::json!({"order_id": id, "reason": "R", "amount": amount, "country": "DE"})
            .to_string()
    };
    assert!(FraudAlert::decode(Some(alert(7, 350.0).as_bytes())).is_ok());
    for bad in [alert(u64::MAX, 350.0), alert(7, -1.0), alert(7, 1e12)] {
        let err = FraudAlert::decode(Some(bad.as_bytes())).unwrap_err();
        assert_eq!(err.code(), "invalid-value", "{bad}");
    }
    let payment = |id: u64, amount: f64| {
        serde_json::json!({"order_id": id, "status": "PAID", "amount": amount,
                           "country": "US", "timestamp": 1.0})
        .to_string()
    };
    assert!(Payment::decode(Some(payment(7, 10.0).as_bytes())).is_ok());
    for bad in [
        payment(MAX_ORDER_ID + 1, 10.0),
        payment(7, -1.0),
        payment(7, 1e12),
    ] {
        let err = Payment::decode(Some(bad.as_bytes())).unwrap_err();
        assert_eq!(err.code(), "invalid-value", "{bad}");
    }

    let not_utf8 = [0xff_u8, 0xfe, 0x7b];
    assert_eq!(
        Order::decode(Some(&not_utf8)).unwrap_err().code(),
        "not-json"
    );
}
