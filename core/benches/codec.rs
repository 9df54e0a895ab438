//! Codec benchmark: what the pipeline pays per record to decode and encode the SPEC's JSON.
//!
//! `cargo bench -p orders-core --bench codec` prints nanoseconds per call (median of
//! rounds) for each record type's decode and encode, on generated orders and the alerts and
//! payments the pipeline derives from them.

use orders_core::domain::{FraudAlert, Order, Payment, PaymentStatus, Timestamp};
use orders_core::fraud::FraudRules;
use orders_core::generator::OrderGenerator;
use std::hint::black_box;
use std::time::Instant;

const RECORDS: usize = 20_000;
const ROUNDS: usize = 15;

/// Median nanoseconds per record of `f` over `ROUNDS` passes of `RECORDS` records.
fn per_record(mut f: impl FnMut(usize)) -> f64 {
    let mut rounds: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let start = Instant::now();
            for i in 0..RECORDS {
                f(i);
            }
            start.elapsed().as_nanos() as f64 / RECORDS as f64
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    rounds[ROUNDS / 2]
}

fn main() {
    let generator = OrderGenerator::new(7);
    let rules = FraudRules::default();
    let now = Timestamp::now();
    let orders: Vec<Order> = (1..=RECORDS as u64)
        .map(|id| generator.order(id, now))
        .collect();
    let alerts: Vec<FraudAlert> = orders
        .iter()
        .map(|o| {
            rules.evaluate(o).unwrap_or(FraudAlert {
                order_id: o.order_id,
                reason: "HIGH_AMOUNT_RISKY_COUNTRY".into(),
                amount: o.amount,
                country: o.country,
                rule_id: Some("default".into()),
                detected_at: Some(now),
            })
        })
        .collect();
    let payments: Vec<Payment> = orders
        .iter()
        .map(|o| Payment {
            order_id: o.order_id,
            status: PaymentStatus::Paid,
            amount: o.amount,
            country: o.country,
            timestamp: now.micros() as f64 / 1e6,
        })
        .collect();
    let order_json: Vec<Vec<u8>> = orders.iter().map(Order::to_json).collect();
    let alert_json: Vec<Vec<u8>> = alerts.iter().map(FraudAlert::to_json).collect();
    let payment_json: Vec<Vec<u8>> = payments.iter().map(Payment::to_json).collect();

    let figures = [
        (
            "order decode",
            per_record(|i| {
                black_box(Order::decode(Some(&order_json[i]))).ok();
            }),
        ),
        (
            "order encode",
            per_record(|i| {
                black_box(orders[i].to_json());
            }),
        ),
        (
            "alert decode",
            per_record(|i| {
                black_box(FraudAlert::decode(Some(&alert_json[i]))).ok();
            }),
        ),
        (
            "alert encode",
            per_record(|i| {
                black_box(alerts[i].to_json());
            }),
        ),
        (
            "payment decode",
            per_record(|i| {
                black_box(Payment::decode(Some(&payment_json[i]))).ok();
            }),
        ),
        (
            "payment encode",
            per_record(|i| {
                black_box(payments[i].to_json());
            }),
        ),
    ];
    println!("codec: ns per record, median of {ROUNDS} rounds of {RECORDS}");
    for (name, ns) in figures {
        println!("  {name:<15} {ns:>8.0}");
    }
}
