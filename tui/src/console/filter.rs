//! The order filter typed after `/`: a few words, each narrowing the table.
//!
//! Grammar: words separated by spaces, case-insensitive.
//! - `#123` or `123`: that order id
//! - a two-letter country code: `DE`
//! - an order status: `CREATED`, `CONFIRMED`, `CANCELLED`
//! - `fraud` (or `!`): flagged orders only
//! - a payment state: `paid`, `failed`, `unpaid` (no payment yet)
//!
//! Words of one kind widen (`DE FR`: either country); words of different kinds narrow
//! (`DE fraud`: flagged orders from Germany).

use super::api::OrderDocument;
use std::fmt;

const STATUSES: [&str; 3] = ["CREATED", "CONFIRMED", "CANCELLED"];

/// Which payment state an order must be in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentFilter {
    Paid,
    Failed,
    Unpaid,
}

impl PaymentFilter {
    fn matches(self, doc: &OrderDocument) -> bool {
        match (self, doc.payment_status.as_deref()) {
            (PaymentFilter::Unpaid, s) => s.is_none(),
            (PaymentFilter::Paid, Some(s)) => s.eq_ignore_ascii_case("PAID"),
            (PaymentFilter::Failed, Some(s)) => s.eq_ignore_ascii_case("FAILED"),
            (_, None) => false,
        }
    }
}

/// A parsed filter; the empty filter matches every order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    text: String,
    ids: Vec<u64>,
    countries: Vec<String>,
    statuses: Vec<String>,
    fraud_only: bool,
    payments: Vec<PaymentFilter>,
}

/// A word the grammar does not know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterError(pub String);

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown filter word {:?} (try DE, CANCELLED, fraud, paid, #123)",
            self.0
        )
    }
}

impl Filter {
    pub fn parse(text: &str) -> Result<Filter, FilterError> {
        let mut filter = Filter {
            text: text.split_whitespace().collect::<Vec<_>>().join(" "),
            ..Filter::default()
        };
        for word in text.split_whitespace() {
            let upper = word.to_ascii_uppercase();
            let digits = word.strip_prefix('#').unwrap_or(word);
            if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                let id = digits.parse().map_err(|_| FilterError(word.to_owned()))?;
                filter.ids.push(id);
            } else if upper == "FRAUD" || upper == "!" {
                filter.fraud_only = true;
            } else if upper == "PAID" {
                filter.payments.push(PaymentFilter::Paid);
            } else if upper == "FAILED" {
                filter.payments.push(PaymentFilter::Failed);
            } else if upper == "UNPAID" || upper == "PENDING" {
                filter.payments.push(PaymentFilter::Unpaid);
            } else if STATUSES.contains(&upper.as_str()) {
                filter.statuses.push(upper);
            } else if upper.len() == 2 && upper.bytes().all(|b| b.is_ascii_uppercase()) {
                filter.countries.push(upper);
            } else {
                return Err(FilterError(word.to_owned()));
            }
        }
        Ok(filter)
    }

    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    /// The filter as typed, tidied.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The one order id this filter asks for, if it asks for exactly one.
    pub fn single_id(&self) -> Option<u64> {
        match self.ids.as_slice() {
            [id] => Some(*id),
            _ => None,
        }
    }

    pub fn matches(&self, doc: &OrderDocument) -> bool {
        (self.ids.is_empty() || self.ids.contains(&doc.order_id))
            && (self.countries.is_empty()
                || self
                    .countries
                    .iter()
                    .any(|c| c.eq_ignore_ascii_case(&doc.country)))
            && (self.statuses.is_empty()
                || self
                    .statuses
                    .iter()
                    .any(|s| s.eq_ignore_ascii_case(&doc.status)))
            && (!self.fraud_only || doc.fraud)
            && (self.payments.is_empty() || self.payments.iter().any(|p| p.matches(doc)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(id: u64, country: &str, status: &str, fraud: bool, pay: Option<&str>) -> OrderDocument {
        OrderDocument {
            order_id: id,
            country: country.into(),
            status: status.into(),
            fraud,
            payment_status: pay.map(str::to_owned),
            ..OrderDocument::default()
        }
    }

    #[test]
    fn empty_filter_matches_everything() {
        let f = Filter::parse("   ").unwrap();
        assert!(f.is_empty());
        assert!(f.matches(&doc(1, "US", "CREATED", false, None)));
    }

    #[test]
    fn each_kind_of_word() {
        let d = doc(123, "DE", "CANCELLED", true, Some("PAID"));
        for yes in ["#123", "123", "de", "DE", "cancelled", "fraud", "!", "paid"] {
            assert!(Filter::parse(yes).unwrap().matches(&d), "{yes}");
        }
        for no in ["#124", "FR", "CREATED", "failed", "unpaid"] {
            assert!(!Filter::parse(no).unwrap().matches(&d), "{no}");
        }
        assert!(!Filter::parse("fraud")
            .unwrap()
            .matches(&doc(1, "DE", "CREATED", false, None)));
    }

    #[test]
    fn same_kind_widens_and_different_kinds_narrow() {
        let de = doc(1, "DE", "CREATED", false, None);
        let fr = doc(2, "FR", "CREATED", true, None);
        let f = Filter::parse("DE FR").unwrap();
        assert!(f.matches(&de) && f.matches(&fr));
        let f = Filter::parse("DE fraud").unwrap();
        assert!(!f.matches(&de) && !f.matches(&fr));
        let f = Filter::parse("fr FRAUD unpaid").unwrap();
        assert!(f.matches(&fr));
        assert_eq!(f.text(), "fr FRAUD unpaid");
    }

    #[test]
    fn unknown_words_are_errors_that_say_what_works() {
        let err = Filter::parse("DE germany").unwrap_err();
        assert_eq!(err.0, "germany");
        assert!(err.to_string().contains("try DE"), "{err}");
        assert!(Filter::parse("#").is_err());
        assert!(Filter::parse("#99999999999999999999999").is_err());
    }

    #[test]
    fn single_id() {
        assert_eq!(Filter::parse("#42").unwrap().single_id(), Some(42));
        assert_eq!(Filter::parse("42 43").unwrap().single_id(), None);
        assert_eq!(Filter::parse("DE").unwrap().single_id(), None);
    }
}
