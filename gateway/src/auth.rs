//! JWT verification and minting with one pinned algorithm.
//!
//! - HS256 with a shared secret (development).
//! - RS256 or EdDSA with public keys named by key id (`kid`), loaded from PEM
//!   files (production). A token must name one of the configured `kid`s.
//!
//! The token travels in the Socket.IO CONNECT auth payload (`{"token": ...}`) or
//! in an `Authorization: Bearer` header for REST; never in a URL. It is never
//! logged: refusals log only the reason, and oversized tokens are refused
//! before any parsing.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// The largest clock skew accepted on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 30;

/// Tokens longer than this are refused before parsing, in bytes.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The role claim value of worker and backend tokens.
pub const ROLE_SERVICE: &str = "service";
/// The role claim value of administrators.
pub const ROLE_ADMIN: &str = "admin";
/// The role claim value of people who may read analytics and nothing more
/// (a product team's dashboard): no publishing, no revoking.
pub const ROLE_ANALYTICS: &str = "analytics";

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
    /// Not before, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// `service` or `admin` for privileged tokens; absent for end users.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// The non-public topics this user may read: exact names, or prefixes
    /// ending in `*` (`room:42:*`). Public topics need no claim.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topics: Vec<String>,
}

impl Claims {
    /// Whether the token lists topic `name` (exactly, or by a `prefix*` pattern).
    pub fn may_read_topic(&self, name: &str) -> bool {
        self.topics.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => p == name,
        })
    }

    /// Whether the token may publish and read analytics (`service` or `admin`).
    pub fn is_service(&self) -> bool {
        matches!(self.role.as_deref(), Some(ROLE_SERVICE | ROLE_ADMIN))
    }

    /// Whether the token may read analytics (`analytics`, `service` or `admin`).
    pub fn may_read_analytics(&self) -> bool {
        self.is_service() || self.role.as_deref() == Some(ROLE_ANALYTICS)
    }

    /// Whether the token is an administrator's.
    pub fn is_admin(&self) -> bool {
        self.role.as_deref() == Some(ROLE_ADMIN)
    }
}

/// The signature algorithm the gateway accepts; exactly one is pinned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
#[non_exhaustive]
pub enum JwtAlgorithm {
    /// HMAC-SHA256 with a shared secret (development).
    #[default]
    Hs256,
    /// RSA PKCS#1 v1.5 with SHA-256, public keys by `kid`.
    Rs256,
    /// Ed25519, public keys by `kid`.
    #[value(name = "eddsa")]
    EdDsa,
}

impl JwtAlgorithm {
    fn algorithm(self) -> Algorithm {
        match self {
            Self::Hs256 => Algorithm::HS256,
            Self::Rs256 => Algorithm::RS256,
            Self::EdDsa => Algorithm::EdDSA,
        }
    }
}

/// A token was refused or a key did not load. Clients only ever see
/// "unauthorized"; the variant is for logs and never contains the token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// Signature, algorithm, claims or format are wrong.
    #[error("token refused: {0}")]
    Invalid(#[from] jsonwebtoken::errors::Error),
    /// The token is longer than [`MAX_TOKEN_BYTES`].
    #[error("token refused: longer than {MAX_TOKEN_BYTES} bytes")]
    TooLarge,
    /// The token names no configured key id.
    #[error("token refused: unknown or missing key id")]
    UnknownKey,
    /// `sub` is empty.
    #[error("token refused: empty subject")]
    EmptySubject,
    /// This verifier has no private key; mint tokens with the issuer's key.
    #[error("no signing key configured")]
    NoSigningKey,
    /// A configured key did not parse; check the PEM file.
    #[error("key {kid:?} did not load: {source}")]
    BadKey {
        /// The key id.
        kid: String,
        /// Why.
        source: jsonwebtoken::errors::Error,
    },
}

/// Verifies (and, when it holds a signing key, mints) tokens of one pinned algorithm.
#[derive(Clone)]
pub struct JwtAuth {
    algorithm: JwtAlgorithm,
    /// HS256: one key under "". Asymmetric: one key per `kid`.
    decoding: HashMap<String, DecodingKey>,
    encoding: Option<(Option<String>, EncodingKey)>,
    validation: Validation,
    issuer: String,
    audience: String,
}

impl std::fmt::Debug for JwtAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtAuth")
            .field("algorithm", &self.algorithm)
            .field("kids", &self.decoding.keys().collect::<Vec<_>>())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

fn validation(alg: Algorithm, issuer: &str, audience: &str, leeway: u64) -> Validation {
    let mut validation = Validation::new(alg);
    validation.algorithms = vec![alg];
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[audience]);
    validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
    validation.leeway = leeway.min(LEEWAY_SECS);
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation
}

impl JwtAuth {
    /// HS256 with `secret`; `exp`, `sub`, `iss` and `aud` are required.
    pub fn hs256(secret: &[u8], issuer: &str, audience: &str) -> Self {
        Self {
            algorithm: JwtAlgorithm::Hs256,
            decoding: HashMap::from([(String::new(), DecodingKey::from_secret(secret))]),
            encoding: Some((None, EncodingKey::from_secret(secret))),
            validation: validation(Algorithm::HS256, issuer, audience, LEEWAY_SECS),
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
        }
    }

    /// RS256 or EdDSA with PEM public keys by key id. Verify-only unless
    /// [`JwtAuth::with_signing_pem`] adds a private key.
    pub fn public_keys<'a>(
        algorithm: JwtAlgorithm,
        keys: impl IntoIterator<Item = (&'a str, &'a [u8])>,
        issuer: &str,
        audience: &str,
    ) -> Result<Self, AuthError> {
        let mut decoding = HashMap::new();
        for (kid, pem) in keys {
            let key = match algorithm {
                JwtAlgorithm::Rs256 => DecodingKey::from_rsa_pem(pem),
                JwtAlgorithm::EdDsa => DecodingKey::from_ed_pem(pem),
                JwtAlgorithm::Hs256 => Ok(DecodingKey::from_secret(pem)),
            }
            .map_err(|source| AuthError::BadKey {
                kid: kid.to_owned(),
                source,
            })?;
            decoding.insert(kid.to_owned(), key);
        }
        Ok(Self {
            algorithm,
            decoding,
            encoding: None,
            validation: validation(algorithm.algorithm(), issuer, audience, LEEWAY_SECS),
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
        })
    }

    /// Adds a PEM private key (named `kid` in minted headers) for minting.
    pub fn with_signing_pem(mut self, kid: &str, pem: &[u8]) -> Result<Self, AuthError> {
        let key = match self.algorithm {
            JwtAlgorithm::Rs256 => EncodingKey::from_rsa_pem(pem),
            JwtAlgorithm::EdDsa => EncodingKey::from_ed_pem(pem),
            JwtAlgorithm::Hs256 => Ok(EncodingKey::from_secret(pem)),
        }
        .map_err(|source| AuthError::BadKey {
            kid: kid.to_owned(),
            source,
        })?;
        self.encoding = Some((Some(kid.to_owned()), key));
        Ok(self)
    }

    /// The same verifier with a leeway of `secs` (capped at [`LEEWAY_SECS`]).
    pub fn with_leeway(mut self, secs: u64) -> Self {
        self.validation.leeway = secs.min(LEEWAY_SECS);
        self
    }

    /// The accepted clock skew, in seconds.
    pub fn leeway(&self) -> u64 {
        self.validation.leeway
    }

    /// The pinned algorithm.
    pub fn algorithm(&self) -> JwtAlgorithm {
        self.algorithm
    }

    /// Checks size, algorithm, key id, signature, `exp`, `nbf`, issuer,
    /// audience and subject.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::TooLarge);
        }
        let header = jsonwebtoken::decode_header(token)?;
        if header.alg != self.algorithm.algorithm() {
            return Err(jsonwebtoken::errors::Error::from(
                jsonwebtoken::errors::ErrorKind::InvalidAlgorithm,
            )
            .into());
        }
        let key = match self.algorithm {
            JwtAlgorithm::Hs256 => self.decoding.get(""),
            _ => header.kid.as_deref().and_then(|k| self.decoding.get(k)),
        }
        .ok_or(AuthError::UnknownKey)?;
        let data = jsonwebtoken::decode::<Claims>(token, key, &self.validation)?;
        if data.claims.sub.is_empty() {
            return Err(AuthError::EmptySubject);
        }
        Ok(data.claims)
    }

    /// A token for `sub` valid for `ttl_secs` from now.
    pub fn mint(&self, sub: &str, ttl_secs: u64) -> Result<String, AuthError> {
        self.mint_with_role(sub, ttl_secs, None)
    }

    /// A token for `sub` with `role` (e.g. [`ROLE_SERVICE`]).
    pub fn mint_with_role(
        &self,
        sub: &str,
        ttl_secs: u64,
        role: Option<&str>,
    ) -> Result<String, AuthError> {
        let now = unix_secs();
        self.mint_claims(&Claims {
            sub: sub.to_owned(),
            exp: now + ttl_secs,
            iat: now,
            nbf: None,
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            role: role.map(str::to_owned),
            topics: Vec::new(),
        })
    }

    /// A token carrying exactly `claims` (tests use it for expired tokens).
    pub fn mint_claims(&self, claims: &Claims) -> Result<String, AuthError> {
        let (kid, key) = self.encoding.as_ref().ok_or(AuthError::NoSigningKey)?;
        let mut header = Header::new(self.algorithm.algorithm());
        header.kid = kid.clone();
        Ok(jsonwebtoken::encode(&header, claims, key)?)
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
