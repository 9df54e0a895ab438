//! The OpenAPI document of the JSON endpoints, generated from the handlers and types.

use crate::{error, lag_status, model, routes};
use std::sync::OnceLock;
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "orders API",
        description = "The read side of the orders pipeline: orders, fraud alerts, payments, \
                       totals and consumer lag. Errors answer `{\"error\": {\"code\", \"message\"}}`."
    ),
    paths(
        routes::healthz,
        routes::readyz,
        routes::analytics,
        routes::orders,
        routes::order,
        routes::alerts,
        routes::payments,
        routes::totals,
        routes::lag,
    ),
    components(schemas(
        error::ErrorBody,
        error::ErrorDetail,
        lag_status::LagStatus,
        model::HealthBody,
        model::ReadyBody,
        model::ReadyChecks,
        model::OrderJson,
        model::AnalyticsBody,
        model::OrdersPage,
        model::OrderDetail,
        model::Journey,
        model::FraudStep,
        model::PaymentStep,
        model::TimeStep,
        model::AlertJson,
        model::AlertsBody,
        model::PaymentJson,
        model::PaymentsBody,
        model::CountSales,
        model::TotalsBody,
        model::PartitionLagJson,
        model::GroupLagJson,
        model::LagWindowJson,
        model::LagBody,
    )),
    tags(
        (name = "health", description = "Liveness and readiness"),
        (name = "orders", description = "Orders, alerts, payments and totals from the store"),
        (name = "lag", description = "Consumer lag from Kafka"),
    )
)]
pub struct ApiDoc;

/// The document as JSON, built once.
pub fn json() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        ApiDoc::openapi().to_json().unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot serialize the OpenAPI document");
            "{}".to_owned()
        })
    })
}
