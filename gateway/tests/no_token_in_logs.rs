//! No token ever reaches the logs, whether it is accepted or refused.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use common::{Backend, Client, Gateway};
use liveline_gateway::auth::{Claims, unix_secs};
use serde_json::json;

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every log line of this test binary, with the gateway's own filter asked
/// for TRACE everywhere (even explicitly for the WebSocket crates).
fn logs() -> &'static Buffer {
    static LOGS: OnceLock<Buffer> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Buffer::default();
        let writer = buf.clone();
        use tracing_subscriber::Layer;
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;
        tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(move || writer.clone())
                    .with_ansi(false)
                    .with_filter(liveline_gateway::log_filter(
                        "trace,tungstenite=trace,engineioxide=trace,\
                         tungstenite::protocol=trace,socketioxide::client=trace",
                    )),
            )
            .init();
        buf
    })
}

async fn tokens_never_appear_in_logs_at_trace_level(backend: Backend) {
    let logs = logs();
    let gw = Gateway::start(backend).await;
    let jwt = gw.jwt();
    let good = gw.token("alice");
    let expired = jwt
        .mint_claims(&Claims {
            sub: "alice".into(),
            exp: unix_secs() - 600,
            iat: unix_secs() - 700,
            nbf: None,
            iss: "liveline".into(),
            aud: "liveline".into(),
            role: None,
            topics: Vec::new(),
        })
        .unwrap();
    let foreign = liveline_gateway::auth::JwtAuth::hs256(b"other", "liveline", "liveline")
        .mint("alice", 600)
        .unwrap();
    let garbage = "eyJhbGciOiJIUzI1NiJ9.not-a-token-secret-marker.sig".to_owned();
    for bad in [&expired, &foreign, &garbage] {
        assert!(
            Client::connect(gw.addr, json!({ "token": bad }))
                .await
                .is_err()
        );
    }
    let mut alice = Client::connect(gw.addr, json!({ "token": &good }))
        .await
        .unwrap();
    common::start_job(&mut alice, "k-logs", "research").await;
    alice.events_until(common::is_completed).await;
    alice.close().await;
    gw.stop().await;

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        text.contains("connect refused"),
        "the capture works: refusals are logged (without the token)"
    );
    for token in [&good, &expired, &foreign, &garbage] {
        if let Some(i) = text.find(token.as_str()) {
            let line_start = text[..i].rfind('\n').map_or(0, |p| p + 1);
            panic!(
                "a token was logged: {}",
                &text[line_start..(i + 40).min(text.len())]
            );
        }
        // Not even its signature part.
        let sig = token.rsplit('.').next().unwrap();
        assert!(!text.contains(sig), "a token signature was logged");
    }
}

on_every_broker!(tokens_never_appear_in_logs_at_trace_level);
