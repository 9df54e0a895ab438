//! `/api/schemas`: the JSON Schema documents of every topic's records (docs/schemas/), as
//! `orders_core::schemas` compiles them in, so what is served is what the docs hold.

use crate::error::{AppError, ErrorBody};
use crate::query::{NoParams, StrictQuery};
use axum::extract::rejection::PathRejection;
use axum::extract::Path;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use orders_core::schemas;
use serde::Serialize;
use utoipa::ToSchema;

/// The name of a published schema.
#[derive(Debug, Clone, Copy, ToSchema)]
#[allow(dead_code)] // documents the path parameter's values; the handler takes a string
pub enum SchemaName {
    #[schema(rename = "order")]
    Order,
    #[schema(rename = "fraud-alert")]
    FraudAlert,
    #[schema(rename = "payment")]
    Payment,
    #[schema(rename = "analytics-totals")]
    AnalyticsTotals,
    #[schema(rename = "analytics-country")]
    AnalyticsCountry,
    #[schema(rename = "dead-letter-headers")]
    DeadLetterHeaders,
}

/// One published schema.
#[derive(Debug, Serialize, ToSchema)]
pub struct SchemaEntry {
    #[schema(example = "order")]
    pub name: &'static str,
    /// The topic whose records it describes (`<topic>.dlq`: each dead-letter topic).
    #[schema(example = "orders")]
    pub topic: &'static str,
    /// `value`, or `headers` for the dead-letter headers.
    #[schema(example = "value")]
    pub part: &'static str,
    /// Which of the topic's records it describes.
    pub records: &'static str,
    /// Where the document is served.
    #[schema(example = "/api/schemas/order")]
    pub path: String,
}

/// Every published schema.
#[derive(Debug, Serialize, ToSchema)]
pub struct SchemasBody {
    pub schemas: Vec<SchemaEntry>,
}

/// The published JSON Schemas of the topics' records.
#[utoipa::path(get, path = "/api/schemas", tag = "schemas",
    responses(
        (status = 200, body = SchemasBody),
        (status = 400, description = "A query parameter (none are taken)", body = ErrorBody),
    ))]
pub async fn list(StrictQuery(_): StrictQuery<NoParams>) -> Json<SchemasBody> {
    Json(SchemasBody {
        schemas: schemas::ALL
            .iter()
            .map(|s| SchemaEntry {
                name: s.name,
                topic: s.topic,
                part: s.part,
                records: s.records,
                path: format!("/api/schemas/{}", s.name),
            })
            .collect(),
    })
}

/// One JSON Schema document (draft 2020-12), as docs/schemas/ holds it.
#[utoipa::path(get, path = "/api/schemas/{name}", tag = "schemas",
    params(("name" = SchemaName, Path, description = "The schema's name, as `/api/schemas` lists it")),
    responses(
        (status = 200, description = "The JSON Schema document", body = serde_json::Value),
        (status = 400, description = "A query parameter (none are taken)", body = ErrorBody),
        (status = 404, description = "No schema of that name", body = ErrorBody),
    ))]
pub async fn document(
    name: Result<Path<String>, PathRejection>,
    StrictQuery(_): StrictQuery<NoParams>,
) -> Result<Response, AppError> {
    let Path(name) = name.map_err(|e| AppError::invalid(e.body_text()))?;
    let schema = schemas::by_name(&name).ok_or_else(|| {
        let names: Vec<&str> = schemas::ALL.iter().map(|s| s.name).collect();
        AppError::NotFound(format!(
            "no schema {name:?}; there are {}",
            names.join(", ")
        ))
    })?;
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        schema.document,
    )
        .into_response())
}
