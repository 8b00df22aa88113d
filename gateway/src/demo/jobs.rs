//! The demo's answer jobs: `research` (sources found, then a summary) and
//! `llm` (an answer streamed token by token), a few seconds each.

use std::time::Duration;

use liveline::contract::{
    JOB_CHUNK_V1, JOB_RESULT_V1, JOB_STATUS_V1, JobChunk, JobResult, JobState, JobStatus,
};
use serde_json::{Value, json};

use super::{emit, to_value};
use crate::broker::{BrokerError, JobRecord};
use crate::publish::Publisher;
use crate::stream::Stream;

/// Publishes one answer job's events: statuses, the answer as `job:chunk:v1`
/// pieces, `job:result:v1`, then `completed`. `Ok(None)` when it stopped
/// because the job ended elsewhere (cancelled).
pub async fn run_answer(
    publisher: &Publisher,
    job: &JobRecord,
    step: Duration,
) -> Result<Option<&'static str>, BrokerError> {
    let stream = Stream::Job { id: job.id.clone() };
    let query = job
        .params
        .get("query")
        .and_then(Value::as_str)
        .unwrap_or("rust websockets")
        .to_owned();
    let steps = [
        (0.2, "planning the search"),
        (0.4, "searching: 3 sources found"),
        (0.6, "searching: 7 sources found"),
        (0.8, "reading sources"),
    ];
    for (progress, message) in steps {
        tokio::time::sleep(step).await;
        if !status(publisher, job, JobState::Running, progress, message).await? {
            return Ok(None);
        }
    }
    // Both kinds stream their answer token by token as `job:chunk:v1`, the
    // way a model generates it; the result carries the whole text too.
    let (text, answer) = if job.kind == "llm" {
        let text = "Liveline streams events instead of polling.".to_owned();
        (text.clone(), json!({ "text": text }))
    } else {
        let summary = format!("7 sources about \"{query}\" agree: push beats polling.");
        let answer = json!({ "query": query, "summary": summary, "sources": 7 });
        (summary, answer)
    };
    for (index, piece) in text.split_inclusive(' ').enumerate() {
        tokio::time::sleep(step / 3).await;
        let chunk = JobChunk {
            job_id: job.id.clone(),
            index: index as u64,
            text: piece.to_owned(),
        };
        if !emit(publisher, &stream, JOB_CHUNK_V1, to_value(&chunk)).await? {
            return Ok(None);
        }
    }
    tokio::time::sleep(step).await;
    let result = JobResult {
        job_id: job.id.clone(),
        result: answer,
    };
    if !emit(publisher, &stream, JOB_RESULT_V1, to_value(&result)).await? {
        return Ok(None);
    }
    let done = status(publisher, job, JobState::Completed, 1.0, "completed").await?;
    Ok(done.then_some("completed"))
}

/// Publishes `job:status:v1` (which also updates the job record).
pub async fn status(
    publisher: &Publisher,
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
    let stream = Stream::Job { id: job.id.clone() };
    emit(publisher, &stream, JOB_STATUS_V1, to_value(&data)).await
}
