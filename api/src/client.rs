//! A small client of the API: GET a path, get its status and JSON body back. Used by
//! `ordersctl json` (and usable by the console).

use std::time::Duration;

/// Where the API is unless told otherwise (`--api`, `ORDERS_API_URL`).
pub const DEFAULT_API_URL: &str = "http://127.0.0.1:8000";

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid API URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("cannot reach the API at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the API answered {status} with a body that is not JSON")]
    NotJson { status: u16 },
}

/// An answer of the API.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiResponse {
    pub status: u16,
    pub body: serde_json::Value,
}

impl ApiResponse {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
    /// `error.code` of an error body.
    pub fn error_code(&self) -> Option<&str> {
        self.body.pointer("/error/code").and_then(|v| v.as_str())
    }
    /// `error.message` of an error body.
    pub fn error_message(&self) -> Option<&str> {
        self.body.pointer("/error/message").and_then(|v| v.as_str())
    }
}

#[derive(Debug, Clone)]
pub struct ApiClient {
    base: reqwest::Url,
    http: reqwest::Client,
}

impl ApiClient {
    /// A client of the API at `base_url` (`http://host:port`, optionally with a path prefix).
    pub fn new(base_url: &str) -> Result<Self, ClientError> {
        let bad = |reason: String| ClientError::BadUrl {
            url: base_url.to_owned(),
            reason,
        };
        let mut base = reqwest::Url::parse(base_url.trim()).map_err(|e| bad(e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") || base.host_str().is_none() {
            return Err(bad("expected http://host:port or https://host".into()));
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(15))
            .user_agent(concat!("ordersctl/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| bad(e.to_string()))?;
        Ok(ApiClient { base, http })
    }

    pub fn base_url(&self) -> &str {
        self.base.as_str()
    }

    /// GETs `path` (relative to the base, e.g. `api/orders`) with `query` parameters.
    pub async fn get(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<ApiResponse, ClientError> {
        let mut url =
            self.base
                .join(path.trim_start_matches('/'))
                .map_err(|e| ClientError::BadUrl {
                    url: path.to_owned(),
                    reason: e.to_string(),
                })?;
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in query {
                pairs.append_pair(k, v);
            }
        }
        let unreachable = |e: reqwest::Error| ClientError::Unreachable {
            url: self.base.to_string(),
            reason: e.without_url().to_string(),
        };
        let response = self.http.get(url).send().await.map_err(unreachable)?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await.map_err(unreachable)?;
        let body = serde_json::from_slice(&bytes).map_err(|_| ClientError::NotJson { status })?;
        Ok(ApiResponse { status, body })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        let c = ApiClient::new("http://127.0.0.1:8000").unwrap();
        assert_eq!(c.base_url(), "http://127.0.0.1:8000/");
        let c = ApiClient::new("https://ops.example/orders").unwrap();
        assert_eq!(c.base_url(), "https://ops.example/orders/");
        assert!(ApiClient::new("ftp://x").is_err());
        assert!(ApiClient::new("not a url").is_err());
        assert!(ApiClient::new("").is_err());
    }
}
