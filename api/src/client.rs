//! A small client of the API: GET a path, get its status and JSON body back. Used by
//! `ordersctl json`; the console shares its credentials ([`TokenArgs`], [`with_token`]).

use orders_core::config::Secret;
use std::time::Duration;

/// Where the API is unless told otherwise (`--api`, `ORDERS_API_URL`).
pub const DEFAULT_API_URL: &str = "http://127.0.0.1:8000";

/// The bearer token a client sends (`--token`, `ORDERS_API_TOKEN`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TokenArgs {
    /// Bearer token to send to the API (one of its ORDERS_API_TOKENS); not needed for an API
    /// on loopback without tokens.
    #[arg(long = "token", env = crate::auth::TOKEN_ENV, hide_env_values = true, global = true)]
    pub token: Option<Secret>,
    /// Send the token over plain http:// to a host that is not loopback anyway (anyone on
    /// the way can read it); without this, ordersctl refuses.
    #[arg(long, env = "ORDERS_API_ALLOW_INSECURE_HTTP", global = true,
          action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true",
          default_value_t = false)]
    pub allow_insecure_http: bool,
}

impl TokenArgs {
    /// The token, unless empty.
    pub fn token(&self) -> Option<Secret> {
        self.token
            .as_ref()
            .filter(|t| !t.expose().trim().is_empty())
            .map(|t| Secret::new(t.expose().trim()))
    }

    /// The token to send to the API at `base`: refused over plain `http://` to a host that
    /// is not loopback, unless `--allow-insecure-http`, and then with a warning on stderr.
    pub fn token_for(&self, base: &reqwest::Url) -> Result<Option<Secret>, ClientError> {
        let token = self.token();
        if token.is_none() || !sends_in_clear(base) {
            return Ok(token);
        }
        let host = base.host_str().unwrap_or_default().to_owned();
        if !self.allow_insecure_http {
            return Err(ClientError::TokenInClear { host });
        }
        eprintln!(
            "WARNING: sending the API token over plain http:// to {host}: anyone on the way \
             can read it and use it (--allow-insecure-http)"
        );
        Ok(token)
    }
}

/// Whether a request to `url` crosses a network unencrypted: `http://` to a host that is not
/// this machine's loopback (`localhost`, `127.0.0.0/8`, `[::1]`).
pub fn sends_in_clear(url: &reqwest::Url) -> bool {
    if url.scheme() != "http" {
        return false;
    }
    let Some(host) = url.host_str() else {
        return true;
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
        return !ip.to_canonical().is_loopback();
    }
    let name = host.trim_end_matches('.').to_ascii_lowercase();
    !(name == "localhost" || name.ends_with(".localhost"))
}

/// `request` with `Authorization: Bearer <token>` when there is a token, marked sensitive so
/// no debug dump of the request shows it.
pub fn with_token(
    request: reqwest::RequestBuilder,
    token: Option<&Secret>,
) -> reqwest::RequestBuilder {
    let Some(token) = token else {
        return request;
    };
    match reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.expose())) {
        Ok(mut value) => {
            value.set_sensitive(true);
            request.header(reqwest::header::AUTHORIZATION, value)
        }
        // A token that cannot be a header value is sent as none: the API answers 401.
        Err(_) => request,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid API URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("cannot reach the API at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the API answered {status} with a body that is not JSON")]
    NotJson { status: u16 },
    #[error(
        "refusing to send the API token over plain http:// to {host}, which is not this \
         machine: anyone on the way could read it. Use https://, or pass \
         --allow-insecure-http (ORDERS_API_ALLOW_INSECURE_HTTP=true) to send it anyway"
    )]
    TokenInClear { host: String },
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
    /// The API refused the credentials (or their absence): 401 or 403.
    pub fn is_unauthorised(&self) -> bool {
        matches!(self.status, 401 | 403)
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

/// The API's base URL as `--api` gives it (`http://host:port` or `https://host`, optionally
/// with a path prefix), ending in `/`: the one check of `ordersctl json` and `tui`.
pub fn api_base_url(base_url: &str) -> Result<reqwest::Url, ClientError> {
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
    Ok(base)
}

#[derive(Debug, Clone)]
pub struct ApiClient {
    base: reqwest::Url,
    http: reqwest::Client,
    token: Option<Secret>,
    timeout: Duration,
}

/// How long to wait for a connection, and for a whole answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

fn http_client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT.min(timeout))
        .timeout(timeout)
        .user_agent(concat!("ordersctl/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Why a request to `base` got no answer, in words an operator can act on: refused (by
/// which address), a name that does not resolve, or a timeout (after how long); else the
/// innermost cause.
fn unreachable_cause(e: &reqwest::Error, base: &reqwest::Url, timeout: Duration) -> String {
    let host = base.host_str().unwrap_or_default();
    let addr = match base.port_or_known_default() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    };
    let mut innermost = e.to_string();
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(err) = source {
        if err
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
        {
            return format!("connection refused by {addr}");
        }
        let text = err.to_string();
        // hyper's resolver says "dns error", the system's "failed to lookup address".
        if text.contains("dns error") || text.contains("failed to lookup address") {
            return format!("cannot resolve {host}");
        }
        innermost = text;
        source = err.source();
    }
    if e.is_timeout() {
        return if e.is_connect() {
            format!(
                "cannot connect to {addr}: timed out after {} s",
                CONNECT_TIMEOUT.min(timeout).as_secs()
            )
        } else {
            format!(
                "no answer from {addr}: timed out after {} s",
                timeout.as_secs()
            )
        };
    }
    match innermost.find(" (os error") {
        Some(i) => innermost[..i].to_owned(),
        None => innermost,
    }
}

impl ApiClient {
    /// A client of the API at `base_url` (`http://host:port`, optionally with a path prefix).
    pub fn new(base_url: &str) -> Result<Self, ClientError> {
        let base = api_base_url(base_url)?;
        let bad = |reason: String| ClientError::BadUrl {
            url: base_url.to_owned(),
            reason,
        };
        let http = http_client(REQUEST_TIMEOUT).map_err(|e| bad(e.to_string()))?;
        Ok(ApiClient {
            base,
            http,
            token: None,
            timeout: REQUEST_TIMEOUT,
        })
    }

    /// Waits at most `timeout` for an answer (and for a connection, at most 3 s of it).
    pub fn with_timeout(mut self, timeout: Duration) -> Result<Self, ClientError> {
        self.http = http_client(timeout).map_err(|e| ClientError::BadUrl {
            url: self.base.to_string(),
            reason: e.to_string(),
        })?;
        self.timeout = timeout;
        Ok(self)
    }

    /// Sends `token` as a bearer token with every request.
    pub fn with_token(mut self, token: Option<Secret>) -> Self {
        self.token = token;
        self
    }

    pub fn base_url(&self) -> &str {
        self.base.as_str()
    }

    /// The base URL, parsed.
    pub fn base(&self) -> &reqwest::Url {
        &self.base
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
            reason: unreachable_cause(&e, &self.base, self.timeout),
        };
        let response = with_token(self.http.get(url), self.token.as_ref())
            .send()
            .await
            .map_err(unreachable)?;
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

    #[test]
    fn the_token_goes_in_a_sensitive_bearer_header() {
        let http = reqwest::Client::new();
        let token = Secret::new("s3cr3t-value");
        let request = with_token(http.get("http://127.0.0.1:1/"), Some(&token))
            .build()
            .unwrap();
        let value = &request.headers()[reqwest::header::AUTHORIZATION];
        assert_eq!(value.to_str().unwrap(), "Bearer s3cr3t-value");
        assert!(value.is_sensitive());
        assert!(!format!("{request:?}").contains("s3cr3t"));
        let request = with_token(http.get("http://127.0.0.1:1/"), None)
            .build()
            .unwrap();
        assert!(request
            .headers()
            .get(reqwest::header::AUTHORIZATION)
            .is_none());
        let blank = TokenArgs {
            token: Some(Secret::new("  ")),
            ..Default::default()
        };
        assert!(blank.token().is_none());
    }

    #[test]
    fn a_token_goes_over_plain_http_only_to_loopback_unless_allowed() {
        let url = |u: &str| api_base_url(u).unwrap();
        for local in [
            "http://127.0.0.1:8000",
            "http://127.9.9.9",
            "http://localhost:8000",
            "http://[::1]:8000",
            "https://orders.example",
            "https://10.0.0.5",
        ] {
            assert!(!sends_in_clear(&url(local)), "{local}");
        }
        for remote in [
            "http://orders.example",
            "http://10.0.0.5:8000",
            "http://[2001:db8::1]:8000",
            "http://localhost.evil.example",
        ] {
            assert!(sends_in_clear(&url(remote)), "{remote}");
        }
        let with = |allow: bool| TokenArgs {
            token: Some(Secret::new("s3cr3t-value")),
            allow_insecure_http: allow,
        };
        let remote = url("http://orders.example:8000");
        let e = with(false).token_for(&remote).unwrap_err();
        assert!(matches!(e, ClientError::TokenInClear { .. }), "{e}");
        assert!(e.to_string().contains("--allow-insecure-http"), "{e}");
        assert!(!e.to_string().contains("s3cr3t"), "{e}");
        assert!(with(true).token_for(&remote).unwrap().is_some());
        assert!(with(false)
            .token_for(&url("http://127.0.0.1:8000"))
            .unwrap()
            .is_some());
        // Without a token there is nothing to protect.
        assert!(TokenArgs::default().token_for(&remote).unwrap().is_none());
    }
}
