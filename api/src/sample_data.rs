//! Synthetic stored data for benchmarks, demos and tests: orders from the seeded
//! generator, as the analytics service would store them, with the fraud alerts the
//! default rules raise and a payment result for each.

use orders_core::fraud::FraudRules;
use orders_core::generator::OrderGenerator;
use orders_core::store::{StoreBatch, StoredOrder};
use orders_core::{Payment, PaymentStatus, Timestamp};
use std::ops::RangeInclusive;

/// Partitions of the orders topic (SPEC).
const PARTITIONS: u64 = 6;

/// Orders `ids` with their alerts and payments. Order `n` is created `n` milliseconds
/// after `start`, sits on partition `n % 6` at offset `n / 6`, and is paid unless `n` is a
/// multiple of 17 (then its payment failed).
pub fn batch(seed: u64, ids: RangeInclusive<u64>, start: Timestamp) -> StoreBatch {
    let generator = OrderGenerator::new(seed);
    let rules = FraudRules::default();
    let mut batch = StoreBatch::default();
    for id in ids {
        let created_us = start.micros() + id as i64 * 1000;
        let created_at = Timestamp::from_micros(created_us).unwrap_or(start);
        let processed_at = Timestamp::from_micros(created_us + 5_000).unwrap_or(start);
        let order = generator.order(id, created_at);
        if let Some(mut alert) = rules.evaluate(&order) {
            alert.detected_at = Timestamp::from_micros(created_us + 2_000);
            batch.alerts.push(alert);
        }
        batch.payments.push(Payment {
            order_id: id,
            status: if id % 17 == 0 {
                PaymentStatus::Failed
            } else {
                PaymentStatus::Paid
            },
            amount: order.amount,
            country: order.country,
            timestamp: (created_us + 3_000) as f64 / 1e6,
        });
        batch.orders.push(StoredOrder {
            order,
            kafka_partition: (id % PARTITIONS) as i32,
            kafka_offset: (id / PARTITIONS) as i64,
            processed_at,
        });
    }
    batch
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_order_has_a_payment_and_risky_ones_an_alert() {
        let b = batch(1, 1..=200, Timestamp::now());
        assert_eq!(b.orders.len(), 200);
        assert_eq!(b.payments.len(), 200);
        assert!(!b.alerts.is_empty() && b.alerts.len() < 200);
        for a in &b.alerts {
            let o = &b.orders[(a.order_id - 1) as usize].order;
            assert!(o.amount.0 > 30_000 && !["US", "CA"].contains(&o.country.as_str()));
        }
        let failed = b
            .payments
            .iter()
            .filter(|p| p.status == PaymentStatus::Failed)
            .count();
        assert_eq!(failed, 200 / 17);
    }
}
