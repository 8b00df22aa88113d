//! An in-process broker: the default when no Redis is configured.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use liveline::contract::{Envelope, JOB_STATUS_V1, JobStatus};
use serde_json::Value;
use tokio::sync::{Notify, mpsc};

use super::{
    Analytics, Appended, Broker, BrokerError, ControlMessage, DayStats, EventLog, Feed, Hold,
    Idempotency, JobRecord, JobStore, Leases, LiveBus, LiveFeed, LiveMessage, QueuedAction,
    Revocations, SharedLimits, StreamHead, TOPIC_HISTORY_LEN, WorkQueue, new_epoch,
};
use crate::auth::unix_millis;
use crate::stream::Stream;

/// Streams, jobs and live channels held in this process. Everything happens
/// under one lock, so seq order is delivery order.
#[derive(Debug)]
pub struct MemoryBroker {
    history_len: usize,
    inner: Mutex<Inner>,
    actions_ready: Notify,
    control_tx: mpsc::UnboundedSender<ControlMessage>,
    control_rx: Mutex<Option<mpsc::UnboundedReceiver<ControlMessage>>>,
    /// The clock of the action limit's arrival times.
    origin: std::time::Instant,
}

#[derive(Debug, Default)]
struct Inner {
    streams: HashMap<String, StreamState>,
    jobs: HashMap<String, JobRecord>,
    /// Live routes by channel: `user:{user}` or `topic:{topic}`.
    live: HashMap<String, mpsc::UnboundedSender<Arc<LiveMessage>>>,
    leases: HashMap<String, (String, tokio::time::Instant)>,
    remembered: HashMap<(String, String, String), Value>,
    actions: VecDeque<(String, QueuedAction)>,
    next_action: u64,
    days: HashMap<String, (HashSet<String>, DayStats)>,
    /// Token revocations by user: (issued at or before, unix s; record expiry).
    revoked: HashMap<String, (u64, tokio::time::Instant)>,
    /// The action limit's theoretical arrival time per user, ms since
    /// [`MemoryBroker::origin`].
    rates: HashMap<String, f64>,
    /// Connections counted per user: id -> when it lapses.
    connections: HashMap<String, HashMap<String, tokio::time::Instant>>,
}

/// Users whose action limit is tracked before the idle ones are pruned.
const RATES_PRUNE_ABOVE: usize = 10_000;

#[derive(Debug)]
struct StreamState {
    epoch: String,
    seq: u64,
    history: VecDeque<(String, Envelope<Value>)>,
}

impl MemoryBroker {
    /// A broker keeping at most `history_len` events per stream.
    pub fn new(history_len: usize) -> Self {
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        Self {
            history_len: history_len.max(1),
            inner: Mutex::new(Inner::default()),
            actions_ready: Notify::new(),
            control_tx,
            control_rx: Mutex::new(Some(control_rx)),
            origin: std::time::Instant::now(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data behind (every
        // mutation is a single step), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The jobs of `owner` in `jobs`, newest first, at most `limit`.
fn newest_of(jobs: &HashMap<String, JobRecord>, owner: &str, limit: usize) -> Vec<JobRecord> {
    let mut owned: Vec<JobRecord> = jobs
        .values()
        .filter(|j| j.owner == owner)
        .cloned()
        .collect();
    owned.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
    owned.truncate(limit);
    owned
}

impl Inner {
    /// Appends to `stream` (its next seq, history bounded by `keep`) and
    /// sends the event on `feed`'s route, if one is open.
    fn append(
        &mut self,
        keep: usize,
        stream: &Stream,
        feed: Feed<'_>,
        event: &str,
        data: Value,
    ) -> Envelope<Value> {
        let state = self
            .streams
            .entry(stream.tag())
            .or_insert_with(|| StreamState {
                epoch: new_epoch(),
                seq: 0,
                history: VecDeque::new(),
            });
        state.seq += 1;
        let envelope = Envelope {
            stream: stream.name(),
            epoch: state.epoch.clone(),
            seq: state.seq,
            ts: unix_millis(),
            data,
        };
        state
            .history
            .push_back((event.to_owned(), envelope.clone()));
        while state.history.len() > keep {
            state.history.pop_front();
        }
        let channel = feed.channel();
        // The live path carries the envelope as JSON text, as it comes from
        // Redis; written only when someone here listens.
        if let Some(tx) = self.live.get(&channel) {
            let sent = LiveMessage::new(event, &envelope).map(|msg| tx.send(Arc::new(msg)));
            if matches!(sent, Ok(Err(_))) {
                self.live.remove(&channel);
            }
        }
        envelope
    }
}

#[async_trait]
impl EventLog for MemoryBroker {
    async fn append(
        &self,
        stream: &Stream,
        event: &str,
        data: Vec<Value>,
        expected: Option<&str>,
    ) -> Result<Appended, BrokerError> {
        let mut inner = self.lock();
        let owner = match stream {
            Stream::Topic { .. } => String::new(),
            Stream::Private { user, .. } => user.clone(),
            Stream::Job { id } => match inner.jobs.get_mut(id) {
                None => return Ok(Appended::NotFound),
                Some(job) if expected.is_some_and(|u| u != job.owner) => {
                    return Ok(Appended::NotFound);
                }
                Some(job) if job.status.is_terminal() => return Ok(Appended::Ended),
                Some(job) => {
                    if let (JOB_STATUS_V1, [data]) = (event, data.as_slice()) {
                        if let Ok(st) = serde_json::from_value::<JobStatus>(data.clone()) {
                            job.status = st.status;
                            job.progress = st.progress;
                            job.message = st.message;
                            job.updated_at = unix_millis();
                        }
                    }
                    job.owner.clone()
                }
            },
        };
        let (keep, feed) = match stream {
            Stream::Topic { name } => (self.history_len.min(TOPIC_HISTORY_LEN), Feed::Topic(name)),
            _ => (self.history_len, Feed::User(&owner)),
        };
        let stored = data
            .into_iter()
            .map(|data| inner.append(keep, stream, feed, event, data))
            .collect();
        Ok(Appended::Events(stored))
    }

    async fn history(
        &self,
        stream: &Stream,
        after_seq: u64,
    ) -> Result<Vec<(String, Envelope<Value>)>, BrokerError> {
        let inner = self.lock();
        Ok(inner
            .streams
            .get(&stream.tag())
            .map(|s| {
                s.history
                    .iter()
                    .filter(|(_, e)| e.seq > after_seq)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn head(&self, stream: &Stream) -> Result<Option<StreamHead>, BrokerError> {
        Ok(self.lock().streams.get(&stream.tag()).map(|s| StreamHead {
            epoch: s.epoch.clone(),
            seq: s.seq,
        }))
    }
}

#[async_trait]
impl LiveBus for MemoryBroker {
    async fn subscribe(&self, feed: Feed<'_>) -> Result<LiveFeed, BrokerError> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().live.insert(feed.channel(), tx);
        Ok(rx)
    }

    async fn unsubscribe(&self, feed: Feed<'_>) -> Result<(), BrokerError> {
        self.lock().live.remove(&feed.channel());
        Ok(())
    }

    async fn broadcast_control(&self, msg: &ControlMessage) -> Result<(), BrokerError> {
        let _ = self.control_tx.send(msg.clone());
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
impl JobStore for MemoryBroker {
    async fn create_job(&self, job: &JobRecord) -> Result<(), BrokerError> {
        self.lock().jobs.insert(job.id.clone(), job.clone());
        Ok(())
    }

    async fn job(&self, id: &str) -> Result<Option<JobRecord>, BrokerError> {
        Ok(self.lock().jobs.get(id).cloned())
    }

    async fn jobs_of(&self, owner: &str, limit: usize) -> Result<Vec<JobRecord>, BrokerError> {
        Ok(newest_of(&self.lock().jobs, owner, limit))
    }
}

#[async_trait]
impl WorkQueue for MemoryBroker {
    async fn enqueue_action(&self, action: &QueuedAction) -> Result<String, BrokerError> {
        let id = {
            let mut inner = self.lock();
            inner.next_action += 1;
            let id = format!("0-{}", inner.next_action);
            inner.actions.push_back((id.clone(), action.clone()));
            id
        };
        self.actions_ready.notify_one();
        Ok(id)
    }

    async fn enqueue_once(&self, action: &QueuedAction, key: &str) -> Result<String, BrokerError> {
        let id = {
            let mut inner = self.lock();
            let scope = format!("queued:{}", action.action);
            let k = (action.user.clone(), scope, key.to_owned());
            if let Some(Value::String(id)) = inner.remembered.get(&k) {
                return Ok(id.clone());
            }
            inner.next_action += 1;
            let id = format!("0-{}", inner.next_action);
            inner.remembered.insert(k, Value::String(id.clone()));
            inner.actions.push_back((id.clone(), action.clone()));
            id
        };
        self.actions_ready.notify_one();
        Ok(id)
    }

    async fn read_actions(
        &self,
        _consumer: &str,
        max: usize,
        block: Duration,
    ) -> Result<Vec<(String, QueuedAction)>, BrokerError> {
        let deadline = tokio::time::Instant::now() + block;
        loop {
            let notified = self.actions_ready.notified();
            {
                let mut inner = self.lock();
                if !inner.actions.is_empty() {
                    let n = max.min(inner.actions.len());
                    return Ok(inner.actions.drain(..n).collect());
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    async fn ack_action(&self, _id: &str) -> Result<(), BrokerError> {
        Ok(())
    }
}

#[async_trait]
impl Idempotency for MemoryBroker {
    async fn remember(
        &self,
        user: &str,
        scope: &str,
        key: &str,
        result: &Value,
    ) -> Result<Option<Value>, BrokerError> {
        let mut inner = self.lock();
        let k = (user.to_owned(), scope.to_owned(), key.to_owned());
        if let Some(v) = inner.remembered.get(&k) {
            return Ok(Some(v.clone()));
        }
        inner.remembered.insert(k, result.clone());
        Ok(None)
    }
}

#[async_trait]
impl Revocations for MemoryBroker {
    async fn revoke_tokens(&self, user: &str, at: u64, ttl: Duration) -> Result<(), BrokerError> {
        let until = tokio::time::Instant::now() + ttl;
        let mut inner = self.lock();
        inner
            .revoked
            .retain(|_, (_, until)| *until > tokio::time::Instant::now());
        let entry = inner.revoked.entry(user.to_owned()).or_insert((at, until));
        *entry = (entry.0.max(at), until);
        Ok(())
    }

    async fn tokens_revoked_at(&self, user: &str) -> Result<Option<u64>, BrokerError> {
        Ok(self.lock().revoked_at(user, tokio::time::Instant::now()))
    }
}

#[async_trait]
impl Leases for MemoryBroker {
    async fn try_lead(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool, BrokerError> {
        let now = tokio::time::Instant::now();
        let mut inner = self.lock();
        let lease = inner
            .leases
            .entry(name.to_owned())
            .or_insert_with(|| (holder.to_owned(), now));
        if lease.0 == holder || lease.1 <= now {
            *lease = (holder.to_owned(), now + ttl);
            return Ok(true);
        }
        Ok(false)
    }
}

#[async_trait]
impl Analytics for MemoryBroker {
    async fn record_active(&self, user: &str, day: &str) -> Result<(), BrokerError> {
        let mut inner = self.lock();
        let (users, stats) = inner.day(day);
        users.insert(user.to_owned());
        stats.dau = users.len() as u64;
        Ok(())
    }

    async fn record_session(&self, day: &str, secs: f64) -> Result<(), BrokerError> {
        let mut inner = self.lock();
        let (_, stats) = inner.day(day);
        stats.sessions += 1;
        stats.session_seconds += secs;
        Ok(())
    }

    async fn record_job(
        &self,
        day: &str,
        kind: &str,
        outcome: &str,
        secs: f64,
    ) -> Result<(), BrokerError> {
        let mut inner = self.lock();
        let (_, stats) = inner.day(day);
        let entry = stats
            .jobs
            .entry(kind.to_owned())
            .or_default()
            .entry(outcome.to_owned())
            .or_default();
        entry.count += 1;
        entry.seconds += secs;
        Ok(())
    }

    async fn day_stats(&self, day: &str) -> Result<DayStats, BrokerError> {
        let mut inner = self.lock();
        Ok(inner.day(day).1.clone())
    }
}

#[async_trait]
impl SharedLimits for MemoryBroker {
    /// One process: the limit it shares is its own.
    async fn take_action(&self, user: &str, per_sec: f64, burst: u32) -> Result<bool, BrokerError> {
        let now = self.origin.elapsed().as_secs_f64() * 1000.0;
        let mut inner = self.lock();
        if inner.rates.len() > RATES_PRUNE_ABOVE {
            // A time already past is the same as none.
            inner.rates.retain(|_, tat| *tat > now);
        }
        let tat = inner.rates.get(user).copied();
        Ok(match crate::limits::gcra(tat, now, per_sec, burst) {
            Some(next) => {
                inner.rates.insert(user.to_owned(), next);
                true
            }
            None => false,
        })
    }

    async fn hold_connection(
        &self,
        user: &str,
        id: &str,
        max: usize,
        ttl: Duration,
        issued: u64,
    ) -> Result<Hold, BrokerError> {
        let now = tokio::time::Instant::now();
        let mut inner = self.lock();
        if inner.revoked_at(user, now).is_some_and(|at| issued <= at) {
            return Ok(Hold::Revoked);
        }
        let held = inner.connections.entry(user.to_owned()).or_default();
        held.retain(|_, until| *until > now);
        if !held.contains_key(id) && held.len() >= max {
            return Ok(Hold::Full);
        }
        held.insert(id.to_owned(), now + ttl);
        Ok(Hold::Held)
    }

    async fn drop_connection(&self, user: &str, id: &str) -> Result<(), BrokerError> {
        let mut inner = self.lock();
        if let Some(held) = inner.connections.get_mut(user) {
            held.remove(id);
            if held.is_empty() {
                inner.connections.remove(user);
            }
        }
        Ok(())
    }

    async fn renew_connections(
        &self,
        user: &str,
        ids: &[String],
        ttl: Duration,
    ) -> Result<(), BrokerError> {
        let until = tokio::time::Instant::now() + ttl;
        let mut inner = self.lock();
        if let Some(held) = inner.connections.get_mut(user) {
            for id in ids {
                if let Some(at) = held.get_mut(id) {
                    *at = until;
                }
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    async fn ping(&self) -> Result<(), BrokerError> {
        Ok(())
    }
}

impl Inner {
    /// When `user`'s tokens were last revoked, unless that record lapsed
    /// by `now`.
    fn revoked_at(&self, user: &str, now: tokio::time::Instant) -> Option<u64> {
        self.revoked
            .get(user)
            .filter(|(_, until)| *until > now)
            .map(|(at, _)| *at)
    }

    fn day(&mut self, day: &str) -> &mut (HashSet<String>, DayStats) {
        self.days.entry(day.to_owned()).or_insert_with(|| {
            (
                HashSet::new(),
                DayStats {
                    day: day.to_owned(),
                    ..DayStats::default()
                },
            )
        })
    }
}
