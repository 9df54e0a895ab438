//! Deterministic order generation: the same seed and id always give the same order.

use crate::domain::{Country, Order, OrderStatus, Timestamp, COUNTRIES};
use crate::money::Cents;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Generates the SPEC's random orders. Each order's fields depend only on the
/// seed and the order id, so a restarted producer continues the same sequence.
#[derive(Debug, Clone)]
pub struct OrderGenerator {
    seed: u64,
    countries: Vec<Country>,
}

/// A 64-bit mix (SplitMix64's finaliser) so that neighbouring ids get unrelated streams.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl OrderGenerator {
    pub fn new(seed: u64) -> Self {
        OrderGenerator {
            seed,
            countries: COUNTRIES.iter().filter_map(|c| c.parse().ok()).collect(),
        }
    }

    /// The order with this id, stamped with `created_at`.
    pub fn order(&self, order_id: u64, created_at: Timestamp) -> Order {
        let mut rng = StdRng::seed_from_u64(mix(self.seed ^ mix(order_id)));
        let customer_id = rng.random_range(1000..=9999);
        let amount = Cents(rng.random_range(1_000..=50_000));
        let country = self.countries[rng.random_range(0..self.countries.len())];
        // Most orders are new; some confirmed, a few cancelled.
        let status = match rng.random_range(0..10) {
            0..=6 => OrderStatus::Created,
            7..=8 => OrderStatus::Confirmed,
            _ => OrderStatus::Cancelled,
        };
        Order {
            order_id,
            customer_id,
            amount,
            currency: "USD".into(),
            country,
            status,
            created_at,
            source: Some("order-service".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_orders_and_fields_in_range() {
        let t = Timestamp::now();
        let a = OrderGenerator::new(7);
        let b = OrderGenerator::new(7);
        let c = OrderGenerator::new(8);
        let mut differs = false;
        for id in 1..2000 {
            let o = a.order(id, t);
            assert_eq!(o, b.order(id, t));
            differs |= o != c.order(id, t);
            assert!((1000..=9999).contains(&o.customer_id));
            assert!((1_000..=50_000).contains(&o.amount.0));
            assert!(COUNTRIES.contains(&o.country.as_str()));
            o.validate().unwrap();
        }
        assert!(differs);
    }
}
