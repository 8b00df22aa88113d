//! Client actions (`job:start:v1`, `job:cancel:v1`): validation, idempotency,
//! ownership. Each returns the [`AckReply`] sent back to the client.
//!
//! Wire shape of every action: `{"key": "<idempotency key>", "data": {...}}`.
//!
//! `job:start:v1` records the key with its result (the new job id) before
//! anything else, then creates the job, publishes `queued` and forwards the
//! action to workers through the broker's actions stream, once per key. A
//! repeat answers the recorded result and finishes what the first attempt
//! left undone: the job under the recorded id if it does not exist; while
//! the job is still queued, the `queued` status if none went out and the
//! forward (which a repeat of the key does not make twice).

use liveline::contract::{
    ACTION_JOB_CANCEL_V1, ACTION_JOB_START_V1, AckReply, JOB_STATUS_V1, JobCancel, JobStart,
    JobState, JobStatus,
};
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::{Claims, unix_millis};
use crate::broker::{BrokerError, JobRecord, QueuedAction, today};
use crate::publish::PublishError;
use crate::stream::{Stream, may_read};

use crate::inbound::action as parse;

fn internal(e: impl std::fmt::Display) -> AckReply {
    tracing::error!(error = %e, "action failed");
    AckReply::err(
        "unavailable",
        "the service could not take the action; retry later",
    )
}

/// What the idempotency key of a job start says to do.
enum Claim {
    /// Create the job under this id and hand it over (a fresh key, or a
    /// repeat whose first attempt died before its job existed); answer the
    /// result.
    Create(String, Value),
    /// The job exists: finish its hand-over if it may be unfinished, then
    /// answer the recorded result.
    Exists(JobRecord, Value),
    /// Answer this at once.
    Reply(AckReply),
}

/// Records a fresh job id as the result of (`user`, `job:start:v1`, `key`),
/// or finds the result recorded by an earlier attempt.
async fn claim_id(state: &AppState, user: &str, key: &str) -> Claim {
    let id = state.broker.new_job_id(user);
    let result = json!({ "jobId": id });
    match state
        .broker
        .remember(user, ACTION_JOB_START_V1, key, &result)
        .await
    {
        Ok(Some(earlier)) => {
            let Some(earlier_id) = earlier["jobId"].as_str().map(str::to_owned) else {
                return Claim::Reply(AckReply::ok(earlier));
            };
            match state.broker.job(&earlier_id).await {
                Ok(Some(job)) => Claim::Exists(job, earlier),
                Ok(None) => Claim::Create(earlier_id, earlier),
                Err(e) => Claim::Reply(internal(e)),
            }
        }
        Ok(None) => Claim::Create(id, result),
        Err(e) => Claim::Reply(internal(e)),
    }
}

/// Hands `job` over: publishes its `queued` status when `announce`, then
/// forwards it to workers once per (`user`, `job:start:v1`, `key`).
async fn hand_over(
    state: &AppState,
    key: &str,
    job: &JobRecord,
    announce: bool,
) -> Result<(), String> {
    if announce {
        let status = JobStatus {
            job_id: job.id.clone(),
            status: JobState::Queued,
            progress: 0.0,
            message: "queued".to_owned(),
        };
        let data = serde_json::to_value(&status).unwrap_or(Value::Null);
        let stream = Stream::Job { id: job.id.clone() };
        let published = state.publisher.publish(&stream, JOB_STATUS_V1, data).await;
        published.map_err(|e| e.to_string())?;
    }
    let queued = QueuedAction {
        action: ACTION_JOB_START_V1.to_owned(),
        user: job.owner.clone(),
        data: serde_json::to_value(job).unwrap_or(Value::Null),
        key: None,
    };
    let forwarded = state.broker.enqueue_once(&queued, key).await;
    forwarded.map(drop).map_err(|e| e.to_string())
}

/// A repeated job start whose job exists. While the job is queued, the first
/// attempt may have died after creating it and before its workers heard of
/// it: the `queued` status goes out if the stream has no event yet, and the
/// forward is made again (a no-op if the first one was made).
async fn finish_hand_over(state: &AppState, key: &str, job: JobRecord, result: Value) -> AckReply {
    if job.status != JobState::Queued {
        return AckReply::ok(result);
    }
    let stream = Stream::Job { id: job.id.clone() };
    let announce = match state.broker.head(&stream).await {
        Ok(head) => head.is_none(),
        Err(e) => return internal(e),
    };
    match hand_over(state, key, &job, announce).await {
        Ok(()) => AckReply::ok(result),
        Err(e) => internal(e),
    }
}

/// Forwards `action` of `user` with `data` to workers.
async fn forward(
    state: &AppState,
    action: &str,
    user: &str,
    data: Value,
) -> Result<String, BrokerError> {
    let queued = QueuedAction {
        action: action.to_owned(),
        user: user.to_owned(),
        data,
        key: None,
    };
    state.broker.enqueue_action(&queued).await
}

/// Answers `result` after recording it for (`user`, `action`, `key`), or the
/// result recorded earlier under that key.
async fn remember_reply(
    state: &AppState,
    user: &str,
    action: &str,
    key: &str,
    result: Value,
) -> AckReply {
    match state.broker.remember(user, action, key, &result).await {
        Ok(Some(earlier)) => AckReply::ok(earlier),
        Ok(None) => AckReply::ok(result),
        Err(e) => internal(e),
    }
}

/// `job:start:v1`: creates a job owned by `user`, publishes its `queued`
/// status and hands it to the worker. Answers `{"jobId": id}`; a repeated key
/// answers the first result.
pub async fn job_start(state: &AppState, user: &str, payload: Value) -> AckReply {
    let (key, start): (String, JobStart) = match parse(payload) {
        Ok(v) => v,
        Err(reply) => return reply,
    };
    if !(start.params.is_object() || start.params.is_null()) {
        return AckReply::err("invalid_payload", "data.params must be an object");
    }
    if !valid_kind(&start.kind) {
        return AckReply::err(
            "invalid_payload",
            "data.kind must be 1 to 64 of a-z 0-9 . _ - (starting with a letter or digit)",
        );
    }
    let kinds = &state.config.job_kinds;
    if !kinds.is_empty() && !kinds.contains(&start.kind) {
        return AckReply::err(
            "invalid_payload",
            format!(
                "data.kind {:?} is not run here; one of: {}",
                start.kind,
                kinds.join(", ")
            ),
        );
    }
    let (id, result) = match claim_id(state, user, &key).await {
        Claim::Create(id, result) => (id, result),
        Claim::Exists(job, result) => return finish_hand_over(state, &key, job, result).await,
        Claim::Reply(reply) => return reply,
    };
    let now = unix_millis();
    let job = JobRecord {
        id,
        owner: user.to_owned(),
        kind: start.kind,
        params: if start.params.is_null() {
            json!({})
        } else {
            start.params
        },
        status: JobState::Queued,
        progress: 0.0,
        message: "queued".to_owned(),
        created_at: now,
        updated_at: now,
    };
    if let Err(e) = state.broker.create_job(&job).await {
        return internal(e);
    }
    let kind = state.metrics.kind_label(&job.kind);
    // The queued status goes out before the worker hears of the job; the
    // analytics count the job as started once its record exists, so they go
    // to Redis together with the status (one write, one read).
    let count = async {
        if let Err(e) = state
            .broker
            .record_job(&today(), &kind, "started", 0.0)
            .await
        {
            tracing::warn!(error = %e, "analytics: job start not recorded");
        }
    };
    match tokio::join!(hand_over(state, &key, &job, true), count) {
        (Ok(()), ()) => AckReply::ok(result),
        (Err(e), ()) => internal(e),
    }
}

/// `job:cancel:v1`: cancels `user`'s job unless it already ended. Answers
/// `{"jobId", "status"}` with the job's status afterwards; an unknown job or
/// one owned by someone else is `not_found`.
pub async fn job_cancel(state: &AppState, user: &str, payload: Value) -> AckReply {
    let (key, cancel): (String, JobCancel) = match parse(payload) {
        Ok(v) => v,
        Err(reply) => return reply,
    };
    let job = match state.broker.job(&cancel.job_id).await {
        Ok(Some(job)) if job.owner == user => job,
        Ok(_) => return AckReply::err("not_found", "no such job"),
        Err(e) => return internal(e),
    };
    let status = JobStatus {
        job_id: job.id.clone(),
        status: JobState::Cancelled,
        progress: job.progress,
        message: "cancelled by user".to_owned(),
    };
    let data = serde_json::to_value(&status).unwrap_or(Value::Null);
    let stream = Stream::Job { id: job.id.clone() };
    let published = match state.publisher.publish(&stream, JOB_STATUS_V1, data).await {
        Ok(_) => true,
        Err(PublishError::Ended | PublishError::NotFound) => false,
        Err(e) => return internal(e),
    };
    let final_status = if published {
        let secs = unix_millis().saturating_sub(job.created_at) as f64 / 1000.0;
        if let Err(e) = state
            .broker
            .record_job(
                &today(),
                &state.metrics.kind_label(&job.kind),
                "cancelled",
                secs,
            )
            .await
        {
            tracing::warn!(error = %e, "analytics: job cancel not recorded");
        }
        let data = json!({ "jobId": job.id });
        if let Err(e) = forward(state, ACTION_JOB_CANCEL_V1, user, data).await {
            tracing::warn!(error = %e, "cancel not forwarded to workers");
        }
        JobState::Cancelled
    } else {
        match state.broker.job(&job.id).await {
            Ok(Some(j)) => j.status,
            Ok(None) => job.status,
            Err(e) => return internal(e),
        }
    };
    let result = json!({ "jobId": job.id, "status": final_status.as_str() });
    remember_reply(state, user, ACTION_JOB_CANCEL_V1, &key, result).await
}

/// Whether `name` is an app's action this gateway forwards to workers: a
/// well-formed `domain:name:vN` outside the layer's reserved domains
/// ([`crate::inbound::RESERVED_DOMAINS`]), and in [`crate::Config::actions`]
/// when that list is set.
pub fn is_app_action(state: &AppState, name: &str) -> bool {
    crate::inbound::app_action_name(name)
        && (state.config.actions.is_empty() || state.config.actions.iter().any(|a| a == name))
}

/// An app's action (e.g. `doc:annotate:v1`): checked (an
/// object `{key, data}` with `data` an object, and any `data.jobId` must be
/// one of `user`'s jobs), then forwarded to workers through the work queue
/// once per idempotency key. Answers `{"actionId": id}`; a repeated key
/// answers the first id and forwards nothing.
pub async fn app_action(state: &AppState, user: &str, name: &str, payload: Value) -> AckReply {
    let (key, data) = match crate::inbound::app_action(payload) {
        Ok(v) => v,
        Err(reply) => return reply,
    };
    // `inbound::app_action` checked that a `jobId` is a string.
    if let Some(job_id) = data.get("jobId").and_then(Value::as_str) {
        match state.broker.job(job_id).await {
            Ok(Some(job)) if job.owner == user => {}
            Ok(_) => return AckReply::err("not_found", "no such job"),
            Err(e) => return internal(e),
        }
    }
    let queued = QueuedAction {
        action: name.to_owned(),
        user: user.to_owned(),
        data,
        key: Some(key.clone()),
    };
    match state.broker.enqueue_once(&queued, &key).await {
        Ok(id) => AckReply::ok(json!({ "actionId": id })),
        Err(e) => internal(e),
    }
}

/// The topic of a `topic:subscribe:v1` / `topic:unsubscribe:v1` payload
/// (`{key, data: {topic}}`, or `{topic}` alone) that the holder of `claims`
/// may read. A malformed payload, or a name that is not a topic, is
/// `invalid_payload`; a topic they may not read is `forbidden`.
pub async fn topic_of(
    state: &AppState,
    claims: &Claims,
    payload: Value,
) -> Result<Stream, AckReply> {
    let sub = crate::inbound::topic(payload)?;
    let stream = Stream::for_reader(&sub.topic, &claims.sub, &state.topics)
        .map_err(|e| AckReply::err("invalid_payload", format!("data.topic: {e}")))?;
    if !stream.is_topic() {
        return Err(AckReply::err(
            "invalid_payload",
            format!(
                "data.topic {:?} is not under a topic prefix of this gateway",
                sub.topic
            ),
        ));
    }
    match may_read(&stream, claims, &state.topics, &*state.broker).await {
        Ok(true) => Ok(stream),
        Ok(false) => Err(AckReply::err(
            "forbidden",
            format!("your token does not list topic {:?}", sub.topic),
        )),
        Err(e) => Err(internal(e)),
    }
}

/// Whether `kind` is a job kind: 1 to 64 bytes of `a-z 0-9 . _ -`, starting
/// with a letter or digit.
pub fn valid_kind(kind: &str) -> bool {
    kind.len() <= 64
        && kind
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && kind.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        })
}
