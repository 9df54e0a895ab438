//! The published JSON Schemas (docs/schemas/) against the SPEC's examples, the records this
//! project serializes, and records they must refuse.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use orders_core::domain::{AnalyticsTotals, CountryTotals, Payment, PaymentStatus};
use orders_core::fraud::FraudRules;
use orders_core::generator::OrderGenerator;
use orders_core::money::Cents;
use orders_core::schemas::{self, TopicSchema};
use orders_core::Timestamp;
use serde_json::{json, Value};

/// The schema compiled, with format assertions on (`date-time` is checked).
struct Checker {
    schemas: boon::Schemas,
    index: boon::SchemaIndex,
    name: &'static str,
}

impl Checker {
    fn new(s: &TopicSchema) -> Self {
        let mut schemas = boon::Schemas::new();
        let mut compiler = boon::Compiler::new();
        compiler.enable_format_assertions();
        let url = format!("urn:orders:{}", s.name);
        compiler
            .add_resource(&url, serde_json::from_str(s.document).unwrap())
            .unwrap();
        let index = compiler.compile(&url, &mut schemas).unwrap();
        Checker {
            schemas,
            index,
            name: s.name,
        }
    }

    fn named(name: &str) -> Self {
        Self::new(schemas::by_name(name).unwrap())
    }

    fn errors(&self, v: &Value) -> Option<String> {
        self.schemas
            .validate(v, self.index)
            .err()
            .map(|e| format!("{e:#}"))
    }

    fn accepts(&self, v: &Value) {
        if let Some(e) = self.errors(v) {
            panic!("{} refused {v}: {e}", self.name);
        }
    }

    fn refuses(&self, v: &Value, why: &str) {
        assert!(
            self.errors(v).is_some(),
            "{} accepted {why}: {v}",
            self.name
        );
    }
}

fn resource(name: &str) -> Value {
    let path = format!("{}/tests/resources/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Every document compiles as a draft 2020-12 schema.
#[test]
fn every_schema_compiles() {
    for s in &schemas::ALL {
        Checker::new(s);
    }
}

/// The SPEC's examples, each against its topic's schema (and not against the others').
#[test]
fn the_specs_examples_are_valid() {
    let examples = [
        ("order", resource("order.json")),
        ("fraud-alert", resource("fraud_alert.json")),
        ("payment", resource("payment.json")),
        ("analytics-totals", resource("analytics.json")),
        ("analytics-country", resource("analytics_country.json")),
    ];
    for (name, example) in &examples {
        Checker::named(name).accepts(example);
    }
    // The two records of order-analytics are told apart by their schemas too.
    Checker::named("analytics-totals").refuses(&examples[4].1, "a per-country record");
    Checker::named("analytics-country").refuses(&examples[3].1, "the totals record");
}

/// What this project's code serializes: every order the generator makes (10,000 of them,
/// all countries, statuses and amounts), an alert and a payment for each flagged or paid
/// order, the totals and per-country records.
#[test]
fn what_the_project_serializes_is_valid() {
    let (order, alert, payment) = (
        Checker::named("order"),
        Checker::named("fraud-alert"),
        Checker::named("payment"),
    );
    let generator = OrderGenerator::new(7);
    let rules = FraudRules::default();
    let now = Timestamp::now();
    for id in 1..=10_000 {
        let o = generator.order(id, now);
        order.accepts(&serde_json::from_slice(&o.to_json()).unwrap());
        if let Some(a) = rules.evaluate(&o) {
            alert.accepts(&serde_json::from_slice(&a.to_json()).unwrap());
        }
        let p = Payment {
            order_id: o.order_id,
            status: PaymentStatus::Paid,
            amount: o.amount,
            country: o.country,
            timestamp: now.micros() as f64 / 1e6,
        };
        payment.accepts(&serde_json::from_slice(&p.to_json()).unwrap());
    }
    let totals = AnalyticsTotals {
        total_sales: Cents(1_234_567),
        order_count: 89,
    };
    Checker::named("analytics-totals").accepts(&serde_json::from_slice(&totals.to_json()).unwrap());
    let country = CountryTotals {
        country: "DE".parse().unwrap(),
        order_count: 12,
        total_sales: Cents(345_678),
    };
    Checker::named("analytics-country")
        .accepts(&serde_json::from_slice(&country.to_json()).unwrap());
}

/// Readers accept unknown fields, and so do the schemas.
#[test]
fn extra_fields_are_allowed() {
    let mut order = resource("order.json");
    order["coupon"] = json!("SPRING");
    Checker::named("order").accepts(&order);
    let mut alert = resource("fraud_alert.json");
    alert["score"] = json!(0.97);
    Checker::named("fraud-alert").accepts(&alert);
    let mut totals = resource("analytics.json");
    totals["as_of"] = json!("2024-01-15T10:30:00Z");
    Checker::named("analytics-totals").accepts(&totals);
    // The seed's orders had no `source`.
    let mut seed = resource("order.json");
    seed.as_object_mut().unwrap().remove("source");
    Checker::named("order").accepts(&seed);
}

/// Each schema refuses what its SPEC forbids: a missing field, a wrong type, a value out of
/// range or outside its enum, a time without `Z`.
#[test]
fn the_schemas_refuse_what_the_spec_forbids() {
    let order = Checker::named("order");
    let base = resource("order.json");
    let with = |field: &str, v: Value| {
        let mut o = base.clone();
        o[field] = v;
        o
    };
    for field in [
        "order_id",
        "customer_id",
        "amount",
        "currency",
        "country",
        "status",
        "created_at",
    ] {
        let mut o = base.clone();
        o.as_object_mut().unwrap().remove(field);
        order.refuses(&o, &format!("an order without {field}"));
    }
    for (field, v, why) in [
        ("order_id", json!(0), "id 0"),
        ("order_id", json!("123"), "an id as a string"),
        (
            "order_id",
            json!(9007199254740992u64),
            "an id above 2^53 - 1",
        ),
        ("order_id", json!(1.5), "a fractional id"),
        ("customer_id", json!(999), "customer 999"),
        ("customer_id", json!(10000), "customer 10000"),
        ("amount", json!(9.99), "amount 9.99"),
        ("amount", json!(500.01), "amount 500.01"),
        ("amount", json!(-5.0), "a negative amount"),
        ("amount", json!("249.99"), "an amount as a string"),
        ("currency", json!("usd"), "a lower-case currency"),
        ("country", json!("MX"), "a country outside the eight"),
        ("status", json!("SHIPPED"), "an unknown status"),
        (
            "created_at",
            json!("2024-01-15T10:30:00+01:00"),
            "a time not in UTC with Z",
        ),
        ("created_at", json!("yesterday Z"), "not a time"),
        ("source", json!(7), "a source that is not a string"),
    ] {
        order.refuses(&with(field, v), why);
    }
    order.refuses(&json!([1, 2]), "an array");

    let alert = Checker::named("fraud-alert");
    let mut a = resource("fraud_alert.json");
    a.as_object_mut().unwrap().remove("reason");
    alert.refuses(&a, "an alert without a reason");
    let mut a = resource("fraud_alert.json");
    a["country"] = json!("Germany");
    alert.refuses(&a, "a country that is not a code");

    let payment = Checker::named("payment");
    let mut p = resource("payment.json");
    p["status"] = json!("PENDING");
    payment.refuses(&p, "an unknown payment status");
    let mut p = resource("payment.json");
    p["timestamp"] = json!("2024-01-15T10:30:00Z");
    payment.refuses(&p, "a timestamp that is not Unix seconds");

    let totals = Checker::named("analytics-totals");
    totals.refuses(&json!({"total_sales": 1.0}), "totals without order_count");
    totals.refuses(
        &json!({"total_sales": -1.0, "order_count": 1}),
        "negative totals",
    );
    let country = Checker::named("analytics-country");
    country.refuses(
        &json!({"country": "DE", "order_count": 0, "total_sales": 0.0}),
        "a country without orders",
    );
    country.refuses(
        &json!({"order_count": 1, "total_sales": 1.0}),
        "a per-country record without its country",
    );
}

/// A dead letter's headers as a reader writes them, and what the schema refuses.
#[test]
fn dead_letter_headers() {
    let headers = Checker::named("dead-letter-headers");
    let good = json!({
        "dlq.reason": "invalid-value", "dlq.error": "invalid value: negative amount -5.00",
        "dlq.topic": "orders", "dlq.partition": "3", "dlq.offset": "17",
        "dlq.group": "fraud-group", "dlq.truncated": "false",
        "trace-id": "abc", "empty": null
    });
    headers.accepts(&good);
    for code in orders_core::DecodeError::CODES {
        let mut h = good.clone();
        h["dlq.reason"] = json!(code);
        headers.accepts(&h);
    }
    let mut h = good.clone();
    h["dlq.reason"] = json!("bad");
    headers.refuses(&h, "an unknown reason");
    let mut h = good.clone();
    h["dlq.offset"] = json!("-1");
    headers.refuses(&h, "a negative offset");
    let mut h = good.clone();
    h.as_object_mut().unwrap().remove("dlq.group");
    headers.refuses(&h, "no group");
}
