//! The identity an AWS Application Load Balancer asserts after OIDC or Cognito sign-in: the
//! `x-amzn-oidc-data` header, a JWT the load balancer signs with ES256. The API trusts it
//! only once the signature verifies with the load balancer's public key for its region
//! (fetched by key id, then cached), the signer is the configured load balancer, the token
//! has not expired and its issuer is the configured identity provider. Anything else is
//! rejected: a client that reaches the task directly can send any header it likes.
//!
//! The load balancer pads its base64url parts with `=`, which many JWT libraries refuse;
//! hence this small verifier over `p256` rather than a general JWT crate.

mod error;
pub mod keys;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
pub use error::{AlbConfigError, IdentityRejected};
pub use keys::FetchPolicy;
use keys::KeyCache;
use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::Signature;
use serde::Deserialize;

/// The header the load balancer sets on requests it authenticated.
pub const HEADER: &str = "x-amzn-oidc-data";

/// A longer header is not one the load balancer wrote.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Which load balancer and identity provider to trust.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlbOidcConfig {
    /// The ARN of the load balancer: the JWT header's `signer`.
    pub signer_arn: String,
    /// The identity provider's issuer: the `iss` claim.
    pub issuer: String,
    /// Keys are at `<keys_url>/<kid>`, PEM.
    pub keys_url: String,
}

impl AlbOidcConfig {
    /// `None` when neither is set; the keys URL defaults to the region of the ARN's.
    pub fn from_settings(
        signer_arn: Option<&str>,
        issuer: Option<&str>,
        keys_url: Option<&str>,
    ) -> Result<Option<Self>, AlbConfigError> {
        let (arn, issuer, keys_url) = (nonempty(signer_arn), nonempty(issuer), nonempty(keys_url));
        let (arn, issuer) = match (arn, issuer) {
            (None, None) => return Ok(None),
            (Some(_), None) => return Err(AlbConfigError::MissingIssuer),
            (None, Some(_)) => return Err(AlbConfigError::MissingArn),
            (Some(a), Some(i)) => (a, i),
        };
        let region = arn_region(arn).ok_or_else(|| AlbConfigError::BadArn(arn.to_owned()))?;
        let keys_url = match keys_url {
            Some(u) if u.starts_with("https://") || u.starts_with("http://") => {
                u.trim_end_matches('/').to_owned()
            }
            Some(u) => return Err(AlbConfigError::BadKeysUrl(u.to_owned())),
            None => format!("https://public-keys.auth.elb.{region}.amazonaws.com"),
        };
        Ok(Some(AlbOidcConfig {
            signer_arn: arn.to_owned(),
            issuer: issuer.to_owned(),
            keys_url,
        }))
    }
}

fn nonempty(s: Option<&str>) -> Option<&str> {
    s.map(str::trim).filter(|s| !s.is_empty())
}

/// The region of `arn:aws:elasticloadbalancing:<region>:<account>:loadbalancer/...`.
fn arn_region(arn: &str) -> Option<&str> {
    let mut parts = arn.splitn(6, ':');
    let (arn_, partition, service, region, account, resource) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    let valid = arn_ == "arn"
        && partition.starts_with("aws")
        && service == "elasticloadbalancing"
        && !region.is_empty()
        && region
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !account.is_empty()
        && resource.starts_with("loadbalancer/");
    valid.then_some(region)
}

/// A user the load balancer signed in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedInUser {
    /// The identity provider's `sub`.
    pub subject: String,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: String,
    signer: String,
    #[serde(default)]
    exp: Option<f64>,
    #[serde(default)]
    iss: Option<String>,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    exp: Option<f64>,
    #[serde(default)]
    iss: Option<String>,
}

/// Verifies `x-amzn-oidc-data` headers; holds the keys fetched so far ([`KeyCache`]).
pub struct AlbVerifier {
    config: AlbOidcConfig,
    keys: KeyCache,
}

impl std::fmt::Debug for AlbVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlbVerifier")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Decodes one base64url part, with or without the `=` padding the load balancer adds.
fn decode_part(part: &str) -> Result<Vec<u8>, IdentityRejected> {
    URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| IdentityRejected::Malformed)
}

/// A key id is a path segment of the key URL: nothing but letters, digits, `-` and `_`.
fn valid_kid(kid: &str) -> bool {
    (1..=128).contains(&kid.len())
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl AlbVerifier {
    pub fn new(config: AlbOidcConfig) -> Result<Self, AlbConfigError> {
        Self::with_policy(config, FetchPolicy::default())
    }

    /// With another [`FetchPolicy`] (tests shorten its times).
    pub fn with_policy(config: AlbOidcConfig, policy: FetchPolicy) -> Result<Self, AlbConfigError> {
        let keys = KeyCache::new(&config.keys_url, policy)?;
        Ok(AlbVerifier { config, keys })
    }

    /// The user `jwt` names, if it verifies at `now` (seconds since the epoch).
    pub async fn verify(&self, jwt: &str, now: u64) -> Result<SignedInUser, IdentityRejected> {
        if jwt.len() > MAX_TOKEN_BYTES {
            return Err(IdentityRejected::Malformed);
        }
        let mut parts = jwt.split('.');
        let (Some(header_b64), Some(claims_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(IdentityRejected::Malformed);
        };
        let header: Header = serde_json::from_slice(&decode_part(header_b64)?)
            .map_err(|_| IdentityRejected::Malformed)?;
        // Checked before any key is fetched: only this load balancer's headers cost a fetch.
        if header.alg != "ES256" {
            return Err(IdentityRejected::Algorithm);
        }
        if header.signer != self.config.signer_arn {
            return Err(IdentityRejected::Signer);
        }
        if !valid_kid(&header.kid) {
            return Err(IdentityRejected::Malformed);
        }
        // Nor for a header that says it has expired (refusing on it grants nothing).
        if header.exp.is_some_and(|exp| exp <= now as f64) {
            return Err(IdentityRejected::Expired);
        }
        let signature = Signature::from_slice(&decode_part(signature_b64)?)
            .map_err(|_| IdentityRejected::Signature)?;
        let key = self.keys.key(&header.kid).await?;
        // The signed input is the two parts exactly as sent, padding included.
        let signed = &jwt[..header_b64.len() + 1 + claims_b64.len()];
        key.verify(signed.as_bytes(), &signature)
            .map_err(|_| IdentityRejected::Signature)?;
        let claims: Claims = serde_json::from_slice(&decode_part(claims_b64)?)
            .map_err(|_| IdentityRejected::Malformed)?;
        let expiries = [header.exp, claims.exp];
        if expiries.iter().all(Option::is_none)
            || expiries.iter().flatten().any(|exp| *exp <= now as f64)
        {
            return Err(IdentityRejected::Expired);
        }
        let issuer = claims.iss.or(header.iss).unwrap_or_default();
        if issuer.trim_end_matches('/') != self.config.issuer.trim_end_matches('/') {
            return Err(IdentityRejected::Issuer);
        }
        if claims.sub.is_empty() {
            return Err(IdentityRejected::Malformed);
        }
        Ok(SignedInUser {
            subject: claims.sub,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_need_both_arn_and_issuer_and_derive_the_key_url() {
        let arn = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/app/orders-alb/50dc6c495c0c9188";
        let c = AlbOidcConfig::from_settings(Some(arn), Some("https://idp.example"), None)
            .unwrap()
            .unwrap();
        assert_eq!(
            c.keys_url,
            "https://public-keys.auth.elb.eu-west-1.amazonaws.com"
        );
        assert!(AlbOidcConfig::from_settings(None, None, None)
            .unwrap()
            .is_none());
        assert!(AlbOidcConfig::from_settings(Some(""), Some(" "), None)
            .unwrap()
            .is_none());
        assert!(matches!(
            AlbOidcConfig::from_settings(Some(arn), None, None),
            Err(AlbConfigError::MissingIssuer)
        ));
        assert!(matches!(
            AlbOidcConfig::from_settings(None, Some("https://idp.example"), None),
            Err(AlbConfigError::MissingArn)
        ));
        assert!(matches!(
            AlbOidcConfig::from_settings(Some("orders-alb"), Some("https://idp.example"), None),
            Err(AlbConfigError::BadArn(_))
        ));
        let c = AlbOidcConfig::from_settings(
            Some(arn),
            Some("https://idp.example"),
            Some("http://127.0.0.1:9/keys/"),
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.keys_url, "http://127.0.0.1:9/keys");
    }

    #[test]
    fn key_ids_are_plain_path_segments() {
        assert!(valid_kid("a0b1c2d3-e4f5-6789-abcd-ef0123456789"));
        for bad in ["", "../x", "a/b", "a?b", "a b", &"k".repeat(129)] {
            assert!(!valid_kid(bad), "{bad:?}");
        }
    }

    #[test]
    fn padded_and_unpadded_parts_decode_alike() {
        assert_eq!(decode_part("eyJhIjoxfQ==").unwrap(), b"{\"a\":1}");
        assert_eq!(decode_part("eyJhIjoxfQ").unwrap(), b"{\"a\":1}");
        assert_eq!(decode_part("e+/"), Err(IdentityRejected::Malformed));
    }
}
