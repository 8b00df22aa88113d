//! The official `socket.io-client` v4 (npm) connects with a token, receives
//! events and gets acks. Needs `npm ci --prefix gateway/tests/node`.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;

use common::{Backend, Gateway};
use serde_json::Value;

fn node_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/node")
}

async fn official_socket_io_client_connects_gets_ack_and_job_events(backend: Backend) {
    official_client_session(Gateway::start(backend).await).await;
}

/// The same over socketioxide's WebSocket (`--socketioxide-websocket`)
/// instead of the lean front.
#[tokio::test]
async fn official_websocket_client_over_the_socketioxide_front() {
    let gw = Gateway::start_with(Backend::Memory, |c| c.lean_websocket = false).await;
    official_client_session(gw).await;
}

/// The official client (WebSocket only) connects to `gw`, gets an ack and a
/// job's events in order; a bad token gets the generic refusal.
async fn official_client_session(gw: Gateway) {
    let dir = node_dir();
    assert!(
        dir.join("node_modules/socket.io-client").is_dir(),
        "socket.io-client is not installed: run `npm ci --prefix gateway/tests/node` \
         (scripts/setup.sh does)"
    );
    let output = tokio::process::Command::new("node")
        .arg(dir.join("client.mjs"))
        .arg(format!("http://{}", gw.addr))
        .arg(gw.token("alice"))
        .output()
        .await
        .expect("node must be on PATH");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "client failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(report["connected"], true);
    // The welcome came first, and the official client took it as one more event.
    assert_eq!(report["welcome"]["protocol"], 1, "{report}");
    assert_eq!(report["ack"]["ok"], true, "{report}");
    let id = report["ack"]["data"]["jobId"].as_str().unwrap();
    let events = report["events"].as_array().unwrap();
    assert!(events.len() >= 5, "{report}");
    for (i, ev) in events.iter().enumerate() {
        assert_eq!(ev["env"]["stream"], format!("job:{id}").as_str());
        assert_eq!(ev["env"]["seq"], (i + 1) as u64, "contiguous: {report}");
    }
    assert!(events.iter().any(|e| e["name"] == "job:chunk:v1"));
    // A bad token gets the generic refusal through the official client too.
    let output = tokio::process::Command::new("node")
        .arg(dir.join("client.mjs"))
        .arg(format!("http://{}", gw.addr))
        .arg("not-a-token")
        .output()
        .await
        .unwrap();
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["error"], "connect_error: unauthorized");
    gw.stop().await;
}

on_every_broker!(official_socket_io_client_connects_gets_ack_and_job_events);

/// The gateway binary serving on `port` (0: any free one, embedded broker),
/// once it says it listens; returns it with its port.
async fn gateway_process(port: u16) -> (tokio::process::Child, u16) {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_liveline-gateway"))
        .args([
            "serve",
            "--port",
            &port.to_string(),
            "--shutdown-jitter-ms",
            "200",
        ])
        .env_remove("LIVELINE_REDIS_URL")
        .env("RUST_LOG", "error")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let addr = common::listening(child.stdout.take().unwrap()).await;
    (child, addr.port())
}

/// The next JSON line the Node client prints.
async fn next_line(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
) -> Value {
    let line = tokio::time::timeout(std::time::Duration::from_secs(60), lines.next_line())
        .await
        .expect("the node client said nothing within a minute")
        .unwrap()
        .expect("the node client exited");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

#[tokio::test]
async fn official_client_with_default_options_connects_receives_in_order_and_reconnects_after_a_graceful_shutdown()
 {
    use tokio::io::AsyncBufReadExt;
    let dir = node_dir();
    let (mut first, port) = gateway_process(0).await;
    let jwt = liveline_gateway::Config::default().jwt().unwrap();
    let mut node = tokio::process::Command::new("node")
        .arg(dir.join("defaults.mjs"))
        .arg(format!("http://127.0.0.1:{port}"))
        .arg(jwt.mint("alice", 600).unwrap())
        .arg(jwt.mint_with_role("worker", 600, Some("service")).unwrap())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node must be on PATH");
    let mut lines = tokio::io::BufReader::new(node.stdout.take().unwrap()).lines();
    let received = next_line(&mut lines).await;
    assert_eq!(received["step"], "received", "{received}");
    assert_eq!(received["count"], 1000);
    assert_eq!(received["inOrder"], true, "{received}");
    // SIGTERM: the node drains (notice, then the transport closes) and exits.
    let pid = first.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let exited = tokio::time::timeout(std::time::Duration::from_secs(15), first.wait())
        .await
        .expect("the gateway exits after draining")
        .unwrap();
    assert!(exited.success(), "{exited:?}");
    // Its replacement on the same address: the client comes back by itself.
    let (mut second, _) = gateway_process(port).await;
    let reconnected = next_line(&mut lines).await;
    assert_eq!(reconnected["step"], "reconnected", "{reconnected}");
    assert_eq!(
        reconnected["disconnectReason"], "transport close",
        "not a server DISCONNECT, which would stop official clients for good"
    );
    assert!(
        reconnected["shutdownNotice"]["retryInMs"].is_u64(),
        "{reconnected}"
    );
    let status = node.wait().await.unwrap();
    assert!(status.success());
    second.kill().await.unwrap();
}
