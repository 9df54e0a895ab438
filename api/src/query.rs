//! Request parameters: strict extractors (unknown or repeated parameters are rejected) and
//! validation with messages that name the parameter and the accepted values.
//!
//! Parameters arrive as strings and are parsed here rather than by serde, so every bad
//! value gets the same kind of message and the same `invalid_parameter` code.

use crate::error::AppError;
use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use orders_core::store::OrderQuery;
use orders_core::{Country, OrderStatus, PaymentStatus};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use utoipa::IntoParams;

pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 1000;
/// The longest query string accepted (longer gets 414).
pub const MAX_QUERY_BYTES: usize = 2048;

/// A query string deserialized into `T`, rejecting what `T` does not know.
pub struct StrictQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for StrictQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, AppError> {
        match Query::<T>::try_from_uri(&parts.uri) {
            Ok(Query(value)) => Ok(StrictQuery(value)),
            Err(rejection) => {
                let text = rejection.body_text();
                let detail = text
                    .strip_prefix("Failed to deserialize query string: ")
                    .unwrap_or(&text);
                let code = if detail.contains("unknown field") {
                    "unknown_parameter"
                } else {
                    "invalid_query"
                };
                Err(AppError::bad_request(
                    code,
                    detail.replace("field", "parameter"),
                ))
            }
        }
    }
}

/// `?limit=` alone.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LimitParams {
    /// How many, 1–1000 (default 50; 10 for `/api/analytics`).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub limit: Option<String>,
}

/// The span of `/api/totals/windows`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WindowParams {
    /// How many minutes back from the current one (included), 1–1440 (default 60).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1440)]
    pub minutes: Option<String>,
}

/// Most minutes `/api/totals/windows` answers at once: a day.
pub const MAX_WINDOW_MINUTES: usize = 1440;

/// `minutes` of `/api/totals/windows`.
pub fn window_minutes(raw: Option<&str>) -> Result<usize, AppError> {
    let Some(raw) = raw else { return Ok(60) };
    match raw.parse::<usize>() {
        Ok(n) if (1..=MAX_WINDOW_MINUTES).contains(&n) => Ok(n),
        _ => Err(AppError::invalid(format!(
            "minutes must be an integer from 1 to {MAX_WINDOW_MINUTES}, not {:?}",
            shorten(raw)
        ))),
    }
}

/// The web view's one option.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexParams {
    /// `true`: show the canary orders (never among the orders) with their journeys.
    pub canaries: Option<String>,
}

/// No parameter at all.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

/// Filters of `/api/orders`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct OrdersParams {
    /// How many, 1–1000 (default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub limit: Option<String>,
    /// Only orders stored before the order with this id: the `next_before` of the previous
    /// page (lists nothing when no such order is stored).
    #[param(value_type = Option<u64>, minimum = 1)]
    pub before: Option<String>,
    /// Two upper-case letters, e.g. `US`.
    #[param(value_type = Option<String>, pattern = "^[A-Z]{2}$")]
    pub country: Option<String>,
    /// `CREATED`, `CONFIRMED` or `CANCELLED`.
    #[param(schema_with = order_status_schema)]
    pub status: Option<String>,
    /// `true`: only orders with a fraud alert; `false`: only those without.
    #[param(value_type = Option<bool>)]
    pub fraud: Option<String>,
    /// `PAID` or `FAILED`.
    #[param(schema_with = payment_status_schema)]
    pub payment_status: Option<String>,
}

/// A string parameter that takes one of `words`, as the OpenAPI document declares it.
fn words_schema(words: impl IntoIterator<Item = &'static str>) -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .enum_values(Some(words))
        .build()
}

fn order_status_schema() -> utoipa::openapi::Object {
    words_schema(orders_core::domain::OrderStatus::ALL.map(|s| s.as_str()))
}

fn payment_status_schema() -> utoipa::openapi::Object {
    words_schema(orders_core::domain::PaymentStatus::ALL.map(|s| s.as_str()))
}

pub fn limit(raw: Option<&str>, default: usize) -> Result<usize, AppError> {
    let Some(raw) = raw else { return Ok(default) };
    match raw.parse::<usize>() {
        Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        _ => Err(AppError::invalid(format!(
            "limit must be an integer from 1 to {MAX_LIMIT}, not {:?}",
            shorten(raw)
        ))),
    }
}

/// An order id from a path or a parameter: a positive integer.
pub fn order_id(name: &str, raw: &str) -> Result<u64, AppError> {
    match raw.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(AppError::invalid(format!(
            "{name} must be a positive integer order id, not {:?}",
            shorten(raw)
        ))),
    }
}

/// Echoes at most 64 characters of a bad value back.
fn shorten(raw: &str) -> String {
    const MAX: usize = 64;
    match raw.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &raw[..i]),
        None => raw.to_owned(),
    }
}

impl OrdersParams {
    pub fn to_query(&self) -> Result<OrderQuery, AppError> {
        let country = self
            .country
            .as_deref()
            .map(|c| {
                c.parse::<Country>().map_err(|_| {
                    AppError::invalid(format!(
                        "country must be two upper-case letters such as US, not {:?}",
                        shorten(c)
                    ))
                })
            })
            .transpose()?;
        let status = self
            .status
            .as_deref()
            .map(|s| {
                s.parse::<OrderStatus>().map_err(|_| {
                    AppError::invalid(format!(
                        "status must be CREATED, CONFIRMED or CANCELLED, not {:?}",
                        shorten(s)
                    ))
                })
            })
            .transpose()?;
        let payment_status = self
            .payment_status
            .as_deref()
            .map(|s| {
                s.parse::<PaymentStatus>().map_err(|_| {
                    AppError::invalid(format!(
                        "payment_status must be PAID or FAILED, not {:?}",
                        shorten(s)
                    ))
                })
            })
            .transpose()?;
        let fraud = match self.fraud.as_deref() {
            None => None,
            Some("true") => Some(true),
            Some("false") => Some(false),
            Some(other) => {
                return Err(AppError::invalid(format!(
                    "fraud must be true or false, not {:?}",
                    shorten(other)
                )))
            }
        };
        Ok(OrderQuery {
            limit: limit(self.limit.as_deref(), DEFAULT_LIMIT)?,
            before_id: self
                .before
                .as_deref()
                .map(|b| order_id("before", b))
                .transpose()?,
            country,
            status,
            fraud,
            payment_status,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(e: AppError) -> String {
        e.to_string()
    }

    #[test]
    fn limits() {
        assert_eq!(limit(None, 50).unwrap(), 50);
        assert_eq!(limit(Some("1"), 50).unwrap(), 1);
        assert_eq!(limit(Some("1000"), 50).unwrap(), 1000);
        for bad in [
            "0",
            "1001",
            "-1",
            "abc",
            "",
            "1e3",
            "99999999999999999999999",
        ] {
            let m = msg(limit(Some(bad), 50).unwrap_err());
            assert!(m.contains("limit must be"), "{bad}: {m}");
        }
    }

    #[test]
    fn order_filters() {
        let p = OrdersParams {
            limit: Some("10".into()),
            before: Some("99".into()),
            country: Some("DE".into()),
            status: Some("CONFIRMED".into()),
            fraud: Some("false".into()),
            payment_status: Some("FAILED".into()),
        };
        let q = p.to_query().unwrap();
        assert_eq!(q.limit, 10);
        assert_eq!(q.before_id, Some(99));
        assert_eq!(q.country.unwrap().as_str(), "DE");
        assert_eq!(q.status, Some(OrderStatus::Confirmed));
        assert_eq!(q.fraud, Some(false));
        assert_eq!(q.payment_status, Some(PaymentStatus::Failed));
        assert_eq!(OrdersParams::default().to_query().unwrap().limit, 50);
    }

    #[test]
    fn bad_filters_name_the_parameter() {
        let cases: [(OrdersParams, &str); 6] = [
            (
                OrdersParams {
                    country: Some("us".into()),
                    ..Default::default()
                },
                "country",
            ),
            (
                OrdersParams {
                    status: Some("SHIPPED".into()),
                    ..Default::default()
                },
                "status",
            ),
            (
                OrdersParams {
                    payment_status: Some("paid".into()),
                    ..Default::default()
                },
                "payment_status",
            ),
            (
                OrdersParams {
                    fraud: Some("yes".into()),
                    ..Default::default()
                },
                "fraud",
            ),
            (
                OrdersParams {
                    before: Some("0".into()),
                    ..Default::default()
                },
                "before",
            ),
            (
                OrdersParams {
                    limit: Some("5000".into()),
                    ..Default::default()
                },
                "limit",
            ),
        ];
        for (p, name) in cases {
            let m = msg(p.to_query().unwrap_err());
            assert!(m.starts_with(name), "{name}: {m}");
        }
    }

    #[test]
    fn long_bad_values_are_shortened_in_messages() {
        let long = "x".repeat(500);
        let m = msg(order_id("id", &long).unwrap_err());
        assert!(m.len() < 150, "{m}");
    }
}
