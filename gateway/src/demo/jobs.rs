//! The demo's answer jobs: `research` (sources found one by one, then a
//! summary) and `llm` (an answer streamed token by token), both answered
//! from the built-in corpus ([`super::corpus`]), so an answer depends on the
//! question and needs no network. Tokens stream at a tenth of the step
//! apart: 20 tokens a second at the default step, long enough to reload or
//! kill a gateway mid-answer.

use std::time::Duration;

use liveline::contract::{
    JOB_CHUNK_V1, JOB_RESULT_V1, JOB_STATUS_V1, JobChunk, JobResult, JobState, JobStatus,
};
use serde_json::{Value, json};

use super::{corpus, emit, to_value};
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
    let query = ["query", "prompt"]
        .iter()
        .find_map(|k| job.params.get(*k).and_then(Value::as_str))
        .unwrap_or("why push beats polling")
        .to_owned();
    let sources = corpus::sources_for(&query);
    let research = job.kind != "llm";
    if research {
        // Sources arrive one by one, each named in the status message.
        tokio::time::sleep(step).await;
        if !status(
            publisher,
            job,
            JobState::Running,
            0.1,
            "planning the search",
        )
        .await?
        {
            return Ok(None);
        }
        for (i, source) in sources.iter().enumerate() {
            tokio::time::sleep(step).await;
            let found = i + 1;
            let progress = 0.1 + 0.5 * found as f64 / sources.len() as f64;
            let message = format!("searching: {found} sources found · {}", source.title);
            if !status(publisher, job, JobState::Running, progress, &message).await? {
                return Ok(None);
            }
        }
        tokio::time::sleep(step).await;
        let message = format!("reading {} sources", sources.len());
        if !status(publisher, job, JobState::Running, 0.7, &message).await? {
            return Ok(None);
        }
    } else {
        tokio::time::sleep(step).await;
        if !status(publisher, job, JobState::Running, 0.2, "thinking").await? {
            return Ok(None);
        }
    }
    // The answer streams token by token, the way a model generates it; the
    // result carries the whole text too.
    let text = corpus::answer(&query, &sources);
    let titles: Vec<&str> = sources.iter().map(|s| s.title).collect();
    let answer = if research {
        json!({ "query": query, "summary": text, "sources": sources.len(), "titles": titles })
    } else {
        json!({ "text": text, "titles": titles })
    };
    for (index, piece) in text.split_inclusive(' ').enumerate() {
        tokio::time::sleep(step / 10).await;
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
