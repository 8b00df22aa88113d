//! CONNECT is refused with a generic `unauthorized` unless the token is valid.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Backend, Client, Gateway};
use liveline_gateway::auth::{Claims, JwtAuth, unix_secs};
use serde_json::json;

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
        iss: iss.into(),
        aud: aud.into(),
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

on_both_brokers!(
    bad_expired_or_foreign_tokens_get_connect_error_unauthorized,
    token_with_alg_none_is_refused,
);
