//! The Redis broker: workers and gateway nodes share one Redis.
//!
//! Keys (the `{...}` hash tag keeps a stream's keys in one Cluster slot):
//! - `{prefix}{job:1}:seq`   INCR counter, the stream's head seq
//! - `{prefix}{job:1}:epoch` random string, replaced whenever `seq` is created anew
//! - `{prefix}{job:1}:hist`  Redis stream, entry id `0-{seq}`, fields `event`, `env`
//! - `{prefix}{job:1}:job`   hash with the job record (job streams only)
//! - `{prefix}user:{user}`   pub/sub channel carrying `{user, event, envelope}`
//! - `{prefix}idem:{user}:{scope}:{key}` idempotency record (SET NX EX)

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures_util::StreamExt;
use liveline::contract::{Envelope, JobKind, JobState};
use redis::aio::{ConnectionManager, PubSubSink};
use redis::{AsyncCommands, Script};
use serde_json::Value;
use tokio::sync::mpsc;

use super::{
    Broker, BrokerError, IDEMPOTENCY_TTL_SECS, JobRecord, LiveMessage, StatusUpdate, StreamHead,
    job_stream, new_epoch,
};
use crate::auth::unix_millis;

/// The publish script. KEYS: seq, epoch, hist, job. ARGV: channel, user, event,
/// stream, data JSON, ts, maxlen, candidate epoch, guard ("1" = job must exist
/// and not be terminal), status, progress, message. Returns the envelope JSON,
/// or nil when the guard refused.
const PUBLISH_LUA: &str = r#"
if ARGV[9] == '1' then
  local st = redis.call('HGET', KEYS[4], 'status')
  if (not st) or st == 'completed' or st == 'failed' or st == 'cancelled' then
    return false
  end
  if ARGV[10] ~= '' then
    redis.call('HSET', KEYS[4], 'status', ARGV[10], 'progress', ARGV[11],
      'message', ARGV[12], 'updatedAt', ARGV[6])
  end
end
local seq = redis.call('INCR', KEYS[1])
local epoch
if seq == 1 then
  epoch = ARGV[8]
  redis.call('SET', KEYS[2], epoch)
  redis.call('DEL', KEYS[3])
else
  epoch = redis.call('GET', KEYS[2])
  if not epoch then
    epoch = ARGV[8]
    redis.call('SET', KEYS[2], epoch)
  end
end
local seqs = string.format('%d', seq)
local env = '{"stream":' .. cjson.encode(ARGV[4]) .. ',"epoch":' .. cjson.encode(epoch) ..
  ',"seq":' .. seqs .. ',"ts":' .. ARGV[6] .. ',"data":' .. ARGV[5] .. '}'
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[7], '0-' .. seqs, 'event', ARGV[3], 'env', env)
redis.call('PUBLISH', ARGV[1], '{"user":' .. cjson.encode(ARGV[2]) .. ',"event":' ..
  cjson.encode(ARGV[3]) .. ',"envelope":' .. env .. '}')
return env
"#;

type Routes = Arc<Mutex<HashMap<String, mpsc::UnboundedSender<LiveMessage>>>>;

/// A broker on Redis: a Lua script assigns seq and epoch, appends to history
/// and publishes in one atomic step.
pub struct RedisBroker {
    prefix: String,
    history_len: usize,
    conn: ConnectionManager,
    script: Script,
    sink: tokio::sync::Mutex<PubSubSink>,
    routes: Routes,
    reader: tokio::task::JoinHandle<()>,
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
        self.reader.abort();
    }
}

impl RedisBroker {
    /// Connects to `url` (e.g. `redis://127.0.0.1:6379`), with every key
    /// starting with `prefix` and at most about `history_len` events kept per stream.
    pub async fn connect(url: &str, prefix: &str, history_len: usize) -> Result<Self, BrokerError> {
        let client = redis::Client::open(url)?;
        let conn = client.get_connection_manager().await?;
        let (sink, mut stream) = client.get_async_pubsub().await?.split();
        let routes: Routes = Arc::default();
        let reader_routes = routes.clone();
        let reader = tokio::spawn(async move {
            while let Some(msg) = stream.next().await {
                let channel = msg.get_channel_name().to_owned();
                let Ok(msg) = serde_json::from_slice::<LiveMessage>(msg.get_payload_bytes()) else {
                    tracing::warn!(%channel, "dropping a live message that does not parse");
                    continue;
                };
                let routes = reader_routes.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(tx) = routes.get(&channel) {
                    let _ = tx.send(msg);
                }
            }
            tracing::error!("redis pub/sub connection closed; live events stop on this node");
        });
        Ok(Self {
            prefix: prefix.to_owned(),
            history_len: history_len.max(1),
            conn,
            script: Script::new(PUBLISH_LUA),
            sink: tokio::sync::Mutex::new(sink),
            routes,
            reader,
        })
    }

    fn key(&self, stream: &str, suffix: &str) -> String {
        format!("{}{{{stream}}}:{suffix}", self.prefix)
    }

    fn channel(&self, user: &str) -> String {
        format!("{}user:{user}", self.prefix)
    }

    async fn run_publish(
        &self,
        user: &str,
        stream: &str,
        event: &str,
        data: &Value,
        guard: Option<Option<&StatusUpdate>>,
    ) -> Result<Option<Envelope<Value>>, BrokerError> {
        let data = serde_json::to_string(data).map_err(|e| BrokerError::Corrupt(e.to_string()))?;
        let mut inv = self.script.prepare_invoke();
        inv.key(self.key(stream, "seq"))
            .key(self.key(stream, "epoch"))
            .key(self.key(stream, "hist"))
            .key(self.key(stream, "job"))
            .arg(self.channel(user))
            .arg(user)
            .arg(event)
            .arg(stream)
            .arg(data)
            .arg(unix_millis())
            .arg(self.history_len)
            .arg(new_epoch());
        match guard {
            None => inv.arg("0").arg("").arg("").arg(""),
            Some(None) => inv.arg("1").arg("").arg("").arg(""),
            Some(Some(u)) => inv
                .arg("1")
                .arg(u.status.as_str())
                .arg(u.progress.to_string())
                .arg(&u.message),
        };
        let mut conn = self.conn.clone();
        let env: Option<String> = inv.invoke_async(&mut conn).await?;
        env.map(|s| parse_envelope(&s)).transpose()
    }
}

fn parse_envelope(s: &str) -> Result<Envelope<Value>, BrokerError> {
    serde_json::from_str(s).map_err(|e| BrokerError::Corrupt(format!("envelope: {e}")))
}

fn parse_job(id: &str, mut h: HashMap<String, String>) -> Result<JobRecord, BrokerError> {
    let mut take = |f: &str| {
        h.remove(f)
            .ok_or_else(|| BrokerError::Corrupt(format!("job {id} lacks {f}")))
    };
    let kind: JobKind = serde_json::from_value(Value::String(take("kind")?))
        .map_err(|e| BrokerError::Corrupt(e.to_string()))?;
    let status: JobState = serde_json::from_value(Value::String(take("status")?))
        .map_err(|e| BrokerError::Corrupt(e.to_string()))?;
    let num = |s: String| {
        s.parse::<f64>()
            .map_err(|e| BrokerError::Corrupt(e.to_string()))
    };
    let int = |s: String| {
        s.parse::<u64>()
            .map_err(|e| BrokerError::Corrupt(e.to_string()))
    };
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
impl Broker for RedisBroker {
    async fn publish(
        &self,
        user: &str,
        stream: &str,
        event: &str,
        data: Value,
    ) -> Result<Envelope<Value>, BrokerError> {
        self.run_publish(user, stream, event, &data, None)
            .await?
            .ok_or_else(|| BrokerError::Corrupt("publish script returned nil".to_owned()))
    }

    async fn publish_job(
        &self,
        user: &str,
        job_id: &str,
        event: &str,
        data: Value,
        update: Option<StatusUpdate>,
    ) -> Result<Option<Envelope<Value>>, BrokerError> {
        self.run_publish(
            user,
            &job_stream(job_id),
            event,
            &data,
            Some(update.as_ref()),
        )
        .await
    }

    async fn history(
        &self,
        stream: &str,
        after_seq: u64,
    ) -> Result<Vec<(String, Envelope<Value>)>, BrokerError> {
        let mut conn = self.conn.clone();
        let entries: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
            .arg(self.key(stream, "hist"))
            .arg(format!("0-{}", after_seq.saturating_add(1)))
            .arg("+")
            .query_async(&mut conn)
            .await?;
        entries
            .into_iter()
            .map(|(id, mut fields)| {
                let event = fields
                    .remove("event")
                    .ok_or_else(|| BrokerError::Corrupt(format!("entry {id} lacks event")))?;
                let env = fields
                    .remove("env")
                    .ok_or_else(|| BrokerError::Corrupt(format!("entry {id} lacks env")))?;
                Ok((event, parse_envelope(&env)?))
            })
            .collect()
    }

    async fn head(&self, stream: &str) -> Result<Option<StreamHead>, BrokerError> {
        let mut conn = self.conn.clone();
        let (seq, epoch): (Option<u64>, Option<String>) = redis::cmd("MGET")
            .arg(self.key(stream, "seq"))
            .arg(self.key(stream, "epoch"))
            .query_async(&mut conn)
            .await?;
        Ok(match (seq, epoch) {
            (Some(seq), Some(epoch)) => Some(StreamHead { epoch, seq }),
            _ => None,
        })
    }

    async fn subscribe(
        &self,
        user: &str,
    ) -> Result<mpsc::UnboundedReceiver<LiveMessage>, BrokerError> {
        let channel = self.channel(user);
        let (tx, rx) = mpsc::unbounded_channel();
        self.routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(channel.clone(), tx);
        if let Err(e) = self.sink.lock().await.subscribe(&channel).await {
            self.routes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&channel);
            return Err(e.into());
        }
        Ok(rx)
    }

    async fn unsubscribe(&self, user: &str) -> Result<(), BrokerError> {
        let channel = self.channel(user);
        self.routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&channel);
        self.sink.lock().await.unsubscribe(&channel).await?;
        Ok(())
    }

    async fn create_job(&self, job: &JobRecord) -> Result<(), BrokerError> {
        let mut conn = self.conn.clone();
        let params =
            serde_json::to_string(&job.params).map_err(|e| BrokerError::Corrupt(e.to_string()))?;
        let fields: Vec<(&str, String)> = vec![
            ("owner", job.owner.clone()),
            ("kind", job_kind_str(job.kind).to_owned()),
            ("params", params),
            ("status", job.status.as_str().to_owned()),
            ("progress", job.progress.to_string()),
            ("message", job.message.clone()),
            ("createdAt", job.created_at.to_string()),
            ("updatedAt", job.updated_at.to_string()),
        ];
        let _: () = conn
            .hset_multiple(self.key(&job.stream(), "job"), &fields)
            .await?;
        Ok(())
    }

    async fn job(&self, id: &str) -> Result<Option<JobRecord>, BrokerError> {
        let mut conn = self.conn.clone();
        let h: HashMap<String, String> = conn.hgetall(self.key(&job_stream(id), "job")).await?;
        if h.is_empty() {
            return Ok(None);
        }
        parse_job(id, h).map(Some)
    }

    async fn remember(
        &self,
        user: &str,
        scope: &str,
        key: &str,
        result: &Value,
    ) -> Result<Option<Value>, BrokerError> {
        let mut conn = self.conn.clone();
        let k = format!("{}idem:{user}:{scope}:{key}", self.prefix);
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

    async fn ping(&self) -> Result<(), BrokerError> {
        let mut conn = self.conn.clone();
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(())
    }
}

fn job_kind_str(kind: JobKind) -> &'static str {
    match kind {
        JobKind::Research => "research",
        JobKind::Llm => "llm",
        _ => "unknown",
    }
}
