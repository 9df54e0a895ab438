//! Why a load balancer identity was not accepted, and why the sign-in settings cannot be
//! served.

/// Why a load balancer identity was not accepted. Said in logs and metrics; the client only
/// learns that it was not authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdentityRejected {
    #[error("not a JWT")]
    Malformed,
    #[error("algorithm is not ES256")]
    Algorithm,
    #[error("signed by another load balancer")]
    Signer,
    #[error("the signing key is not available")]
    KeyUnavailable,
    #[error("the signature does not verify")]
    Signature,
    #[error("expired")]
    Expired,
    #[error("issued by another identity provider")]
    Issuer,
}

/// Configuration errors of the sign-in settings.
#[derive(Debug, thiserror::Error)]
pub enum AlbConfigError {
    #[error("ORDERS_API_ALB_ARN {0:?} is not a load balancer ARN (arn:aws:elasticloadbalancing:<region>:<account>:loadbalancer/app/<name>/<id>)")]
    BadArn(String),
    #[error("ORDERS_API_OIDC_ISSUER is required with ORDERS_API_ALB_ARN: the issuer (iss) of the identity provider the load balancer signs users in with")]
    MissingIssuer,
    #[error("ORDERS_API_OIDC_ISSUER is set without ORDERS_API_ALB_ARN, the load balancer whose signature to trust")]
    MissingArn,
    #[error("ORDERS_API_ALB_KEYS_URL {0:?} is not an http(s) URL")]
    BadKeysUrl(String),
    #[error("cannot build the HTTP client that fetches the load balancer's keys: {0}")]
    Client(String),
}
