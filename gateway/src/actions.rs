//! Client actions (`job:start:v1`, `job:cancel:v1`): validation, idempotency,
//! ownership. Each returns the [`AckReply`] sent back to the client.
//!
//! Wire shape of every action: `{"key": "<idempotency key>", "data": {...}}`.
//!
//! `job:start:v1` records the key with its result (the new job id) before
//! anything else, then creates the job, publishes `queued` and forwards the
//! action to workers through the broker's actions stream. A repeat answers
//! the recorded result; if the first attempt died before the job existed, the
//! repeat finishes creating it under the recorded id.

use liveline::contract::{
    ACTION_JOB_CANCEL_V1, ACTION_JOB_START_V1, AckReply, JOB_STATUS_V1, JobCancel, JobKind,
    JobStart, JobState, JobStatus,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::unix_millis;
use crate::broker::{JobRecord, QueuedAction, StatusUpdate, random_hex, today};

/// Longest accepted idempotency key, in bytes.
pub const MAX_KEY_LEN: usize = 128;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionPayload {
    key: String,
    data: Value,
}

fn parse<T: serde::de::DeserializeOwned>(payload: Value) -> Result<(String, T), AckReply> {
    let p: ActionPayload = serde_json::from_value(payload).map_err(|e| {
        AckReply::err(
            "invalid_payload",
            format!("expected {{\"key\": string, \"data\": object}}: {e}"),
        )
    })?;
    if p.key.is_empty() || p.key.len() > MAX_KEY_LEN {
        return Err(AckReply::err(
            "invalid_payload",
            format!("key must be 1 to {MAX_KEY_LEN} bytes"),
        ));
    }
    let data = serde_json::from_value(p.data)
        .map_err(|e| AckReply::err("invalid_payload", format!("data: {e}")))?;
    Ok((p.key, data))
}

fn internal(e: impl std::fmt::Display) -> AckReply {
    tracing::error!(error = %e, "action failed");
    AckReply::err(
        "unavailable",
        "the service could not take the action; retry later",
    )
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
    let mut id = random_hex();
    let mut result = json!({ "jobId": id });
    match state
        .broker
        .remember(user, ACTION_JOB_START_V1, &key, &result)
        .await
    {
        Ok(Some(earlier)) => {
            let Some(earlier_id) = earlier["jobId"].as_str().map(str::to_owned) else {
                return AckReply::ok(earlier);
            };
            match state.broker.job(&earlier_id).await {
                Ok(Some(_)) => return AckReply::ok(earlier),
                // The first attempt stopped before the job existed: finish it.
                Ok(None) => {
                    id = earlier_id;
                    result = earlier;
                }
                Err(e) => return internal(e),
            }
        }
        Ok(None) => {}
        Err(e) => return internal(e),
    }
    let now = unix_millis();
    let job = JobRecord {
        id: id.clone(),
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
    let status = JobStatus {
        job_id: id.clone(),
        status: JobState::Queued,
        progress: 0.0,
        message: "queued".to_owned(),
    };
    let data = serde_json::to_value(&status).unwrap_or(Value::Null);
    if let Err(e) = state
        .broker
        .publish_job(user, &id, JOB_STATUS_V1, data, None)
        .await
    {
        return internal(e);
    }
    let kind = kind_str(job.kind);
    let queued = QueuedAction {
        action: ACTION_JOB_START_V1.to_owned(),
        user: user.to_owned(),
        data: serde_json::to_value(&job).unwrap_or(Value::Null),
    };
    if let Err(e) = state.broker.enqueue_action(&queued).await {
        return internal(e);
    }
    if let Err(e) = state
        .broker
        .record_job(&today(), kind, "started", 0.0)
        .await
    {
        tracing::warn!(error = %e, "analytics: job start not recorded");
    }
    AckReply::ok(result)
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
    let update = StatusUpdate {
        status: JobState::Cancelled,
        progress: job.progress,
        message: status.message.clone(),
    };
    let published = match state
        .broker
        .publish_job(user, &job.id, JOB_STATUS_V1, data, Some(update))
        .await
    {
        Ok(p) => p,
        Err(e) => return internal(e),
    };
    let final_status = if published.is_some() {
        let secs = unix_millis().saturating_sub(job.created_at) as f64 / 1000.0;
        if let Err(e) = state
            .broker
            .record_job(&today(), kind_str(job.kind), "cancelled", secs)
            .await
        {
            tracing::warn!(error = %e, "analytics: job cancel not recorded");
        }
        let forward = QueuedAction {
            action: ACTION_JOB_CANCEL_V1.to_owned(),
            user: user.to_owned(),
            data: json!({ "jobId": job.id }),
        };
        if let Err(e) = state.broker.enqueue_action(&forward).await {
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
    match state
        .broker
        .remember(user, ACTION_JOB_CANCEL_V1, &key, &result)
        .await
    {
        Ok(Some(earlier)) => AckReply::ok(earlier),
        Ok(None) => AckReply::ok(result),
        Err(e) => internal(e),
    }
}

/// The wire name of a job kind.
pub fn kind_str(kind: JobKind) -> &'static str {
    match kind {
        JobKind::Research => "research",
        JobKind::Llm => "llm",
        _ => "unknown",
    }
}
