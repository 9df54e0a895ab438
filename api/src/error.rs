//! Errors: [`AppError`], what a request can fail with, rendered as a status and the JSON
//! body `{"error": {"code": "...", "message": "..."}}`, and [`AuthFailure`], why a request
//! was not authenticated. Details of server-side failures are logged, never sent to the
//! client. (What `serve` can fail with is [`crate::ApiError`].)

use crate::alb_oidc::IdentityRejected;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use orders_core::store::StoreError;
use serde::Serialize;

/// What a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The client asked for something malformed; the message names the problem.
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("{0}")]
    NotFound(String),
    #[error("the request URI is longer than {0} bytes")]
    UriTooLong(usize),
    #[error("method not allowed")]
    MethodNotAllowed,
    /// No credentials, or credentials that do not verify; the reason is for logs and
    /// metrics, never for the client.
    #[error("not authenticated: {0}")]
    Unauthenticated(AuthFailure),
    /// Local mode was asked for another host name than loopback (DNS rebinding).
    #[error("host not allowed")]
    HostNotAllowed,
    /// This client sent more than its share; it may try again after this many seconds.
    #[error("rate limited for {retry_after_seconds} s")]
    RateLimited { retry_after_seconds: u64 },
    /// Too many requests in flight on the whole server.
    #[error("overloaded")]
    Overloaded,
    #[error("the request body is longer than {0} bytes")]
    BodyTooLarge(usize),
    #[error("the request headers are longer than {0} bytes")]
    HeadersTooLarge(usize),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Kafka could not be asked, or is not configured for this server.
    #[error("kafka unavailable: {0}")]
    KafkaUnavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

/// Why a request was not authenticated (a response extension, for the metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    #[error("no credentials")]
    Missing,
    #[error("the bearer token is not accepted")]
    BadToken,
    #[error("the load balancer identity is not accepted: {0}")]
    BadIdentity(IdentityRejected),
}

impl AuthFailure {
    /// The metrics label.
    pub fn reason(self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing",
            AuthFailure::BadToken => "bad_token",
            AuthFailure::BadIdentity(_) => "bad_identity",
        }
    }

    /// The `WWW-Authenticate` challenge (RFC 6750).
    pub fn challenge(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            AuthFailure::Missing => "Bearer realm=\"orders\"",
            AuthFailure::BadToken | AuthFailure::BadIdentity(_) => {
                "Bearer realm=\"orders\", error=\"invalid_token\""
            }
        })
    }
}

/// Marks a response that failed because of the store, for the metrics layer.
#[derive(Debug, Clone, Copy)]
pub struct StoreFailed;

/// Marks a response refused by the limits, for the metrics layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    RateLimited,
    Overloaded,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// A stable, machine-readable code, e.g. `invalid_parameter`, `not_found`,
    /// `store_unavailable`.
    pub code: String,
    /// What went wrong, for a person.
    pub message: String,
}

impl AppError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        AppError::BadRequest {
            code,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::bad_request("invalid_parameter", message)
    }

    /// The status, the code and the message the client sees.
    fn public(&self) -> (StatusCode, &'static str, String) {
        match self {
            AppError::BadRequest { code, message } => {
                (StatusCode::BAD_REQUEST, code, message.clone())
            }
            AppError::NotFound(m) => (StatusCode::NOT_FOUND, "not_found", m.clone()),
            AppError::UriTooLong(_) => (StatusCode::URI_TOO_LONG, "uri_too_long", self.to_string()),
            AppError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "only GET is supported here".into(),
            ),
            AppError::Unauthenticated(_) => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "not authorised: send Authorization: Bearer <token> (ORDERS_API_TOKEN), \
                 or sign in through the load balancer"
                    .into(),
            ),
            AppError::HostNotAllowed => (
                StatusCode::FORBIDDEN,
                "host_not_allowed",
                "this api runs without authentication on loopback and answers only requests \
                 for localhost or a loopback address"
                    .into(),
            ),
            AppError::RateLimited {
                retry_after_seconds,
            } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("too many requests from this client; retry in {retry_after_seconds} s"),
            ),
            AppError::Overloaded => (
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "the API is answering as many requests as it can; retry shortly".into(),
            ),
            AppError::BodyTooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                self.to_string(),
            ),
            AppError::HeadersTooLarge(_) => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
                self.to_string(),
            ),
            AppError::Store(StoreError::Unavailable(_)) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "the order store is unavailable; try again shortly".into(),
            ),
            AppError::Store(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "store_error",
                "the order store failed to answer".into(),
            ),
            AppError::KafkaUnavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "kafka_unavailable",
                "Kafka is unavailable; consumer lag and dead letters cannot be read".into(),
            ),
            AppError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error".into(),
            ),
        }
    }

    /// Renders the body alone (also used by the web view's error page).
    pub fn body(&self) -> ErrorBody {
        let (_, code, message) = self.public();
        ErrorBody {
            error: ErrorDetail {
                code: code.to_owned(),
                message,
            },
        }
    }

    pub fn status(&self) -> StatusCode {
        self.public().0
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, code, message) = self.public();
        match &self {
            AppError::Store(e) => tracing::error!(error = %e, code, "store failed"),
            AppError::KafkaUnavailable(e) => tracing::warn!(error = %e, code, "kafka unavailable"),
            AppError::Internal(e) => tracing::error!(error = %e, code, "internal error"),
            _ => tracing::debug!(code, %message, "request rejected"),
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: code.to_owned(),
                message,
            },
        };
        let mut response = (status, axum::Json(body)).into_response();
        match &self {
            AppError::Store(_) => {
                response.extensions_mut().insert(StoreFailed);
            }
            AppError::Unauthenticated(why) => {
                let challenge = why.challenge();
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, challenge);
                response.extensions_mut().insert(*why);
            }
            AppError::RateLimited {
                retry_after_seconds,
            } => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_seconds));
                response.extensions_mut().insert(Refused::RateLimited);
            }
            AppError::Overloaded => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(1_u64));
                response.extensions_mut().insert(Refused::Overloaded);
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_details_are_not_leaked() {
        let e = AppError::Store(StoreError::Unavailable(
            "/secret/path/orders.db: permission denied".into(),
        ));
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = serde_json::to_string(&e.body()).unwrap();
        assert!(!body.contains("secret"), "{body}");
        assert!(body.contains("store_unavailable"), "{body}");
        let e = AppError::Store(StoreError::Corrupt("bad row 17".into()));
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!serde_json::to_string(&e.body()).unwrap().contains("17"));
    }

    #[test]
    fn bad_requests_name_the_problem() {
        let e = AppError::invalid("limit must be an integer from 1 to 1000, not \"0\"");
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        let v = serde_json::to_value(e.body()).unwrap();
        assert_eq!(v["error"]["code"], "invalid_parameter");
        assert!(v["error"]["message"].as_str().unwrap().contains("limit"));
    }
}
