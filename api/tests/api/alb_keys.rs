//! The load balancer's key fetches under a hostile or broken key endpoint, over real sockets:
//! a stand-in endpoint that hangs, fails, answers slowly or knows no key, and an api served
//! with `serve`. What is measured is how many fetches reach the endpoint and how long the
//! signed-in requests wait.

use crate::access::{credentials, new_key, verifier, Jwt, ARN, ISSUER, KID, TOKEN};
use crate::common::*;
use axum::http::StatusCode;
use orders_api::alb_oidc::{AlbOidcConfig, AlbVerifier, FetchPolicy};
use orders_api::limits::{ClientLimits, LimitArgs};
use orders_api::AppState;
use p256::ecdsa::SigningKey;
use p256::pkcs8::EncodePublicKey as _;
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How the stand-in key endpoint behaves.
#[derive(Clone, Copy)]
enum Endpoint {
    /// Accepts the connection, never answers.
    Hangs,
    /// 500 to everything.
    Fails,
    /// The key for [`KID`] after a delay; 404 for any other key id.
    Slow(Duration),
}

/// A stand-in for `https://public-keys.auth.elb.<region>.amazonaws.com`: counts the requests
/// (for a hanging one, the connections) it gets.
struct StandIn {
    url: String,
    hits: Arc<AtomicUsize>,
    stop: tokio_util::sync::CancellationToken,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl StandIn {
    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn stand_in(endpoint: Endpoint, key: &SigningKey) -> StandIn {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/keys", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let stop = tokio_util::sync::CancellationToken::new();
    let (counted, until) = (hits.clone(), stop.clone());
    match endpoint {
        Endpoint::Hangs => {
            tokio::spawn(async move {
                let mut held = Vec::new();
                loop {
                    tokio::select! {
                        _ = until.cancelled() => break,
                        accepted = listener.accept() => {
                            let (socket, _) = accepted.unwrap();
                            counted.fetch_add(1, Ordering::SeqCst);
                            held.push(socket);
                        }
                    }
                }
            });
        }
        Endpoint::Fails | Endpoint::Slow(_) => {
            let pem = key
                .verifying_key()
                .to_public_key_pem(p256::pkcs8::LineEnding::LF)
                .unwrap();
            let router = axum::Router::new().route(
                "/keys/{kid}",
                axum::routing::get(
                    move |axum::extract::Path(kid): axum::extract::Path<String>| {
                        let (pem, counted) = (pem.clone(), counted.clone());
                        async move {
                            counted.fetch_add(1, Ordering::SeqCst);
                            match endpoint {
                                Endpoint::Slow(delay) if kid == KID => {
                                    tokio::time::sleep(delay).await;
                                    (StatusCode::OK, pem)
                                }
                                Endpoint::Slow(_) => (StatusCode::NOT_FOUND, String::new()),
                                _ => (StatusCode::INTERNAL_SERVER_ERROR, String::new()),
                            }
                        }
                    },
                ),
            );
            tokio::spawn(async move {
                axum::serve(listener, router)
                    .with_graceful_shutdown(until.cancelled_owned())
                    .await
            });
        }
    }
    StandIn { url, hits, stop }
}

/// The api, served on loopback, trusting the load balancer `alb` verifies.
struct Api {
    server: RunningServer,
    /// The store's temporary directory, kept as long as the server.
    _store: Filled,
}

impl Api {
    fn url(&self) -> String {
        self.server.url()
    }

    async fn stop(self) {
        self.server.stop().await;
    }
}

async fn api_with(alb: AlbVerifier, limits: LimitArgs) -> Api {
    let f = filled_store(1).await;
    let state = AppState::new(f.store.clone())
        .with_access(credentials(Some(alb)))
        .with_limits(ClientLimits::new(&limits));
    Api {
        server: RunningServer::start(state).await,
        _store: f,
    }
}

fn no_limits() -> LimitArgs {
    LimitArgs {
        rate_limit: 0,
        max_in_flight: 0,
        auth_failure_limit: 0,
        ..LimitArgs::default()
    }
}

/// `n` signed-in requests at once; each one's status and how long it took.
async fn signed_in_at_once(url: &str, jwt: &str, n: usize) -> Vec<(u16, Duration)> {
    // One client for the binary: making one loads the system's certificates, which takes a
    // while in a debug build.
    static HTTP: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    let http = HTTP.get_or_init(reqwest::Client::new);
    let requests = (0..n).map(|_| {
        let (http, url, jwt) = (http.clone(), format!("{url}/api/totals"), jwt.to_owned());
        tokio::spawn(async move {
            let start = Instant::now();
            let r = http
                .get(url)
                .header("x-amzn-oidc-data", jwt)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), start.elapsed())
        })
    });
    let mut out = Vec::new();
    for r in requests.collect::<Vec<_>>() {
        out.push(r.await.unwrap());
    }
    out
}

/// Six signed-in requests while the key endpoint hangs: one fetch, given up after the
/// fetch timeout (2 s) for all six together, not one after the other; the failure is
/// remembered, so the next request is refused at once without a fetch.
#[tokio::test]
async fn a_hanging_key_endpoint_costs_one_bounded_fetch() {
    let key = new_key();
    let keys = stand_in(Endpoint::Hangs, &key).await;
    let api = api_with(verifier(&keys.url), no_limits()).await;
    let jwt = Jwt::valid().sign(&key);
    let start = Instant::now();
    let answers = signed_in_at_once(&api.url(), &jwt, 6).await;
    let batch = start.elapsed();
    assert!(answers.iter().all(|(s, _)| *s == 401), "{answers:?}");
    assert_eq!(keys.hits(), 1, "one fetch for six requests");
    assert!(
        batch < Duration::from_secs(4),
        "six requests answered in {batch:?}: the fetch is bounded and shared"
    );
    let again = signed_in_at_once(&api.url(), &jwt, 1).await;
    assert_eq!(again[0].0, 401);
    assert!(
        again[0].1 < Duration::from_secs(1),
        "{again:?}: the failure is remembered"
    );
    assert_eq!(keys.hits(), 1, "no fetch while the failure is remembered");
    api.stop().await;
}

/// A failing endpoint (500) is asked once, then not again until the failure's time to live
/// has passed; then once more.
#[tokio::test]
async fn a_failing_key_endpoint_is_asked_again_only_after_a_while() {
    let key = new_key();
    let keys = stand_in(Endpoint::Fails, &key).await;
    let config = AlbOidcConfig::from_settings(Some(ARN), Some(ISSUER), Some(&keys.url))
        .unwrap()
        .unwrap();
    let policy = FetchPolicy {
        failure_ttl: Duration::from_secs(2),
        ..FetchPolicy::default()
    };
    let api = api_with(
        AlbVerifier::with_policy(config, policy).unwrap(),
        no_limits(),
    )
    .await;
    let jwt = Jwt::valid().sign(&key);
    for _ in 0..5 {
        assert_eq!(signed_in_at_once(&api.url(), &jwt, 1).await[0].0, 401);
    }
    assert_eq!(keys.hits(), 1);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(signed_in_at_once(&api.url(), &jwt, 3).await[0].0, 401);
    assert_eq!(keys.hits(), 2, "asked again once the failure expired");
    api.stop().await;
}

/// A slow endpoint: eight signed-in requests wait for one fetch and all get in.
#[tokio::test]
async fn requests_for_a_new_key_share_one_fetch() {
    let key = new_key();
    let keys = stand_in(Endpoint::Slow(Duration::from_millis(300)), &key).await;
    let api = api_with(verifier(&keys.url), no_limits()).await;
    let answers = signed_in_at_once(&api.url(), &Jwt::valid().sign(&key), 8).await;
    assert!(answers.iter().all(|(s, _)| *s == 200), "{answers:?}");
    assert_eq!(keys.hits(), 1);
    api.stop().await;
}

/// Anyone who knows the load balancer's ARN can write headers with new random key ids: the
/// fetches they cause are bounded overall (a burst of 10, then 10 a minute), whatever the
/// number of key ids.
#[tokio::test]
async fn random_key_ids_cannot_make_a_stream_of_fetches() {
    let key = new_key();
    let keys = stand_in(Endpoint::Slow(Duration::ZERO), &key).await;
    let api = api_with(verifier(&keys.url), no_limits()).await;
    for i in 0..40 {
        let mut jwt = Jwt::valid();
        jwt.header["kid"] = json!(format!("forged-{i}-{}", rand::random::<u32>()));
        assert_eq!(
            signed_in_at_once(&api.url(), &jwt.sign(&key), 1).await[0].0,
            401
        );
    }
    let fetched = keys.hits();
    assert!(
        (10..=11).contains(&fetched),
        "{fetched} fetches for 40 key ids"
    );
    api.stop().await;
}

/// Requests waiting on a key fetch hold their place in the bound on requests in flight: with
/// room for two, two waiting sign-ins leave none for a third request, which gets 503 at once.
#[tokio::test]
async fn requests_waiting_on_a_key_fetch_count_as_in_flight() {
    let key = new_key();
    let keys = stand_in(Endpoint::Hangs, &key).await;
    let limits = LimitArgs {
        max_in_flight: 2,
        ..no_limits()
    };
    let api = api_with(verifier(&keys.url), limits).await;
    let url = api.url();
    let jwt = Jwt::valid().sign(&key);
    let waiting = tokio::spawn({
        let (url, jwt) = (url.clone(), jwt.clone());
        async move { signed_in_at_once(&url, &jwt, 2).await }
    });
    eventually("the fetch to start", Duration::from_secs(5), || async {
        keys.hits() >= 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let third = reqwest::Client::new()
        .get(format!("{url}/api/totals"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(
        third.status(),
        503,
        "the two waiting sign-ins fill the bound"
    );
    let waited = waiting.await.unwrap();
    assert!(waited.iter().all(|(s, _)| *s == 401), "{waited:?}");
    api.stop().await;
}
