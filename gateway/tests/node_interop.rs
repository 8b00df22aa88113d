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
    let dir = node_dir();
    assert!(
        dir.join("node_modules/socket.io-client").is_dir(),
        "socket.io-client is not installed: run `npm ci --prefix gateway/tests/node` \
         (scripts/setup.sh does)"
    );
    let gw = Gateway::start(backend).await;
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

on_both_brokers!(official_socket_io_client_connects_gets_ack_and_job_events);
