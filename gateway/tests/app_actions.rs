//! An app's own actions (`doc:annotate:v1`): checked, forwarded to workers
//! through the work queue exactly once per idempotency key, and acked with
//! the action's id. The gateway interprets only its built-in actions.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Backend, Gateway, start_job};
use serde_json::json;

async fn an_app_action_reaches_workers_once_per_key(backend: Backend) {
    let gw = Gateway::start_with(backend, |c| c.demo.enabled = false).await;
    let mut alice = gw.connect("alice").await;
    let job = start_job(&mut alice, "k-job", "summarize-pdf").await;
    let action = json!({"key": "a-1", "data": {"jobId": job, "page": 3, "note": "check this"}});
    let first = alice.call("doc:annotate:v1", action.clone()).await;
    assert_eq!(first["ok"], true, "{first}");
    let id = first["data"]["actionId"].as_str().unwrap().to_owned();
    for _ in 0..2 {
        let again = alice.call("doc:annotate:v1", action.clone()).await;
        assert_eq!(again, first, "a repeated key answers the first id");
    }
    // Another key is another action.
    let other = alice
        .call(
            "doc:annotate:v1",
            json!({"key": "a-2", "data": {"note": "x"}}),
        )
        .await;
    assert_ne!(other["data"]["actionId"], first["data"]["actionId"]);
    // The queue: the job's start, then the two annotations, each once.
    let broker = &gw.handle.state.broker;
    let mut queued = Vec::new();
    while queued.len() < 3 {
        let batch = broker
            .read_actions("test", 16, Duration::from_secs(1))
            .await
            .unwrap();
        assert!(!batch.is_empty(), "the queue holds {queued:?}");
        queued.extend(batch);
    }
    let extra = broker
        .read_actions("test", 16, Duration::from_millis(200))
        .await
        .unwrap();
    assert!(extra.is_empty(), "nothing more: {extra:?}");
    let (qid, annotate) = &queued[1];
    assert_eq!(*qid, id);
    assert_eq!(annotate.action, "doc:annotate:v1");
    assert_eq!(annotate.user, "alice");
    assert_eq!(annotate.key.as_deref(), Some("a-1"));
    assert_eq!(annotate.data["note"], "check this");
    assert_eq!(queued[2].1.key.as_deref(), Some("a-2"));
    alice.close().await;
    gw.stop().await;
}

async fn app_actions_are_checked_before_they_are_forwarded(backend: Backend) {
    let gw = Gateway::start_with(backend, |c| c.demo.enabled = false).await;
    let mut alice = gw.connect("alice").await;
    let mut mallory = gw.connect("mallory").await;
    let job = start_job(&mut alice, "k-job", "research").await;
    // Another user's job: not found, as for the built-in actions.
    let ack = mallory
        .call(
            "doc:annotate:v1",
            json!({"key": "m", "data": {"jobId": job}}),
        )
        .await;
    assert_eq!(ack["error"]["code"], "not_found", "{ack}");
    for bad in [
        json!({"data": {}}),
        json!({"key": "", "data": {}}),
        json!({"key": "k", "data": [1]}),
        json!({"key": "k", "data": {"jobId": 5}}),
        json!("nope"),
    ] {
        let ack = alice.call("doc:annotate:v1", bad.clone()).await;
        assert_eq!(ack["error"]["code"], "invalid_payload", "{bad} -> {ack}");
    }
    // The layer's own domains are not the app's: a typo there is unknown.
    for name in [
        "job:stauts:v1",
        "topic:join:v1",
        "stream:x:v1",
        "Doc:annotate:v1",
        "doc:annotate",
    ] {
        let ack = alice.call(name, json!({"key": "k", "data": {}})).await;
        assert_eq!(ack["error"]["code"], "unknown_action", "{name} -> {ack}");
    }
    // Nothing but the job's start reached the queue.
    let queued = gw
        .handle
        .state
        .broker
        .read_actions("test", 16, Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(queued.len(), 1, "{queued:?}");
    alice.close().await;
    mallory.close().await;
    gw.stop().await;
}

/// With `--action`, only the listed app actions are forwarded.
async fn a_gateway_that_lists_its_actions_forwards_only_those(backend: Backend) {
    let gw = Gateway::start_with(backend, |c| {
        c.demo.enabled = false;
        c.actions = vec!["doc:annotate:v1".to_owned()];
    })
    .await;
    let mut alice = gw.connect("alice").await;
    let ok = alice
        .call("doc:annotate:v1", json!({"key": "k", "data": {}}))
        .await;
    assert_eq!(ok["ok"], true, "{ok}");
    let ack = alice
        .call("doc:delete:v1", json!({"key": "k", "data": {}}))
        .await;
    assert_eq!(ack["error"]["code"], "unknown_action", "{ack}");
    let metrics = gw.handle.state.metrics.render();
    assert!(
        metrics.contains("action=\"doc:annotate:v1\",outcome=\"ok\""),
        "listed actions are labelled by name"
    );
    alice.close().await;
    gw.stop().await;
}

on_every_broker!(
    an_app_action_reaches_workers_once_per_key,
    app_actions_are_checked_before_they_are_forwarded,
    a_gateway_that_lists_its_actions_forwards_only_those,
);
