//! Who gets in and how much they may ask: bearer tokens and load balancer identities on every
//! route the router has (the list comes from `endpoints::endpoints`, so a new route is covered
//! the day it is added), JWTs that must not verify, nothing secret in the logs, the
//! hardening headers, the size limits, the per-client rate and the bound on requests in
//! flight.

use crate::common::*;
use async_trait::async_trait;
use axum::http::StatusCode;
use axum::Router;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine as _;
use orders_api::alb_oidc::{AlbOidcConfig, AlbVerifier};
use orders_api::auth::{Access, AuthArgs, Credentials};
use orders_api::endpoints::{endpoints, Exposure};
use orders_api::limits::{ClientLimits, LimitArgs};
use orders_api::{app, AppState};
use orders_core::config::Secret;
use orders_core::store::*;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::EncodePublicKey as _;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;

pub(crate) const TOKEN: &str = "tok-correct-horse-battery-staple-0001";
const OTHER_TOKEN: &str = "tok-second-client-for-rotation-0002";
const WRONG_TOKEN: &str = "tok-wrong-guess-9999";
pub(crate) const ARN: &str =
    "arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/app/orders-alb/50dc6c495c0c9188";
pub(crate) const ISSUER: &str = "https://idp.example.com";
pub(crate) const KID: &str = "6a4b2d0c-2f7e-4a1b-9c3d-5e6f7a8b9c0d";

pub(crate) fn credentials(alb: Option<AlbVerifier>) -> Access {
    Access::Required(Arc::new(Credentials::new(
        &[Secret::new(TOKEN), Secret::new(OTHER_TOKEN)],
        alb,
    )))
}

fn guarded(store: Arc<dyn OrderStore>, access: Access) -> Router {
    app(AppState::new(store).with_access(access))
}

/// A concrete URI for a route template.
fn uri(path: &str) -> String {
    path.replace("{id}", "1").replace("{name}", "order")
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// GET `uri` with `Authorization: Bearer <token>`.
async fn get_with_token(app: &Router, uri: &str, token: &str) -> Answer {
    send_with(app, "GET", uri, &[("authorization", &bearer(token))]).await
}

fn assert_refused(a: &Answer, context: &str) {
    assert_error(a, 401, "unauthorized", context);
    let challenge = a.headers["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.starts_with("Bearer realm=\"orders\""),
        "{context}: {challenge}"
    );
}

#[tokio::test]
async fn every_private_route_refuses_anonymous_and_wrong_tokens() {
    let f = filled_store(3).await;
    let app = guarded(f.store.clone(), credentials(None));
    let all = endpoints();
    let private: Vec<&str> = all
        .iter()
        .filter(|(e, _)| e.exposure == Exposure::Private)
        .map(|(e, _)| e.path)
        .collect();
    assert!(private.len() >= 10, "{private:?}");
    for path in &private {
        let u = uri(path);
        assert_refused(&get(&app, &u).await, &format!("{u} without a token"));
        let a = get_with_token(&app, &u, WRONG_TOKEN).await;
        assert_refused(&a, &format!("{u} with a wrong token"));
        assert!(a.headers["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token"));
        let a = send_with(
            &app,
            "GET",
            &u,
            &[("authorization", &format!("Basic {TOKEN}"))],
        )
        .await;
        assert_refused(&a, &format!("{u} with another scheme"));
        // Another method on a private route says nothing more than 401 either.
        assert_refused(&send(&app, "POST", &u).await, &format!("POST {u}"));
    }
    // A path no route has is not a way to learn which exist.
    assert_refused(&get(&app, "/api/nothing-here").await, "unknown path");
    // The probes answer anyone.
    for (e, _) in all.iter().filter(|(e, _)| e.exposure != Exposure::Private) {
        let a = get(&app, e.path).await;
        assert_ne!(a.status, StatusCode::UNAUTHORIZED, "{}: {}", e.path, a.text);
    }
    assert_eq!(get(&app, "/healthz").await.status, StatusCode::OK);
}

#[tokio::test]
async fn every_documented_path_is_a_route_of_the_router() {
    let f = filled_store(1).await;
    let app = guarded(f.store.clone(), credentials(None));
    let doc = get_with_token(&app, "/api/openapi.json", TOKEN)
        .await
        .json();
    let routes: Vec<&str> = endpoints().iter().map(|(e, _)| e.path).collect();
    for path in doc["paths"].as_object().unwrap().keys() {
        assert!(
            routes.contains(&path.as_str()),
            "{path} is documented, not routed"
        );
    }
    let public: Vec<&str> = endpoints()
        .iter()
        .filter(|(e, _)| e.exposure != Exposure::Private)
        .map(|(e, _)| e.path)
        .collect();
    assert_eq!(public, ["/healthz", "/readyz"]);
}

#[tokio::test]
async fn every_configured_token_gets_in_on_every_route() {
    let f = filled_store(3).await;
    let app = guarded(f.store.clone(), credentials(None));
    for (e, _) in endpoints() {
        for token in [TOKEN, OTHER_TOKEN] {
            let u = uri(e.path);
            let a = get_with_token(&app, &u, token).await;
            // No Kafka in this test: lag, dead letters and readiness answer 503, and
            // nothing else fails.
            let expected = match e.path {
                "/api/lag" | "/api/dlq" | "/readyz" => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::OK,
            };
            assert_eq!(a.status, expected, "{u}: {}", a.text);
        }
    }
}

#[tokio::test]
async fn local_mode_and_an_explicitly_open_api_ask_nothing() {
    let f = filled_store(3).await;
    for access in [Access::Local, Access::Open] {
        let app = guarded(f.store.clone(), access);
        assert_eq!(get(&app, "/api/totals").await.status, StatusCode::OK);
        assert_eq!(get(&app, "/").await.status, StatusCode::OK);
    }
}

#[tokio::test]
async fn serve_refuses_a_public_address_without_authentication() {
    let f = filled_store(1).await;
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let result = orders_api::serve(
        listener,
        AppState::new(f.store.clone()),
        tokio_util::sync::CancellationToken::new(),
    )
    .await;
    let e = result.unwrap_err();
    assert!(
        matches!(e, orders_api::ApiError::Unprotected(a) if a == addr),
        "{e}"
    );
    assert!(e.to_string().contains("ORDERS_API_AUTH=none"), "{e}");
    // The settings decide the same before anything is bound.
    assert!(AuthArgs::default().access_for(addr).is_err());
}

// ---- load balancer identities ---------------------------------------------------------

pub(crate) fn new_key() -> SigningKey {
    loop {
        if let Ok(k) = SigningKey::from_slice(&rand::random::<[u8; 32]>()) {
            return k;
        }
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A JWT as the load balancer writes it: ES256, base64url parts padded with `=`.
pub(crate) struct Jwt {
    pub(crate) header: Value,
    pub(crate) claims: Value,
    pub(crate) padded: bool,
}

impl Jwt {
    pub(crate) fn valid() -> Self {
        let exp = unix_now() + 120;
        Jwt {
            header: json!({"typ": "JWT", "kid": KID, "alg": "ES256", "iss": ISSUER,
                           "client": "orders-console", "signer": ARN, "exp": exp}),
            claims: json!({"sub": "user-4711", "email": "ops@example.com", "exp": exp, "iss": ISSUER}),
            padded: true,
        }
    }

    pub(crate) fn sign(&self, key: &SigningKey) -> String {
        let engine = |b: &[u8]| {
            if self.padded {
                URL_SAFE.encode(b)
            } else {
                URL_SAFE_NO_PAD.encode(b)
            }
        };
        let input = format!(
            "{}.{}",
            engine(self.header.to_string().as_bytes()),
            engine(self.claims.to_string().as_bytes())
        );
        let signature: Signature = key.sign(input.as_bytes());
        format!("{input}.{}", engine(&signature.to_bytes()))
    }
}

/// The load balancer's key endpoint, played by a local server: `/<kid>` answers the PEM of
/// the one key it has; fetches are counted.
struct KeyServer {
    url: String,
    fetches: Arc<AtomicUsize>,
    _server: RunningRouter,
}

struct RunningRouter {
    stop: tokio_util::sync::CancellationToken,
}

impl Drop for RunningRouter {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn key_server(key: &SigningKey) -> KeyServer {
    let pem = key
        .verifying_key()
        .to_public_key_pem(p256::pkcs8::LineEnding::LF)
        .unwrap();
    let fetches = Arc::new(AtomicUsize::new(0));
    let counted = fetches.clone();
    let router = Router::new().route(
        "/keys/{kid}",
        axum::routing::get(
            move |axum::extract::Path(kid): axum::extract::Path<String>| {
                let (pem, counted) = (pem.clone(), counted.clone());
                async move {
                    counted.fetch_add(1, Ordering::SeqCst);
                    if kid == KID {
                        (StatusCode::OK, pem)
                    } else {
                        (StatusCode::NOT_FOUND, String::new())
                    }
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/keys", listener.local_addr().unwrap());
    let stop = tokio_util::sync::CancellationToken::new();
    let until = stop.clone();
    tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(until.cancelled_owned())
            .await
    });
    KeyServer {
        url,
        fetches,
        _server: RunningRouter { stop },
    }
}

pub(crate) fn verifier(keys_url: &str) -> AlbVerifier {
    let config = AlbOidcConfig::from_settings(Some(ARN), Some(ISSUER), Some(keys_url))
        .unwrap()
        .unwrap();
    AlbVerifier::new(config).unwrap()
}

async fn with_identity(app: &Router, jwt: &str) -> Answer {
    send_with(app, "GET", "/api/totals", &[("x-amzn-oidc-data", jwt)]).await
}

#[tokio::test]
async fn a_verified_load_balancer_identity_gets_in_and_its_key_is_fetched_once() {
    let key = new_key();
    let keys = key_server(&key).await;
    let f = filled_store(3).await;
    let app = guarded(f.store.clone(), credentials(Some(verifier(&keys.url))));
    let padded = Jwt::valid().sign(&key);
    assert!(
        padded.contains('='),
        "the load balancer's padding is exercised"
    );
    let mut unpadded = Jwt::valid();
    unpadded.padded = false;
    for jwt in [padded, unpadded.sign(&key)] {
        let a = with_identity(&app, &jwt).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    }
    let a = send_with(
        &app,
        "GET",
        "/",
        &[("x-amzn-oidc-data", &Jwt::valid().sign(&key))],
    )
    .await;
    assert_eq!(
        a.status,
        StatusCode::OK,
        "the web view for a signed-in browser"
    );
    assert_eq!(keys.fetches.load(Ordering::SeqCst), 1, "the key is cached");
}

#[tokio::test]
async fn identities_that_do_not_verify_are_refused() {
    let key = new_key();
    let keys = key_server(&key).await;
    let f = filled_store(3).await;
    let app = guarded(f.store.clone(), credentials(Some(verifier(&keys.url))));
    let now = unix_now();
    let alter = |change: &dyn Fn(&mut Jwt)| {
        let mut jwt = Jwt::valid();
        change(&mut jwt);
        jwt
    };
    let cases: Vec<(&str, String)> = vec![
        (
            "expired",
            alter(&|j| {
                j.claims["exp"] = json!(now - 5);
                j.header["exp"] = json!(now - 5);
            })
            .sign(&key),
        ),
        (
            "expired claims under a fresh header",
            alter(&|j| j.claims["exp"] = json!(now - 5)).sign(&key),
        ),
        ("signed by another key", Jwt::valid().sign(&new_key())),
        (
            "another load balancer",
            alter(&|j| {
                j.header["signer"] = json!(ARN.replace("50dc6c495c0c9188", "0000000000000000"))
            })
            .sign(&key),
        ),
        (
            "another issuer",
            alter(&|j| {
                j.claims["iss"] = json!("https://evil.example.com");
                j.header["iss"] = json!("https://evil.example.com");
            })
            .sign(&key),
        ),
        (
            "an unknown key id",
            alter(&|j| j.header["kid"] = json!("0000-unknown")).sign(&key),
        ),
        (
            "a key id that is a path",
            alter(&|j| j.header["kid"] = json!("../keys/x")).sign(&key),
        ),
        ("alg none", {
            let mut j = Jwt::valid();
            j.header["alg"] = json!("none");
            let signed = j.sign(&key);
            let unsigned = &signed[..signed.rfind('.').unwrap() + 1];
            unsigned.to_owned()
        }),
        (
            "HS256",
            alter(&|j| j.header["alg"] = json!("HS256")).sign(&key),
        ),
        ("no expiry", {
            let j = alter(&|j| {
                j.claims.as_object_mut().unwrap().remove("exp");
                j.header.as_object_mut().unwrap().remove("exp");
            });
            j.sign(&key)
        }),
        ("garbage", "not.a.jwt".to_owned()),
        ("two parts", "abc.def".to_owned()),
    ];
    for (what, jwt) in &cases {
        assert_refused(&with_identity(&app, jwt).await, what);
    }
    // A valid token with a tampered payload (the signature no longer covers it).
    let valid = Jwt::valid().sign(&key);
    let parts: Vec<&str> = valid.split('.').collect();
    let forged_claims =
        URL_SAFE.encode(json!({"sub": "admin", "exp": now + 120, "iss": ISSUER}).to_string());
    let tampered = format!("{}.{forged_claims}.{}", parts[0], parts[2]);
    assert_refused(&with_identity(&app, &tampered).await, "tampered claims");
    // Without sign-in configured, even a well-signed header proves nothing.
    let no_sign_in = guarded(f.store.clone(), credentials(None));
    assert_refused(
        &with_identity(&no_sign_in, &valid).await,
        "sign-in not configured",
    );
    // The unknown key id was asked for once, then remembered as missing.
    let before = keys.fetches.load(Ordering::SeqCst);
    let unknown = alter(&|j| j.header["kid"] = json!("0000-unknown")).sign(&key);
    assert_refused(&with_identity(&app, &unknown).await, "unknown key id again");
    assert_eq!(keys.fetches.load(Ordering::SeqCst), before);
    // The failures are counted by reason.
    let metrics = get_with_token(&app, "/metrics", TOKEN).await;
    let expected = format!(
        "orders_api_auth_failures_total{{reason=\"bad_identity\"}} {}",
        cases.len() + 2
    );
    assert!(metrics.text.contains(&expected), "{}", metrics.text);
}

// ---- nothing secret in the logs ---------------------------------------------------------

#[tokio::test]
async fn tokens_and_identities_never_reach_the_logs() {
    let key = new_key();
    let keys = key_server(&key).await;
    let f = filled_store(3).await;
    init_logs();
    let app = guarded(f.store.clone(), credentials(Some(verifier(&keys.url))));
    let good_jwt = Jwt::valid().sign(&key);
    let expired = {
        let mut j = Jwt::valid();
        j.claims["exp"] = json!(unix_now() - 1);
        j.sign(&key)
    };
    let foreign = Jwt::valid().sign(&new_key());
    assert_eq!(with_identity(&app, &good_jwt).await.status, StatusCode::OK);
    assert_refused(&with_identity(&app, &expired).await, "expired");
    assert_refused(&with_identity(&app, &foreign).await, "foreign");
    for token in [TOKEN, WRONG_TOKEN] {
        get_with_token(&app, "/api/orders", token).await;
    }
    let text = captured_logs();
    assert!(
        text.contains("bad credentials refused"),
        "the refusals are logged: {text}"
    );
    for secret in [TOKEN, WRONG_TOKEN, &good_jwt, &expired, &foreign] {
        assert!(!text.contains(secret), "a secret in the logs:\n{text}");
        // Nor any part of a JWT (its signature or claims).
        for part in secret.split('.').filter(|p| p.len() > 12) {
            assert!(
                !text.contains(part),
                "part of a secret in the logs:\n{text}"
            );
        }
    }
}

// ---- hardening headers and sizes ----------------------------------------------------------

#[tokio::test]
async fn every_answer_carries_the_hardening_headers() {
    let f = filled_store(3).await;
    let app = guarded(f.store.clone(), credentials(None));
    let token = bearer(TOKEN);
    let auth = [("authorization", token.as_str())];
    let mut html_pages = 0;
    let mut uris: Vec<String> = endpoints().iter().map(|(e, _)| uri(e.path)).collect();
    uris.extend([
        "/api/nothing-here".to_owned(),
        "/api/orders?limit=0".to_owned(),
    ]);
    for u in &uris {
        for headers in [&auth[..], &[]] {
            let a = send_with(&app, "GET", u, headers).await;
            let h = |name: &str| {
                a.headers
                    .get(name)
                    .unwrap_or_else(|| panic!("{u} ({}): no {name}", a.status))
                    .to_str()
                    .unwrap()
                    .to_owned()
            };
            let csp = h("content-security-policy");
            assert!(csp.contains("default-src 'none'"), "{u}: {csp}");
            assert!(csp.contains("frame-ancestors 'none'"), "{u}: {csp}");
            assert!(
                !csp.contains("script-src"),
                "{u}: no script is allowed: {csp}"
            );
            assert!(!csp.contains("unsafe-inline"), "{u}: {csp}");
            assert_eq!(h("x-content-type-options"), "nosniff", "{u}");
            assert_eq!(h("referrer-policy"), "no-referrer", "{u}");
            assert_eq!(h("x-frame-options"), "DENY", "{u}");
            if a.content_type.starts_with("text/html") {
                html_pages += 1;
                assert!(!a.text.contains("<script"), "{u}");
            }
        }
    }
    assert!(html_pages >= 1, "the web view was checked");
}

#[tokio::test]
async fn oversized_headers_and_bodies_are_refused_with_json() {
    let f = filled_store(1).await;
    let app = guarded(f.store.clone(), Access::Local);
    let big = "x".repeat(orders_api::limits::MAX_HEADER_BYTES);
    let a = send_with(&app, "GET", "/api/totals", &[("x-padding", &big)]).await;
    assert_error(&a, 431, "headers_too_large", "headers");
    let declared = (orders_api::limits::MAX_BODY_BYTES + 1).to_string();
    let a = send_with(&app, "GET", "/api/totals", &[("content-length", &declared)]).await;
    assert_error(&a, 413, "body_too_large", "body");
    // Even the liveness route is not a way around them.
    let a = send_with(&app, "GET", "/healthz", &[("x-padding", &big)]).await;
    assert_eq!(a.status.as_u16(), 431);
}

// ---- per-client rate and requests in flight -----------------------------------------------

#[tokio::test]
async fn a_client_over_its_rate_gets_429_while_another_is_served() {
    let f = filled_store(3).await;
    // One request a second after a burst of five: the burst below takes far less than a
    // second, so the sixth request of one client is over, whatever the machine's speed.
    let limits = ClientLimits::new(&LimitArgs {
        rate_limit: 1,
        rate_burst: 5,
        max_in_flight: 0,
        trust_forwarded_for: false,
        ..LimitArgs::default()
    });
    let app = app(AppState::new(f.store.clone())
        .with_access(credentials(None))
        .with_limits(limits));
    for i in 0..5 {
        let a = get_with_token(&app, "/api/totals", TOKEN).await;
        assert_eq!(a.status, StatusCode::OK, "request {i} of the burst");
    }
    let a = get_with_token(&app, "/api/totals", TOKEN).await;
    assert_error(&a, 429, "rate_limited", "over the rate");
    let retry: u64 = a.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    // Another client (another token) is still served, and so is the load balancer.
    assert_eq!(
        get_with_token(&app, "/api/totals", OTHER_TOKEN)
            .await
            .status,
        StatusCode::OK
    );
    for _ in 0..10 {
        assert_eq!(get(&app, "/healthz").await.status, StatusCode::OK);
    }
    let metrics = get_with_token(&app, "/metrics", OTHER_TOKEN).await;
    assert!(
        metrics.text.contains("orders_api_rate_limited_total 1"),
        "{}",
        metrics.text
    );
}

/// 300 wrong tokens from one address over real sockets: the first 30 (the default budget)
/// are refused 401, the rest 429 before the token is looked at, and the address's right
/// token waits too; another address is not affected.
#[tokio::test]
async fn failed_authentications_from_one_address_are_throttled() {
    let f = filled_store(1).await;
    let state = AppState::new(f.store.clone())
        .with_access(credentials(None))
        .with_limits(ClientLimits::new(&LimitArgs::default()));
    let server = RunningServer::start(state).await;
    let http = reqwest::Client::new();
    let get = |token: &'static str| {
        http.get(format!("{}/api/totals", server.url()))
            .bearer_auth(token)
            .send()
    };
    let (mut refused, mut throttled) = (0, 0);
    for _ in 0..300 {
        let r = get(WRONG_TOKEN).await.unwrap();
        match r.status().as_u16() {
            401 => refused += 1,
            429 => {
                throttled += 1;
                let retry: u64 = r.headers()["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!((1..=2).contains(&retry), "Retry-After {retry}");
            }
            other => panic!("{other}"),
        }
    }
    // The budget refills at 30 a minute: a slow machine may earn one or two more tries.
    assert!((30..=33).contains(&refused), "{refused} refused 401");
    assert_eq!(refused + throttled, 300);
    assert_eq!(get(TOKEN).await.unwrap().status(), 429, "the address waits");
    // Another address is served, and the refusals are counted.
    let other = reqwest::Client::builder()
        .local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap();
    let metrics = other
        .get(format!("{}/metrics", server.url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.unwrap();
    let counted = format!("orders_api_auth_failures_total{{reason=\"bad_token\"}} {refused}");
    assert!(text.contains(&counted), "{text}");
    assert!(
        text.contains(&format!("orders_api_rate_limited_total {}", throttled + 1)),
        "{text}"
    );
    server.stop().await;
}

#[tokio::test]
async fn forwarded_addresses_are_clients_only_when_trusted() {
    let f = filled_store(1).await;
    let build = |trust: bool| {
        app(
            AppState::new(f.store.clone()).with_limits(ClientLimits::new(&LimitArgs {
                rate_limit: 1,
                rate_burst: 2,
                max_in_flight: 0,
                trust_forwarded_for: trust,
                ..LimitArgs::default()
            })),
        )
    };
    let from = |app: Router, ip: &'static str| async move {
        send_with(&app, "GET", "/api/totals", &[("x-forwarded-for", ip)])
            .await
            .status
            .as_u16()
    };
    // Trusted: two addresses, two budgets.
    let app = build(true);
    for _ in 0..2 {
        assert_eq!(from(app.clone(), "203.0.113.1").await, 200);
    }
    assert_eq!(from(app.clone(), "203.0.113.1").await, 429);
    assert_eq!(from(app.clone(), "203.0.113.2").await, 200);
    // Not trusted: a client cannot get a fresh budget by writing another address.
    let app = build(false);
    for _ in 0..2 {
        assert_eq!(from(app.clone(), "203.0.113.1").await, 200);
    }
    assert_eq!(from(app.clone(), "203.0.113.2").await, 429);
}

/// A store whose `totals` waits until released, to hold a request in flight.
struct HeldStore {
    inner: Arc<SqliteStore>,
    entered: Notify,
    release: Notify,
}

#[async_trait]
impl OrderStore for HeldStore {
    async fn apply(&self, b: Arc<StoreBatch>) -> Result<BatchOutcome, StoreError> {
        self.inner.apply(b).await
    }
    async fn totals(&self) -> Result<Totals, StoreError> {
        self.entered.notify_one();
        self.release.notified().await;
        self.inner.totals().await
    }
    async fn minute_windows(&self, from: i64, to: i64) -> Result<Vec<MinuteWindow>, StoreError> {
        self.inner.minute_windows(from, to).await
    }
    async fn max_order_id(&self) -> Result<Option<u64>, StoreError> {
        self.inner.max_order_id().await
    }
    async fn latest_orders(&self, q: &OrderQuery) -> Result<Vec<OrderDocument>, StoreError> {
        self.inner.latest_orders(q).await
    }
    async fn order(&self, id: u64) -> Result<Option<OrderDocument>, StoreError> {
        self.inner.order(id).await
    }
    async fn alert(&self, id: u64) -> Result<Option<StoredAlert>, StoreError> {
        self.inner.alert(id).await
    }
    async fn payment(&self, id: u64) -> Result<Option<StoredPayment>, StoreError> {
        self.inner.payment(id).await
    }
    async fn latest_alerts(&self, n: usize) -> Result<Vec<StoredAlert>, StoreError> {
        self.inner.latest_alerts(n).await
    }
    async fn latest_payments(&self, n: usize) -> Result<Vec<StoredPayment>, StoreError> {
        self.inner.latest_payments(n).await
    }
    async fn orders_before(
        &self,
        b: Option<u64>,
        n: usize,
    ) -> Result<Vec<StoredOrder>, StoreError> {
        self.inner.orders_before(b, n).await
    }
    async fn alerts_before(
        &self,
        b: Option<u64>,
        n: usize,
    ) -> Result<Vec<StoredAlert>, StoreError> {
        self.inner.alerts_before(b, n).await
    }
    async fn payments_before(
        &self,
        b: Option<u64>,
        n: usize,
    ) -> Result<Vec<StoredPayment>, StoreError> {
        self.inner.payments_before(b, n).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
    async fn record_canary_stages(
        &self,
        stages: Arc<Vec<orders_core::canary::CanaryStage>>,
    ) -> Result<(), StoreError> {
        self.inner.record_canary_stages(stages).await
    }
    async fn canaries_before(
        &self,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<orders_core::canary::CanaryJourney>, StoreError> {
        self.inner.canaries_before(before, limit).await
    }
}

#[tokio::test]
async fn beyond_the_bound_in_flight_requests_are_shed_but_liveness_answers() {
    let f = filled_store(2).await;
    let store = Arc::new(HeldStore {
        inner: f.store.clone(),
        entered: Notify::new(),
        release: Notify::new(),
    });
    let limits = ClientLimits::new(&LimitArgs {
        rate_limit: 0,
        rate_burst: 0,
        max_in_flight: 1,
        trust_forwarded_for: false,
        ..LimitArgs::default()
    });
    let app = app(AppState::new(store.clone())
        .with_response_cache(std::time::Duration::ZERO)
        .with_limits(limits));
    let held = tokio::spawn({
        let app = app.clone();
        async move { get(&app, "/api/totals").await.status }
    });
    store.entered.notified().await;
    let a = get(&app, "/api/alerts").await;
    assert_error(&a, 503, "overloaded", "the second request in flight");
    assert_eq!(a.headers["retry-after"], "1");
    assert_eq!(get(&app, "/healthz").await.status, StatusCode::OK);
    store.release.notify_one();
    assert_eq!(held.await.unwrap(), StatusCode::OK);
    assert_eq!(get(&app, "/api/alerts").await.status, StatusCode::OK);
}

// ---- local mode and DNS rebinding ---------------------------------------------------------

/// A web page whose name its DNS rebinds to 127.0.0.1 makes the browser send `Host:
/// evil.example`: local mode answers it 403 and nothing else; loopback names are served.
/// Over a real socket, as a browser would.
#[tokio::test]
async fn local_mode_answers_only_requests_for_loopback_names() {
    let f = filled_store(2).await;
    let server = RunningServer::start(AppState::new(f.store.clone())).await;
    let port = server.addr.port();
    let http = reqwest::Client::new();
    let with_host = |path: &'static str, host: String| {
        http.get(format!("{}{path}", server.url()))
            .header("host", host)
            .send()
    };
    for path in [
        "/api/orders",
        "/",
        "/metrics",
        "/readyz",
        "/api/nothing-here",
    ] {
        for host in [
            format!("evil.example:{port}"),
            "127.0.0.1.nip.io".to_owned(),
        ] {
            let r = with_host(path, host.clone()).await.unwrap();
            assert_eq!(r.status(), 403, "{path} for {host}");
            let body: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
            assert_eq!(body["error"]["code"], "host_not_allowed", "{body}");
            assert!(!body.to_string().contains("order_id"), "{body}");
        }
    }
    // Liveness says nothing and always answers.
    let r = with_host("/healthz", "evil.example".to_owned())
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
    ] {
        let r = with_host("/api/orders", host.clone()).await.unwrap();
        assert_eq!(r.status(), 200, "{host}");
    }
    server.stop().await;
    // With credentials the token is the defence: the load balancer's name is served.
    let app = guarded(f.store.clone(), credentials(None));
    let a = send_with(
        &app,
        "GET",
        "/api/orders",
        &[
            ("host", "orders.example.com"),
            ("authorization", &bearer(TOKEN)),
        ],
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
}

// ---- transport and caching headers, and how open the api is -------------------------------

#[tokio::test]
async fn data_is_never_cached_and_https_answers_pin_https() {
    let f = filled_store(2).await;
    let app = guarded(f.store.clone(), credentials(None));
    let token = bearer(TOKEN);
    for (e, _) in endpoints() {
        let u = uri(e.path);
        let plain = send_with(&app, "GET", &u, &[("authorization", &token)]).await;
        assert_eq!(plain.headers["cache-control"], "no-store", "{u}");
        assert!(
            plain.headers.get("strict-transport-security").is_none(),
            "{u}: not over plain HTTP"
        );
        let https = send_with(
            &app,
            "GET",
            &u,
            &[("authorization", &token), ("x-forwarded-proto", "https")],
        )
        .await;
        assert_eq!(
            https.headers["strict-transport-security"], "max-age=31536000",
            "{u}"
        );
    }
    // Refusals too.
    let refused = send_with(
        &app,
        "GET",
        "/api/orders",
        &[("x-forwarded-proto", "https")],
    )
    .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(refused.headers["cache-control"], "no-store");
    assert!(refused.headers.get("strict-transport-security").is_some());
}

#[tokio::test]
async fn metrics_say_how_the_api_authenticates() {
    let f = filled_store(1).await;
    let mode = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with("orders_api_auth_mode{") && l.ends_with(" 1"))
            .map(str::to_owned)
            .collect()
    };
    let required = get_with_token(
        &guarded(f.store.clone(), credentials(None)),
        "/metrics",
        TOKEN,
    )
    .await;
    assert_eq!(
        mode(&required.text),
        ["orders_api_auth_mode{mode=\"required\"} 1"],
        "{}",
        required.text
    );
    let open = get(&guarded(f.store.clone(), Access::Open), "/metrics").await;
    assert_eq!(mode(&open.text), ["orders_api_auth_mode{mode=\"open\"} 1"]);
    assert!(open
        .text
        .contains("orders_api_auth_mode{mode=\"required\"} 0"));
    let local = get(&guarded(f.store.clone(), Access::Local), "/metrics").await;
    assert_eq!(
        mode(&local.text),
        ["orders_api_auth_mode{mode=\"local\"} 1"]
    );
}
