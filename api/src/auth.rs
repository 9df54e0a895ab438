//! Who may call the API. Every route but the probes needs a bearer token from
//! `ORDERS_API_TOKENS` (compared in constant time) or a user the AWS load balancer signed in
//! ([`crate::alb_oidc`]). On a loopback address with neither configured the API stays open,
//! so local mode needs no setup; on any other address it refuses to start unless opened
//! explicitly (`ORDERS_API_AUTH=none`). The model is described in `docs/security.md`.

use crate::alb_oidc::{AlbConfigError, AlbOidcConfig, AlbVerifier, IdentityRejected, SignedInUser};
use crate::client_addr::ClientAddr;
use crate::error::{AppError, AuthFailure};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use orders_core::config::Secret;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// The variable the API reads its accepted tokens from (comma-separated).
pub const TOKENS_ENV: &str = "ORDERS_API_TOKENS";
/// The variable `ordersctl json` and `ordersctl tui` read the token they send from.
pub const TOKEN_ENV: &str = "ORDERS_API_TOKEN";
/// The shortest token the API accepts to serve: `openssl rand -hex 32` gives 64.
pub const MIN_TOKEN_CHARS: usize = 32;

/// `ORDERS_API_AUTH`: the one explicit way to run without authentication off loopback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    /// Serve every address without authentication (logged as a warning at start).
    #[value(name = "none")]
    Open,
}

/// The bearer tokens an API accepts (`ordersd api`, `ordersctl up`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TokensArgs {
    /// Bearer tokens the API accepts, comma-separated; several, so one can be replaced
    /// without downtime (prefer the environment: flags show in `ps`).
    #[arg(
        long,
        env = TOKENS_ENV,
        hide_env_values = true,
        value_delimiter = ',',
        value_name = "TOKEN,..."
    )]
    pub api_tokens: Vec<Secret>,
}

impl TokensArgs {
    /// The tokens given, trimmed, without empty ones.
    pub fn tokens(&self) -> Vec<Secret> {
        self.api_tokens
            .iter()
            .map(|t| Secret::new(t.expose().trim()))
            .filter(|t| !t.expose().is_empty())
            .collect()
    }
}

/// The API's authentication settings, as flags and environment variables.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AuthArgs {
    #[command(flatten)]
    pub tokens: TokensArgs,
    /// `none`: serve a non-loopback address without authentication.
    #[arg(long, env = "ORDERS_API_AUTH", value_enum)]
    pub api_auth: Option<AuthMode>,
    /// ARN of the load balancer whose OIDC/Cognito sign-in to trust (the `signer` of
    /// `x-amzn-oidc-data`); needs --oidc-issuer.
    #[arg(long, env = "ORDERS_API_ALB_ARN")]
    pub alb_arn: Option<String>,
    /// Issuer (`iss`) of the identity provider the load balancer signs users in with.
    #[arg(long, env = "ORDERS_API_OIDC_ISSUER")]
    pub oidc_issuer: Option<String>,
    /// Where the load balancer's public keys are (`<url>/<kid>`)
    /// [default: https://public-keys.auth.elb.<region of the ARN>.amazonaws.com].
    #[arg(long, env = "ORDERS_API_ALB_KEYS_URL")]
    pub alb_keys_url: Option<String>,
}

/// Why the authentication settings cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error(
        "the api listens on {0}, which is not loopback, and has no authentication: set \
         ORDERS_API_TOKENS (and/or ORDERS_API_ALB_ARN with ORDERS_API_OIDC_ISSUER), or \
         ORDERS_API_AUTH=none to serve it open on purpose"
    )]
    Unprotected(SocketAddr),
    #[error("ORDERS_API_AUTH=none contradicts the credentials that are configured; drop one")]
    Contradiction,
    #[error(
        "ORDERS_API_TOKENS: token {position} of {count} has {length} characters; a token must \
         have at least {MIN_TOKEN_CHARS} (make one with `openssl rand -hex 32`)"
    )]
    WeakToken {
        position: usize,
        count: usize,
        length: usize,
    },
    #[error(transparent)]
    Alb(#[from] AlbConfigError),
}

/// How the API decides who gets in.
#[derive(Debug, Clone, Default)]
pub enum Access {
    /// No credentials asked: for a loopback address only ([`crate::serve`] refuses another).
    #[default]
    Local,
    /// No credentials asked on any address: opened on purpose (`ORDERS_API_AUTH=none`).
    Open,
    /// A bearer token or a signed-in user on every route but the probes.
    Required(Arc<Credentials>),
}

impl Access {
    /// The values of [`Access::mode`].
    pub const MODES: [&'static str; 3] = ["required", "local", "open"];

    /// The `mode` label of `orders_api_auth_mode`.
    pub fn mode(&self) -> &'static str {
        match self {
            Access::Required(_) => "required",
            Access::Local => "local",
            Access::Open => "open",
        }
    }

    /// Whether this may serve `addr`.
    pub fn allows(&self, addr: SocketAddr) -> bool {
        !matches!(self, Access::Local) || addr.ip().is_loopback()
    }
}

impl AuthArgs {
    /// The access policy for an api listening on `addr`; logs what it decided.
    pub fn access_for(&self, addr: SocketAddr) -> Result<Access, AuthConfigError> {
        let tokens = self.tokens.tokens();
        check_strength(&tokens)?;
        let alb = AlbOidcConfig::from_settings(
            self.alb_arn.as_deref(),
            self.oidc_issuer.as_deref(),
            self.alb_keys_url.as_deref(),
        )?;
        let configured = !tokens.is_empty() || alb.is_some();
        match (configured, self.api_auth) {
            (true, Some(AuthMode::Open)) => Err(AuthConfigError::Contradiction),
            (true, None) => {
                let alb = alb.map(AlbVerifier::new).transpose()?;
                tracing::info!(
                    tokens = tokens.len(),
                    load_balancer_sign_in = alb.is_some(),
                    "api authentication required on every route but /healthz and /readyz"
                );
                Ok(Access::Required(Arc::new(Credentials::new(&tokens, alb))))
            }
            (false, Some(AuthMode::Open)) => {
                tracing::warn!(
                    %addr,
                    "ORDERS_API_AUTH=none: the api answers anyone who can reach {addr}, without authentication"
                );
                Ok(Access::Open)
            }
            (false, None) if addr.ip().is_loopback() => {
                tracing::info!(%addr, "api on loopback without credentials: no authentication");
                Ok(Access::Local)
            }
            (false, None) => Err(AuthConfigError::Unprotected(addr)),
        }
    }
}

/// Refuses a token shorter than [`MIN_TOKEN_CHARS`], naming its place, never its value.
fn check_strength(tokens: &[Secret]) -> Result<(), AuthConfigError> {
    let count = tokens.len();
    for (i, token) in tokens.iter().enumerate() {
        let length = token.expose().chars().count();
        if length < MIN_TOKEN_CHARS {
            return Err(AuthConfigError::WeakToken {
                position: i + 1,
                count,
                length,
            });
        }
    }
    Ok(())
}

/// Who a request came from, once authenticated (a request extension).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A bearer token, known by a fingerprint (never the token itself).
    Token {
        fingerprint: String,
    },
    SignedIn(SignedInUser),
}

impl Caller {
    /// The key a per-client limit counts under.
    pub fn client_key(&self) -> String {
        match self {
            Caller::Token { fingerprint } => format!("token:{fingerprint}"),
            Caller::SignedIn(u) => format!("user:{}", u.subject),
        }
    }
}

/// The accepted tokens (as SHA-256 digests) and the load balancer verifier.
#[derive(Debug)]
pub struct Credentials {
    tokens: Vec<[u8; 32]>,
    alb: Option<AlbVerifier>,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Eight hex digits of the token's digest: enough to tell tokens apart in logs and limits,
/// nothing to recover a token from.
fn fingerprint(digest: &[u8; 32]) -> String {
    digest[..4].iter().map(|b| format!("{b:02x}")).collect()
}

impl Credentials {
    pub fn new(tokens: &[Secret], alb: Option<AlbVerifier>) -> Self {
        Credentials {
            tokens: tokens.iter().map(|t| digest(t.expose())).collect(),
            alb,
        }
    }

    /// Compares digests, so neither the tokens' contents nor their lengths show in timing,
    /// and looks at every accepted token whichever matches.
    fn token(&self, presented: &str) -> Option<Caller> {
        let presented = digest(presented);
        let matched = self
            .tokens
            .iter()
            .fold(subtle::Choice::from(0), |found, t| {
                found | t.ct_eq(&presented)
            });
        bool::from(matched).then(|| Caller::Token {
            fingerprint: fingerprint(&presented),
        })
    }

    /// The caller the headers prove, at `now` (seconds since the epoch). A bearer token, when
    /// sent, decides alone; otherwise the load balancer's identity header.
    pub async fn authenticate(&self, headers: &HeaderMap, now: u64) -> Result<Caller, AuthFailure> {
        if let Some(value) = headers.get(header::AUTHORIZATION) {
            let token = value
                .to_str()
                .ok()
                .and_then(|v| v.split_once(' '))
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, token)| token.trim());
            return token
                .and_then(|t| self.token(t))
                .ok_or(AuthFailure::BadToken);
        }
        if let Some(value) = headers.get(crate::alb_oidc::HEADER) {
            let Some(alb) = &self.alb else {
                // Sign-in is not configured: the header proves nothing.
                return Err(AuthFailure::BadIdentity(IdentityRejected::Signer));
            };
            let jwt = value
                .to_str()
                .map_err(|_| AuthFailure::BadIdentity(IdentityRejected::Malformed))?;
            return alb
                .verify(jwt, now)
                .await
                .map(Caller::SignedIn)
                .map_err(AuthFailure::BadIdentity);
        }
        Err(AuthFailure::Missing)
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The middleware in front of every route but the probes: lets authenticated requests
/// through with their [`Caller`] attached, answers the rest 401.
pub async fn require(State(access): State<Access>, mut request: Request, next: Next) -> Response {
    let Access::Required(credentials) = &access else {
        return next.run(request).await;
    };
    match credentials
        .authenticate(request.headers(), unix_now())
        .await
    {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(why) => {
            let client = request
                .extensions()
                .get::<ClientAddr>()
                .copied()
                .unwrap_or(ClientAddr::Unknown);
            let path: String = request.uri().path().chars().take(100).collect();
            match why {
                AuthFailure::Missing => {
                    tracing::info!(%client, %path, reason = why.reason(), "request without credentials refused")
                }
                _ => {
                    tracing::warn!(%client, %path, reason = why.reason(), detail = %why, "request with bad credentials refused")
                }
            }
            AppError::Unauthenticated(why).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn creds() -> Credentials {
        Credentials::new(&[Secret::new("old-token"), Secret::new("new-token")], None)
    }

    fn bearer(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        h
    }

    #[tokio::test]
    async fn any_configured_token_is_accepted_and_nothing_else() {
        let c = creds();
        let old = c
            .authenticate(&bearer("Bearer old-token"), 0)
            .await
            .unwrap();
        let new = c
            .authenticate(&bearer("bearer  new-token"), 0)
            .await
            .unwrap();
        assert_ne!(old, new, "two tokens, two clients");
        assert!(!old.client_key().contains("old-token"));
        for bad in [
            "Bearer nope",
            "Bearer",
            "Basic b2xkLXRva2Vu",
            "old-token",
            "Bearer old-token2",
        ] {
            assert_eq!(
                c.authenticate(&bearer(bad), 0).await,
                Err(AuthFailure::BadToken),
                "{bad}"
            );
        }
        assert_eq!(
            c.authenticate(&HeaderMap::new(), 0).await,
            Err(AuthFailure::Missing)
        );
        let mut forged = HeaderMap::new();
        forged.insert(crate::alb_oidc::HEADER, HeaderValue::from_static("a.b.c"));
        assert!(matches!(
            c.authenticate(&forged, 0).await,
            Err(AuthFailure::BadIdentity(_))
        ));
    }

    fn args(tokens: &[&str], auth: Option<AuthMode>) -> AuthArgs {
        AuthArgs {
            tokens: TokensArgs {
                api_tokens: tokens.iter().map(|t| Secret::new(*t)).collect(),
            },
            api_auth: auth,
            ..Default::default()
        }
    }

    const STRONG: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn a_token_shorter_than_32_characters_stops_the_start_without_showing_it() {
        let any: SocketAddr = "0.0.0.0:8000".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:8000".parse().unwrap();
        for addr in [any, local] {
            let e = args(&[STRONG, "a"], None).access_for(addr).unwrap_err();
            assert!(
                matches!(
                    e,
                    AuthConfigError::WeakToken {
                        position: 2,
                        count: 2,
                        length: 1
                    }
                ),
                "{e}"
            );
            let text = e.to_string();
            assert!(text.contains("at least 32"), "{text}");
            assert!(!text.contains(STRONG), "{text}");
        }
        let short = &STRONG[..31];
        assert!(args(&[short], None).access_for(any).is_err());
        assert!(args(&[STRONG], None).access_for(any).is_ok());
    }

    #[test]
    fn open_only_on_loopback_unless_opened_on_purpose() {
        let local: SocketAddr = "127.0.0.1:8000".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:8000".parse().unwrap();
        assert!(matches!(
            args(&[], None).access_for(local),
            Ok(Access::Local)
        ));
        assert!(matches!(
            args(&[], None).access_for(any),
            Err(AuthConfigError::Unprotected(_))
        ));
        assert!(matches!(
            args(&[" ", ""], None).access_for(any),
            Err(AuthConfigError::Unprotected(_))
        ));
        assert!(matches!(
            args(&[], Some(AuthMode::Open)).access_for(any),
            Ok(Access::Open)
        ));
        assert!(matches!(
            args(&[STRONG], None).access_for(local),
            Ok(Access::Required(_))
        ));
        assert!(matches!(
            args(&[STRONG], Some(AuthMode::Open)).access_for(any),
            Err(AuthConfigError::Contradiction)
        ));
        assert!(!Access::Local.allows(any));
        assert!(Access::Local.allows(local));
        assert!(Access::Open.allows(any));
    }

    #[test]
    fn tokens_come_from_the_environment_comma_separated_and_stay_hidden() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            auth: AuthArgs,
        }
        let cli =
            Cli::try_parse_from(["x", "--api-tokens", "a1,b2", "--api-auth", "none"]).unwrap();
        assert_eq!(
            cli.auth.tokens.tokens(),
            vec![Secret::new("a1"), Secret::new("b2")]
        );
        assert_eq!(cli.auth.api_auth, Some(AuthMode::Open));
        assert!(!format!("{:?}", cli.auth).contains("a1"));
        assert!(Cli::try_parse_from(["x", "--api-auth", "off"]).is_err());
    }
}
