//! JWT verification and minting (HS256, pinned).
//!
//! The token travels in the Socket.IO CONNECT auth payload (`{"token": ...}`) or
//! in an `Authorization: Bearer` header for REST; never in a URL. It is never logged.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// The largest clock skew accepted on `exp`, in seconds.
pub const LEEWAY_SECS: u64 = 30;

/// The claims Liveline reads from a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id; the socket joins `user:{sub}`.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Issued at, seconds since the Unix epoch.
    #[serde(default)]
    pub iat: u64,
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
}

/// A token was refused. The reason is for logs only; clients see "unauthorized".
#[derive(Debug, thiserror::Error)]
#[error("token refused: {0}")]
pub struct AuthError(#[from] jsonwebtoken::errors::Error);

/// Verifies and mints HS256 tokens with one secret, issuer and audience.
#[derive(Clone)]
pub struct JwtAuth {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
    audience: String,
}

impl std::fmt::Debug for JwtAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtAuth")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl JwtAuth {
    /// HS256 with `secret`; `exp`, `sub`, `iss` and `aud` are required.
    pub fn hs256(secret: &[u8], issuer: &str, audience: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
        }
    }

    /// Checks signature, algorithm, expiry, issuer and audience.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)?;
        if data.claims.sub.is_empty() {
            return Err(AuthError(
                jsonwebtoken::errors::ErrorKind::InvalidSubject.into(),
            ));
        }
        Ok(data.claims)
    }

    /// A token for `sub` valid for `ttl_secs` from now.
    pub fn mint(&self, sub: &str, ttl_secs: u64) -> Result<String, AuthError> {
        let now = unix_secs();
        self.mint_claims(&Claims {
            sub: sub.to_owned(),
            exp: now + ttl_secs,
            iat: now,
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
        })
    }

    /// A token carrying exactly `claims` (tests use it for expired tokens).
    pub fn mint_claims(&self, claims: &Claims) -> Result<String, AuthError> {
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &self.encoding,
        )?)
    }
}

/// Seconds since the Unix epoch.
pub fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch.
pub fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
