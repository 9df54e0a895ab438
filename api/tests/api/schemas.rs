//! `/api/schemas`: every published schema listed, each served byte for byte as docs/schemas/
//! holds it, and documented in the OpenAPI document with its names as the path's enum.

use crate::common::*;
use axum::http::StatusCode;
use orders_core::schemas::ALL;
use serde_json::Value;

fn docs_file(name: &str) -> String {
    let path = format!("{}/../docs/schemas/{name}.json", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[tokio::test]
async fn every_schema_is_listed_and_served_as_the_docs_hold_it() {
    let f = filled_store(0).await;
    let app = router(f.store.clone());
    let list = get_ok(&app, "/api/schemas").await;
    let entries = list["schemas"].as_array().unwrap();
    let names: Vec<&str> = entries
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "order",
            "fraud-alert",
            "payment",
            "analytics-totals",
            "analytics-country",
            "dead-letter-headers"
        ]
    );
    for e in entries {
        let name = e["name"].as_str().unwrap();
        assert_eq!(e["path"], format!("/api/schemas/{name}"));
        assert!(e["topic"].is_string() && e["part"].is_string() && e["records"].is_string());
        let a = get(&app, e["path"].as_str().unwrap()).await;
        assert_eq!(a.status, StatusCode::OK, "{name}: {}", a.text);
        assert!(a.content_type.starts_with("application/json"), "{name}");
        assert_eq!(
            a.text,
            docs_file(name),
            "{name}: served = docs/schemas/{name}.json"
        );
        assert_eq!(
            a.json()["$schema"],
            "https://json-schema.org/draft/2020-12/schema"
        );
    }
    // Every file in docs/schemas/ is published.
    let dir = format!("{}/../docs/schemas", env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter_map(|f| f.strip_suffix(".json").map(str::to_owned))
        .collect();
    files.sort();
    let mut published: Vec<String> = ALL.iter().map(|s| s.name.to_owned()).collect();
    published.sort();
    assert_eq!(files, published);
}

#[tokio::test]
async fn unknown_names_and_parameters_get_a_json_error() {
    let f = filled_store(0).await;
    let app = router(f.store.clone());
    let a = get(&app, "/api/schemas/invoice").await;
    assert_error(&a, 404, "not_found", "an unknown schema");
    assert!(
        a.text.contains("analytics-country"),
        "names the schemas: {}",
        a.text
    );
    assert_error(
        &get(&app, "/api/schemas?x=1").await,
        400,
        "unknown_parameter",
        "a parameter on the list",
    );
    assert_error(
        &get(&app, "/api/schemas/order?pretty=1").await,
        400,
        "unknown_parameter",
        "a parameter on a document",
    );
}

#[tokio::test]
async fn the_openapi_document_declares_the_names_as_an_enum() {
    let doc: Value = serde_json::from_str(orders_api::openapi::json()).unwrap();
    let op = &doc["paths"]["/api/schemas/{name}"]["get"];
    let param = &op["parameters"][0];
    assert_eq!(param["name"], "name");
    assert_eq!(param["in"], "path");
    let schema = match param["schema"].get("$ref") {
        Some(r) => {
            let name = r.as_str().unwrap().rsplit('/').next().unwrap();
            doc["components"]["schemas"][name].clone()
        }
        None => param["schema"].clone(),
    };
    let names: Vec<&str> = schema["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(names, ALL.iter().map(|s| s.name).collect::<Vec<_>>());
    for status in ["200", "400", "404"] {
        assert!(op["responses"][status].is_object(), "{status} declared");
    }
    assert!(doc["paths"]["/api/schemas"]["get"]["responses"]["200"].is_object());
}
