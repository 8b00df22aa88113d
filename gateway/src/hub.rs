//! Live fan-out on one node: a broker subscription per user with sockets here,
//! reference-counted, and the seam between history replay and live delivery.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;
use socketioxide::SocketIo;
use socketioxide::extract::SocketRef;
use socketioxide::socket::Sid;
use tokio::sync::Mutex;

use crate::broker::{Broker, BrokerError, LiveMessage};

/// The room every socket of `user` joins.
pub fn user_room(user: &str) -> String {
    format!("user:{user}")
}

/// Per-node registry of user subscriptions.
pub struct Hub {
    broker: Arc<dyn Broker>,
    io: SocketIo,
    users: Mutex<HashMap<String, UserEntry>>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").finish_non_exhaustive()
    }
}

struct UserEntry {
    sockets: usize,
    shared: Arc<UserShared>,
    task: tokio::task::JoinHandle<()>,
}

/// The dispatcher of one user holds this lock while it emits, so a resuming
/// socket can move from "buffered" to "in the room" with nothing in between.
#[derive(Default)]
struct UserShared {
    resuming: Mutex<HashMap<Sid, Vec<LiveMessage>>>,
}

impl Hub {
    /// A hub emitting through `io` the live events `broker` delivers.
    pub fn new(broker: Arc<dyn Broker>, io: SocketIo) -> Self {
        Self {
            broker,
            io,
            users: Mutex::new(HashMap::new()),
        }
    }

    /// Counts socket `sid` of `user`, subscribing to the user's live events when
    /// it is the first. With `resuming`, live events for this socket are buffered
    /// until [`Hub::finish_resume`]; otherwise the caller joins the room itself.
    pub async fn acquire(&self, user: &str, sid: Sid, resuming: bool) -> Result<(), BrokerError> {
        let mut users = self.users.lock().await;
        if !users.contains_key(user) {
            let rx = self.broker.subscribe(user).await?;
            let shared = Arc::new(UserShared::default());
            let task = tokio::spawn(dispatch(
                rx,
                shared.clone(),
                self.io.clone(),
                user_room(user),
            ));
            users.insert(
                user.to_owned(),
                UserEntry {
                    sockets: 0,
                    shared,
                    task,
                },
            );
        }
        let Some(entry) = users.get_mut(user) else {
            return Ok(());
        };
        entry.sockets += 1;
        if resuming {
            entry.shared.resuming.lock().await.insert(sid, Vec::new());
        }
        Ok(())
    }

    /// Ends a resume: emits the live events buffered for `socket` whose seq is
    /// above `last[stream]` (streams not in `last` pass whole), then joins the
    /// socket to its user's room, all under the dispatcher's lock.
    pub async fn finish_resume(&self, user: &str, socket: &SocketRef, last: &HashMap<String, u64>) {
        let shared = {
            let users = self.users.lock().await;
            users.get(user).map(|e| e.shared.clone())
        };
        let room = user_room(user);
        let Some(shared) = shared else {
            socket.join(room);
            return;
        };
        let mut resuming = shared.resuming.lock().await;
        let buffered = resuming.remove(&socket.id).unwrap_or_default();
        for msg in buffered {
            let env = &msg.envelope;
            if last.get(&env.stream).is_some_and(|&l| env.seq <= l) {
                continue;
            }
            let _ = socket.emit(&msg.event, env);
        }
        socket.join(room);
    }

    /// Uncounts socket `sid`; unsubscribes when it was the user's last here.
    pub async fn release(&self, user: &str, sid: Sid) {
        let mut users = self.users.lock().await;
        let Some(entry) = users.get_mut(user) else {
            return;
        };
        entry.shared.resuming.lock().await.remove(&sid);
        entry.sockets = entry.sockets.saturating_sub(1);
        if entry.sockets > 0 {
            return;
        }
        if let Some(entry) = users.remove(user) {
            entry.task.abort();
        }
        if let Err(e) = self.broker.unsubscribe(user).await {
            tracing::warn!(error = %e, "unsubscribe failed");
        }
    }

    /// How many users this node is subscribed for.
    pub async fn subscribed_users(&self) -> usize {
        self.users.lock().await.len()
    }
}

async fn dispatch(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<LiveMessage>,
    shared: Arc<UserShared>,
    io: SocketIo,
    room: String,
) {
    while let Some(msg) = rx.recv().await {
        let mut resuming = shared.resuming.lock().await;
        for buf in resuming.values_mut() {
            buf.push(msg.clone());
        }
        let env: &liveline::contract::Envelope<Value> = &msg.envelope;
        if let Err(e) = io.to(room.clone()).emit(&msg.event, env).await {
            tracing::debug!(error = %e, "live emit failed");
        }
        drop(resuming);
    }
}
