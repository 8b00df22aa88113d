//! Graceful shutdown: every socket gets `session:shutdown:v1 {retryInMs}`
//! (jittered per socket), then its transport closes (no Socket.IO DISCONNECT,
//! so official clients reconnect by themselves); new CONNECTs are refused and
//! `/readyz` turns 503; the binary exits 0 on SIGTERM within a bounded time.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{Backend, Client, Closed, Gateway};
use liveline_gateway::Config;
use serde_json::json;

async fn drain_tells_every_socket_to_reconnect_with_jitter_then_refuses(backend: Backend) {
    let gw = Gateway::start_with(backend, |c| {
        c.shutdown_jitter = Duration::from_millis(3000);
        c.shutdown_timeout = Duration::from_secs(3);
    })
    .await;
    let mut clients = Vec::new();
    for i in 0..6 {
        clients.push(gw.connect(&format!("user-{i}")).await);
    }
    let handle = gw.handle.clone();
    let drained = tokio::spawn(async move { handle.drain().await });
    let mut delays = Vec::new();
    for c in &mut clients {
        let (seen, how) = c.until_closed_by(Duration::from_secs(5)).await;
        assert_eq!(
            how,
            Closed::Transport,
            "the transport closes, no DISCONNECT"
        );
        let notice = seen
            .iter()
            .find(|(n, _)| n == "session:shutdown:v1")
            .unwrap_or_else(|| panic!("no shutdown notice: {seen:?}"));
        let retry = notice.1["retryInMs"].as_u64().unwrap();
        assert!(retry <= 3000, "{notice:?}");
        delays.push(retry);
    }
    assert_eq!(drained.await.unwrap(), 6);
    delays.dedup();
    assert!(delays.len() > 1, "jittered per socket: {delays:?}");
    assert!(gw.handle.draining());
    let refused = Client::connect(gw.addr, json!({"token": gw.token("late")}))
        .await
        .err()
        .expect("a draining node refuses CONNECT");
    assert_eq!(refused["message"], "unavailable");
    let ready = reqwest_status(&gw, "/readyz").await;
    assert_eq!(ready, 503);
    gw.stop().await;
}

async fn reqwest_status(gw: &Gateway, path: &str) -> u16 {
    use tower::ServiceExt;
    let req = axum::http::Request::get(path)
        .body(axum::body::Body::empty())
        .unwrap();
    gw.router
        .clone()
        .oneshot(req)
        .await
        .unwrap()
        .status()
        .as_u16()
}

on_every_broker!(drain_tells_every_socket_to_reconnect_with_jitter_then_refuses);

#[tokio::test]
async fn binary_on_sigterm_notifies_clients_and_exits_zero() {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_liveline-gateway"))
        .args([
            "serve",
            "--port",
            "0",
            "--shutdown-jitter-ms",
            "1000",
            "--shutdown-timeout-secs",
            "5",
            "--ping-interval",
            "300ms",
        ])
        .env_remove("LIVELINE_REDIS_URL")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let addr = common::listening(child.stdout.take().unwrap()).await;
    let token = Config::default().jwt().unwrap().mint("alice", 600).unwrap();
    let mut client = Client::connect(addr, json!({ "token": token }))
        .await
        .unwrap();
    let pid = child.id().unwrap();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let seen = client.until_closed(Duration::from_secs(5)).await;
    let notice = seen
        .iter()
        .find(|(n, _)| n == "session:shutdown:v1")
        .unwrap_or_else(|| panic!("no shutdown notice: {seen:?}"));
    assert!(
        notice.1["retryInMs"].as_u64().unwrap() <= 1000,
        "{notice:?}"
    );
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("the gateway exits within the bound")
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
}
