//! Actions are validated, and a repeated idempotency key takes effect once.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Backend, Gateway};
use serde_json::json;

async fn repeated_idempotency_key_returns_the_same_job_id(backend: Backend) {
    let gw = Gateway::start_with(backend, |c| c.demo.enabled = false).await;
    let mut alice = gw.connect("alice").await;
    let start = json!({"key": "same-key", "data": {"kind": "research", "params": {"query": "q"}}});
    let first = alice.call("job:start:v1", start.clone()).await;
    let second = alice.call("job:start:v1", start.clone()).await;
    assert_eq!(first["ok"], true, "{first}");
    assert_eq!(first, second);
    // Another user with the same key gets a job of their own.
    let mut bob = gw.connect("bob").await;
    let bobs = bob.call("job:start:v1", start).await;
    assert_ne!(bobs["data"]["jobId"], first["data"]["jobId"]);
    // Only one job was started: one `queued` event, nothing more.
    let (_, env) = alice.event().await;
    assert_eq!(env["seq"], 1);
    assert!(
        alice
            .maybe_event(std::time::Duration::from_millis(300))
            .await
            .is_none()
    );
    alice.close().await;
    bob.close().await;
    gw.stop().await;
}

async fn malformed_actions_get_invalid_payload_in_the_ack(backend: Backend) {
    let gw = Gateway::start_with(backend, |c| c.demo.enabled = false).await;
    let mut alice = gw.connect("alice").await;
    for bad in [
        json!("nope"),
        json!({"data": {"kind": "research"}}),
        json!({"key": "", "data": {"kind": "research"}}),
        json!({"key": "k", "data": {"kind": "Poetry"}}),
        json!({"key": "k", "data": {"kind": ""}}),
        json!({"key": "k", "data": {"kind": "-x"}}),
        json!({"key": "k", "data": {"kind": "a b"}}),
        json!({"key": "k", "data": {"kind": "k".repeat(65)}}),
        json!({"key": "k", "data": {"kind": 5}}),
        json!({"key": "k", "data": {"kind": "llm", "params": [1, 2]}}),
        json!({"key": "k".repeat(200), "data": {"kind": "llm"}}),
    ] {
        let ack = alice.call("job:start:v1", bad.clone()).await;
        assert_eq!(ack["ok"], false, "{bad} -> {ack}");
        assert_eq!(ack["error"]["code"], "invalid_payload", "{bad} -> {ack}");
    }
    let ack = alice
        .call("job:cancel:v1", json!({"key": "k", "data": {}}))
        .await;
    assert_eq!(ack["error"]["code"], "invalid_payload");
    let ack = alice
        .call(
            "job:cancel:v1",
            json!({"key": "k", "data": {"jobId": "nope"}}),
        )
        .await;
    assert_eq!(ack["error"]["code"], "not_found");
    // An action this gateway does not know is answered at once, not left to time out.
    let ack = alice
        .call("job:stauts:v1", json!({"key": "k", "data": {}}))
        .await;
    assert_eq!(ack["ok"], false, "{ack}");
    assert_eq!(ack["error"]["code"], "unknown_action", "{ack}");
    alice.close().await;
    gw.stop().await;
}

/// Job kinds are the app's: any well-formed name runs, unless the gateway
/// is given a list, which then is the only one.
async fn any_job_kind_runs_unless_the_gateway_lists_its_kinds(backend: Backend) {
    let gw = Gateway::start_with(backend, |c| c.demo.enabled = false).await;
    let mut alice = gw.connect("alice").await;
    let start =
        json!({"key": "pdf", "data": {"kind": "summarize-pdf", "params": {"url": "a.pdf"}}});
    let ack = alice.call("job:start:v1", start).await;
    assert_eq!(ack["ok"], true, "{ack}");
    let id = ack["data"]["jobId"].as_str().unwrap().to_owned();
    let job = gw.handle.state.broker.job(&id).await.unwrap().unwrap();
    assert_eq!(job.kind, "summarize-pdf");
    assert_eq!(job.params["url"], "a.pdf");
    alice.close().await;
    gw.stop().await;

    let gw = Gateway::start_with(backend, |c| {
        c.demo.enabled = false;
        c.job_kinds = vec!["summarize-pdf".to_owned()];
    })
    .await;
    let mut alice = gw.connect("alice").await;
    let ack = alice
        .call(
            "job:start:v1",
            json!({"key": "a", "data": {"kind": "research"}}),
        )
        .await;
    assert_eq!(ack["error"]["code"], "invalid_payload", "{ack}");
    assert!(
        ack["error"]["message"]
            .as_str()
            .unwrap()
            .contains("summarize-pdf"),
        "{ack}"
    );
    let ack = alice
        .call(
            "job:start:v1",
            json!({"key": "b", "data": {"kind": "summarize-pdf"}}),
        )
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    alice.close().await;
    gw.stop().await;
}

on_every_broker!(
    repeated_idempotency_key_returns_the_same_job_id,
    malformed_actions_get_invalid_payload_in_the_ack,
    any_job_kind_runs_unless_the_gateway_lists_its_kinds,
);

/// A job start whose forward to workers failed is finished by a retry of its
/// key: the same job id, the `queued` status once, and the job in the actions
/// stream once, however often the key comes again. The failure is Redis's
/// own: the actions stream's key holds a string, so XADD fails.
#[tokio::test]
async fn a_retry_forwards_a_job_whose_first_forward_failed() {
    use common::{REDIS_URL, redis_query};
    let gw = Gateway::start_with(Backend::Redis, |c| c.demo.enabled = false).await;
    let actions = format!("{}actions", gw.config.key_prefix);
    let mut alice = gw.connect("alice").await;
    let _: () = redis_query(REDIS_URL, redis::cmd("DEL").arg(&actions)).await;
    let _: () = redis_query(
        REDIS_URL,
        redis::cmd("SET").arg(&actions).arg("not a stream"),
    )
    .await;
    let start = json!({"key": "k-retry", "data": {"kind": "research", "params": {}}});
    let failed = alice.call("job:start:v1", start.clone()).await;
    assert_eq!(failed["ok"], false, "{failed}");
    assert_eq!(failed["error"]["code"], "unavailable", "{failed}");
    // The queued status went out before the forward failed.
    let (name, queued) = alice.event().await;
    assert_eq!(name, "job:status:v1");
    assert_eq!(queued["data"]["status"], "queued");
    let id = queued["data"]["jobId"].as_str().unwrap().to_owned();

    let _: () = redis_query(REDIS_URL, redis::cmd("DEL").arg(&actions)).await;
    for attempt in 0..3 {
        let ack = alice.call("job:start:v1", start.clone()).await;
        assert_eq!(ack["ok"], true, "attempt {attempt}: {ack}");
        assert_eq!(ack["data"]["jobId"], id.as_str(), "attempt {attempt}");
    }
    let entries: Vec<(String, std::collections::HashMap<String, String>)> = redis_query(
        REDIS_URL,
        redis::cmd("XRANGE").arg(&actions).arg("-").arg("+"),
    )
    .await;
    let forwarded: Vec<serde_json::Value> = entries
        .iter()
        .map(|(_, fields)| serde_json::from_str(&fields["action"]).unwrap())
        .filter(|a: &serde_json::Value| {
            a["action"] == "job:start:v1" && a["data"]["id"] == id.as_str()
        })
        .collect();
    assert_eq!(forwarded.len(), 1, "forwarded once: {entries:?}");
    assert_eq!(forwarded[0]["user"], "alice");
    // One queued status in all: the stream's head is still its first event.
    let job = liveline_gateway::stream::Stream::Job { id };
    let head = gw.handle.state.broker.head(&job).await.unwrap().unwrap();
    assert_eq!(head.seq, 1);
    alice.close().await;
    gw.stop().await;
}
