//! The broker: per-stream sequencing, history, live fan-out, job state and
//! idempotency records. [`MemoryBroker`] runs in one process; [`RedisBroker`]
//! lets workers and several gateway nodes share one Redis.

mod memory;
mod redis;

use async_trait::async_trait;
use liveline::contract::{Envelope, JobKind, JobState};
use rand::RngExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;

pub use self::memory::MemoryBroker;
pub use self::redis::RedisBroker;

/// One event on its way to a user's sockets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveMessage {
    /// The owner: the event goes to room `user:{user}`.
    pub user: String,
    /// The contract name, e.g. `job:status:v1`.
    pub event: String,
    /// The envelope, emitted as the event's single argument.
    pub envelope: Envelope<Value>,
}

/// Where a stream is: its epoch and the seq of its newest event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamHead {
    /// The stream's epoch.
    pub epoch: String,
    /// The newest seq (0 when nothing was published).
    pub seq: u64,
}

/// A job as stored in the broker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobRecord {
    /// The job id; its events are on stream `job:{id}`.
    pub id: String,
    /// The user who started it; only they see it.
    pub owner: String,
    /// What it runs.
    pub kind: JobKind,
    /// Kind-specific parameters.
    pub params: Value,
    /// Latest status.
    pub status: JobState,
    /// 0.0 to 1.0.
    pub progress: f64,
    /// Latest status message.
    pub message: String,
    /// Creation time, ms since the Unix epoch.
    pub created_at: u64,
    /// Last update, ms since the Unix epoch.
    pub updated_at: u64,
}

impl JobRecord {
    /// The job's stream name, `job:{id}`.
    pub fn stream(&self) -> String {
        job_stream(&self.id)
    }
}

/// The stream name of job `id`.
pub fn job_stream(id: &str) -> String {
    format!("job:{id}")
}

/// A status change applied to a job together with the event that announces it.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusUpdate {
    /// New status.
    pub status: JobState,
    /// New progress.
    pub progress: f64,
    /// New message.
    pub message: String,
}

/// A broker operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// Redis refused or could not be reached; retry later.
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    /// Stored data did not parse; a bug or a foreign writer.
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
}

/// What a gateway needs from its event and state store.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Appends an event to `stream` (next seq, current epoch), keeps it in
    /// history and sends it live to `user`'s subscribers.
    async fn publish(
        &self,
        user: &str,
        stream: &str,
        event: &str,
        data: Value,
    ) -> Result<Envelope<Value>, BrokerError>;

    /// Like [`Broker::publish`] on stream `job:{job_id}`, but atomically refused
    /// (`Ok(None)`) when the job is missing or already terminal, and applying
    /// `update` to the job record in the same step.
    async fn publish_job(
        &self,
        user: &str,
        job_id: &str,
        event: &str,
        data: Value,
        update: Option<StatusUpdate>,
    ) -> Result<Option<Envelope<Value>>, BrokerError>;

    /// Events of `stream` with seq greater than `after_seq`, oldest first.
    async fn history(
        &self,
        stream: &str,
        after_seq: u64,
    ) -> Result<Vec<(String, Envelope<Value>)>, BrokerError>;

    /// The stream's epoch and newest seq, or `None` for an unknown stream.
    async fn head(&self, stream: &str) -> Result<Option<StreamHead>, BrokerError>;

    /// Starts receiving `user`'s live events on this node. Once this returns,
    /// every later publish for `user` arrives on the receiver. One subscription
    /// per user at a time (the gateway reference-counts its sockets).
    async fn subscribe(
        &self,
        user: &str,
    ) -> Result<mpsc::UnboundedReceiver<LiveMessage>, BrokerError>;

    /// Stops receiving `user`'s live events.
    async fn unsubscribe(&self, user: &str) -> Result<(), BrokerError>;

    /// Stores a new job.
    async fn create_job(&self, job: &JobRecord) -> Result<(), BrokerError>;

    /// The job `id`, if it exists.
    async fn job(&self, id: &str) -> Result<Option<JobRecord>, BrokerError>;

    /// Records `result` under (`user`, `scope`, `key`) unless a result is
    /// already recorded; returns the earlier result in that case.
    async fn remember(
        &self,
        user: &str,
        scope: &str,
        key: &str,
        result: &Value,
    ) -> Result<Option<Value>, BrokerError>;

    /// Checks the backing store is reachable.
    async fn ping(&self) -> Result<(), BrokerError>;
}

/// How long idempotency records are kept, in seconds.
pub const IDEMPOTENCY_TTL_SECS: u64 = 24 * 3600;

/// A fresh random epoch: 16 hex digits.
pub fn new_epoch() -> String {
    random_hex()
}

/// 16 random hex digits (64 bits).
pub fn random_hex() -> String {
    format!("{:016x}", rand::rng().random::<u64>())
}
