//! The ack results typed in `liveline::contract` (`JobStarted`,
//! `JobCancelled`, `TopicSubscribed`, `TopicUnsubscribed`) are exactly what the gateway answers: each ack's
//! `data` deserializes into its type and serializes back to the same JSON,
//! and a refusal's code is one of `ERROR_CODES`. `pkg/contracts.d.ts` (the
//! TypeScript `ActionMap`) is generated from these types, so this also checks
//! the TypeScript against the running gateway.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Backend, Client, Gateway};
use liveline::contract::{
    ACTION_JOB_CANCEL_V1, ACTION_JOB_START_V1, ACTION_TOPIC_SUBSCRIBE_V1,
    ACTION_TOPIC_UNSUBSCRIBE_V1, ERROR_CODES, JobCancelled, JobStarted, TopicSubscribed,
    TopicUnsubscribed,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// Sends `action` with `data` under `key`; the ack's result as `T`, checked
/// to hold every field the gateway sent and no other.
async fn acked<T: DeserializeOwned + Serialize>(
    client: &mut Client,
    action: &str,
    key: &str,
    data: Value,
) -> T {
    let ack = client.call(action, json!({"key": key, "data": data})).await;
    assert_eq!(ack["ok"], true, "{action}: {ack}");
    let typed: T = serde_json::from_value(ack["data"].clone())
        .unwrap_or_else(|e| panic!("{action}: {} is not its contract type: {e}", ack["data"]));
    assert_eq!(
        serde_json::to_value(&typed).unwrap(),
        ack["data"],
        "{action}"
    );
    typed
}

async fn every_action_acks_its_contract_type(backend: Backend) {
    let gw = Gateway::start(backend).await;
    let mut alice = gw.connect("alice").await;

    let started: JobStarted = acked(
        &mut alice,
        ACTION_JOB_START_V1,
        "k-start",
        json!({"kind": "research", "params": {"query": "rust"}}),
    )
    .await;
    let cancelled: JobCancelled = acked(
        &mut alice,
        ACTION_JOB_CANCEL_V1,
        "k-cancel",
        json!({"jobId": started.job_id}),
    )
    .await;
    assert_eq!(cancelled.job_id, started.job_id);

    let topic = json!({"topic": "market:BTC-USD"});
    let head: TopicSubscribed = acked(
        &mut alice,
        ACTION_TOPIC_SUBSCRIBE_V1,
        "k-sub",
        topic.clone(),
    )
    .await;
    assert_eq!(head.topic, "market:BTC-USD");
    let left: TopicUnsubscribed =
        acked(&mut alice, ACTION_TOPIC_UNSUBSCRIBE_V1, "k-unsub", topic).await;
    assert_eq!(left.topic, "market:BTC-USD");

    let refused = alice
        .call(
            ACTION_JOB_CANCEL_V1,
            json!({"key": "k-nope", "data": {"jobId": "no-such-job"}}),
        )
        .await;
    assert_eq!(refused["ok"], false, "{refused}");
    let code = refused["error"]["code"].as_str().unwrap();
    assert!(ERROR_CODES.contains(&code), "{code}");

    gw.stop().await;
}

on_every_broker!(every_action_acks_its_contract_type);
