//! The one publish path: HTTP (`POST /api/v1/publish`), the CLI, the demo
//! worker, the gateway's own actions and any Rust worker publish through
//! [`Publisher`]. It checks the event, then appends it in one atomic step
//! ([`crate::broker::EventLog::append`]: next seq, history, live fan-out, and
//! the job record's update for `job:status:v1`). Workers in other languages
//! run the same step through the Redis script (docs/publishing.md).

use std::sync::Arc;

use liveline::contract::{Envelope, JOB_STATUS_V1, JobStatus};
use serde_json::Value;

use crate::broker::{Appended, Broker, BrokerError, MAX_BATCH, MAX_DATA_DEPTH, nested_within};
use crate::stream::Stream;

/// Why an event was not published.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The event name or data is wrong; the message says how.
    #[error("{0}")]
    Invalid(String),
    /// No such job, or not the named user's.
    #[error("no such job for this user")]
    NotFound,
    /// The job already ended: nothing more is published on it.
    #[error("the job already ended")]
    Ended,
    /// The broker failed; retry later.
    #[error(transparent)]
    Unavailable(#[from] BrokerError),
}

impl PublishError {
    /// The error code clients and workers see (docs/errors.md).
    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid(_) => "invalid_payload",
            Self::NotFound => "not_found",
            Self::Ended => "job_ended",
            Self::Unavailable(_) => "unavailable",
        }
    }
}

/// Whether `name` is an event name, `domain:name:vN` (lowercase ASCII
/// letters, digits and `_` in the first two parts).
pub fn valid_event_name(name: &str) -> bool {
    let mut parts = name.split(':');
    let (Some(domain), Some(event), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    [domain, event].iter().all(|p| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    }) && version
        .strip_prefix('v')
        .is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
}

/// Publishes events on streams.
#[derive(Clone)]
pub struct Publisher {
    broker: Arc<dyn Broker>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").finish_non_exhaustive()
    }
}

impl Publisher {
    /// A publisher on `broker`.
    pub fn new(broker: Arc<dyn Broker>) -> Self {
        Self { broker }
    }

    /// Publishes `event` with `data` on `stream` and returns its envelope.
    ///
    /// On a job's stream the job must exist and not have ended; a
    /// `job:status:v1` event must carry a valid status of this job, and
    /// updates the job record in the same step.
    pub async fn publish(
        &self,
        stream: &Stream,
        event: &str,
        data: Value,
    ) -> Result<Envelope<Value>, PublishError> {
        let mut stored = self.append(stream, event, vec![data], None).await?;
        stored.pop().ok_or_else(lost_reply)
    }

    /// Publishes one `event` per item of `data` on `stream` in one step (a
    /// worker streaming many chunks): consecutive seqs, in order, one broker
    /// round trip. At least one item, at most [`MAX_BATCH`]; a record event
    /// (`job:status:v1`) goes one at a time. Returns the envelopes in order.
    pub async fn publish_batch(
        &self,
        stream: &Stream,
        event: &str,
        data: Vec<Value>,
    ) -> Result<Vec<Envelope<Value>>, PublishError> {
        self.append(stream, event, data, None).await
    }

    /// [`Publisher::publish_batch`] on behalf of `owner` when given: a
    /// job's stream must then be theirs (checked in the same atomic step as
    /// the append). The form a request naming an optional user takes (HTTP,
    /// the CLI).
    pub async fn publish_batch_as(
        &self,
        owner: Option<&str>,
        stream: &Stream,
        event: &str,
        data: Vec<Value>,
    ) -> Result<Vec<Envelope<Value>>, PublishError> {
        self.append(stream, event, data, owner).await
    }

    /// [`Publisher::publish`] on behalf of `user`: a job's stream must be
    /// theirs (checked in the same atomic step as the append).
    pub async fn publish_for(
        &self,
        user: &str,
        stream: &Stream,
        event: &str,
        data: Value,
    ) -> Result<Envelope<Value>, PublishError> {
        let mut stored = self.append(stream, event, vec![data], Some(user)).await?;
        stored.pop().ok_or_else(lost_reply)
    }

    async fn append(
        &self,
        stream: &Stream,
        event: &str,
        data: Vec<Value>,
        owner: Option<&str>,
    ) -> Result<Vec<Envelope<Value>>, PublishError> {
        if !valid_event_name(event) {
            return Err(PublishError::Invalid(format!(
                "event {event:?} must be domain:name:vN"
            )));
        }
        if data.is_empty() || data.len() > MAX_BATCH {
            return Err(PublishError::Invalid(format!(
                "a batch carries 1 to {MAX_BATCH} events, not {}",
                data.len()
            )));
        }
        if data.len() > 1 && event == JOB_STATUS_V1 {
            return Err(PublishError::Invalid(format!(
                "{JOB_STATUS_V1} is published one at a time"
            )));
        }
        for item in &data {
            if !nested_within(item, MAX_DATA_DEPTH) {
                return Err(PublishError::Invalid(format!(
                    "data must nest at most {MAX_DATA_DEPTH} levels deep"
                )));
            }
            check_record_event(stream, event, item)?;
        }
        match self.broker.append(stream, event, data, owner).await? {
            Appended::Events(envs) => Ok(envs),
            Appended::NotFound => Err(PublishError::NotFound),
            Appended::Ended => Err(PublishError::Ended),
        }
    }
}

/// The broker answered an append with no envelope.
pub(crate) fn lost_reply() -> PublishError {
    PublishError::Unavailable(BrokerError::Corrupt(
        "the broker stored no event".to_owned(),
    ))
}

/// The data of an event that updates a record must describe that record.
fn check_record_event(stream: &Stream, event: &str, data: &Value) -> Result<(), PublishError> {
    let invalid = |e: String| Err(PublishError::Invalid(format!("{event} data: {e}")));
    match (stream, event) {
        (Stream::Job { id }, JOB_STATUS_V1) => {
            match serde_json::from_value::<JobStatus>(data.clone()) {
                Ok(st) if st.job_id != *id => invalid(format!("jobId must be {id:?}")),
                Ok(st) if !(0.0..=1.0).contains(&st.progress) => {
                    invalid("progress must be from 0 to 1".to_owned())
                }
                Ok(_) => Ok(()),
                Err(e) => invalid(e.to_string()),
            }
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::valid_event_name;

    #[test]
    fn event_names_are_domain_name_version() {
        for ok in ["job:status:v1", "pdf:page:v12", "a_b:c_1:v0"] {
            assert!(valid_event_name(ok), "{ok}");
        }
        for bad in [
            "",
            "job:status",
            "job:status:1",
            "job:status:v",
            "Job:status:v1",
            "job::v1",
            "job:status:v1:x",
            "job:sta tus:v1",
        ] {
            assert!(!valid_event_name(bad), "{bad}");
        }
    }
}
