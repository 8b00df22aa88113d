//! The in-process demo worker: turns each started job into a realistic stream
//! of events over about three seconds. It stops as soon as a publish is refused
//! because the job was cancelled.
//!
//! It takes jobs from the broker's actions queue (with Redis: the stream
//! `{prefix}actions`, consumer group `workers`, one consumer per node), so on
//! several nodes each job runs once. An action is acknowledged when its job ends.

use std::sync::Arc;
use std::time::Duration;

use liveline::contract::{
    ACTION_JOB_START_V1, JOB_CHUNK_V1, JOB_RESULT_V1, JOB_STATUS_V1, JobChunk, JobKind, JobResult,
    JobState, JobStatus,
};
use serde_json::{Value, json};

use crate::actions::kind_str;
use crate::auth::unix_millis;
use crate::broker::{Broker, BrokerError, JobRecord, StatusUpdate, today};
use crate::metrics::Metrics;

/// Pause between two steps of a demo job.
pub const STEP: Duration = Duration::from_millis(500);

/// Takes actions as consumer `consumer` and runs every started job, forever.
pub async fn run(broker: Arc<dyn Broker>, consumer: String, step: Duration, metrics: Arc<Metrics>) {
    loop {
        let batch = match broker
            .read_actions(&consumer, 16, Duration::from_secs(1))
            .await
        {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "worker: reading actions failed");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        for (id, action) in batch {
            if action.action != ACTION_JOB_START_V1 {
                let _ = broker.ack_action(&id).await;
                continue;
            }
            let Ok(job) = serde_json::from_value::<JobRecord>(action.data) else {
                tracing::warn!(%id, "worker: job:start without a job record");
                let _ = broker.ack_action(&id).await;
                continue;
            };
            let broker = broker.clone();
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let outcome = match run_job(&*broker, &job, step).await {
                    Ok(true) => Some("completed"),
                    Ok(false) => None,
                    Err(e) => {
                        tracing::warn!(job = %job.id, error = %e, "demo job failed");
                        Some("failed")
                    }
                };
                if let Some(outcome) = outcome {
                    let secs = unix_millis().saturating_sub(job.created_at) as f64 / 1000.0;
                    metrics.job_finished(kind_str(job.kind), outcome, secs);
                    let _ = broker
                        .record_job(&today(), kind_str(job.kind), outcome, secs)
                        .await;
                }
                if let Err(e) = broker.ack_action(&id).await {
                    tracing::warn!(error = %e, "worker: ack failed");
                }
            });
        }
    }
}

/// Publishes one job's events. `Ok(false)` when it stopped because the job
/// ended elsewhere (cancelled).
pub async fn run_job(
    broker: &dyn Broker,
    job: &JobRecord,
    step: Duration,
) -> Result<bool, BrokerError> {
    let query = job
        .params
        .get("query")
        .and_then(Value::as_str)
        .unwrap_or("rust websockets")
        .to_owned();
    let steps: &[(f64, String)] = &[
        (0.2, "planning the search".to_owned()),
        (0.4, "searching: 3 sources found".to_owned()),
        (0.6, "searching: 7 sources found".to_owned()),
        (0.8, "reading sources".to_owned()),
    ];
    for (progress, message) in steps {
        tokio::time::sleep(step).await;
        if !status(broker, job, JobState::Running, *progress, message).await? {
            return Ok(false);
        }
    }
    let answer = match job.kind {
        JobKind::Llm => {
            let pieces = [
                "Liveline ",
                "streams ",
                "events ",
                "instead ",
                "of ",
                "polling.",
            ];
            for (index, text) in pieces.iter().enumerate() {
                tokio::time::sleep(step / 3).await;
                let chunk = JobChunk {
                    job_id: job.id.clone(),
                    index: index as u64,
                    text: (*text).to_owned(),
                };
                if !event(broker, job, JOB_CHUNK_V1, to_value(&chunk), None).await? {
                    return Ok(false);
                }
            }
            json!({ "text": pieces.concat() })
        }
        _ => json!({
            "query": query,
            "summary": format!("7 sources about \"{query}\" agree: push beats polling."),
            "sources": 7,
        }),
    };
    tokio::time::sleep(step).await;
    let result = JobResult {
        job_id: job.id.clone(),
        result: answer,
    };
    if !event(broker, job, JOB_RESULT_V1, to_value(&result), None).await? {
        return Ok(false);
    }
    status(broker, job, JobState::Completed, 1.0, "completed").await
}

async fn status(
    broker: &dyn Broker,
    job: &JobRecord,
    state: JobState,
    progress: f64,
    message: &str,
) -> Result<bool, BrokerError> {
    let data = JobStatus {
        job_id: job.id.clone(),
        status: state,
        progress,
        message: message.to_owned(),
    };
    let update = StatusUpdate {
        status: state,
        progress,
        message: message.to_owned(),
    };
    event(broker, job, JOB_STATUS_V1, to_value(&data), Some(update)).await
}

async fn event(
    broker: &dyn Broker,
    job: &JobRecord,
    name: &str,
    data: Value,
    update: Option<StatusUpdate>,
) -> Result<bool, BrokerError> {
    Ok(broker
        .publish_job(&job.owner, &job.id, name, data, update)
        .await?
        .is_some())
}

fn to_value<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}
