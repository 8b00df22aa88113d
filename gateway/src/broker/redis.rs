//! The Redis broker: workers and gateway nodes share one Redis, or one Redis
//! Cluster (`redis-cluster://host:port,host:port,...`).
//!
//! Keys (a `{...}` hash tag puts every key one step touches in one Cluster slot):
//! - `{prefix}{T}:seq`   INCR counter, the stream's head seq, where `{T}` is
//!   the stream's slot tag: `{job:ID}`, `{topic:NAME}`, or for a user's
//!   private stream NAME `{u:LEN:USER}:s:NAME` (LEN = bytes of USER)
//! - `{prefix}{T}:epoch` `EPOCH WRITER`: the stream's epoch, replaced whenever
//!   `seq` is created anew, and the id of the cluster master that wrote it
//!   (`-` on one Redis): a promoted replica writes a new epoch, since it may
//!   lack the last events its master acknowledged
//! - `{prefix}{T}:hist`  Redis stream, entry id `0-{seq}`, fields `event`, `env`
//! - `{prefix}{T}:rec`   hash with the job record of a job stream
//! - `{prefix}{u:LEN:USER}:live`  pub/sub channel carrying `{user, event, envelope}`
//!   of the user's jobs and private streams
//! - `{prefix}{topic:NAME}:live`  pub/sub channel of a topic
//! - `{prefix}lease:{name}`  who holds lease `name` (the demo's ticker holds one)
//! - `{prefix}idem:{len(user)}:{user}:{len(scope)}:{scope}:{key}` idempotency
//!   record (SET NX EX); the lengths (in bytes) keep every (user, scope, key)
//!   triple on its own key, whatever `:` the parts contain
//! - `{prefix}owner:{user}:jobs` sorted set of the user's job ids by creation time
//! - `{prefix}actions`       Redis stream of actions for workers, consumer group `workers`
//! - `{prefix}control`       pub/sub channel between gateway nodes (revocation)
//! - `{prefix}revoked:{user}` unix seconds: the user's tokens issued then or before are revoked (SET EX)
//! - `{prefix}{an:DAY}:dau|sessions|jobs` analytics of one UTC day
//! - `{prefix}{u:LEN:USER}:rate` the user's action limit shared by every node
//!   (GCRA: the theoretical arrival time, ms; expires once it is past)
//! - `{prefix}{u:LEN:USER}:conns` the user's connections on every node (sorted
//!   set of `NODE:SID` by when each lapses unless its node renews it)
//!
//! A live channel shares its streams' slot, so the publish script writes
//! history and publishes in one atomic step on a cluster too: a job's id is
//! chosen so that `{job:ID}` falls in its owner's slot
//! ([`JobStore::new_job_id`]), and on a cluster the script uses sharded
//! pub/sub (`SPUBLISH`), which reaches one shard instead of every node.
//!
//! Stream keys and job records expire [`STREAM_TTL_SECS`] after their last
//! event; analytics after [`super::ANALYTICS_TTL_SECS`].
//!
//! Pub/sub runs on its own connection. When it drops (on a cluster: any
//! node's), every route is closed at once (the hub then asks those users'
//! sockets to resume, since live events may be missed), and the connection
//! is re-established with backoff; new subscriptions go to the new connection.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use liveline::contract::{Envelope, JobState};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::Slot;
use redis::{AsyncCommands, Cmd, Pipeline, PushInfo, PushKind, RedisFuture, Script};

use super::circuit::{Circuit, Guarded};
use super::group;
use super::subscriber::{Inbox, Routes, Subscriber};
use super::tally;
use serde_json::Value;
use tokio::sync::mpsc;

use super::{
    Analytics, Appended, Broker, BrokerError, ControlMessage, DayStats, EventLog, Feed, Hold,
    IDEMPOTENCY_TTL_SECS, Idempotency, JobRecord, JobStore, Leases, LiveBus, LiveFeed,
    MAX_DATA_DEPTH, QueuedAction, Revocations, SharedLimits, StreamHead, WORKER_GROUP, WorkQueue,
    nested_within, random_hex,
};
use crate::stream::Stream;

/// How long a stream's keys and job record live after their last event.
pub const STREAM_TTL_SECS: u64 = 7 * 24 * 3600;

/// The publish script's defaults for a call's `ttl` and `history`.
const SCRIPT_TTL_SECS: u64 = 604_800;
const SCRIPT_HISTORY: usize = 1000;

/// Longest a Redis command (or a reconnect) may take before the call fails
/// and the circuit opens (`--redis-timeout`).
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(1);

/// Longest wait for a pub/sub SUBSCRIBE or UNSUBSCRIBE reply.
const PUBSUB_TIMEOUT: Duration = Duration::from_secs(2);

/// Entries kept (approximately) in the actions stream.
pub const ACTIONS_MAXLEN: u64 = 100_000;

/// The publish script (`gateway/src/broker/publish.lua`; its header lists
/// KEYS and ARGV). Workers in other languages load it with `SCRIPT LOAD` and
/// call it with `EVALSHA` (see docs/publishing.md).
pub const PUBLISH_LUA: &str = include_str!("publish.lua");

/// Enqueues an action once per idempotency key. KEYS: the idempotency
/// record, the actions stream. ARGV: the action JSON, the record's TTL in
/// seconds, the stream's approximate MAXLEN. Returns the action's id (the
/// earlier one when the key was used before).
const ENQUEUE_ONCE_LUA: &str = r"
local earlier = redis.call('GET', KEYS[1])
if earlier then return earlier end
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'action', ARGV[1])
redis.call('SET', KEYS[1], id, 'EX', ARGV[2])
return id
";

/// The cluster-wide action limit of one user: [`crate::limits::gcra`] on
/// Redis's clock. KEYS: the user's rate key. ARGV: actions per second, burst.
/// Returns 1 when the action fits (and stores the new arrival time), else 0.
const RATE_LUA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local interval = 1000 / math.max(tonumber(ARGV[1]), 0.001)
local burst = math.max(tonumber(ARGV[2]), 1)
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local next = tat + interval
if next - burst * interval > now then return 0 end
redis.call('SET', KEYS[1], string.format('%.3f', next), 'PX', math.ceil(next - now) + 1)
return 1
";

/// Counts a connection of a user across nodes. KEYS: the user's connections
/// (sorted set, member = connection id, score = when it lapses, ms), then
/// (on one Redis) the user's revocation record. ARGV: id, most connections,
/// ttl ms, when the token was issued (unix seconds). Returns 1 when counted
/// (an id held already is renewed), 0 when full, -1 when the token was
/// issued at or before the recorded revocation (nothing counted). Lapsed
/// places (their node died) are swept only when a new one would not fit:
/// the set never holds more than the cap, and the common connect runs two
/// commands fewer. On a cluster the record is in another slot: the broker
/// reads it beside the call.
const HOLD_LUA: &str = r"
if KEYS[2] then
  local at = redis.call('GET', KEYS[2])
  if at and tonumber(ARGV[4]) <= tonumber(at) then return -1 end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local max = tonumber(ARGV[2])
if redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1]) == 1
    and redis.call('ZCARD', KEYS[1]) > max then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  if redis.call('ZCARD', KEYS[1]) > max then
    redis.call('ZREM', KEYS[1], ARGV[1])
    return 0
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
";

/// Renews counted connections. KEYS: the user's connections. ARGV: ttl ms,
/// then the ids (only those still counted are renewed).
const RENEW_LUA: &str = r"
local t = redis.call('TIME')
local lapse = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'XX', lapse, ARGV[i]) end
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return 1
";

/// Takes or renews a lease. KEYS: lease. ARGV: holder, ttl ms. Returns 1 when held.
const LEASE_LUA: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
";

/// A connection to one Redis or to a Redis Cluster; both reconnect by
/// themselves (a cluster connection also follows a new topology after a
/// failover).
#[derive(Clone)]
pub(super) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, redis::Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(cmd, offset, count),
            Self::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// Where the broker's Redis is: one server, or a cluster's seed nodes.
enum Target {
    Single(redis::Client),
    Cluster(Vec<String>),
}

impl Target {
    /// `redis://...` (one server) or `redis-cluster://[user:pass@]host:port,host:port,...`
    /// (seed nodes of a cluster; one is enough, more survive one being down).
    fn parse(url: &str) -> Result<Self, BrokerError> {
        let Some(rest) = url.strip_prefix("redis-cluster://") else {
            return Ok(Self::Single(redis::Client::open(url)?));
        };
        let (auth, hosts) = match rest.rsplit_once('@') {
            Some((auth, hosts)) => (format!("{auth}@"), hosts),
            None => (String::new(), rest),
        };
        let nodes: Vec<String> = hosts
            .trim_end_matches('/')
            .split(',')
            .filter(|h| !h.is_empty())
            .map(|h| format!("redis://{auth}{h}"))
            .collect();
        if nodes.is_empty() {
            return Err(redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "redis-cluster:// needs at least one host:port",
            ))
            .into());
        }
        Ok(Self::Cluster(nodes))
    }

    fn cluster(nodes: &[String], response: Duration, connect: Duration) -> ClusterClientBuilder {
        ClusterClientBuilder::new(nodes.to_vec())
            .response_timeout(response)
            .connection_timeout(connect)
            .retries(2)
            .min_retry_wait(50)
            .max_retry_wait(200)
    }
}

/// The pub/sub side: a dedicated connection to one Redis (SUBSCRIBE), or a
/// RESP3 cluster connection whose sharded subscriptions (SSUBSCRIBE) the
/// client routes to each channel's shard.
enum PubSub {
    Single(Subscriber),
    Cluster(ClusterConnection),
}

/// A broker on Redis: a Lua script assigns seq and epoch, appends to history
/// and publishes in one atomic step.
pub struct RedisBroker {
    prefix: String,
    history_len: usize,
    /// Every command but blocking reads; fails at once while Redis is
    /// known to be unreachable (see [`super::circuit`]).
    conn: Guarded,
    /// For blocking reads (XREADGROUP BLOCK), which would stall `conn`.
    blocking: Conn,
    script: Script,
    /// Groups concurrent appends into one script call (one Redis only; on a
    /// cluster each append is a group of one).
    committer: Option<group::Committer>,
    /// Gathers analytics and writes them together (see [`super::tally`]).
    analytics: tally::Recorder,
    lease: Script,
    enqueue_once: Script,
    rate: Script,
    hold: Script,
    renew: Script,
    pubsub: PubSub,
    routes: Routes,
    control_rx: Mutex<Option<mpsc::UnboundedReceiver<ControlMessage>>>,
    /// The cluster's pub/sub reader (one Redis: the [`Subscriber`]'s own).
    reader: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBroker")
            .field("prefix", &self.prefix)
            .field("history_len", &self.history_len)
            .finish_non_exhaustive()
    }
}

impl Drop for RedisBroker {
    fn drop(&mut self) {
        if let Some(reader) = &self.reader {
            reader.abort();
        }
    }
}

impl RedisBroker {
    /// Connects to `url` (e.g. `redis://127.0.0.1:6379`), with every key
    /// starting with `prefix` and at most about `history_len` events kept per
    /// stream (1 to [`MAX_HISTORY_LEN`](super::MAX_HISTORY_LEN)).
    pub async fn connect(url: &str, prefix: &str, history_len: usize) -> Result<Self, BrokerError> {
        Self::connect_with(url, prefix, history_len, DEFAULT_COMMAND_TIMEOUT).await
    }

    /// [`RedisBroker::connect`] with every command (and every reconnect
    /// attempt) bounded by `command_timeout`: a dead or stalled Redis fails
    /// calls within that time, then at once while the circuit is open
    /// (see [`super::circuit`]).
    pub async fn connect_with(
        url: &str,
        prefix: &str,
        history_len: usize,
        command_timeout: Duration,
    ) -> Result<Self, BrokerError> {
        let control = format!("{prefix}control");
        let routes: Routes = Arc::default();
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let (conn, blocking, pubsub, reader) = match Target::parse(url)? {
            Target::Single(client) => {
                let fast = ConnectionManagerConfig::new()
                    .set_response_timeout(Some(command_timeout))
                    .set_connection_timeout(Some(command_timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(200));
                let conn = Conn::Single(client.get_connection_manager_with_config(fast).await?);
                // Blocking reads wait up to their BLOCK time; only reconnects are fast.
                let blocking = Conn::Single(
                    client
                        .get_connection_manager_with_config(
                            ConnectionManagerConfig::new()
                                .set_response_timeout(Some(Duration::from_secs(10)))
                                .set_connection_timeout(Some(command_timeout))
                                .set_number_of_retries(1),
                        )
                        .await?,
                );
                let inbox = Inbox {
                    routes: routes.clone(),
                    control: control.clone(),
                    control_tx,
                };
                let subscriber =
                    Subscriber::connect(client.get_connection_info(), command_timeout, inbox)
                        .await?;
                (conn, blocking, PubSub::Single(subscriber), None)
            }
            Target::Cluster(nodes) => {
                let conn = Target::cluster(&nodes, command_timeout, command_timeout)
                    .build()?
                    .get_async_connection()
                    .await?;
                let blocking = Target::cluster(&nodes, Duration::from_secs(10), command_timeout)
                    .build()?
                    .get_async_connection()
                    .await?;
                let (push_tx, push_rx) = mpsc::unbounded_channel();
                let mut pubsub = Target::cluster(&nodes, PUBSUB_TIMEOUT, command_timeout)
                    .use_protocol(redis::ProtocolVersion::RESP3)
                    .push_sender(push_tx)
                    .build()?
                    .get_async_connection()
                    .await?;
                pubsub.ssubscribe(&control).await?;
                let inbox = Inbox {
                    routes: routes.clone(),
                    control: control.clone(),
                    control_tx,
                };
                let reader = tokio::spawn(read_pushes(push_rx, inbox));
                (
                    Conn::Cluster(conn),
                    Conn::Cluster(blocking),
                    PubSub::Cluster(pubsub),
                    Some(reader),
                )
            }
        };
        let conn = Guarded::new(conn, Arc::new(Circuit::default()));
        ensure_group(&mut conn.clone(), prefix).await?;
        let script = Script::new(PUBLISH_LUA);
        let committer = match pubsub {
            PubSub::Single(_) => Some(group::Committer::spawn(conn.clone(), script.clone())),
            PubSub::Cluster(_) => None,
        };
        Ok(Self {
            prefix: prefix.to_owned(),
            history_len: history_len.clamp(1, super::MAX_HISTORY_LEN),
            analytics: tally::Recorder::spawn(conn.clone(), prefix),
            conn,
            blocking,
            script,
            committer,
            lease: Script::new(LEASE_LUA),
            enqueue_once: Script::new(ENQUEUE_ONCE_LUA),
            rate: Script::new(RATE_LUA),
            hold: Script::new(HOLD_LUA),
            renew: Script::new(RENEW_LUA),
            pubsub,
            routes,
            control_rx: Mutex::new(Some(control_rx)),
            reader,
        })
    }

    /// The user's key `suffix`, in the slot of the user's streams.
    fn user_key(&self, user: &str, suffix: &str) -> String {
        user_tagged(&self.prefix, user, &[":", suffix])
    }

    /// When `user`'s tokens were last revoked (unix seconds).
    fn revoked_key(&self, user: &str) -> String {
        format!("{}revoked:{user}", self.prefix)
    }

    /// Whether this broker talks to a Redis Cluster.
    fn is_cluster(&self) -> bool {
        matches!(self.pubsub, PubSub::Cluster(_))
    }

    /// The key `suffix` (`seq`, `epoch`, `hist`, `rec`) of `stream`.
    fn key(&self, stream: &Stream, suffix: &str) -> String {
        stream_key(&self.prefix, stream, suffix)
    }

    async fn subscribe_channel(&self, channel: String) -> Result<LiveFeed, BrokerError> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(channel.clone(), tx);
        let result = match &self.pubsub {
            // Concurrent subscriptions share writes: the subscriber writes
            // whatever was asked meanwhile at once.
            PubSub::Single(subscriber) => {
                tokio::time::timeout(PUBSUB_TIMEOUT, subscriber.subscribe(&channel))
                    .await
                    .unwrap_or_else(|_| Err(pubsub_timed_out().into()))
            }
            PubSub::Cluster(conn) => within(PUBSUB_TIMEOUT, conn.clone().ssubscribe(&channel))
                .await
                .map_err(BrokerError::from),
        };
        if let Err(e) = result {
            self.routes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&channel);
            return Err(e);
        }
        Ok(rx)
    }

    async fn unsubscribe_channel(&self, channel: String) -> Result<(), BrokerError> {
        self.routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&channel);
        match &self.pubsub {
            // Given up after the timeout: the route is gone, and a message
            // still coming on the channel finds none.
            PubSub::Single(subscriber) => {
                if let Ok(result) =
                    tokio::time::timeout(PUBSUB_TIMEOUT, subscriber.unsubscribe(&channel)).await
                {
                    result?;
                }
            }
            PubSub::Cluster(conn) => {
                within(PUBSUB_TIMEOUT, conn.clone().sunsubscribe(&channel)).await?;
            }
        }
        Ok(())
    }

    /// The owner index: `{prefix}owner:{user}:jobs`.
    fn owner_index(&self, owner: &str) -> String {
        format!("{}owner:{owner}:jobs", self.prefix)
    }

    /// The job `id`, if it exists.
    async fn load_job(&self, id: &str) -> Result<Option<JobRecord>, BrokerError> {
        let mut conn = self.conn.clone();
        let stream = Stream::Job { id: id.to_owned() };
        let h: HashMap<String, String> = conn.hgetall(self.key(&stream, "rec")).await?;
        if h.is_empty() {
            return Ok(None);
        }
        parse_job(id, h).map(Some)
    }
}

/// Runs `call`, failing as an I/O error when it takes longer than `limit`.
async fn within<T>(
    limit: Duration,
    call: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> redis::RedisResult<T> {
    tokio::time::timeout(limit, call)
        .await
        .unwrap_or_else(|_| Err(pubsub_timed_out()))
}

fn pubsub_timed_out() -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Io, "pub/sub command timed out"))
}

/// `parts` joined, in one allocation of their length: keys are built on
/// every connection and event, and `format!` costs several times as much.
fn joined(parts: &[&str]) -> String {
    let mut out = String::with_capacity(parts.iter().map(|p| p.len()).sum());
    for part in parts {
        out.push_str(part);
    }
    out
}

/// `prefix`, the hash tag of everything of `user`'s, `{u:LEN:USER}` (LEN =
/// bytes), then `rest`.
fn user_tagged(prefix: &str, user: &str, rest: &[&str]) -> String {
    let mut len = itoa::Buffer::new();
    let head = [prefix, "{u:", len.format(user.len()), ":", user, "}"];
    let size = head.iter().chain(rest).map(|p| p.len()).sum();
    let mut out = String::with_capacity(size);
    for part in head.iter().chain(rest) {
        out.push_str(part);
    }
    out
}

/// The key `suffix` of `stream` (the module's key layout).
fn stream_key(prefix: &str, stream: &Stream, suffix: &str) -> String {
    match stream {
        Stream::Private { user, name } => user_tagged(prefix, user, &[":s:", name, ":", suffix]),
        Stream::Job { .. } | Stream::Topic { .. } => {
            format!("{prefix}{{{}}}:{suffix}", stream.tag())
        }
    }
}

/// The live channel of `feed`, in the slot of the streams it carries.
fn live_channel(prefix: &str, feed: Feed<'_>) -> String {
    match feed {
        Feed::User(user) => user_tagged(prefix, user, &[":live"]),
        Feed::Topic(topic) => joined(&[prefix, "{topic:", topic, "}:live"]),
    }
}

/// The key of the idempotency record of `(user, scope, key)`. User and scope
/// are length-prefixed, so no two triples share a key even when the parts
/// contain the separator (`sub` `"a:x"` with key `"k"` is not `sub` `"a"`
/// with key `"x:k"`).
fn idempotency_key(prefix: &str, user: &str, scope: &str, key: &str) -> String {
    format!(
        "{prefix}idem:{}:{user}:{}:{scope}:{key}",
        user.len(),
        scope.len()
    )
}

/// The record of an app action forwarded once per key: the idempotency key
/// of (`user`, `queued:{action}`, `key`) (a scope of its own, since it holds
/// a queue id, not a result), led by the hash tag `{{prefix}actions}` so it
/// shares the actions stream's Redis Cluster slot and the enqueue-once
/// script touches one slot.
fn queued_key(prefix: &str, user: &str, action: &str, key: &str) -> String {
    let scope = format!("queued:{action}");
    format!(
        "{{{prefix}actions}}:{}",
        idempotency_key(prefix, user, &scope, key)
    )
}

/// Creates the workers' consumer group (and the stream) unless it exists;
/// needed at start and after Redis lost its data.
async fn ensure_group(
    conn: &mut impl redis::aio::ConnectionLike,
    prefix: &str,
) -> Result<(), BrokerError> {
    let created: Result<(), redis::RedisError> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(format!("{prefix}actions"))
        .arg(WORKER_GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(conn)
        .await;
    match created {
        Err(e) if e.code() != Some("BUSYGROUP") => Err(e.into()),
        _ => Ok(()),
    }
}

/// Reads a cluster's pub/sub pushes. A node connection that drops (a master
/// killed, a failover) closes every route, as on one Redis: the client
/// subscribes again by itself, but what was published meanwhile is gone,
/// so the hub must ask those sockets to resume. A channel the cluster
/// unsubscribed us from (its slot moved) closes its route the same way.
async fn read_pushes(mut pushes: mpsc::UnboundedReceiver<PushInfo>, inbox: Inbox) {
    while let Some(push) = pushes.recv().await {
        let bytes = |i: usize| match push.data.get(i) {
            Some(redis::Value::BulkString(b)) => Some(b.as_slice()),
            _ => None,
        };
        match push.kind {
            PushKind::Message | PushKind::SMessage => {
                if let (Some(channel), Some(payload)) = (bytes(0), bytes(1)) {
                    inbox.deliver(channel, payload);
                }
            }
            PushKind::Disconnection => {
                tracing::error!("a redis cluster node's connection dropped; live routes closed");
                inbox.close_all();
            }
            PushKind::SUnsubscribe => {
                if let Some(channel) = bytes(0).and_then(|c| std::str::from_utf8(c).ok()) {
                    inbox.close(channel);
                }
            }
            _ => {}
        }
    }
    // The cluster connection is gone for good: nothing more will arrive, so
    // every subscriber is told (its sockets resume, and fail until a node
    // restart gives the broker a new connection).
    tracing::error!("redis cluster pub/sub connection closed; live routes closed");
    inbox.close_all();
}

/// A random job id whose stream keys (`{job:ID}`) share the slot of the
/// owner's live channel, so the publish script can write the job's history
/// and publish to the owner in one step on a cluster. About 16,000 tries of
/// a CRC16 on average (a fraction of a millisecond).
fn job_id_in_slot_of(prefix: &str, owner: &str) -> String {
    let want = Slot::for_key(live_channel(prefix, Feed::User(owner)));
    let mut key = String::with_capacity(prefix.len() + 32);
    loop {
        let id = random_hex();
        key.clear();
        key.push_str(prefix);
        key.push_str("{job:");
        key.push_str(&id);
        key.push('}');
        if Slot::for_key(&key) == want {
            return id;
        }
    }
}

/// The event name and envelope of one history entry.
fn history_entry(
    mut fields: HashMap<String, Vec<u8>>,
) -> Result<(String, Envelope<Value>), BrokerError> {
    let mut text = |name: &str| {
        let bytes = fields
            .remove(name)
            .ok_or_else(|| BrokerError::Corrupt(format!("no {name}")))?;
        String::from_utf8(bytes).map_err(|e| BrokerError::Corrupt(format!("{name}: {e}")))
    };
    let event = text("event")?;
    Ok((event, parse_envelope(&text("env")?)?))
}

fn parse_envelope(s: &str) -> Result<Envelope<Value>, BrokerError> {
    serde_json::from_str(s).map_err(|e| BrokerError::Corrupt(format!("envelope: {e}")))
}

fn enum_of<T: serde::de::DeserializeOwned>(s: String) -> Result<T, BrokerError> {
    serde_json::from_value(Value::String(s)).map_err(|e| BrokerError::Corrupt(e.to_string()))
}

fn num(s: String) -> Result<f64, BrokerError> {
    s.parse::<f64>()
        .map_err(|e| BrokerError::Corrupt(e.to_string()))
}

fn int(s: String) -> Result<u64, BrokerError> {
    s.parse::<u64>()
        .map_err(|e| BrokerError::Corrupt(e.to_string()))
}

fn parse_job(id: &str, mut h: HashMap<String, String>) -> Result<JobRecord, BrokerError> {
    let mut take = |f: &str| {
        h.remove(f)
            .ok_or_else(|| BrokerError::Corrupt(format!("job {id} lacks {f}")))
    };
    let kind = take("kind")?;
    let status: JobState = enum_of(take("status")?)?;
    Ok(JobRecord {
        id: id.to_owned(),
        owner: take("owner")?,
        kind,
        params: serde_json::from_str(&take("params")?)
            .map_err(|e| BrokerError::Corrupt(e.to_string()))?,
        status,
        progress: num(take("progress")?)?,
        message: take("message")?,
        created_at: int(take("createdAt")?)?,
        updated_at: int(take("updatedAt")?)?,
    })
}

#[async_trait]
impl EventLog for RedisBroker {
    async fn append(
        &self,
        stream: &Stream,
        event: &str,
        data: Vec<Value>,
        owner: Option<&str>,
    ) -> Result<Appended, BrokerError> {
        let mut call = serde_json::json!({"stream": stream.name(), "event": event});
        // Fields the script defaults to are left out: it decodes every call.
        if self.history_len != SCRIPT_HISTORY {
            call["history"] = self.history_len.into();
        }
        if STREAM_TTL_SECS != SCRIPT_TTL_SECS {
            call["ttl"] = STREAM_TTL_SECS.into();
        }
        if data.len() != 1 {
            call["count"] = data.len().into();
        }
        // Serialized by serde_json (RFC 8259) and its depth checked here, the
        // data need not be decoded again by the script (the costliest part
        // of its checks).
        if data.iter().all(|d| nested_within(d, MAX_DATA_DEPTH)) {
            call["checked"] = Value::Bool(true);
        }
        match stream {
            Stream::Topic { .. } => call["topic"] = Value::Bool(true),
            Stream::Private { user, .. } => call["user"] = Value::String(user.clone()),
            // The script checks a named owner against the job's record.
            Stream::Job { .. } => {
                if let Some(user) = owner {
                    call["user"] = Value::String(user.to_owned());
                }
            }
        }
        let texts = data
            .iter()
            .map(serde_json::to_string)
            .collect::<Result<Vec<String>, _>>()
            .map_err(|e| BrokerError::Corrupt(e.to_string()))?;
        let call = group::Call {
            keys: ["seq", "epoch", "hist", "rec"].map(|suffix| self.key(stream, suffix)),
            call: call.to_string(),
            data: texts,
        };
        let outcome = match &self.committer {
            Some(committer) => committer.append(call).await?,
            None => {
                let mut conn = self.conn.clone();
                let mut outcomes = group::invoke(&mut conn, &self.script, &[&call]).await?;
                outcomes
                    .pop()
                    .ok_or_else(|| BrokerError::Corrupt("publish: no outcome".to_owned()))?
            }
        };
        match outcome {
            group::Outcome::Stored { epoch, seq, ts } => {
                let name = stream.name();
                let envelopes = data
                    .into_iter()
                    .zip(seq..)
                    .map(|(data, seq)| Envelope {
                        stream: name.clone(),
                        epoch: epoch.clone(),
                        seq,
                        ts,
                        data,
                    })
                    .collect();
                Ok(Appended::Events(envelopes))
            }
            refused => match refused.code() {
                Some("NOTFOUND") => Ok(Appended::NotFound),
                Some("ENDED") => Ok(Appended::Ended),
                _ => Err(BrokerError::Corrupt(format!(
                    "the publish script refused an append: {refused:?}"
                ))),
            },
        }
    }

    async fn history(
        &self,
        stream: &Stream,
        after_seq: u64,
    ) -> Result<Vec<(String, Envelope<Value>)>, BrokerError> {
        let mut conn = self.conn.clone();
        let entries: Vec<(String, HashMap<String, Vec<u8>>)> = redis::cmd("XRANGE")
            .arg(self.key(stream, "hist"))
            .arg(format!("0-{}", after_seq.saturating_add(1)))
            .arg("+")
            .query_async(&mut conn)
            .await?;
        // An entry no reader takes (written by an older script, or by a
        // caller that marked bad data `checked`) is left out, not an error:
        // the hole it leaves makes a resume across it report the history
        // lost (`recovered: false`, from the head), where an error would
        // fail every resume of the stream for as long as the entry is kept.
        Ok(entries
            .into_iter()
            .filter_map(|(id, fields)| match history_entry(fields) {
                Ok(entry) => Some(entry),
                Err(e) => {
                    tracing::warn!(stream = %stream.name(), %id, error = %e, "history: leaving out an entry no reader takes");
                    None
                }
            })
            .collect())
    }

    async fn head(&self, stream: &Stream) -> Result<Option<StreamHead>, BrokerError> {
        let mut conn = self.conn.clone();
        let (seq, epoch): (Option<u64>, Option<String>) = redis::cmd("MGET")
            .arg(self.key(stream, "seq"))
            .arg(self.key(stream, "epoch"))
            .query_async(&mut conn)
            .await?;
        Ok(match (seq, epoch) {
            // On a cluster the epoch key also names the master that wrote it.
            (Some(seq), Some(epoch)) => Some(StreamHead {
                epoch: epoch.split(' ').next().unwrap_or_default().to_owned(),
                seq,
            }),
            _ => None,
        })
    }
}

#[async_trait]
impl LiveBus for RedisBroker {
    async fn subscribe(&self, feed: Feed<'_>) -> Result<LiveFeed, BrokerError> {
        self.subscribe_channel(live_channel(&self.prefix, feed))
            .await
    }

    async fn unsubscribe(&self, feed: Feed<'_>) -> Result<(), BrokerError> {
        self.unsubscribe_channel(live_channel(&self.prefix, feed))
            .await
    }

    async fn broadcast_control(&self, msg: &ControlMessage) -> Result<(), BrokerError> {
        let mut conn = self.conn.clone();
        let payload =
            serde_json::to_string(msg).map_err(|e| BrokerError::Corrupt(e.to_string()))?;
        let command = if self.is_cluster() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        };
        let _: i64 = redis::cmd(command)
            .arg(format!("{}control", self.prefix))
            .arg(payload)
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    fn take_control(&self) -> Option<mpsc::UnboundedReceiver<ControlMessage>> {
        self.control_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }
}

#[async_trait]
impl JobStore for RedisBroker {
    fn new_job_id(&self, owner: &str) -> String {
        if !self.is_cluster() {
            return random_hex();
        }
        job_id_in_slot_of(&self.prefix, owner)
    }

    async fn create_job(&self, job: &JobRecord) -> Result<(), BrokerError> {
        let params =
            serde_json::to_string(&job.params).map_err(|e| BrokerError::Corrupt(e.to_string()))?;
        let fields: Vec<(&str, String)> = vec![
            ("owner", job.owner.clone()),
            ("kind", job.kind.clone()),
            ("params", params),
            ("status", job.status.as_str().to_owned()),
            ("progress", job.progress.to_string()),
            ("message", job.message.clone()),
            ("createdAt", job.created_at.to_string()),
            ("updatedAt", job.updated_at.to_string()),
        ];
        // Two steps, each within one Redis Cluster slot: the owner's index
        // (newest 1000 kept), then the record. A failure between them leaves
        // an id whose record is missing, which listing skips and a retry of
        // the start (same idempotency key) completes.
        let mut conn = self.conn.clone();
        let key = self.key(&job.stream(), "rec");
        let owned = self.owner_index(&job.owner);
        let _: () = redis::pipe()
            .atomic()
            .zadd(&owned, &job.id, job.created_at)
            .ignore()
            .cmd("ZREMRANGEBYRANK")
            .arg(&owned)
            .arg(0)
            .arg(-1001)
            .ignore()
            .expire(&owned, STREAM_TTL_SECS as i64)
            .ignore()
            .query_async(&mut conn)
            .await?;
        let _: () = redis::pipe()
            .atomic()
            .hset_multiple(&key, &fields)
            .ignore()
            .expire(&key, STREAM_TTL_SECS as i64)
            .ignore()
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    async fn job(&self, id: &str) -> Result<Option<JobRecord>, BrokerError> {
        self.load_job(id).await
    }

    async fn jobs_of(&self, owner: &str, limit: usize) -> Result<Vec<JobRecord>, BrokerError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let ids: Vec<String> = conn
            .zrevrange(self.owner_index(owner), 0, limit as isize - 1)
            .await?;
        let mut jobs = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(job) = self.load_job(&id).await? {
                jobs.push(job);
            }
        }
        Ok(jobs)
    }
}

#[async_trait]
impl WorkQueue for RedisBroker {
    async fn enqueue_action(&self, action: &QueuedAction) -> Result<String, BrokerError> {
        let mut conn = self.conn.clone();
        let payload =
            serde_json::to_string(action).map_err(|e| BrokerError::Corrupt(e.to_string()))?;
        let id: String = redis::cmd("XADD")
            .arg(format!("{}actions", self.prefix))
            .arg("MAXLEN")
            .arg("~")
            .arg(ACTIONS_MAXLEN)
            .arg("*")
            .arg("action")
            .arg(payload)
            .query_async(&mut conn)
            .await?;
        Ok(id)
    }

    async fn enqueue_once(&self, action: &QueuedAction, key: &str) -> Result<String, BrokerError> {
        let mut conn = self.conn.clone();
        let payload =
            serde_json::to_string(action).map_err(|e| BrokerError::Corrupt(e.to_string()))?;
        let id: String = self
            .enqueue_once
            .key(queued_key(&self.prefix, &action.user, &action.action, key))
            .key(format!("{}actions", self.prefix))
            .arg(payload)
            .arg(IDEMPOTENCY_TTL_SECS)
            .arg(ACTIONS_MAXLEN)
            .invoke_async(&mut conn)
            .await?;
        Ok(id)
    }

    async fn read_actions(
        &self,
        consumer: &str,
        max: usize,
        block: Duration,
    ) -> Result<Vec<(String, QueuedAction)>, BrokerError> {
        let mut conn = self.blocking.clone();
        let reply: Result<Option<Vec<(String, Vec<(String, HashMap<String, String>)>)>>, _> =
            redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(WORKER_GROUP)
                .arg(consumer)
                .arg("COUNT")
                .arg(max.max(1))
                .arg("BLOCK")
                .arg(block.as_millis() as u64)
                .arg("STREAMS")
                .arg(format!("{}actions", self.prefix))
                .arg(">")
                .query_async(&mut conn)
                .await;
        let reply = match reply {
            Err(e) if e.code() == Some("NOGROUP") => {
                // Redis lost its data (restart without persistence): recreate.
                ensure_group(&mut self.conn.clone(), &self.prefix).await?;
                return Ok(Vec::new());
            }
            other => other?,
        };
        let mut out = Vec::new();
        for (_, entries) in reply.unwrap_or_default() {
            for (id, mut fields) in entries {
                let parsed = fields
                    .remove("action")
                    .and_then(|a| serde_json::from_str::<QueuedAction>(&a).ok());
                match parsed {
                    Some(a) => out.push((id, a)),
                    None => {
                        tracing::warn!(%id, "dropping an action that does not parse");
                        self.ack_action(&id).await?;
                    }
                }
            }
        }
        Ok(out)
    }

    async fn ack_action(&self, id: &str) -> Result<(), BrokerError> {
        let mut conn = self.conn.clone();
        let _: i64 = redis::cmd("XACK")
            .arg(format!("{}actions", self.prefix))
            .arg(WORKER_GROUP)
            .arg(id)
            .query_async(&mut conn)
            .await?;
        Ok(())
    }
}

#[async_trait]
impl Idempotency for RedisBroker {
    async fn remember(
        &self,
        user: &str,
        scope: &str,
        key: &str,
        result: &Value,
    ) -> Result<Option<Value>, BrokerError> {
        let mut conn = self.conn.clone();
        let k = idempotency_key(&self.prefix, user, scope, key);
        let value =
            serde_json::to_string(result).map_err(|e| BrokerError::Corrupt(e.to_string()))?;
        let set: Option<String> = redis::cmd("SET")
            .arg(&k)
            .arg(value)
            .arg("NX")
            .arg("EX")
            .arg(IDEMPOTENCY_TTL_SECS)
            .query_async(&mut conn)
            .await?;
        if set.is_some() {
            return Ok(None);
        }
        let earlier: Option<String> = conn.get(&k).await?;
        match earlier {
            Some(s) => serde_json::from_str(&s)
                .map(Some)
                .map_err(|e| BrokerError::Corrupt(e.to_string())),
            // Expired between SET and GET: treat as recorded now.
            None => Ok(None),
        }
    }
}

#[async_trait]
impl Revocations for RedisBroker {
    async fn revoke_tokens(&self, user: &str, at: u64, ttl: Duration) -> Result<(), BrokerError> {
        let mut conn = self.conn.clone();
        let _: () = conn
            .set_ex(self.revoked_key(user), at, ttl.as_secs().max(1))
            .await?;
        Ok(())
    }

    async fn tokens_revoked_at(&self, user: &str) -> Result<Option<u64>, BrokerError> {
        let mut conn = self.conn.clone();
        Ok(conn.get(self.revoked_key(user)).await?)
    }
}

#[async_trait]
impl Leases for RedisBroker {
    async fn try_lead(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool, BrokerError> {
        let mut conn = self.conn.clone();
        let held: i64 = self
            .lease
            .key(format!("{}lease:{name}", self.prefix))
            .arg(holder)
            .arg(ttl.as_millis().max(1) as u64)
            .invoke_async(&mut conn)
            .await?;
        Ok(held == 1)
    }
}

#[async_trait]
impl Analytics for RedisBroker {
    async fn record_active(&self, user: &str, day: &str) -> Result<(), BrokerError> {
        self.analytics.record(|t| {
            t.active(day, user);
        });
        Ok(())
    }

    async fn record_session(&self, day: &str, secs: f64) -> Result<(), BrokerError> {
        self.analytics.record(|t| t.session(day, secs));
        Ok(())
    }

    async fn record_job(
        &self,
        day: &str,
        kind: &str,
        outcome: &str,
        secs: f64,
    ) -> Result<(), BrokerError> {
        self.analytics.record(|t| t.job(day, kind, outcome, secs));
        Ok(())
    }

    async fn flush_analytics(&self) -> Result<(), BrokerError> {
        self.analytics.flush().await
    }

    async fn day_stats(&self, day: &str) -> Result<DayStats, BrokerError> {
        self.analytics.flush().await?;
        let mut conn = self.conn.clone();
        let p = &self.prefix;
        let (dau, sessions, jobs): (u64, HashMap<String, String>, HashMap<String, String>) =
            redis::pipe()
                .cmd("PFCOUNT")
                .arg(format!("{p}{{an:{day}}}:dau"))
                .hgetall(format!("{p}{{an:{day}}}:sessions"))
                .hgetall(format!("{p}{{an:{day}}}:jobs"))
                .query_async(&mut conn)
                .await?;
        let num = |s: Option<&String>| s.and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        let mut stats = DayStats {
            day: day.to_owned(),
            dau,
            sessions: num(sessions.get("count")) as u64,
            session_seconds: num(sessions.get("seconds")),
            jobs: Default::default(),
        };
        for (field, value) in &jobs {
            let mut parts = field.splitn(3, '|');
            let (Some(kind), Some(outcome), Some(what)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let entry = stats
                .jobs
                .entry(kind.to_owned())
                .or_default()
                .entry(outcome.to_owned())
                .or_default();
            match what {
                "count" => entry.count = num(Some(value)) as u64,
                _ => entry.seconds = num(Some(value)),
            }
        }
        Ok(stats)
    }
}

#[async_trait]
impl SharedLimits for RedisBroker {
    async fn take_action(&self, user: &str, per_sec: f64, burst: u32) -> Result<bool, BrokerError> {
        let mut conn = self.conn.clone();
        let fits: i64 = self
            .rate
            .key(self.user_key(user, "rate"))
            .arg(per_sec)
            .arg(burst)
            .invoke_async(&mut conn)
            .await?;
        Ok(fits == 1)
    }

    async fn hold_connection(
        &self,
        user: &str,
        id: &str,
        max: usize,
        ttl: Duration,
        issued: u64,
    ) -> Result<Hold, BrokerError> {
        let mut conn = self.conn.clone();
        let mut call = self.hold.key(self.user_key(user, "conns"));
        let cluster = self.is_cluster();
        if !cluster {
            call.key(self.revoked_key(user));
        }
        call.arg(id)
            .arg(max)
            .arg(ttl.as_millis().max(1) as u64)
            .arg(issued);
        let hold = |held: i64| match held {
            1 => Hold::Held,
            0 => Hold::Full,
            _ => Hold::Revoked,
        };
        if !cluster {
            return Ok(hold(call.invoke_async(&mut conn).await?));
        }
        // Asked together: one round trip; a revoked token gives its place back.
        let (revoked, held) = tokio::join!(
            self.tokens_revoked_at(user),
            call.invoke_async::<i64>(&mut conn)
        );
        let held = hold(held?);
        let revoked = revoked.map(|at| at.is_some_and(|at| issued <= at));
        if held == Hold::Held && !matches!(revoked, Ok(false)) {
            // Revoked, or the record unread (the connect is refused): the
            // place goes back.
            self.drop_connection(user, id).await?;
        }
        Ok(if revoked? { Hold::Revoked } else { held })
    }

    async fn drop_connection(&self, user: &str, id: &str) -> Result<(), BrokerError> {
        let mut conn = self.conn.clone();
        let _: i64 = conn.zrem(self.user_key(user, "conns"), id).await?;
        Ok(())
    }

    async fn renew_connections(
        &self,
        user: &str,
        ids: &[String],
        ttl: Duration,
    ) -> Result<(), BrokerError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        let mut call = self.renew.key(self.user_key(user, "conns"));
        call.arg(ttl.as_millis().max(1) as u64);
        for id in ids {
            call.arg(id);
        }
        let _: i64 = call.invoke_async(&mut conn).await?;
        Ok(())
    }
}

#[async_trait]
impl Broker for RedisBroker {
    /// Every node answers (on a cluster PING goes to each), and a cluster
    /// serves every slot: while a dead master's replica has not taken over
    /// yet, `cluster_state` is `fail`.
    async fn ping(&self) -> Result<(), BrokerError> {
        let mut conn = self.conn.clone();
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        if self.is_cluster() {
            let info: String = redis::cmd("CLUSTER")
                .arg("INFO")
                .query_async(&mut conn)
                .await?;
            if !info.lines().any(|l| l.trim() == "cluster_state:ok") {
                return Err(redis::RedisError::from((
                    redis::ErrorKind::Client,
                    "the cluster does not serve every slot (cluster_state is not ok)",
                ))
                .into());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{Feed, Slot, Stream, idempotency_key, job_id_in_slot_of, live_channel, stream_key};

    const OWNERS: [&str; 6] = ["alice", "bob", "a}b", "{x}", "o:1", "\u{7528}\u{6237}"];

    /// The layout workers in other languages build keys by (the module docs).
    #[test]
    fn keys_are_laid_out_as_documented() {
        let private = Stream::Private {
            user: "\u{7528}\u{6237}".into(),
            name: "notes".into(),
        };
        assert_eq!(
            stream_key("ll:", &private, "seq"),
            "ll:{u:6:\u{7528}\u{6237}}:s:notes:seq"
        );
        assert_eq!(live_channel("p:", Feed::User("a}b")), "p:{u:3:a}b}:live");
        assert_eq!(
            live_channel("p:", Feed::Topic("market:BTC")),
            "p:{topic:market:BTC}:live"
        );
        let job = Stream::Job { id: "42".into() };
        assert_eq!(stream_key("ll:", &job, "rec"), "ll:{job:42}:rec");
    }

    #[test]
    fn a_jobs_keys_share_the_slot_of_its_owners_live_channel() {
        for owner in OWNERS {
            let want = Slot::for_key(live_channel("ll:", Feed::User(owner)));
            let id = job_id_in_slot_of("ll:", owner);
            let job = Stream::Job { id };
            for suffix in ["seq", "epoch", "hist", "rec"] {
                assert_eq!(
                    Slot::for_key(stream_key("ll:", &job, suffix)),
                    want,
                    "{owner}"
                );
            }
        }
    }

    #[test]
    fn private_streams_share_their_users_slot_and_topics_their_channels() {
        for user in OWNERS {
            let want = Slot::for_key(live_channel("p:", Feed::User(user)));
            let notes = Stream::Private {
                user: user.to_owned(),
                name: "notes:1".to_owned(),
            };
            assert_eq!(
                Slot::for_key(stream_key("p:", &notes, "hist")),
                want,
                "{user}"
            );
        }
        let topic = Stream::Topic {
            name: "market:BTC".to_owned(),
        };
        assert_eq!(
            Slot::for_key(stream_key("p:", &topic, "seq")),
            Slot::for_key(live_channel("p:", Feed::Topic("market:BTC")))
        );
    }

    /// Redis Cluster's hash tag of `key`: what is between the first `{` and
    /// the next `}`, or the whole key.
    fn hash_tag(key: &str) -> &str {
        key.find('{')
            .and_then(|open| {
                let rest = &key[open + 1..];
                rest.find('}')
                    .filter(|close| *close > 0)
                    .map(|close| &rest[..close])
            })
            .unwrap_or(key)
    }

    #[test]
    fn a_queued_actions_record_shares_the_actions_streams_slot() {
        for user in ["alice", "{odd}user", "a}b{c"] {
            let k = super::queued_key("ll:", user, "doc:annotate:v1", "k{1}");
            assert_eq!(hash_tag(&k), hash_tag("ll:actions"), "{k}");
        }
    }

    #[test]
    fn idempotency_keys_of_different_triples_differ() {
        let triples = [
            ("bob:job", "start", "k"),
            ("bob", "job:start", "k"),
            ("bob", "job", "start:k"),
            ("bob:job:start", "", "k"),
            ("bob", "", "job:start:k"),
            ("", "bob:job", "start:k"),
        ];
        let keys: std::collections::HashSet<String> = triples
            .iter()
            .map(|(u, s, k)| idempotency_key("ll:", u, s, k))
            .collect();
        assert_eq!(keys.len(), triples.len(), "{keys:?}");
    }
}
