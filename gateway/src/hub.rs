//! Live fan-out on one node: a broker subscription per user with sockets here,
//! tracked per socket id, and the seam between history replay and live delivery.
//!
//! Locking is per user: subscribing one user (a Redis round trip) never waits
//! for another user's. The node-wide map is a plain mutex held only to find or
//! insert a user's slot.
//!
//! Rooms are the hub's own: a feed's dispatcher emits each live event (encoded
//! once) to the [`Conn`]s in its room, whatever layer serves them.
//!
//! Slow clients: every live event is emitted to each socket separately. When a
//! socket's outgoing buffer ([`crate::Config::max_buffer_packets`]) is full,
//! the socket is cut off at once (nothing more is queued for it, so memory
//! stays bounded) and disconnected as soon as the DISCONNECT packet fits; the
//! transport's heartbeat closes it at the next ping if it never drains. The
//! client resumes later from its last seq without loss.

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use socketioxide::socket::Sid;
use tokio::sync::Mutex;

use crate::broker::{Broker, BrokerError, Feed, Hold, LiveFeed, LiveMessage};
use crate::conn::{Conn, EmitError};
use crate::metrics::Metrics;

/// Event sent to every socket of a revoked user just before it is closed.
pub const SESSION_REVOKED_V1: &str = "session:revoked:v1";

/// Event sent to every socket when its node shuts down: `{"retryInMs": n}`.
pub const SESSION_SHUTDOWN_V1: &str = "session:shutdown:v1";

/// Why a socket could not be counted in.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AcquireError {
    /// The user already has the maximum number of sockets on this node.
    #[error("too many connections for this user")]
    TooManyConnections,
    /// The token was issued at or before its user was revoked.
    #[error("token revoked")]
    Revoked,
    /// The broker could not be asked (the revocation record and the shared
    /// cap, or the live subscription); retry later.
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// Per-node registry of user subscriptions.
pub struct Hub {
    broker: Arc<dyn Broker>,
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
    sockets: HashMap<Sid, Conn>,
    live: Option<Live>,
}

struct Live {
    shared: Arc<UserShared>,
    task: tokio::task::JoinHandle<()>,
}

/// The dispatcher of one feed holds this lock while it emits, so a resuming
/// socket can move from "buffered" to "in the room" with nothing in between.
#[derive(Default)]
struct UserShared {
    members: Mutex<Members>,
}

/// Who gets a feed's live events on this node.
#[derive(Default)]
struct Members {
    /// Sockets replaying history, with the live events held back meanwhile.
    resuming: HashMap<Sid, (Conn, Vec<Arc<LiveMessage>>)>,
    /// Sockets that get each live event as it comes.
    room: HashMap<Sid, Conn>,
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

impl Hub {
    /// A hub emitting the live events `broker` delivers, with at most
    /// `max_per_user` sockets per user on this node, and on all nodes
    /// together (counted by the broker; `node` names this one).
    pub fn new(
        broker: Arc<dyn Broker>,
        metrics: Arc<Metrics>,
        max_per_user: usize,
        node: &str,
    ) -> Self {
        Self {
            broker,
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
        socket: &Conn,
        resuming: bool,
    ) -> Result<(), BrokerError> {
        loop {
            let slot = self.slot_of(Feed::Topic(topic));
            let mut state = slot.state.lock().await;
            if state.dead {
                continue;
            }
            self.ensure_live(Feed::Topic(topic), &mut state).await?;
            state.sockets.insert(socket.id(), socket.clone());
            enter(&state, socket, resuming).await;
            drop(state);
            self.changed();
            return Ok(());
        }
    }

    /// Takes socket `sid` out of `topic` (idempotent); unsubscribes this node
    /// when it was the topic's last socket here.
    pub async fn leave_topic(&self, topic: &str, sid: Sid) {
        self.leave(Feed::Topic(topic), sid).await;
    }

    /// Uncounts socket `sid` from `feed` (idempotent), dropping any resume
    /// buffer it had; retires the feed when it was its last socket here.
    async fn leave(&self, feed: Feed<'_>, sid: Sid) {
        let Some(slot) = self.find(feed) else {
            return;
        };
        let mut state = slot.state.lock().await;
        if state.dead || state.sockets.remove(&sid).is_none() {
            return;
        }
        if let Some(live) = &state.live {
            let mut members = live.shared.members.lock().await;
            members.resuming.remove(&sid);
            members.room.remove(&sid);
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
        let task = tokio::spawn(dispatch(rx, shared.clone(), self.metrics.clone()));
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

    /// Counts socket `conn` of `user`, whose token was issued at `issued`
    /// (unix seconds), unless the user's tokens were revoked since; then
    /// subscribes to the user's live events when none runs, and puts it in
    /// the user's room. With `resuming`, live events for this socket are
    /// buffered until [`Hub::finish_resume`] instead.
    pub async fn acquire(
        &self,
        user: &str,
        conn: &Conn,
        resuming: bool,
        issued: u64,
    ) -> Result<(), AcquireError> {
        let sid = conn.id();
        loop {
            let slot = self.slot(user);
            let mut state = slot.state.lock().await;
            if state.dead {
                continue;
            }
            let new = !state.sockets.contains_key(&sid);
            if new && state.sockets.len() >= self.max_per_user {
                return Err(AcquireError::TooManyConnections);
            }
            let id = self.connection_id(sid);
            // The revocation check and the shared cap in one step; held
            // already, the socket's place is renewed. Unread, the revocation
            // record refuses the socket, to be safe.
            match self
                .broker
                .hold_connection(user, &id, self.max_per_user, CONNECTION_TTL, issued)
                .await?
            {
                Hold::Held => {}
                Hold::Full => return Err(AcquireError::TooManyConnections),
                Hold::Revoked => return Err(AcquireError::Revoked),
            }
            if let Err(e) = self.ensure_live(Feed::User(user), &mut state).await {
                if new {
                    let _ = self.broker.drop_connection(user, &id).await;
                }
                return Err(e.into());
            }
            state.sockets.insert(sid, conn.clone());
            enter(&state, conn, resuming).await;
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
        socket: &Conn,
        last: &HashMap<String, (String, u64)>,
    ) {
        socket.session().floor.get_or_init(|| last.clone());
        let shared = match self.find(feed) {
            Some(slot) => {
                let state = slot.state.lock().await;
                state.live.as_ref().map(|l| l.shared.clone())
            }
            None => None,
        };
        // Without a live subscription the socket was released, or cut off
        // when the subscription was lost: it has nothing more to get here.
        let Some(shared) = shared else {
            return;
        };
        let sid = socket.id();
        // Flush what the dispatcher buffered for this socket, at the socket's
        // pace but never under the lock: each round takes what is buffered
        // and emits it with the lock released, so a slow or stalled socket
        // never delays the dispatcher (the user's other sockets). The socket
        // joins its room in the same lock hold that finds its buffer empty,
        // so no event falls between the buffer and the room.
        loop {
            let batch = {
                let mut members = shared.members.lock().await;
                let Some((_, buffer)) = members.resuming.get_mut(&sid) else {
                    // Released meanwhile (disconnected or cut off).
                    return;
                };
                if buffer.is_empty() {
                    members.resuming.remove(&sid);
                    members.room.insert(sid, socket.clone());
                    return;
                }
                std::mem::take(buffer)
            };
            for msg in batch {
                let at = &msg.position;
                if last.get(&at.stream).is_some_and(|(_, l)| at.seq <= *l) {
                    continue;
                }
                if !socket.emit_paced_live(&msg).await {
                    shared.members.lock().await.resuming.remove(&sid);
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
        let sid = sid.as_str();
        let mut id = String::with_capacity(self.node.len() + 1 + sid.len());
        id.push_str(&self.node);
        id.push(':');
        id.push_str(sid);
        id
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
                        .keys()
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
        let conns: Vec<Conn> = match self.find(Feed::User(user)) {
            Some(slot) => slot.state.lock().await.sockets.values().cloned().collect(),
            None => Vec::new(),
        };
        for conn in &conns {
            let _ = conn.emit(event, data);
            conn.close();
        }
        conns.len()
    }

    /// Closes `user`'s sockets on this node with a [`SESSION_REVOKED_V1`] event.
    pub async fn revoke_local(&self, user: &str) -> usize {
        self.close_user(user, SESSION_REVOKED_V1, &json!({"reason": "revoked"}))
            .await
    }

    /// Every socket counted in on this node (each is in its user's feed).
    pub async fn connections(&self) -> Vec<Conn> {
        let slots: Vec<Arc<Slot>> = {
            let map = self.users.lock().unwrap_or_else(|e| e.into_inner());
            map.values().cloned().collect()
        };
        let mut conns = Vec::new();
        for slot in slots {
            conns.extend(slot.state.lock().await.sockets.values().cloned());
        }
        conns
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

/// Puts `conn`, counted in a feed (`state`), in the feed's room, or with
/// `resuming` among its resuming sockets (live events held back).
async fn enter(state: &SlotState, conn: &Conn, resuming: bool) {
    let Some(live) = &state.live else {
        return;
    };
    let mut members = live.shared.members.lock().await;
    if resuming {
        members
            .resuming
            .insert(conn.id(), (conn.clone(), Vec::new()));
    } else {
        members.room.insert(conn.id(), conn.clone());
    }
}

async fn dispatch(mut rx: LiveFeed, shared: Arc<UserShared>, metrics: Arc<Metrics>) {
    while let Some(msg) = rx.recv().await {
        let mut members = shared.members.lock().await;
        // A resuming socket that falls this far behind is cut off like a
        // slow live one: memory stays bounded, and it resumes later.
        members.resuming.retain(|_, (conn, buf)| {
            if buf.len() < MAX_RESUME_BUFFER {
                buf.push(msg.clone());
                return true;
            }
            tracing::info!(sid = %conn.id(), "slow client cut off while resuming");
            metrics.slow_client_disconnected();
            conn.close();
            false
        });
        let at = &msg.position;
        let mut delivered = 0u64;
        for conn in members.room.values() {
            let session = conn.session();
            if session.is_cut_off() || session.replayed(at) {
                continue;
            }
            // A socket not marked connected yet fails like a closed one;
            // its client fills the gap from history.
            match conn.emit_live(&msg) {
                Ok(()) => delivered += 1,
                Err(EmitError::Full) => {
                    tracing::info!(sid = %conn.id(), "slow client cut off: outgoing buffer full");
                    metrics.slow_client_disconnected();
                    conn.close();
                }
                Err(e) => tracing::debug!(error = %e, "live emit failed"),
            }
        }
        if delivered > 0 {
            metrics.delivered(delivered, at.ts);
        }
        drop(members);
    }
    // The broker dropped the subscription (its connection was lost): live
    // events may have been missed, so every socket of the feed here is told
    // to reconnect and resume from its position.
    tracing::warn!("live subscription lost; asking its sockets to resume");
    let members = shared.members.lock().await;
    for conn in members.room.values() {
        conn.close();
    }
    for (conn, _) in members.resuming.values() {
        conn.close();
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
