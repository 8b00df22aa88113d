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

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

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

/// A verification key: HS256's secret, keyed into its HMAC once (each token
/// then costs a copy of that state, not the key schedule), or a public key.
#[derive(Clone)]
enum Key {
    Hmac(Hmac<Sha256>),
    Public(DecodingKey),
}

/// The header fields a token is checked by; the others are ignored.
#[derive(Deserialize)]
struct Head<'a> {
    alg: Algorithm,
    #[serde(borrow, default)]
    kid: Option<Cow<'a, str>>,
}

/// Verifies (and, when it holds a signing key, mints) tokens of one pinned algorithm.
///
/// [`JwtAuth::verify`] reads a token once: its header, its signature (with
/// `jsonwebtoken`'s verifiers for RS256 and EdDSA, with the keyed HMAC for
/// HS256) and its claims straight into [`Claims`], then checks them.
/// `jsonwebtoken::decode` read the header twice and the claims twice, and
/// keyed the HMAC anew for every token: a quarter of a handshake's
/// instructions (docs/benchmarks.md).
#[derive(Clone)]
pub struct JwtAuth {
    algorithm: JwtAlgorithm,
    /// HS256: one key under "". Asymmetric: one key per `kid`.
    keys: HashMap<String, Key>,
    encoding: Option<(Option<String>, EncodingKey)>,
    leeway: u64,
    issuer: String,
    audience: String,
}

impl std::fmt::Debug for JwtAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtAuth")
            .field("algorithm", &self.algorithm)
            .field("kids", &self.keys.keys().collect::<Vec<_>>())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

/// HS256's key, keyed once.
fn hmac_key(secret: &[u8]) -> Key {
    // HMAC takes a key of any length: longer ones are hashed, shorter padded.
    Key::Hmac(Hmac::new_from_slice(secret).expect("HMAC accepts keys of any length"))
}

/// A refusal of kind `kind`.
fn refused(kind: ErrorKind) -> AuthError {
    AuthError::Invalid(kind.into())
}

/// One base64url part of a token (no padding, as JWS writes it).
fn part(b64: &str) -> Result<Vec<u8>, AuthError> {
    Ok(URL_SAFE_NO_PAD
        .decode(b64)
        .map_err(jsonwebtoken::errors::Error::from)?)
}

/// A decoded part read as JSON.
fn json<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, AuthError> {
    Ok(serde_json::from_slice(bytes).map_err(jsonwebtoken::errors::Error::from)?)
}

impl JwtAuth {
    /// HS256 with `secret`; `exp`, `sub`, `iss` and `aud` are required.
    pub fn hs256(secret: &[u8], issuer: &str, audience: &str) -> Self {
        Self {
            algorithm: JwtAlgorithm::Hs256,
            keys: HashMap::from([(String::new(), hmac_key(secret))]),
            encoding: Some((None, EncodingKey::from_secret(secret))),
            leeway: LEEWAY_SECS,
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
        let mut loaded = HashMap::new();
        for (kid, pem) in keys {
            let key = match algorithm {
                JwtAlgorithm::Rs256 => DecodingKey::from_rsa_pem(pem).map(Key::Public),
                JwtAlgorithm::EdDsa => DecodingKey::from_ed_pem(pem).map(Key::Public),
                JwtAlgorithm::Hs256 => Ok(hmac_key(pem)),
            }
            .map_err(|source| AuthError::BadKey {
                kid: kid.to_owned(),
                source,
            })?;
            loaded.insert(kid.to_owned(), key);
        }
        Ok(Self {
            algorithm,
            keys: loaded,
            encoding: None,
            leeway: LEEWAY_SECS,
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
        self.leeway = secs.min(LEEWAY_SECS);
        self
    }

    /// The accepted clock skew, in seconds.
    pub fn leeway(&self) -> u64 {
        self.leeway
    }

    /// The pinned algorithm.
    pub fn algorithm(&self) -> JwtAlgorithm {
        self.algorithm
    }

    /// Checks size, algorithm, key id, signature, `exp`, `nbf`, issuer,
    /// audience and subject, against the clock.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        self.verify_at(token, unix_secs())
    }

    /// [`JwtAuth::verify`] at `now` (unix seconds).
    pub fn verify_at(&self, token: &str, now: u64) -> Result<Claims, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::TooLarge);
        }
        // header.payload.signature; the signature covers "header.payload".
        let (message, signature) = token
            .rsplit_once('.')
            .ok_or_else(|| refused(ErrorKind::InvalidToken))?;
        let (header, payload) = message
            .split_once('.')
            .ok_or_else(|| refused(ErrorKind::InvalidToken))?;
        let header = part(header)?;
        let head: Head = json(&header)?;
        if head.alg != self.algorithm.algorithm() {
            return Err(refused(ErrorKind::InvalidAlgorithm));
        }
        let key = match self.algorithm {
            JwtAlgorithm::Hs256 => self.keys.get(""),
            _ => head.kid.as_deref().and_then(|k| self.keys.get(k)),
        }
        .ok_or(AuthError::UnknownKey)?;
        let signed = match key {
            Key::Hmac(keyed) => {
                let mut mac = keyed.clone();
                mac.update(message.as_bytes());
                // A constant-time comparison.
                mac.verify_slice(&part(signature)?).is_ok()
            }
            Key::Public(key) => {
                jsonwebtoken::crypto::verify(signature, message.as_bytes(), key, head.alg)?
            }
        };
        if !signed {
            return Err(refused(ErrorKind::InvalidSignature));
        }
        // `exp`, `sub`, `iss` and `aud` are required by the type.
        let claims: Claims = json(&part(payload)?)?;
        if claims.exp.saturating_add(self.leeway) < now {
            return Err(refused(ErrorKind::ExpiredSignature));
        }
        if claims
            .nbf
            .is_some_and(|nbf| nbf > now.saturating_add(self.leeway))
        {
            return Err(refused(ErrorKind::ImmatureSignature));
        }
        if claims.iss != self.issuer {
            return Err(refused(ErrorKind::InvalidIssuer));
        }
        if claims.aud != self.audience {
            return Err(refused(ErrorKind::InvalidAudience));
        }
        if claims.sub.is_empty() {
            return Err(AuthError::EmptySubject);
        }
        Ok(claims)
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECRET: &[u8] = b"a test secret";
    const NOW: u64 = 1_800_000_000;

    fn auth() -> JwtAuth {
        JwtAuth::hs256(SECRET, "iss", "aud")
    }

    /// A token of `header` and `claims` (JSON text), signed with `secret`.
    fn token(header: &str, claims: &str, secret: &[u8]) -> String {
        let message = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let key = EncodingKey::from_secret(secret);
        let sig =
            jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256).expect("signs");
        format!("{message}.{sig}")
    }

    fn claims(exp: u64, extra: &str) -> String {
        format!(r#"{{"sub":"u1","exp":{exp},"iat":{NOW},"iss":"iss","aud":"aud"{extra}}}"#)
    }

    const HS256: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

    #[test]
    fn a_good_token_gives_its_claims() {
        let t = token(
            HS256,
            &claims(NOW + 60, r#","role":"service","topics":["a*"]"#),
            SECRET,
        );
        let c = auth().verify_at(&t, NOW).expect("accepted");
        assert_eq!((c.sub.as_str(), c.exp, c.iat), ("u1", NOW + 60, NOW));
        assert!(c.is_service());
        assert!(c.may_read_topic("ab"));
        // Minted by jsonwebtoken, read here.
        let minted = auth().mint("u2", 60).expect("mints");
        assert_eq!(auth().verify(&minted).expect("accepted").sub, "u2");
    }

    #[test]
    fn expiry_and_not_before_hold_to_the_second_with_the_leeway() {
        let a = auth();
        let at = |exp: u64| token(HS256, &claims(exp, ""), SECRET);
        assert!(a.verify_at(&at(NOW - LEEWAY_SECS), NOW).is_ok());
        assert!(matches!(
            a.verify_at(&at(NOW - LEEWAY_SECS - 1), NOW),
            Err(AuthError::Invalid(e)) if *e.kind() == ErrorKind::ExpiredSignature
        ));
        let strict = a.clone().with_leeway(0);
        assert!(strict.verify_at(&at(NOW), NOW).is_ok());
        assert!(strict.verify_at(&at(NOW - 1), NOW).is_err());
        let nbf = |nbf: u64| {
            token(
                HS256,
                &claims(NOW + 600, &format!(r#","nbf":{nbf}"#)),
                SECRET,
            )
        };
        assert!(a.verify_at(&nbf(NOW + LEEWAY_SECS), NOW).is_ok());
        assert!(matches!(
            a.verify_at(&nbf(NOW + LEEWAY_SECS + 1), NOW),
            Err(AuthError::Invalid(e)) if *e.kind() == ErrorKind::ImmatureSignature
        ));
        // Near the end of time: no overflow, the token is simply valid.
        assert!(a.verify_at(&at(u64::MAX), u64::MAX).is_ok());
    }

    #[test]
    fn claims_that_are_wrong_missing_or_of_another_shape_are_refused() {
        let a = auth();
        let refused = |claims: &str| a.verify_at(&token(HS256, claims, SECRET), NOW).is_err();
        let exp = NOW + 60;
        assert!(refused(&format!(
            r#"{{"sub":"u1","exp":{exp},"iss":"other","aud":"aud"}}"#
        )));
        assert!(refused(&format!(
            r#"{{"sub":"u1","exp":{exp},"iss":"iss","aud":"other"}}"#
        )));
        assert!(refused(&format!(
            r#"{{"sub":"u1","exp":{exp},"iss":"iss","aud":["aud"]}}"#
        )));
        assert!(refused(&format!(
            r#"{{"sub":"","exp":{exp},"iss":"iss","aud":"aud"}}"#
        )));
        assert!(refused(&format!(
            r#"{{"exp":{exp},"iss":"iss","aud":"aud"}}"#
        )));
        assert!(refused(r#"{"sub":"u1","iss":"iss","aud":"aud"}"#));
        assert!(refused(&format!(
            r#"{{"sub":"u1","exp":{exp},"aud":"aud"}}"#
        )));
        assert!(refused(&format!(
            r#"{{"sub":"u1","exp":{exp},"iss":"iss"}}"#
        )));
        assert!(refused(&format!(
            r#"{{"sub":"u1","exp":"{exp}","iss":"iss","aud":"aud"}}"#
        )));
        assert!(refused(&format!(
            r#"{{"sub":"u1","exp":{exp}.5,"iss":"iss","aud":"aud"}}"#
        )));
        assert!(refused(&format!(
            r#"{{"sub":"u1","sub":"u2","exp":{exp},"iss":"iss","aud":"aud"}}"#
        )));
        assert!(refused("[]"));
        assert!(refused("not json"));
        // Escapes are read as JSON.
        let c = a
            .verify_at(
                &token(
                    HS256,
                    &format!(r#"{{"sub":"u\"1\u00e9","exp":{exp},"iss":"\u0069ss","aud":"aud"}}"#),
                    SECRET,
                ),
                NOW,
            )
            .expect("accepted");
        assert_eq!(c.sub, "u\"1é");
    }

    #[test]
    fn the_header_must_name_the_pinned_algorithm() {
        let a = auth();
        let c = claims(NOW + 60, "");
        for header in [
            r#"{"alg":"none"}"#,
            r#"{"alg":"HS384"}"#,
            r#"{"alg":"RS256"}"#,
            r#"{"alg":"hs256"}"#,
            r#"{"typ":"JWT"}"#,
            r#"{"alg":"HS256","kid":5}"#,
            "{}",
            "null",
        ] {
            assert!(
                a.verify_at(&token(header, &c, SECRET), NOW).is_err(),
                "{header}"
            );
        }
        // Other fields, and a kid, are allowed with HS256.
        let header = r#"{"kid":"k1","cty":"x","alg":"HS256","x5u":"y"}"#;
        assert!(a.verify_at(&token(header, &c, SECRET), NOW).is_ok());
    }

    #[test]
    fn a_changed_or_foreign_signature_or_a_malformed_token_is_refused() {
        let a = auth();
        let good = token(HS256, &claims(NOW + 60, ""), SECRET);
        assert!(a.verify_at(&good, NOW).is_ok());
        assert!(matches!(
            a.verify_at(&token(HS256, &claims(NOW + 60, ""), b"another secret"), NOW),
            Err(AuthError::Invalid(e)) if *e.kind() == ErrorKind::InvalidSignature
        ));
        let (message, sig) = good.rsplit_once('.').expect("three parts");
        for bad in [
            format!("{message}."),
            format!("{message}.{}", &sig[..sig.len() - 2]),
            format!("{message}.{sig}="),
            format!("{message}.{sig}.{sig}"),
            format!("{message}{sig}"),
            message.to_owned(),
            String::new(),
            "..".to_owned(),
            format!("{message}.{}", sig.replace(['-', '_'], "+")),
        ] {
            assert!(a.verify_at(&bad, NOW).is_err(), "{bad}");
        }
        // Every one-character change is refused.
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.";
        let mut bytes = good.clone().into_bytes();
        for i in 0..bytes.len() {
            let was = bytes[i];
            for &c in alphabet.iter().filter(|&&c| c != was) {
                bytes[i] = c;
                let changed = std::str::from_utf8(&bytes).expect("ascii");
                // Base64's last character may carry unused bits: a change
                // there can decode to the same bytes, which is the same token.
                if let Ok(claims) = a.verify_at(changed, NOW) {
                    assert_eq!(claims.sub, "u1", "{changed}");
                    let same = |s: &str| -> Vec<Vec<u8>> {
                        s.split('.').map(|p| part(p).unwrap_or_default()).collect()
                    };
                    assert_eq!(same(changed), same(&good), "{changed}");
                }
            }
            bytes[i] = was;
        }
        assert!(matches!(
            a.verify_at(&"a".repeat(MAX_TOKEN_BYTES + 1), NOW),
            Err(AuthError::TooLarge)
        ));
    }

    /// A string claim: mostly `good`, else absent, another or of another kind.
    fn field(good: &'static str) -> impl Strategy<Value = Option<String>> {
        prop_oneof![
            6 => Just(Some(format!("\"{good}\""))),
            1 => Just(None),
            1 => Just(Some(r#""other""#.to_owned())),
            1 => Just(Some(r#""""#.to_owned())),
            1 => Just(Some(format!(r#"["{good}"]"#))),
            1 => Just(Some("5".to_owned())),
        ]
    }

    /// A time claim, as seconds from now, or as a value of another kind.
    #[derive(Debug, Clone)]
    enum Time {
        Absent,
        /// Never within 3 s of a boundary (now plus or minus the leeway):
        /// the two verifiers read the clock apart.
        From(i64),
        Raw(&'static str),
    }

    fn time() -> impl Strategy<Value = Time> {
        prop_oneof![
            1 => Just(Time::Absent),
            6 => (-5_000i64..5_000)
                .prop_filter("near a boundary", |d| (d.abs() - LEEWAY_SECS as i64).abs()
                    > 3)
                .prop_map(Time::From),
            1 => Just(Time::Raw("\"1\"")),
            1 => Just(Time::Raw("-1")),
            1 => Just(Time::Raw("1.5")),
        ]
    }

    impl Time {
        fn json(&self, now: u64) -> Option<String> {
            match self {
                Self::Absent => None,
                Self::From(d) => Some((now as i64 + d).to_string()),
                Self::Raw(raw) => Some((*raw).to_owned()),
            }
        }
    }

    proptest! {
        /// The same verdict as `jsonwebtoken::decode` with the checks this
        /// module makes, on tokens of every shape of claim and header.
        #[test]
        fn verdicts_match_jsonwebtoken_decode(
            alg in prop_oneof![6 => Just("HS256"), 1 => Just("HS512"), 1 => Just("none")],
            iss in field("iss"), aud in field("aud"), sub in field("u1"),
            exp in time(), nbf in time(),
            secret in prop_oneof![6 => Just(SECRET), 1 => Just(&b"wrong"[..])],
        ) {
            let now = unix_secs();
            let mut fields = Vec::new();
            for (name, value) in [("iss", iss), ("aud", aud), ("sub", sub), ("exp", exp.json(now)), ("nbf", nbf.json(now))] {
                if let Some(v) = value {
                    fields.push(format!("\"{name}\":{v}"));
                }
            }
            let claims = format!("{{{}}}", fields.join(","));
            let header = format!(r#"{{"alg":"{alg}"}}"#);
            let t = token(&header, &claims, secret);
            let ours = auth().verify_at(&t, now).map(|c| c.sub);
            let mut v = jsonwebtoken::Validation::new(Algorithm::HS256);
            v.set_issuer(&["iss"]);
            v.set_audience(&["aud"]);
            v.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
            v.leeway = LEEWAY_SECS;
            v.validate_nbf = true;
            let theirs = jsonwebtoken::decode::<Claims>(&t, &DecodingKey::from_secret(SECRET), &v)
                .map(|d| d.claims.sub)
                .map_err(AuthError::from)
                .and_then(|s| if s.is_empty() { Err(AuthError::EmptySubject) } else { Ok(s) });
            prop_assert_eq!(ours.is_ok(), theirs.is_ok(), "{} {:?} {:?}", claims, ours, theirs);
        }
    }
}
