//! Money as integer cents: exact sums, with the float dollars of the wire format at the edges.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// An amount of money in cents. Sums never drift; JSON carries dollars (`249.99`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Cents(pub i64);

impl Cents {
    /// Converts wire dollars to cents, rounding to the nearest cent.
    /// Returns `None` for values that are not finite or do not fit.
    pub fn from_dollars(dollars: f64) -> Option<Cents> {
        if !dollars.is_finite() {
            return None;
        }
        let cents = (dollars * 100.0).round();
        if cents.abs() > 9.0e15 {
            return None;
        }
        Some(Cents(cents as i64))
    }

    /// The amount in dollars, as the wire format carries it.
    pub fn dollars(self) -> f64 {
        self.0 as f64 / 100.0
    }

    pub fn is_negative(self) -> bool {
        self.0 < 0
    }
}

impl fmt::Display for Cents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        write!(f, "{sign}{}.{:02}", abs / 100, abs % 100)
    }
}

impl std::ops::Add for Cents {
    type Output = Cents;
    fn add(self, rhs: Cents) -> Cents {
        Cents(self.0 + rhs.0)
    }
}

impl std::iter::Sum for Cents {
    fn sum<I: Iterator<Item = Cents>>(iter: I) -> Cents {
        Cents(iter.map(|c| c.0).sum())
    }
}

impl Serialize for Cents {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.dollars())
    }
}

impl<'de> Deserialize<'de> for Cents {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Cents, D::Error> {
        let dollars = f64::deserialize(d)?;
        Cents::from_dollars(dollars)
            .ok_or_else(|| serde::de::Error::custom("amount is not a finite number of dollars"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollars_round_trip_exactly() {
        for cents in [0_i64, 1, 10, 99, 1000, 24999, 50000, 35000, 123456789] {
            let c = Cents(cents);
            assert_eq!(Cents::from_dollars(c.dollars()), Some(c));
        }
    }

    #[test]
    fn sums_do_not_drift() {
        let total: Cents = std::iter::repeat_n(Cents::from_dollars(0.1).unwrap(), 1000).sum();
        assert_eq!(total, Cents(10_000));
        assert_eq!(total.to_string(), "100.00");
    }

    #[test]
    fn displays_sign_and_two_decimals() {
        assert_eq!(Cents(-5).to_string(), "-0.05");
        assert_eq!(Cents(24999).to_string(), "249.99");
    }

    #[test]
    fn rejects_non_finite() {
        assert_eq!(Cents::from_dollars(f64::NAN), None);
        assert_eq!(Cents::from_dollars(f64::INFINITY), None);
        assert_eq!(Cents::from_dollars(1e300), None);
    }

    #[test]
    fn serializes_as_dollars() {
        assert_eq!(serde_json::to_string(&Cents(24999)).unwrap(), "249.99");
        assert_eq!(serde_json::to_string(&Cents(35000)).unwrap(), "350.0");
    }
}
