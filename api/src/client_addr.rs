//! Where a request came from: the peer's address, or behind a load balancer the one it
//! appended to `X-Forwarded-For`, only when told to trust that header. Noted on each
//! request before anything else looks at it; the limits and authentication read it.

use axum::extract::{ConnectInfo, Request};
use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// Where a request came from (a request extension, set before anything else looks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAddr {
    Ip(IpAddr),
    /// No peer address (a test calling the router directly).
    Unknown,
}

impl fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientAddr::Ip(ip) => ip.fmt(f),
            ClientAddr::Unknown => f.write_str("unknown"),
        }
    }
}

/// The address the last proxy appended: the only `X-Forwarded-For` entry a client cannot
/// forge, when the load balancer is the last proxy.
fn forwarded_for(request: &Request) -> Option<IpAddr> {
    let values = request.headers().get_all("x-forwarded-for");
    let last = values.iter().next_back()?.to_str().ok()?;
    last.rsplit(',').next()?.trim().parse().ok()
}

/// The client's address: the last `X-Forwarded-For` entry when `trust_forwarded_for`
/// (and it parses), else the peer's.
pub(crate) fn client_addr(request: &Request, trust_forwarded_for: bool) -> ClientAddr {
    let forwarded = trust_forwarded_for
        .then(|| forwarded_for(request))
        .flatten();
    let peer = || {
        request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
    };
    forwarded
        .or_else(peer)
        .map_or(ClientAddr::Unknown, ClientAddr::Ip)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;

    fn request(xff: &[&str], peer: Option<&str>) -> Request {
        let mut b = axum::http::Request::builder().uri("/api/totals");
        for v in xff {
            b = b.header("x-forwarded-for", *v);
        }
        let mut r = b.body(Body::empty()).unwrap();
        if let Some(p) = peer {
            r.extensions_mut()
                .insert(ConnectInfo::<SocketAddr>(p.parse().unwrap()));
        }
        r
    }

    #[test]
    fn the_forwarded_address_counts_only_when_trusted_and_only_its_last_entry() {
        let ip = |s: &str| ClientAddr::Ip(s.parse().unwrap());
        let r = request(&["6.6.6.6, 203.0.113.7"], Some("10.0.1.5:41000"));
        assert_eq!(client_addr(&r, false), ip("10.0.1.5"));
        assert_eq!(client_addr(&r, true), ip("203.0.113.7"));
        let r = request(
            &["1.1.1.1", "6.6.6.6, 198.51.100.2"],
            Some("10.0.1.5:41000"),
        );
        assert_eq!(client_addr(&r, true), ip("198.51.100.2"));
        let r = request(&["not an address"], Some("10.0.1.5:41000"));
        assert_eq!(client_addr(&r, true), ip("10.0.1.5"));
        assert_eq!(client_addr(&request(&[], None), true), ClientAddr::Unknown);
    }
}
