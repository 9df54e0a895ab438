//! The fraud rules: which orders raise an alert, and why.

use crate::domain::{Country, FraudAlert, Order, Timestamp};
use crate::money::Cents;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// One rule: an order whose amount is strictly above `above` and whose country
/// passes the country test raises an alert with `reason`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FraudRule {
    pub id: String,
    pub reason: String,
    /// Strict lower bound on the amount, in dollars on the wire.
    pub above: Cents,
    /// Countries exempt from the rule (the default exempts US and CA).
    #[serde(default)]
    pub except_countries: BTreeSet<Country>,
    /// When non-empty, the rule applies only to these countries.
    #[serde(default)]
    pub only_countries: BTreeSet<Country>,
}

impl FraudRule {
    /// The seed's rule: more than $300 from outside the US and Canada.
    pub fn high_amount_risky_country(above: Cents, safe: BTreeSet<Country>) -> FraudRule {
        FraudRule {
            id: "high-amount-risky-country".into(),
            reason: "HIGH_AMOUNT_RISKY_COUNTRY".into(),
            above,
            except_countries: safe,
            only_countries: BTreeSet::new(),
        }
    }

    pub fn matches(&self, order: &Order) -> bool {
        order.amount > self.above
            && !self.except_countries.contains(&order.country)
            && (self.only_countries.is_empty() || self.only_countries.contains(&order.country))
    }
}

/// An ordered set of rules; the first that matches names the alert.
#[derive(Debug, Clone, PartialEq)]
pub struct FraudRules(pub Vec<FraudRule>);

impl Default for FraudRules {
    fn default() -> Self {
        FraudRules(vec![FraudRule::high_amount_risky_country(
            Cents(30_000),
            default_safe_countries(),
        )])
    }
}

pub fn default_safe_countries() -> BTreeSet<Country> {
    ["US", "CA"].iter().filter_map(|c| c.parse().ok()).collect()
}

impl FraudRules {
    /// The first rule an order matches (the one that names its alert) and its position.
    pub fn first_match(&self, order: &Order) -> Option<(usize, &FraudRule)> {
        self.0.iter().enumerate().find(|(_, r)| r.matches(order))
    }

    /// The alert an order raises, if any.
    pub fn evaluate(&self, order: &Order) -> Option<FraudAlert> {
        let (_, rule) = self.first_match(order)?;
        Some(FraudAlert {
            order_id: order.order_id,
            reason: rule.reason.clone(),
            amount: order.amount,
            country: order.country,
            rule_id: Some(rule.id.clone()),
            detected_at: Some(Timestamp::now()),
        })
    }

    /// Parses extra rules given as a JSON array of [`FraudRule`].
    pub fn parse_json(text: &str) -> Result<Vec<FraudRule>, String> {
        serde_json::from_str(text).map_err(|e| format!("fraud rules are not valid JSON: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::OrderStatus;

    fn order(amount: i64, country: &str) -> Order {
        Order {
            order_id: 1,
            customer_id: 1000,
            amount: Cents(amount),
            currency: "USD".into(),
            country: country.parse().unwrap(),
            status: OrderStatus::Created,
            created_at: "2024-01-15T10:30:00Z".parse().unwrap(),
            source: None,
        }
    }

    #[test]
    fn default_rule_is_the_seeds() {
        let rules = FraudRules::default();
        assert!(rules.evaluate(&order(30_001, "DE")).is_some());
        assert!(
            rules.evaluate(&order(30_000, "DE")).is_none(),
            "strictly above 300"
        );
        assert!(rules.evaluate(&order(49_999, "US")).is_none());
        assert!(rules.evaluate(&order(49_999, "CA")).is_none());
        let alert = rules.evaluate(&order(35_000, "IN")).unwrap();
        assert_eq!(alert.reason, "HIGH_AMOUNT_RISKY_COUNTRY");
        assert_eq!(alert.amount, Cents(35_000));
    }

    #[test]
    fn rules_parse_from_json_and_apply_in_order() {
        let extra = FraudRules::parse_json(
            r#"[{"id":"br-any","reason":"WATCHED_COUNTRY","above":0.0,"only_countries":["BR"]}]"#,
        )
        .unwrap();
        let mut rules = FraudRules::default();
        rules.0.extend(extra);
        assert_eq!(
            rules.evaluate(&order(1_000, "BR")).unwrap().reason,
            "WATCHED_COUNTRY"
        );
        assert_eq!(
            rules.evaluate(&order(40_000, "BR")).unwrap().reason,
            "HIGH_AMOUNT_RISKY_COUNTRY"
        );
        assert!(rules.evaluate(&order(1_000, "DE")).is_none());
        assert_eq!(
            rules.first_match(&order(1_000, "BR")).map(|(i, _)| i),
            Some(1)
        );
        assert_eq!(
            rules.first_match(&order(40_000, "BR")).map(|(i, _)| i),
            Some(0)
        );
        assert!(rules.first_match(&order(1_000, "DE")).is_none());
        assert!(FraudRules::parse_json("{").is_err());
    }
}
