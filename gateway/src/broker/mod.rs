//! The broker: per-stream sequencing, history, live fan-out, job state and
//! idempotency records. [`MemoryBroker`] runs in one process; [`RedisBroker`]
//! lets workers and several gateway nodes share one Redis.

pub mod circuit;
mod group;
mod live;
mod memory;
mod redis;
mod resp;
mod subscriber;
mod tally;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use liveline::contract::{Envelope, JobState};
use rand::RngExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;

pub use self::live::LiveMessage;
pub use self::memory::MemoryBroker;
pub use self::redis::{DEFAULT_COMMAND_TIMEOUT, PUBLISH_LUA, RedisBroker, STREAM_TTL_SECS};
use crate::stream::Stream;

/// Where a stream is: its epoch and the seq of its newest event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamHead {
    /// The stream's epoch.
    pub epoch: String,
    /// The newest seq (0 when nothing was published).
    pub seq: u64,
}

/// A job as stored in the broker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Job)]
pub struct JobRecord {
    /// The job id; its events are on stream `job:{id}`.
    pub id: String,
    /// The user who started it; only they see it.
    pub owner: String,
    /// What it runs: any name the app's workers handle (1 to 64 of
    /// `a-z 0-9 . _ -`).
    pub kind: String,
    /// Kind-specific parameters, the app's JSON.
    #[schema(value_type = Object)]
    pub params: Value,
    /// Latest status.
    #[schema(value_type = crate::openapi::JobStateDoc)]
    pub status: JobState,
    /// 0.0 to 1.0.
    #[schema(minimum = 0, maximum = 1)]
    pub progress: f64,
    /// Latest status message.
    pub message: String,
    /// Creation time, ms since the Unix epoch.
    pub created_at: u64,
    /// Last update, ms since the Unix epoch.
    pub updated_at: u64,
}

impl JobRecord {
    /// The job's stream, `job:{id}`.
    pub fn stream(&self) -> Stream {
        Stream::Job {
            id: self.id.clone(),
        }
    }
}

/// Events kept per topic stream: resume of a topic
/// replays at most this many.
pub const TOPIC_HISTORY_LEN: usize = 256;

/// A gateway-originated message for every node (carried on the broker's
/// control channel: Redis pub/sub `{prefix}control`, or in process).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ControlMessage {
    /// Close every socket of `user` on every node.
    Revoke {
        /// The user.
        user: String,
    },
}

/// An action on its way to workers (Redis stream `{prefix}actions`, consumer
/// group [`WORKER_GROUP`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueuedAction {
    /// The action name, e.g. `job:start:v1`.
    pub action: String,
    /// The user who sent it.
    pub user: String,
    /// For `job:start:v1`, the [`JobRecord`] to run; for an app's action,
    /// the `data` the client sent.
    pub data: Value,
    /// The client's idempotency key of an app's action: a worker whose
    /// effects are not idempotent by themselves keys them with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// The consumer group workers read `{prefix}actions` with.
pub const WORKER_GROUP: &str = "workers";

/// Counters of one (kind, outcome) pair of jobs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobStats {
    /// How many.
    pub count: u64,
    /// Total duration in seconds (0 for `started`).
    pub seconds: f64,
}

/// One UTC day of analytics, shared by every node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DayStats {
    /// `YYYY-MM-DD`, UTC.
    pub day: String,
    /// Distinct users who connected (HyperLogLog in Redis: about 0.8% error).
    pub dau: u64,
    /// Sessions that ended.
    pub sessions: u64,
    /// Their total duration in seconds.
    pub session_seconds: f64,
    /// Jobs by kind, then outcome (`started`, `completed`, `failed`, `cancelled`).
    pub jobs: BTreeMap<String, BTreeMap<String, JobStats>>,
}

/// A broker operation failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// Redis refused or could not be reached; retry later.
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    /// Stored data did not parse; a bug or a foreign writer.
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
}

/// Most events one append (a batch) may carry; the publish script has the
/// same bound.
pub const MAX_BATCH: usize = 256;

/// Most events a stream's history may be asked to keep; the publish script
/// has the same bound (`history`, and `ttl` in seconds).
pub const MAX_HISTORY_LEN: usize = 2_147_483_647;

/// Deepest an event's data may nest (arrays and objects within each other):
/// a client parsing the whole event packet (`["event", envelope]`) with
/// serde_json reads 127 levels, and the packet and the envelope take two.
/// The publish script has the same bound.
pub const MAX_DATA_DEPTH: usize = 125;

/// Whether `data` nests at most `max` levels deep (`[]` is one level, a
/// scalar none). Walks with a stack of its own, so data of any depth is
/// answered without recursion.
pub fn nested_within(data: &Value, max: usize) -> bool {
    /// The values of one array or object not yet looked at.
    enum Level<'a> {
        Items(std::slice::Iter<'a, Value>),
        Fields(serde_json::map::Values<'a>),
    }
    fn level(value: &Value) -> Option<Level<'_>> {
        match value {
            Value::Array(items) => Some(Level::Items(items.iter())),
            Value::Object(fields) => Some(Level::Fields(fields.values())),
            _ => None,
        }
    }
    let Some(top) = level(data) else {
        return true;
    };
    if max == 0 {
        return false;
    }
    let mut open = vec![top];
    while let Some(last) = open.last_mut() {
        let next = match last {
            Level::Items(items) => items.next(),
            Level::Fields(fields) => fields.next(),
        };
        match next {
            Some(child) => {
                if let Some(inner) = level(child) {
                    if open.len() == max {
                        return false;
                    }
                    open.push(inner);
                }
            }
            None => {
                open.pop();
            }
        }
    }
    true
}

/// What an append did: the events as stored, or why a record stream refused them.
#[derive(Debug, Clone, PartialEq)]
pub enum Appended {
    /// Stored with the next seqs, in order, and sent live.
    Events(Vec<Envelope<Value>>),
    /// The job of the stream does not exist.
    NotFound,
    /// The job already ended; nothing more is published on it.
    Ended,
}

/// The receiving end of a live subscription. Messages are shared (`Arc`):
/// the channel's blocks then hold pointers, not whole messages, which keeps
/// an idle subscription small (a block of 32 slots is allocated up front).
pub type LiveFeed = mpsc::UnboundedReceiver<std::sync::Arc<LiveMessage>>;

/// What one node receives live: one user's events (their jobs and private
/// streams) or one topic's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Feed<'a> {
    /// A user's events.
    User(&'a str),
    /// A topic's events.
    Topic(&'a str),
}

impl<'a> Feed<'a> {
    /// The user or topic.
    pub fn name(self) -> &'a str {
        match self {
            Self::User(name) | Self::Topic(name) => name,
        }
    }

    /// The channel name: `user:{user}` or `topic:{topic}` (after the key prefix).
    pub fn channel(self) -> String {
        match self {
            Self::User(user) => format!("user:{user}"),
            Self::Topic(topic) => format!("topic:{topic}"),
        }
    }
}

/// The event log: per-stream sequencing and history.
#[async_trait]
pub trait EventLog: Send + Sync {
    /// Appends one `event` per item of `data` (at least one, at most
    /// [`MAX_BATCH`]) to `stream` in one atomic step: the next seqs in the
    /// stream's epoch, in order, kept in history (topics keep at most
    /// [`TOPIC_HISTORY_LEN`]), sent live to the stream's readers. On a job's
    /// stream the job must exist and not have ended, and a `job:status:v1`
    /// event (one at a time, data checked by the caller) updates the job
    /// record in the same step. With `owner`, the stream must be that
    /// user's: a job owned by someone else is `NotFound`, checked in the
    /// same step.
    async fn append(
        &self,
        stream: &Stream,
        event: &str,
        data: Vec<Value>,
        owner: Option<&str>,
    ) -> Result<Appended, BrokerError>;

    /// Events of `stream` with seq greater than `after_seq`, oldest first.
    async fn history(
        &self,
        stream: &Stream,
        after_seq: u64,
    ) -> Result<Vec<(String, Envelope<Value>)>, BrokerError>;

    /// The stream's epoch and newest seq, or `None` for an unknown stream.
    async fn head(&self, stream: &Stream) -> Result<Option<StreamHead>, BrokerError>;
}

/// Live delivery to this node, and the control channel between nodes.
#[async_trait]
pub trait LiveBus: Send + Sync {
    /// Starts receiving `feed` on this node. Once this returns, every later
    /// event of the feed arrives on the receiver. One subscription per feed
    /// at a time (the hub reference-counts its sockets).
    async fn subscribe(&self, feed: Feed<'_>) -> Result<LiveFeed, BrokerError>;

    /// Stops receiving `feed`.
    async fn unsubscribe(&self, feed: Feed<'_>) -> Result<(), BrokerError>;

    /// Sends `msg` to every node (this one included).
    async fn broadcast_control(&self, msg: &ControlMessage) -> Result<(), BrokerError>;

    /// The receiver of control messages; `Some` only on the first call.
    fn take_control(&self) -> Option<mpsc::UnboundedReceiver<ControlMessage>>;
}

/// Job records.
#[async_trait]
pub trait JobStore: Send + Sync {
    /// A new job id for `owner`: 16 random hex digits. A Redis Cluster
    /// broker picks one whose keys share the owner's slot, so a job's
    /// events and the owner's live channel are written in one step.
    fn new_job_id(&self, owner: &str) -> String {
        let _ = owner;
        random_hex()
    }

    /// Stores a new job.
    async fn create_job(&self, job: &JobRecord) -> Result<(), BrokerError>;

    /// The job `id`, if it exists.
    async fn job(&self, id: &str) -> Result<Option<JobRecord>, BrokerError>;

    /// The jobs `owner` started, newest first, at most `limit`.
    async fn jobs_of(&self, owner: &str, limit: usize) -> Result<Vec<JobRecord>, BrokerError>;
}

/// The actions queue from gateways to workers (Redis stream
/// `{prefix}actions`, consumer group [`WORKER_GROUP`]).
#[async_trait]
pub trait WorkQueue: Send + Sync {
    /// Forwards an action to workers; returns its id.
    async fn enqueue_action(&self, action: &QueuedAction) -> Result<String, BrokerError>;

    /// Forwards `action` once per (`action.user`, `action.action`, `key`):
    /// in one atomic step, records the new action's id under that triple, or
    /// finds the id recorded by an earlier call and enqueues nothing. Returns
    /// the id. (Records live as long as [`Idempotency`] records.)
    async fn enqueue_once(&self, action: &QueuedAction, key: &str) -> Result<String, BrokerError>;

    /// Up to `max` actions for `consumer` of [`WORKER_GROUP`], waiting at most
    /// `block` for one.
    async fn read_actions(
        &self,
        consumer: &str,
        max: usize,
        block: Duration,
    ) -> Result<Vec<(String, QueuedAction)>, BrokerError>;

    /// Marks action `id` handled.
    async fn ack_action(&self, id: &str) -> Result<(), BrokerError>;
}

/// Results of idempotent actions.
#[async_trait]
pub trait Idempotency: Send + Sync {
    /// Records `result` under (`user`, `scope`, `key`) unless a result is
    /// already recorded; returns the earlier result in that case.
    async fn remember(
        &self,
        user: &str,
        scope: &str,
        key: &str,
        result: &Value,
    ) -> Result<Option<Value>, BrokerError>;
}

/// Token revocations, shared by every node.
#[async_trait]
pub trait Revocations: Send + Sync {
    /// Records that every token of `user` issued at or before `at` (unix
    /// seconds, the `iat` claim) is revoked, for `ttl` (the longest a token
    /// lives). Every node reads it on CONNECT and on REST calls.
    async fn revoke_tokens(&self, user: &str, at: u64, ttl: Duration) -> Result<(), BrokerError>;

    /// When `user`'s tokens were last revoked (unix seconds), if that record
    /// has not expired.
    async fn tokens_revoked_at(&self, user: &str) -> Result<Option<u64>, BrokerError>;
}

/// Leases: one holder at a time across nodes (a single ticker, a single
/// scheduler).
#[async_trait]
pub trait Leases: Send + Sync {
    /// Takes or renews the lease `name` for `holder` for `ttl`; `true` while
    /// `holder` holds it.
    async fn try_lead(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool, BrokerError>;
}

/// Daily analytics, shared by every node.
#[async_trait]
pub trait Analytics: Send + Sync {
    /// Counts `user` active on `day` (DAU).
    async fn record_active(&self, user: &str, day: &str) -> Result<(), BrokerError>;

    /// Counts an ended session of `secs` on `day`.
    async fn record_session(&self, day: &str, secs: f64) -> Result<(), BrokerError>;

    /// Counts a job of `kind` reaching `outcome` after `secs` on `day`.
    async fn record_job(
        &self,
        day: &str,
        kind: &str,
        outcome: &str,
        secs: f64,
    ) -> Result<(), BrokerError>;

    /// The analytics of `day`, counting everything recorded before.
    async fn day_stats(&self, day: &str) -> Result<DayStats, BrokerError>;

    /// Stores what was recorded and is still waiting: a broker may gather
    /// records and store them together (the Redis broker does, for up to
    /// 50 ms). A graceful shutdown calls this last.
    async fn flush_analytics(&self) -> Result<(), BrokerError> {
        Ok(())
    }
}

/// Everything a gateway needs from its backing store: one value of each
/// capability ([`MemoryBroker`] in process, [`RedisBroker`] shared).
#[async_trait]
pub trait Broker:
    EventLog
    + LiveBus
    + JobStore
    + WorkQueue
    + Idempotency
    + Revocations
    + Leases
    + Analytics
    + SharedLimits
    + 'static
{
    /// Checks the backing store is reachable.
    async fn ping(&self) -> Result<(), BrokerError>;
}

/// What [`SharedLimits::hold_connection`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// Counted.
    Held,
    /// The user already has the most connections allowed: not counted.
    Full,
    /// The token was issued at or before its user was revoked: not counted.
    Revoked,
}

/// Per-user limits every node shares (the node's own limits stay as a
/// second line in front of them).
#[async_trait]
pub trait SharedLimits: Send + Sync {
    /// Takes one action of `user` from the limit of `per_sec` actions per
    /// second with bursts of `burst`, counted across every node; `false`
    /// when the user is over it ([`crate::limits::gcra`]).
    async fn take_action(&self, user: &str, per_sec: f64, burst: u32) -> Result<bool, BrokerError>;

    /// Counts connection `id` (unique across nodes), whose token was issued
    /// at `issued` (its `iat`, unix seconds), among `user`'s connections on
    /// every node: [`Hold::Revoked`] when the user's tokens issued at or
    /// before then were revoked ([`Revocations`]), else [`Hold::Full`] when
    /// the user already has `max`, else [`Hold::Held`]. The check and the
    /// count are one step (on one Redis, one script call). A counted
    /// connection lapses after `ttl` unless renewed, so a node that dies
    /// without saying so frees its share. Holding an `id` already counted
    /// renews it.
    async fn hold_connection(
        &self,
        user: &str,
        id: &str,
        max: usize,
        ttl: Duration,
        issued: u64,
    ) -> Result<Hold, BrokerError>;

    /// Uncounts connection `id` of `user` (idempotent).
    async fn drop_connection(&self, user: &str, id: &str) -> Result<(), BrokerError>;

    /// Keeps `user`'s connections `ids` (this node's) counted for another `ttl`.
    async fn renew_connections(
        &self,
        user: &str,
        ids: &[String],
        ttl: Duration,
    ) -> Result<(), BrokerError>;
}

/// How long analytics are kept, in seconds (90 days).
pub const ANALYTICS_TTL_SECS: u64 = 90 * 24 * 3600;

/// The UTC day of `unix_secs`, `YYYY-MM-DD`.
pub fn utc_day(unix_secs: u64) -> String {
    let date = i64::try_from(unix_secs)
        .ok()
        .and_then(|secs| time::OffsetDateTime::from_unix_timestamp(secs).ok())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .date();
    format!(
        "{:04}-{:02}-{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    )
}

/// Today, UTC. Every connection asks twice (analytics of its start and its
/// end): the day is written once per day and thread, then copied.
pub fn today() -> String {
    thread_local! {
        static DAY: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((u64::MAX, String::new())) };
    }
    let secs = crate::auth::unix_secs();
    DAY.with_borrow_mut(|(day, text)| {
        if *day != secs / 86_400 {
            *day = secs / 86_400;
            *text = utc_day(secs);
        }
        text.clone()
    })
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

#[cfg(test)]
mod tests {
    use super::{MAX_DATA_DEPTH, nested_within, utc_day};
    use serde_json::{Value, json};

    /// `depth` arrays within each other, or objects when `objects`.
    fn nested(depth: usize, objects: bool) -> Value {
        let mut value = json!(1);
        for _ in 0..depth {
            // (Built by hand: `json!` would copy `value` at every level.)
            value = if objects {
                let mut fields = serde_json::Map::new();
                fields.insert("a".into(), json!(1));
                fields.insert("b".into(), value);
                Value::Object(fields)
            } else {
                Value::Array(vec![json!(0), value, json!(2)])
            };
        }
        value
    }

    #[test]
    fn data_nests_at_most_the_bound() {
        for objects in [false, true] {
            assert!(nested_within(
                &nested(MAX_DATA_DEPTH, objects),
                MAX_DATA_DEPTH
            ));
            assert!(!nested_within(
                &nested(MAX_DATA_DEPTH + 1, objects),
                MAX_DATA_DEPTH
            ));
        }
        // The deepest branch decides, wherever it stands.
        let wide = json!([[], {"a": [[[]]]}, [1, [2]]]);
        assert!(nested_within(&wide, 5));
        assert!(!nested_within(&wide, 4));
        assert!(nested_within(&json!("text"), 0));
        assert!(!nested_within(&json!([]), 0));
        assert!(nested_within(&json!({}), 1));
        // Far past any stack a recursive walk would have (dropped by hand:
        // serde_json's own Drop recurses).
        let deep = nested(200_000, false);
        assert!(!nested_within(&deep, MAX_DATA_DEPTH));
        let mut rest = vec![deep];
        while let Some(mut v) = rest.pop() {
            if let Value::Array(items) = &mut v {
                rest.append(items);
            }
        }
    }

    #[test]
    fn utc_day_formats_known_dates() {
        assert_eq!(utc_day(0), "1970-01-01");
        assert_eq!(utc_day(951_782_400), "2000-02-29");
        assert_eq!(utc_day(1_767_225_599), "2025-12-31");
    }
}
