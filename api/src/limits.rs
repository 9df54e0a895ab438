//! What one request, and one client, may ask of the API: sizes (query string, headers,
//! body), a per-client rate (429 with `Retry-After`), a budget of failed authentications
//! per address (429 before the credentials are looked at, [`crate::auth_throttle`]) and a
//! bound on requests in flight (503 beyond it, counted before authentication so requests
//! waiting on a key fetch count too), so one client cannot starve the console or the load
//! balancer's probes.
//!
//! A client is its token or signed-in user when authenticated ([`crate::auth::Caller`]),
//! else its address: the peer's, or behind a load balancer the one it appended to
//! `X-Forwarded-For`, only when told to trust that header.

use crate::auth::Caller;
use crate::auth_throttle::FailureThrottle;
use crate::client_addr::{client_addr, ClientAddr};
use crate::error::{AppError, AuthFailure};
use crate::query;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::Clock as _;
use governor::{DefaultKeyedRateLimiter, Quota};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Semaphore;

/// Longest request body: no endpoint takes one.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// Most bytes of header names and values together (a load balancer's own cap is 64 KiB;
/// a browser with an identity header and cookies stays well under this).
pub const MAX_HEADER_BYTES: usize = 32 * 1024;
/// Clients remembered before the idle ones are forgotten.
const MAX_TRACKED_CLIENTS: usize = 10_000;

/// Limits of the api role, as flags and environment variables.
#[derive(Debug, Clone, clap::Args)]
pub struct LimitArgs {
    /// Requests per second one client may make, sustained (0: no limit).
    #[arg(long, env = "ORDERS_API_RATE_LIMIT", default_value_t = 20)]
    pub rate_limit: u32,
    /// Requests one client may make in a burst above the sustained rate.
    #[arg(long, env = "ORDERS_API_RATE_BURST", default_value_t = 60)]
    pub rate_burst: u32,
    /// Requests answered at once; more get 503 (0: no limit).
    #[arg(long, env = "ORDERS_API_MAX_IN_FLIGHT", default_value_t = 256)]
    pub max_in_flight: usize,
    /// Failed authentications one client address may make a minute (and at once); beyond
    /// it the address gets 429 before its credentials are looked at (0: no limit).
    #[arg(long, env = "ORDERS_API_AUTH_FAILURE_LIMIT", default_value_t = 30)]
    pub auth_failure_limit: u32,
    /// Take the client's address from the last `X-Forwarded-For` entry (behind a load
    /// balancer that appends it). Off: the peer address, whatever the header says.
    #[arg(long, env = "ORDERS_API_TRUST_FORWARDED_FOR", default_value_t = false,
          action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub trust_forwarded_for: bool,
}

impl Default for LimitArgs {
    fn default() -> Self {
        LimitArgs {
            rate_limit: 20,
            rate_burst: 60,
            max_in_flight: 256,
            auth_failure_limit: 30,
            trust_forwarded_for: false,
        }
    }
}

/// The limits the router applies; the default limits nothing (a library user, a test, local
/// mode) but sizes.
#[derive(Clone, Default)]
pub struct ClientLimits {
    rate: Option<Arc<DefaultKeyedRateLimiter<String>>>,
    in_flight: Option<Arc<Semaphore>>,
    failures: Option<Arc<FailureThrottle>>,
    trust_forwarded_for: bool,
}

impl ClientLimits {
    pub fn new(args: &LimitArgs) -> Self {
        let rate = NonZeroU32::new(args.rate_limit).map(|per_second| {
            let burst = NonZeroU32::new(args.rate_burst).unwrap_or(per_second);
            Arc::new(DefaultKeyedRateLimiter::keyed(
                Quota::per_second(per_second).allow_burst(burst),
            ))
        });
        ClientLimits {
            rate,
            in_flight: (args.max_in_flight > 0)
                .then(|| Arc::new(Semaphore::new(args.max_in_flight))),
            failures: (args.auth_failure_limit > 0)
                .then(|| Arc::new(FailureThrottle::new(args.auth_failure_limit))),
            trust_forwarded_for: args.trust_forwarded_for,
        }
    }
}

/// Rejects oversized requests before anything parses them, and notes the client's address.
pub async fn check_request(
    State(limits): State<ClientLimits>,
    mut request: Request,
    next: Next,
) -> Response {
    let query_len = request.uri().query().map_or(0, str::len);
    if query_len > query::MAX_QUERY_BYTES {
        return AppError::UriTooLong(query::MAX_QUERY_BYTES).into_response();
    }
    let header_bytes: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if header_bytes > MAX_HEADER_BYTES {
        return AppError::HeadersTooLarge(MAX_HEADER_BYTES).into_response();
    }
    let declared_body = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared_body.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return AppError::BodyTooLarge(MAX_BODY_BYTES).into_response();
    }
    let addr = client_addr(&request, limits.trust_forwarded_for);
    request.extensions_mut().insert(addr);
    next.run(request).await
}

/// The per-client rate: a client is its [`Caller`] when authenticated, else its address.
pub async fn limit_rate(
    State(limits): State<ClientLimits>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(rate) = &limits.rate {
        let key = match request.extensions().get::<Caller>() {
            Some(caller) => caller.client_key(),
            None => match request.extensions().get::<ClientAddr>() {
                Some(addr) => format!("addr:{addr}"),
                None => "addr:unknown".to_owned(),
            },
        };
        if rate.len() > MAX_TRACKED_CLIENTS {
            // Forget the clients whose budget is full again: they are as good as new.
            rate.retain_recent();
        }
        if let Err(not_until) = rate.check_key(&key) {
            let wait = not_until.wait_time_from(rate.clock().now());
            let retry_after_seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            tracing::info!(client = %key, retry_after_seconds, "client over its rate");
            return AppError::RateLimited {
                retry_after_seconds: retry_after_seconds.max(1),
            }
            .into_response();
        }
    }
    next.run(request).await
}

/// The bound on requests in flight: beyond it, 503 at once rather than a queue. In front of
/// authentication, so a request waiting on a key fetch holds its place.
pub async fn limit_in_flight(
    State(limits): State<ClientLimits>,
    request: Request,
    next: Next,
) -> Response {
    let _permit = match &limits.in_flight {
        Some(permits) => match permits.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => {
                tracing::warn!("api overloaded: request shed");
                return AppError::Overloaded.into_response();
            }
        },
        None => None,
    };
    next.run(request).await
}

/// In front of authentication: an address over its budget of failed authentications gets
/// 429 without its credentials being looked at; each failure is counted against it.
pub async fn throttle_failed_auth(
    State(limits): State<ClientLimits>,
    request: Request,
    next: Next,
) -> Response {
    let Some(failures) = &limits.failures else {
        return next.run(request).await;
    };
    let addr = match request.extensions().get::<ClientAddr>() {
        Some(ClientAddr::Ip(ip)) => Some(*ip),
        _ => None,
    };
    if let Some(wait) = failures.blocked(addr, Instant::now()) {
        let retry_after_seconds = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
        let client = addr.map_or(ClientAddr::Unknown, ClientAddr::Ip);
        tracing::warn!(%client, retry_after_seconds, "too many failed authentications: refused before checking");
        return AppError::RateLimited {
            retry_after_seconds,
        }
        .into_response();
    }
    let response = next.run(request).await;
    if response.extensions().get::<AuthFailure>().is_some() {
        failures.record_failure(addr, Instant::now());
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusting_forwarded_for_is_a_flag_or_a_boolean() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            limits: LimitArgs,
        }
        let parse = |args: &[&str]| Cli::try_parse_from(args).unwrap().limits;
        assert!(!parse(&["x"]).trust_forwarded_for);
        assert!(parse(&["x", "--trust-forwarded-for"]).trust_forwarded_for);
        assert!(!parse(&["x", "--trust-forwarded-for", "false"]).trust_forwarded_for);
        let d = parse(&["x"]);
        let default = LimitArgs::default();
        assert_eq!(
            (d.rate_limit, d.rate_burst, d.max_in_flight),
            (
                default.rate_limit,
                default.rate_burst,
                default.max_in_flight
            )
        );
    }
}
