//! The OpenAPI document of the JSON endpoints, generated from the handlers and types.

use crate::query::{NoParams, StrictQuery};
use crate::{dead_letters, error, lag_status, model, routes, schemas};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use std::sync::OnceLock;
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "orders API",
        description = "The read side of the orders pipeline: orders, fraud alerts, payments, \
                       totals, consumer lag, canary journeys and the JSON Schemas of the topics' records. Errors answer `{\"error\": {\"code\", \"message\"}}`."
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
        routes::windows,
        routes::lag,
        routes::canary,
        dead_letters::dead_letters,
        schemas::list,
        schemas::document,
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
        model::MinuteWindowBody,
        model::WindowsBody,
        model::CountSales,
        model::TotalsBody,
        model::PartitionLagJson,
        model::GroupLagJson,
        model::LagWindowJson,
        model::LagBody,
        model::CanaryBody,
        model::CanaryJson,
        model::CanaryPercentiles,
        model::LegPercentiles,
        dead_letters::Reason,
        dead_letters::DeadLettersBody,
        dead_letters::DeadLetterJson,
        dead_letters::HeaderJson,
        dead_letters::CoordinatesJson,
        dead_letters::HandlingJson,
        schemas::SchemaName,
        schemas::SchemaEntry,
        schemas::SchemasBody,
    )),
    tags(
        (name = "health", description = "Liveness and readiness"),
        (name = "orders", description = "Orders, alerts, payments and totals from the store"),
        (name = "lag", description = "Consumer lag from Kafka"),
        (name = "canary", description = "Canary orders' journeys through the pipeline"),
        (name = "dead letters", description = "Records the readers could not use (read-only)"),
        (name = "schemas", description = "JSON Schemas of the topics' records"),
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

/// The OpenAPI document of the JSON endpoints.
pub async fn document(StrictQuery(_): StrictQuery<NoParams>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], json()).into_response()
}

#[cfg(test)]
mod tests {
    /// The schema is written by hand (the type lives in `orders_core`), so it must name
    /// exactly the fields the type serializes, and call required exactly those never null.
    #[test]
    fn partition_lag_schema_documents_what_is_serialized() {
        let doc: serde_json::Value = serde_json::from_str(super::json()).unwrap();
        let schema = &doc["components"]["schemas"]["PartitionLagJson"];
        let wire = serde_json::to_value(orders_core::lag::PartitionLag::default()).unwrap();
        let wire = wire.as_object().unwrap();
        let documented = schema["properties"].as_object().unwrap();
        let mut names: Vec<&String> = wire.keys().collect();
        names.sort();
        assert_eq!(names, documented.keys().collect::<Vec<_>>());
        let required: Vec<&str> = schema["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let never_null: Vec<&str> = documented
            .iter()
            .filter(|(_, s)| {
                !s["type"]
                    .as_array()
                    .is_some_and(|t| t.contains(&"null".into()))
            })
            .map(|(k, _)| k.as_str())
            .collect();
        let mut sorted = required.clone();
        sorted.sort();
        assert_eq!(sorted, never_null);
    }

    /// A partition's lag is documented under the name and with the words it has always had
    /// (scripts may read the document), whatever type serializes it.
    #[test]
    fn partition_lag_schema_keeps_its_name_and_shape() {
        let doc: serde_json::Value = serde_json::from_str(super::json()).unwrap();
        let schemas = &doc["components"]["schemas"];
        assert_eq!(
            schemas["GroupLagJson"]["properties"]["partitions"],
            serde_json::json!({"type": "array", "items": {"$ref": "#/components/schemas/PartitionLagJson"}})
        );
        assert_eq!(
            schemas["PartitionLagJson"],
            serde_json::json!({
                "type": "object",
                "required": ["topic", "partition", "low_watermark", "high_watermark", "lag"],
                "properties": {
                    "committed": {"type": ["integer", "null"], "format": "int64",
                        "description": "Null when the group has committed nothing on this partition."},
                    "high_watermark": {"type": "integer", "format": "int64"},
                    "lag": {"type": "integer", "format": "int64",
                        "description": "Records not yet consumed."},
                    "lag_seconds": {"type": ["number", "null"], "format": "double",
                        "description": "Age of the oldest unconsumed record (from its Kafka timestamp); 0 without lag,\nnull when it could not be read in time."},
                    "low_watermark": {"type": "integer", "format": "int64"},
                    "partition": {"type": "integer", "format": "int32"},
                    "topic": {"type": "string"}
                }
            })
        );
    }
}
