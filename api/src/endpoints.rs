//! The router's table: every endpoint with its path, who may reach it, whether it is
//! answered from the response cache, and its handler. [`crate::app`] builds the router from
//! it and nothing else.

use crate::{dead_letters, openapi, routes, schemas, AppState};
use axum::routing::{get, MethodRouter};

/// Who may reach an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposure {
    /// Anyone, always: the load balancer's liveness check must never wait or be refused.
    Public,
    /// Anyone, within the per-client limits: readiness probes (container health checks)
    /// carry no credentials.
    Probe,
    /// Authenticated callers, within the per-client limits.
    Private,
}

/// One endpoint of the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    pub path: &'static str,
    pub exposure: Exposure,
    /// Answered from the short response cache (store-backed lists that many clients poll).
    pub cached: bool,
}

const fn endpoint(path: &'static str, exposure: Exposure, cached: bool) -> Endpoint {
    Endpoint {
        path,
        exposure,
        cached,
    }
}

/// Every endpoint with its handler: the router is built from this list and nothing else,
/// so the tests that walk it (every private route refuses anonymous callers) cover a new
/// route too.
pub fn endpoints() -> Vec<(Endpoint, MethodRouter<AppState>)> {
    use Exposure::*;
    vec![
        (endpoint("/healthz", Public, false), get(routes::healthz)),
        (endpoint("/readyz", Probe, false), get(routes::readyz)),
        (endpoint("/metrics", Private, false), get(routes::metrics)),
        (
            endpoint("/api/openapi.json", Private, false),
            get(openapi::document),
        ),
        (endpoint("/api/schemas", Private, false), get(schemas::list)),
        (
            endpoint("/api/schemas/{name}", Private, false),
            get(schemas::document),
        ),
        (
            endpoint("/api/orders/{id}", Private, false),
            get(routes::order),
        ),
        (endpoint("/api/lag", Private, false), get(routes::lag)),
        (endpoint("/api/canary", Private, false), get(routes::canary)),
        (
            endpoint("/api/dlq", Private, false),
            get(dead_letters::dead_letters),
        ),
        (endpoint("/", Private, true), get(routes::index)),
        (
            endpoint("/api/analytics", Private, true),
            get(routes::analytics),
        ),
        (endpoint("/api/orders", Private, true), get(routes::orders)),
        (endpoint("/api/alerts", Private, true), get(routes::alerts)),
        (
            endpoint("/api/payments", Private, true),
            get(routes::payments),
        ),
        (endpoint("/api/totals", Private, true), get(routes::totals)),
        (
            endpoint("/api/totals/windows", Private, true),
            get(routes::windows),
        ),
    ]
}
