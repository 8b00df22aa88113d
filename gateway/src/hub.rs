//! Live fan-out on one node: a broker subscription per user with sockets here,
//! tracked per socket id, and the seam between history replay and live delivery.
//!
//! Locking is per user: subscribing one user (a Redis round trip) never waits
//! for another user's. The node-wide map is a plain mutex held only to find or
//! insert a user's slot.
//!
//! Slow clients: every live event is emitted to each socket separately. When a
//! socket's outgoing buffer (socketioxide's `max_buffer_size` packets) is full,
//! the socket is cut off at once (it leaves its room, so nothing more is queued
//! for it and memory stays bounded) and disconnected as soon as the DISCONNECT
//! packet fits; socketioxide's own heartbeat closes it at the next ping if it
//! never drains. The client resumes later from its last seq without loss.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use socketioxide::SocketIo;
use socketioxide::extract::SocketRef;
use socketioxide::socket::Sid;
use socketioxide::{SendError, SocketError};
use tokio::sync::Mutex;

use crate::broker::{Broker, BrokerError, Feed, LiveFeed, LiveMessage};
use crate::metrics::Metrics;

/// Event sent to every socket of a revoked user just before it is closed.
pub const SESSION_REVOKED_V1: &str = "session:revoked:v1";

/// Event sent to every socket when its node shuts down: `{"retryInMs": n}`.
pub const SESSION_SHUTDOWN_V1: &str = "session:shutdown:v1";

/// The room every socket of `user` joins.
pub fn user_room(user: &str) -> String {
    format!("user:{user}")
}

/// The room of the sockets subscribed to public topic `topic`.
pub fn topic_room(topic: &str) -> String {
    format!("topic:{topic}")
}

/// Why a socket could not be counted in.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AcquireError {
    /// The user already has the maximum number of sockets on this node.
    #[error("too many connections for this user")]
    TooManyConnections,
    /// The live subscription failed; retry later.
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// Per-node registry of user subscriptions.
pub struct Hub {
    broker: Arc<dyn Broker>,
    io: SocketIo,
    metrics: Arc<Metrics>,
    max_per_user: usize,
    /// This node's id: a socket's connection id across nodes is `node:sid`.
    node: String,
    users: StdMutex<HashMap<String, Arc<Slot>>>,
    topics: StdMutex<HashMap<String, Arc<Slot>>>,
    /// Bumped whenever a socket is counted in or out of a feed here.
    changes: tokio::sync::watch::Sender<u64>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Slot {
    state: Mutex<SlotState>,
}

#[derive(Default)]
struct SlotState {
    /// Removed from the map; a waiter must look the user up again.
    dead: bool,
    sockets: HashSet<Sid>,
    live: Option<Live>,
}

struct Live {
    shared: Arc<UserShared>,
    task: tokio::task::JoinHandle<()>,
}

/// The dispatcher of one user holds this lock while it emits, so a resuming
/// socket can move from "buffered" to "in the room" with nothing in between.
#[derive(Default)]
struct UserShared {
    resuming: Mutex<HashMap<Sid, Vec<Arc<LiveMessage>>>>,
}

/// The room of `feed`'s sockets.
fn room(feed: Feed<'_>) -> String {
    match feed {
        Feed::User(user) => user_room(user),
        Feed::Topic(topic) => topic_room(topic),
    }
}

/// How many slots of `map` have a live subscription.
async fn count_live(map: &StdMutex<HashMap<String, Arc<Slot>>>) -> usize {
    let slots: Vec<Arc<Slot>> = {
        let map = map.lock().unwrap_or_else(|e| e.into_inner());
        map.values().cloned().collect()
    };
    let mut n = 0;
    for slot in slots {
        if slot.state.lock().await.live.is_some() {
            n += 1;
        }
    }
    n
}

/// Marks a socket cut off for being too slow; it gets nothing more.
#[derive(Debug, Clone, Copy)]
struct Overflowed;

/// What a resumed socket already got per stream (epoch, seq): a live event the
/// dispatcher only processes after the socket joined its room (it was still in
/// the channel, or a late pub/sub message of an earlier subscription) may have
/// been replayed already, and must not be sent twice.
#[derive(Debug, Clone)]
struct Floor(Arc<HashMap<String, (String, u64)>>);

impl Floor {
    fn covers<T>(&self, env: &liveline::contract::Envelope<T>) -> bool {
        self.0
            .get(&env.stream)
            .is_some_and(|(epoch, seq)| *epoch == env.epoch && env.seq <= *seq)
    }
}

impl Hub {
    /// A hub emitting through `io` the live events `broker` delivers, with at
    /// most `max_per_user` sockets per user on this node, and on all nodes
    /// together (counted by the broker; `node` names this one).
    pub fn new(
        broker: Arc<dyn Broker>,
        io: SocketIo,
        metrics: Arc<Metrics>,
        max_per_user: usize,
        node: &str,
    ) -> Self {
        Self {
            broker,
            io,
            metrics,
            max_per_user: max_per_user.max(1),
            node: node.to_owned(),
            users: StdMutex::new(HashMap::new()),
            topics: StdMutex::new(HashMap::new()),
            changes: tokio::sync::watch::Sender::new(0),
        }
    }

    /// A receiver that sees a new value whenever a socket was counted in or
    /// out of a user or topic on this node (its subscriptions follow): for
    /// waiting until this node's counts reach a state.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Joins `socket` to topic `topic`'s live events, subscribing this node
    /// to the topic when it is the first socket here (reference-counted).
    /// With `resuming`, its live events are buffered until
    /// [`Hub::finish_resume`] instead (the socket replays history first).
    pub async fn join_topic(
        &self,
        topic: &str,
        socket: &SocketRef,
        resuming: bool,
    ) -> Result<(), BrokerError> {
        loop {
            let slot = self.slot_of(Feed::Topic(topic));
            let mut state = slot.state.lock().await;
            if state.dead {
                continue;
            }
            self.ensure_live(Feed::Topic(topic), &mut state).await?;
            state.sockets.insert(socket.id);
            match (&state.live, resuming) {
                (Some(live), true) => {
                    live.shared
                        .resuming
                        .lock()
                        .await
                        .insert(socket.id, Vec::new());
                }
                _ => socket.join(topic_room(topic)),
            }
            drop(state);
            self.changed();
            return Ok(());
        }
    }

    /// Takes socket `sid` out of `topic` (idempotent); unsubscribes this node
    /// when it was the topic's last socket here.
    pub async fn leave_topic(&self, topic: &str, sid: Sid) {
        if let Some(s) = self.io.get_socket(sid) {
            s.leave(topic_room(topic));
        }
        self.leave(Feed::Topic(topic), sid).await;
    }

    /// Uncounts socket `sid` from `feed` (idempotent), dropping any resume
    /// buffer it had; retires the feed when it was its last socket here.
    async fn leave(&self, feed: Feed<'_>, sid: Sid) {
        let Some(slot) = self.find(feed) else {
            return;
        };
        let mut state = slot.state.lock().await;
        if state.dead || !state.sockets.remove(&sid) {
            return;
        }
        if let Some(live) = &state.live {
            live.shared.resuming.lock().await.remove(&sid);
        }
        if state.sockets.is_empty() {
            self.retire(feed, &slot, &mut state).await;
        }
        drop(state);
        self.changed();
    }

    /// How many topics this node is subscribed to.
    pub async fn subscribed_topics(&self) -> usize {
        count_live(&self.topics).await
    }

    fn slot(&self, user: &str) -> Arc<Slot> {
        self.slot_of(Feed::User(user))
    }

    /// The node-wide map of `feed`'s kind.
    fn slots(&self, feed: Feed<'_>) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Slot>>> {
        let map = match feed {
            Feed::User(_) => &self.users,
            Feed::Topic(_) => &self.topics,
        };
        map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `feed`'s slot, if it has one.
    fn find(&self, feed: Feed<'_>) -> Option<Arc<Slot>> {
        self.slots(feed).get(feed.name()).cloned()
    }

    /// `feed`'s slot, created when missing.
    fn slot_of(&self, feed: Feed<'_>) -> Arc<Slot> {
        self.slots(feed)
            .entry(feed.name().to_owned())
            .or_default()
            .clone()
    }

    /// Subscribes this node to `feed` and starts its dispatcher unless one runs.
    async fn ensure_live(&self, feed: Feed<'_>, state: &mut SlotState) -> Result<(), BrokerError> {
        if state.live.as_ref().is_some_and(|l| !l.task.is_finished()) {
            return Ok(());
        }
        let rx = self.broker.subscribe(feed).await?;
        let shared = Arc::new(UserShared::default());
        let task = tokio::spawn(dispatch(
            rx,
            shared.clone(),
            self.io.clone(),
            self.metrics.clone(),
            room(feed),
        ));
        state.live = Some(Live { shared, task });
        Ok(())
    }

    /// Retires `feed`'s `slot` once its last socket left: stops the
    /// dispatcher, unsubscribes this node and forgets the slot.
    async fn retire(&self, feed: Feed<'_>, slot: &Arc<Slot>, state: &mut SlotState) {
        state.dead = true;
        if let Some(live) = state.live.take() {
            live.task.abort();
            if let Err(e) = self.broker.unsubscribe(feed).await {
                match feed {
                    Feed::User(_) => tracing::warn!(error = %e, "unsubscribe failed"),
                    Feed::Topic(_) => tracing::warn!(error = %e, "topic unsubscribe failed"),
                }
            }
        }
        let mut slots = self.slots(feed);
        if slots.get(feed.name()).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            slots.remove(feed.name());
        }
    }

    /// Counts socket `sid` of `user`, subscribing to the user's live events when
    /// none runs. With `resuming`, live events for this socket are buffered
    /// until [`Hub::finish_resume`]; otherwise the caller joins the room itself.
    pub async fn acquire(&self, user: &str, sid: Sid, resuming: bool) -> Result<(), AcquireError> {
        loop {
            let slot = self.slot(user);
            let mut state = slot.state.lock().await;
            if state.dead {
                continue;
            }
            let new = !state.sockets.contains(&sid);
            if new && state.sockets.len() >= self.max_per_user {
                return Err(AcquireError::TooManyConnections);
            }
            let id = self.connection_id(sid);
            if new {
                let ttl = CONNECTION_TTL;
                match self
                    .broker
                    .hold_connection(user, &id, self.max_per_user, ttl)
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => return Err(AcquireError::TooManyConnections),
                    Err(e) => {
                        tracing::debug!(error = %e, "shared connection cap unavailable; the node's holds");
                    }
                }
            }
            if let Err(e) = self.ensure_live(Feed::User(user), &mut state).await {
                if new {
                    let _ = self.broker.drop_connection(user, &id).await;
                }
                return Err(e.into());
            }
            state.sockets.insert(sid);
            if resuming {
                if let Some(live) = &state.live {
                    live.shared.resuming.lock().await.insert(sid, Vec::new());
                }
            }
            drop(state);
            self.changed();
            return Ok(());
        }
    }

    /// Ends a resume on `feed` (the socket's user, or a topic it resumed):
    /// emits the live events buffered for `socket` whose seq is above
    /// `last[stream]` (streams not in `last` pass whole), then joins the
    /// socket to the feed's room, all under the dispatcher's lock. `last`
    /// maps a stream to the (epoch, seq) the socket has; later live events at
    /// or below it are not sent again.
    pub async fn finish_resume(
        &self,
        feed: Feed<'_>,
        socket: &SocketRef,
        last: &HashMap<String, (String, u64)>,
    ) {
        if socket.extensions.get::<Floor>().is_none() {
            socket.extensions.insert(Floor(Arc::new(last.clone())));
        }
        let shared = match self.find(feed) {
            Some(slot) => {
                let state = slot.state.lock().await;
                state.live.as_ref().map(|l| l.shared.clone())
            }
            None => None,
        };
        let Some(shared) = shared else {
            socket.join(room(feed));
            return;
        };
        // Flush what the dispatcher buffered for this socket, at the socket's
        // pace but never under the lock: each round takes what is buffered
        // and emits it with the lock released, so a slow or stalled socket
        // never delays the dispatcher (the user's other sockets). The socket
        // joins its room in the same lock hold that finds its buffer empty,
        // so no event falls between the buffer and the room.
        loop {
            let batch = {
                let mut resuming = shared.resuming.lock().await;
                let Some(buffer) = resuming.get_mut(&socket.id) else {
                    // Released meanwhile (disconnected or cut off).
                    return;
                };
                if buffer.is_empty() {
                    resuming.remove(&socket.id);
                    socket.join(room(feed));
                    return;
                }
                std::mem::take(buffer)
            };
            for msg in batch {
                let env = &msg.envelope;
                if last.get(&env.stream).is_some_and(|(_, l)| env.seq <= *l) {
                    continue;
                }
                if !emit_paced(socket, &msg.event, env).await {
                    shared.resuming.lock().await.remove(&socket.id);
                    return;
                }
            }
        }
    }

    /// Uncounts socket `sid` (idempotent); unsubscribes when it was the user's
    /// last socket here.
    pub async fn release(&self, user: &str, sid: Sid) {
        // Uncounted everywhere first: once this node counts the socket out,
        // every node sees the freed place.
        if let Err(e) = self
            .broker
            .drop_connection(user, &self.connection_id(sid))
            .await
        {
            // It lapses after CONNECTION_TTL without renewal.
            tracing::debug!(error = %e, "shared connection count not lowered");
        }
        self.leave(Feed::User(user), sid).await;
    }

    /// The id of socket `sid` among a user's connections on every node.
    fn connection_id(&self, sid: Sid) -> String {
        format!("{}:{sid}", self.node)
    }

    /// Keeps this node's sockets counted in their users' shared caps: the
    /// users of renewal bucket `tick % RENEW_BUCKETS` ([`renew_bucket`]).
    /// `Handle::start` calls it every [`RENEW_EVERY`] with the next tick, so
    /// each user is renewed every third of [`CONNECTION_TTL`], and the
    /// renewals are spread over that time instead of one burst of a call per
    /// user (10,000 round trips every 30 s at 10,000 users).
    pub async fn renew_connections(&self, tick: u64) {
        let bucket = tick % RENEW_BUCKETS;
        let users: Vec<(String, Arc<Slot>)> = {
            let map = self.users.lock().unwrap_or_else(|e| e.into_inner());
            map.iter()
                .filter(|(u, _)| renew_bucket(u) == bucket)
                .map(|(u, s)| (u.clone(), s.clone()))
                .collect()
        };
        // A few calls in flight: the connection pipelines them.
        futures_util::stream::iter(users)
            .for_each_concurrent(16, |(user, slot)| async move {
                let ids: Vec<String> = {
                    let state = slot.state.lock().await;
                    state
                        .sockets
                        .iter()
                        .map(|sid| self.connection_id(*sid))
                        .collect()
                };
                if let Err(e) = self
                    .broker
                    .renew_connections(&user, &ids, CONNECTION_TTL)
                    .await
                {
                    tracing::debug!(error = %e, "shared connection count not renewed");
                }
            })
            .await;
    }

    /// Emits `event` with `data` to every socket of `user` on this node, then
    /// disconnects them. Returns how many were closed.
    pub async fn close_user(&self, user: &str, event: &str, data: &Value) -> usize {
        let sids: Vec<Sid> = {
            let slot = self.find(Feed::User(user));
            match slot {
                Some(slot) => slot.state.lock().await.sockets.iter().copied().collect(),
                None => Vec::new(),
            }
        };
        let mut closed = 0;
        for sid in sids {
            if let Some(s) = self.io.get_socket(sid) {
                let _ = emit(&s, event, data);
                close_socket(s);
                closed += 1;
            }
        }
        closed
    }

    /// Closes `user`'s sockets on this node with a [`SESSION_REVOKED_V1`] event.
    pub async fn revoke_local(&self, user: &str) -> usize {
        self.close_user(user, SESSION_REVOKED_V1, &json!({"reason": "revoked"}))
            .await
    }

    /// How many users this node is subscribed for.
    pub async fn subscribed_users(&self) -> usize {
        count_live(&self.users).await
    }

    /// How many sockets `user` has on this node.
    pub async fn sockets_of(&self, user: &str) -> usize {
        let slot = self.find(Feed::User(user));
        match slot {
            Some(slot) => slot.state.lock().await.sockets.len(),
            None => 0,
        }
    }
}

/// Live events buffered for one resuming socket at most; past it the socket
/// is cut off (it resumes later from its position).
pub const MAX_RESUME_BUFFER: usize = 4096;

/// How long a socket stays counted in its user's connection cap on every
/// node without its node renewing it: a node that dies frees its share
/// within this time.
pub const CONNECTION_TTL: Duration = Duration::from_secs(90);

/// Renewal buckets: each tick of [`RENEW_EVERY`] renews one of them.
pub const RENEW_BUCKETS: u64 = 30;

/// How often a renewal bucket comes up: every user is renewed every
/// `RENEW_EVERY * RENEW_BUCKETS`, a third of [`CONNECTION_TTL`].
pub const RENEW_EVERY: Duration = Duration::from_secs(1);

/// The renewal bucket of `user` (stable within the process).
pub fn renew_bucket(user: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    user.hash(&mut h);
    h.finish() % RENEW_BUCKETS
}

/// How long a replay waits for room in a socket's outgoing buffer before it
/// gives up and closes the socket (the client resumes later).
pub const REPLAY_STALL: Duration = Duration::from_secs(5);

/// Emits to `s`, waiting (up to [`REPLAY_STALL`]) while its outgoing buffer is
/// full, so a long replay goes at the client's pace and never drops an event.
/// On failure the socket is closed and `false` returned.
///
/// socketioxide 0.18 tells only that a socket's buffer is full (engineioxide's
/// `reserve` is a try, with no async wait), so this waits between tries, from
/// 1 ms doubling to 32 ms. Only this socket's task waits: it holds no lock.
pub async fn emit_paced<T: serde::Serialize + ?Sized>(
    s: &SocketRef,
    event: &str,
    data: &T,
) -> bool {
    let deadline = tokio::time::Instant::now() + REPLAY_STALL;
    let mut wait = Duration::from_millis(1);
    welcomed(s).await;
    loop {
        match emit(s, event, data) {
            Ok(()) => return true,
            Err(SendError::Socket(SocketError::InternalChannelFull))
                if tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_millis(32));
            }
            Err(_) => {
                close_socket(s.clone());
                return false;
            }
        }
    }
}

/// Whether a socket's `session:welcome:v1` went out (the lock orders the
/// first emit), and whether its connect task ran (so socketioxide marked it
/// connected). Inserted by the connect middleware, removed once sent.
#[derive(Clone)]
pub struct WelcomeGate(Arc<(std::sync::Mutex<bool>, tokio::sync::watch::Sender<bool>)>);

impl Default for WelcomeGate {
    fn default() -> Self {
        Self(Arc::new((
            std::sync::Mutex::new(false),
            tokio::sync::watch::Sender::new(false),
        )))
    }
}

/// Emits `event` to `s`, after its `session:welcome:v1` (the gateway's one
/// emit path: every event goes through here, acks through [`welcomed`]).
/// Fails as an emit to a closed socket while the welcome cannot go out yet.
pub fn emit<T: serde::Serialize + ?Sized>(
    s: &SocketRef,
    event: &str,
    data: &T,
) -> Result<(), SendError> {
    if !welcome(s) {
        return Err(SendError::Socket(SocketError::Closed));
    }
    s.emit(event, data)
}

/// Sends `s` its `session:welcome:v1` unless it went out already; true
/// once it is out. Every emit ([`emit`]) and every ack ([`welcomed`]) passes
/// here first, so the welcome is the first event on every connection
/// whichever path runs first: socketioxide queues the CONNECT reply, then
/// marks the socket connected, then runs the connect task, and a live event
/// or an ack could otherwise overtake the welcome. False while the socket is
/// not marked connected yet (nothing can be emitted to it then); once sent,
/// the gate is gone and a call costs one failed extension lookup.
fn welcome(s: &SocketRef) -> bool {
    let Some(WelcomeGate(gate)) = s.extensions.get::<WelcomeGate>() else {
        return true;
    };
    let mut sent = gate.0.lock().unwrap_or_else(|e| e.into_inner());
    if !*sent {
        let out = s.emit(
            liveline::contract::SESSION_WELCOME_V1,
            &json!({ "protocol": 1 }),
        );
        if out.is_err() {
            return false;
        }
        *sent = true;
        s.extensions.remove::<WelcomeGate>();
    }
    true
}

/// The connect task runs: socketioxide has marked `s` connected, so its
/// welcome can go out now, and whoever waits in [`welcomed`] may go on.
pub fn connected(s: &SocketRef) {
    if let Some(WelcomeGate(gate)) = s.extensions.get::<WelcomeGate>() {
        gate.1.send_replace(true);
    }
    welcome(s);
}

/// Waits until `s`'s welcome is out, for an ack that must not overtake it:
/// a client sends its first action as soon as it reads the CONNECT reply,
/// and its handler can run before socketioxide marked the socket connected
/// (on a loaded machine, for milliseconds). It waits for the connect task
/// ([`connected`]); bounded, for a socket that closed instead (its ack then
/// fails like any other).
pub async fn welcomed(s: &SocketRef) {
    if welcome(s) {
        return;
    }
    let Some(WelcomeGate(gate)) = s.extensions.get::<WelcomeGate>() else {
        return;
    };
    let mut ready = gate.1.subscribe();
    let _ = tokio::time::timeout(Duration::from_secs(10), ready.wait_for(|c| *c)).await;
    welcome(s);
}

/// Disconnects `s`; when its buffer is full, cuts it off (leaves every room)
/// and retries until the DISCONNECT packet fits or the socket closes.
pub fn close_socket(s: SocketRef) {
    s.leave_all();
    s.extensions.insert(Overflowed);
    if let Err(SocketError::InternalChannelFull) = s.clone().disconnect() {
        tokio::spawn(async move {
            for _ in 0..600 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if !s.connected() {
                    return;
                }
                if !matches!(
                    s.clone().disconnect(),
                    Err(SocketError::InternalChannelFull)
                ) {
                    return;
                }
            }
        });
    }
}

async fn dispatch(
    mut rx: LiveFeed,
    shared: Arc<UserShared>,
    io: SocketIo,
    metrics: Arc<Metrics>,
    room: String,
) {
    while let Some(msg) = rx.recv().await {
        let mut resuming = shared.resuming.lock().await;
        // A resuming socket that falls this far behind is cut off like a
        // slow live one: memory stays bounded, and it resumes later.
        resuming.retain(|sid, buf| {
            if buf.len() < MAX_RESUME_BUFFER {
                buf.push(msg.clone());
                return true;
            }
            if let Some(s) = io.get_socket(*sid) {
                tracing::info!(sid = %s.id, "slow client cut off while resuming");
                metrics.slow_client_disconnected();
                close_socket(s);
            }
            false
        });
        let env = &msg.envelope;
        let mut delivered = 0u64;
        for s in io.to(room.clone()).sockets() {
            if s.extensions.get::<Overflowed>().is_some() {
                continue;
            }
            if s.extensions.get::<Floor>().is_some_and(|f| f.covers(env)) {
                continue;
            }
            // A socket not marked connected yet fails like a closed one;
            // its client fills the gap from history.
            match emit(&s, &msg.event, env) {
                Ok(()) => delivered += 1,
                Err(SendError::Socket(SocketError::InternalChannelFull)) => {
                    tracing::info!(sid = %s.id, "slow client cut off: outgoing buffer full");
                    metrics.slow_client_disconnected();
                    close_socket(s);
                }
                Err(e) => tracing::debug!(error = %e, "live emit failed"),
            }
        }
        if delivered > 0 {
            metrics.delivered(delivered, env.ts);
        }
        drop(resuming);
    }
    // The broker dropped the subscription (its connection was lost): live
    // events may have been missed, so every socket of the user here is told
    // to reconnect and resume from its position.
    tracing::warn!("live subscription lost; asking its sockets to resume");
    for s in io.to(room).sockets() {
        close_socket(s);
    }
    let sids: Vec<Sid> = shared.resuming.lock().await.keys().copied().collect();
    for sid in sids {
        if let Some(s) = io.get_socket(sid) {
            close_socket(s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{CONNECTION_TTL, RENEW_BUCKETS, RENEW_EVERY, renew_bucket};

    #[test]
    fn a_round_of_buckets_renews_within_a_third_of_the_lifetime() {
        assert_eq!(RENEW_EVERY * RENEW_BUCKETS as u32, CONNECTION_TTL / 3);
    }

    #[test]
    fn users_spread_over_the_buckets() {
        let mut counts = [0u32; RENEW_BUCKETS as usize];
        for i in 0..3000 {
            let b = renew_bucket(&format!("user-{i}"));
            assert_eq!(b, renew_bucket(&format!("user-{i}")), "stable");
            counts[b as usize] += 1;
        }
        // 100 each on average; none empty, none with a burst of its own.
        assert!(
            counts.iter().all(|&c| (50..=150).contains(&c)),
            "{counts:?}"
        );
    }
}
