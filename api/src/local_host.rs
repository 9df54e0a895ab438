//! Local mode's defence against DNS rebinding. An api on loopback without credentials
//! (`ordersctl up`) is reachable by any web page the operator's browser opens: the page's
//! own name, rebound by its DNS to 127.0.0.1, makes the browser send it requests it may
//! read. Such requests name the page's host in `Host`; so in local mode only requests whose
//! `Host` names loopback (`localhost`, `*.localhost`, `127.0.0.0/8`, `[::1]`, with any port)
//! are answered, the rest get 403 (on every route but `/healthz`, which says nothing). A
//! request with no `Host` at all comes from no browser.

use crate::error::AppError;
use axum::extract::Request;
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::IpAddr;

/// Whether `host` (a `Host` header: a name or address, optionally with a port) names this
/// machine's loopback interface.
pub fn names_loopback(host: &str) -> bool {
    let host = host.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        // [v6] or [v6]:port
        match rest.split_once(']') {
            Some((v6, tail)) if tail.is_empty() || port(tail) => v6,
            _ => return false,
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, p)) if port(&format!(":{p}")) => name,
            Some(_) => return false,
            None => host,
        }
    };
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    if name == "localhost" || name.ends_with(".localhost") {
        // Browsers resolve these to loopback themselves, whatever DNS says (RFC 6761).
        return true;
    }
    name.parse::<IpAddr>()
        .is_ok_and(|ip| ip.to_canonical().is_loopback())
}

/// `:` followed by a port number.
fn port(tail: &str) -> bool {
    tail.strip_prefix(':')
        .is_some_and(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()))
}

/// The middleware of local mode: 403 for a request whose `Host` does not name loopback.
pub async fn require_loopback_host(request: Request, next: Next) -> Response {
    let host = match request.headers().get(header::HOST) {
        Some(value) => Some(value.to_str().unwrap_or("\u{fffd}").to_owned()),
        None => request.uri().authority().map(|a| a.as_str().to_owned()),
    };
    match host {
        Some(h) if !names_loopback(&h) => {
            let shown: String = h.chars().take(100).collect();
            tracing::warn!(host = %shown, "local mode: a request for another host name refused (DNS rebinding?)");
            AppError::HostNotAllowed.into_response()
        }
        _ => next.run(request).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_names_of_loopback_pass() {
        for ok in [
            "127.0.0.1",
            "127.0.0.1:8000",
            "127.1.2.3:80",
            "localhost",
            "LOCALHOST:8000",
            "localhost.:8000",
            "orders.localhost:8000",
            "[::1]",
            "[::1]:8000",
            "[::ffff:127.0.0.1]:8000",
        ] {
            assert!(names_loopback(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8000",
            "127.0.0.1.evil.example",
            "localhost.evil.example",
            "10.0.0.1:8000",
            "0.0.0.0:8000",
            "[::2]:8000",
            "[::1]x",
            "127.0.0.1:80:80",
            "127.0.0.1:port",
            "",
            "::1",
        ] {
            assert!(!names_loopback(bad), "{bad}");
        }
    }
}
