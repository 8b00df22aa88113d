//! CONNECT is refused with a generic `unauthorized` unless the token is valid.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Backend, Client, Gateway};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use liveline_gateway::auth::{AuthError, Claims, JwtAlgorithm, JwtAuth, unix_secs};
use serde_json::json;

const RSA_PUBLIC: &[u8] = include_bytes!("keys/rsa-public.pem");
const RSA_PRIVATE: &[u8] = include_bytes!("keys/rsa-private.pem");
const RSA_OTHER_PRIVATE: &[u8] = include_bytes!("keys/rsa-other-private.pem");
const ED_PUBLIC: &[u8] = include_bytes!("keys/ed-public.pem");
const ED_PRIVATE: &[u8] = include_bytes!("keys/ed-private.pem");

fn claims(sub: &str, exp: u64) -> Claims {
    Claims {
        sub: sub.into(),
        exp,
        iat: unix_secs(),
        nbf: None,
        iss: "liveline".into(),
        aud: "liveline".into(),
        role: None,
        topics: Vec::new(),
    }
}

/// A gateway pinned to `alg` with the public key `pem` under kid `k1`.
async fn asymmetric(backend: Backend, alg: JwtAlgorithm, pem: &[u8]) -> Gateway {
    let pem = pem.to_vec();
    Gateway::start_with(backend, move |c| {
        c.jwt_algorithm = alg;
        c.jwt_public_keys = vec![("k1".to_owned(), pem)];
    })
    .await
}

fn signer(alg: JwtAlgorithm, public: &[u8], kid: &str, private: &[u8]) -> JwtAuth {
    JwtAuth::public_keys(alg, [(kid, public)], "liveline", "liveline")
        .unwrap()
        .with_signing_pem(kid, private)
        .unwrap()
}

async fn refused(gw: &Gateway, auth: serde_json::Value) {
    let err = Client::connect(gw.addr, auth)
        .await
        .err()
        .expect("connect must be refused");
    assert_eq!(err, json!({"message": "unauthorized"}));
}

async fn bad_expired_or_foreign_tokens_get_connect_error_unauthorized(backend: Backend) {
    let gw = Gateway::start(backend).await;
    let now = unix_secs();
    let claims = |exp: u64, iss: &str, aud: &str| Claims {
        sub: "alice".into(),
        exp,
        iat: now,
        nbf: None,
        iss: iss.into(),
        aud: aud.into(),
        role: None,
        topics: Vec::new(),
    };
    let jwt = gw.jwt();
    refused(&gw, json!({})).await;
    refused(&gw, json!({"token": "not-a-jwt"})).await;
    // Expired beyond the 30 s leeway.
    refused(
        &gw,
        json!({"token": jwt.mint_claims(&claims(now - 120, "liveline", "liveline")).unwrap()}),
    )
    .await;
    // Signed with another secret.
    let other = JwtAuth::hs256(b"another-secret", "liveline", "liveline");
    refused(&gw, json!({"token": other.mint("alice", 600).unwrap()})).await;
    // Wrong issuer, wrong audience.
    refused(
        &gw,
        json!({"token": jwt.mint_claims(&claims(now + 600, "evil", "liveline")).unwrap()}),
    )
    .await;
    refused(
        &gw,
        json!({"token": jwt.mint_claims(&claims(now + 600, "liveline", "evil")).unwrap()}),
    )
    .await;
    // A valid token still connects.
    let ok = Client::connect(gw.addr, json!({"token": gw.token("alice")})).await;
    assert!(ok.is_ok());
    ok.unwrap().close().await;
    gw.stop().await;
}

async fn token_with_alg_none_is_refused(backend: Backend) {
    let gw = Gateway::start(backend).await;
    use base64_like::b64;
    let header = b64(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = b64(format!(
        r#"{{"sub":"alice","exp":{},"iss":"liveline","aud":"liveline"}}"#,
        unix_secs() + 600
    )
    .as_bytes());
    refused(&gw, json!({"token": format!("{header}.{payload}.")})).await;
    gw.stop().await;
}

/// Base64url without padding, enough for a forged test token.
mod base64_like {
    pub fn b64(input: &[u8]) -> String {
        const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in input.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..=chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }
}

async fn rs256_gateway_accepts_its_key_and_refuses_forgeries_and_alg_confusion(backend: Backend) {
    let gw = asymmetric(backend, JwtAlgorithm::Rs256, RSA_PUBLIC).await;
    let good = signer(JwtAlgorithm::Rs256, RSA_PUBLIC, "k1", RSA_PRIVATE);
    let token = good.mint("alice", 600).unwrap();
    let ok = Client::connect(gw.addr, json!({ "token": token })).await;
    assert!(ok.is_ok(), "a valid RS256 token connects");
    ok.unwrap().close().await;
    // Wrong key under the right kid.
    let wrong = signer(JwtAlgorithm::Rs256, RSA_PUBLIC, "k1", RSA_OTHER_PRIVATE);
    refused(&gw, json!({"token": wrong.mint("alice", 600).unwrap()})).await;
    // Right key, unknown kid.
    let unknown = signer(JwtAlgorithm::Rs256, RSA_PUBLIC, "k9", RSA_PRIVATE);
    refused(&gw, json!({"token": unknown.mint("alice", 600).unwrap()})).await;
    // No kid at all.
    let no_kid = jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &claims("alice", unix_secs() + 600),
        &EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap(),
    )
    .unwrap();
    refused(&gw, json!({ "token": no_kid })).await;
    // Algorithm confusion: HS256 keyed with the RSA public key's PEM.
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("k1".into());
    let confused = jsonwebtoken::encode(
        &header,
        &claims("alice", unix_secs() + 600),
        &EncodingKey::from_secret(RSA_PUBLIC),
    )
    .unwrap();
    refused(&gw, json!({ "token": confused })).await;
    // The development HS256 secret means nothing here.
    let dev = JwtAuth::hs256(
        liveline_gateway::DEV_JWT_SECRET.as_bytes(),
        "liveline",
        "liveline",
    );
    refused(&gw, json!({"token": dev.mint("alice", 600).unwrap()})).await;
    gw.stop().await;
}

async fn eddsa_gateway_accepts_ed25519_and_refuses_rs256(backend: Backend) {
    let gw = asymmetric(backend, JwtAlgorithm::EdDsa, ED_PUBLIC).await;
    let good = signer(JwtAlgorithm::EdDsa, ED_PUBLIC, "k1", ED_PRIVATE);
    let ok = Client::connect(gw.addr, json!({"token": good.mint("alice", 600).unwrap()})).await;
    assert!(ok.is_ok(), "a valid EdDSA token connects");
    ok.unwrap().close().await;
    let rsa = signer(JwtAlgorithm::Rs256, RSA_PUBLIC, "k1", RSA_PRIVATE);
    refused(&gw, json!({"token": rsa.mint("alice", 600).unwrap()})).await;
    gw.stop().await;
}

async fn not_yet_valid_missing_or_empty_sub_and_oversized_tokens_are_refused(backend: Backend) {
    let gw = Gateway::start(backend).await;
    let jwt = gw.jwt();
    let now = unix_secs();
    let mut early = claims("alice", now + 600);
    early.nbf = Some(now + 300);
    refused(&gw, json!({"token": jwt.mint_claims(&early).unwrap()})).await;
    refused(
        &gw,
        json!({"token": jwt.mint_claims(&claims("", now + 600)).unwrap()}),
    )
    .await;
    let secret = EncodingKey::from_secret(liveline_gateway::DEV_JWT_SECRET.as_bytes());
    let no_sub = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"exp": now + 600, "iss": "liveline", "aud": "liveline"}),
        &secret,
    )
    .unwrap();
    refused(&gw, json!({ "token": no_sub })).await;
    // Validly signed but 16 KB long: refused before parsing.
    let big = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "alice", "exp": now + 600, "iss": "liveline", "aud": "liveline",
                "pad": "x".repeat(12 * 1024)}),
        &secret,
    )
    .unwrap();
    assert!(big.len() >= 16 * 1024);
    assert!(matches!(jwt.verify(&big), Err(AuthError::TooLarge)));
    refused(&gw, json!({ "token": big })).await;
    gw.stop().await;
}

async fn live_socket_gets_session_expired_then_is_closed_when_its_token_expires(backend: Backend) {
    let gw = Gateway::start_with(backend, |c| c.jwt_leeway_secs = 0).await;
    let token = gw.jwt().mint("alice", 1).unwrap();
    let mut alice = Client::connect(gw.addr, json!({ "token": token }))
        .await
        .unwrap();
    let seen = alice.until_closed(Duration::from_secs(5)).await;
    let expired: Vec<_> = seen
        .iter()
        .filter(|(n, _)| n == liveline_gateway::socket::SESSION_EXPIRED_V1)
        .collect();
    assert_eq!(expired.len(), 1, "{seen:?}");
    assert_eq!(expired[0].1["reason"], "token_expired");
    // A socket with a long-lived token stays open meanwhile, as one whose
    // token expires further than any clock reaches.
    let mut bob = gw.connect("bob").await;
    let far = liveline_gateway::auth::Claims {
        sub: "carol".to_owned(),
        exp: u64::MAX - 1,
        iat: liveline_gateway::auth::unix_secs(),
        nbf: None,
        iss: gw.config.jwt_issuer.clone(),
        aud: gw.config.jwt_audience.clone(),
        role: None,
        topics: Vec::new(),
    };
    let far = gw.jwt().mint_claims(&far).unwrap();
    let mut carol = Client::connect(gw.addr, json!({ "token": far }))
        .await
        .unwrap();
    assert!(bob.maybe_event(Duration::from_millis(200)).await.is_none());
    assert!(carol.maybe_event(Duration::from_millis(10)).await.is_none());
    let ack = carol.call("probe:v1", json!({})).await;
    assert!(ack.is_object(), "carol's socket still answers: {ack}");
    bob.close().await;
    carol.close().await;
    gw.stop().await;
}

/// `Handle::revoke`: the user's tokens issued up to the revocation (by `iat`)
/// are refused; tokens issued later, and other users' tokens, are not. A
/// refused token takes no place in the user's cap (one here): the check and
/// the place are one step.
async fn tokens_issued_before_a_revocation_are_refused(backend: Backend) {
    let gw = Gateway::start_with(backend, |c| c.max_connections_per_user = 1).await;
    let now = unix_secs();
    let token = |sub: &str, iat: u64| {
        gw.jwt()
            .mint_claims(&Claims {
                sub: sub.into(),
                exp: now + 600,
                iat,
                nbf: None,
                iss: "liveline".into(),
                aud: "liveline".into(),
                role: None,
                topics: Vec::new(),
            })
            .unwrap()
    };
    let (before, later) = (token("alice", now - 5), token("alice", now + 2));
    let bob = token("bob", now - 5);
    Client::connect(gw.addr, json!({"token": before}))
        .await
        .unwrap()
        .close()
        .await;
    gw.handle.revoke("alice").await.unwrap();
    for _ in 0..3 {
        refused(&gw, json!({"token": before})).await;
    }
    let alice = Client::connect(gw.addr, json!({"token": later.clone()}))
        .await
        .expect("the revoked tries left the one place free");
    let full = Client::connect(gw.addr, json!({"token": later}))
        .await
        .err()
        .expect("the cap of one holds");
    assert_eq!(full, json!({"message": "too_many_connections"}));
    alice.close().await;
    Client::connect(gw.addr, json!({"token": bob}))
        .await
        .unwrap()
        .close()
        .await;
    gw.stop().await;
}

on_every_broker!(
    tokens_issued_before_a_revocation_are_refused,
    bad_expired_or_foreign_tokens_get_connect_error_unauthorized,
    token_with_alg_none_is_refused,
    rs256_gateway_accepts_its_key_and_refuses_forgeries_and_alg_confusion,
    eddsa_gateway_accepts_ed25519_and_refuses_rs256,
    not_yet_valid_missing_or_empty_sub_and_oversized_tokens_are_refused,
    live_socket_gets_session_expired_then_is_closed_when_its_token_expires,
);
