//! The action outbox: bounded, ordered, one idempotency key per action, a
//! per-action expiry, and ack timeouts that send the action again under the
//! same key (the gateway applies a key once, however often it arrives).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::json;

/// Why an action could not be queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The outbox holds as many actions as it may; wait for acks or raise
    /// `outbox_capacity`.
    #[error("outbox full: {0} actions are waiting")]
    OutboxFull(usize),
    /// The action's data is not one JSON value.
    #[error("action data is not valid json: {0}")]
    InvalidJson(crate::json::JsonError),
    /// The action, as a frame, is larger than the server accepts (its
    /// handshake's `maxPayload`); it was not queued.
    #[error("action is {size} bytes on the wire; the server accepts at most {max}")]
    PayloadTooLarge {
        /// The frame's size in bytes.
        size: usize,
        /// The server's limit in bytes.
        max: usize,
    },
    /// A raw emit while not connected, and `emit_buffer` emits already
    /// wait for the connection; it was not buffered.
    #[error("not connected, and {0} emits already wait for the connection")]
    BufferFull(usize),
    /// The client is `failed` (it will not reconnect until `connect()`); the
    /// action was not queued. The reason is the failure's.
    #[error("the client has failed ({0}); nothing is queued until connect()")]
    Failed(String),
}

/// How an action ended without a result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ActionError {
    /// The gateway refused the action; `code` is stable.
    #[error("{code}: {message}")]
    Rejected {
        /// Stable machine-readable code.
        code: String,
        /// Explanation.
        message: String,
    },
    /// The action was not acked before its expiry.
    #[error("action expired before the gateway acknowledged it")]
    Expired,
}

/// One queued action, as persisted across reloads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Action {
    /// Local id, returned by `send`.
    pub id: u64,
    /// Action name, e.g. `job:start:v1`.
    pub name: String,
    /// Payload, as JSON text.
    pub data: String,
    /// Idempotency key.
    pub key: String,
    /// Expiry: on the client's monotonic clock inside the outbox; in ms
    /// since the Unix epoch in a snapshot ([`crate::Client::outbox_snapshot`]),
    /// what storage keeps across reloads.
    pub expires_at: u64,
    /// `(ack id, deadline)` while sent and unacked.
    #[serde(skip)]
    pub in_flight: Option<(u64, u64)>,
}

/// Encodes actions for storage: a JSON array of `{id, name, key, expiresAt, data}`.
pub fn encode_actions(actions: &[Action]) -> String {
    let mut out = String::from("[");
    for (i, a) in actions.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"id\":");
        out.push_str(&a.id.to_string());
        out.push_str(",\"name\":");
        json::write_string(&mut out, &a.name);
        out.push_str(",\"key\":");
        json::write_string(&mut out, &a.key);
        out.push_str(",\"expiresAt\":");
        out.push_str(&a.expires_at.to_string());
        out.push_str(",\"data\":");
        out.push_str(&a.data);
        out.push('}');
    }
    out.push(']');
    out
}

/// Decodes what [`encode_actions`] wrote. An entry that is not a valid
/// action is skipped: a damaged store loses that entry, not the others.
pub fn decode_actions(text: &str) -> Result<Vec<Action>, json::JsonError> {
    Ok(json::array(text)?
        .into_iter()
        .filter_map(|item| {
            let field = |k: &str| json::get(item, k);
            Some(Action {
                id: field("id").and_then(json::u64)?,
                name: field("name").and_then(json::string)?,
                key: field("key").and_then(json::string)?,
                expires_at: field("expiresAt").and_then(json::u64)?,
                data: field("data")?.trim().to_owned(),
                in_flight: None,
            })
        })
        .collect())
}

/// The outbox.
#[derive(Debug)]
pub struct Outbox {
    capacity: usize,
    items: VecDeque<Action>,
    next_id: u64,
}

impl Outbox {
    /// An empty outbox holding at most `capacity` actions.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            items: VecDeque::new(),
            next_id: 1,
        }
    }

    /// Actions waiting for an ack.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Queues an action; returns its local id.
    pub fn push(
        &mut self,
        name: &str,
        data: String,
        key: String,
        expires_at: u64,
    ) -> Result<u64, SendError> {
        if self.items.len() >= self.capacity {
            return Err(SendError::OutboxFull(self.items.len()));
        }
        let id = self.next_id;
        self.next_id += 1;
        self.items.push_back(Action {
            id,
            name: name.to_owned(),
            data,
            key,
            expires_at,
            in_flight: None,
        });
        Ok(id)
    }

    /// Puts back actions restored from storage (e.g. after a reload) ahead
    /// of anything queued since, keeping their keys and order. They get
    /// fresh local ids, returned in order; what does not fit is dropped
    /// (the newest first) and not returned. An action already queued under
    /// the same key is not restored twice.
    pub fn restore(&mut self, actions: Vec<Action>) -> Vec<u64> {
        let room = self.capacity.saturating_sub(self.items.len());
        let mut restored: Vec<Action> = actions
            .into_iter()
            .filter(|a| !self.items.iter().any(|b| b.key == a.key))
            .take(room)
            .collect();
        for a in &mut restored {
            a.in_flight = None;
            a.id = self.next_id;
            self.next_id += 1;
        }
        let ids = restored.iter().map(|a| a.id).collect();
        for a in restored.into_iter().rev() {
            self.items.push_front(a);
        }
        ids
    }

    /// What to persist.
    pub fn snapshot(&self) -> Vec<Action> {
        self.items.iter().cloned().collect()
    }

    /// The oldest action not yet sent on this connection.
    pub fn next_unsent(&self) -> Option<&Action> {
        self.items.iter().find(|a| a.in_flight.is_none())
    }

    /// Records that an action went out with an ack id.
    pub fn mark_sent(&mut self, id: u64, ack_id: u64, deadline: u64) {
        if let Some(a) = self.items.iter_mut().find(|a| a.id == id) {
            a.in_flight = Some((ack_id, deadline));
        }
    }

    /// An ack arrived: removes and returns the action's local id.
    pub fn acked(&mut self, ack_id: u64) -> Option<u64> {
        let pos = self
            .items
            .iter()
            .position(|a| a.in_flight.is_some_and(|(id, _)| id == ack_id))?;
        self.items.remove(pos).map(|a| a.id)
    }

    /// The connection is gone: everything in flight goes out again later.
    pub fn unsend_all(&mut self) {
        for a in &mut self.items {
            a.in_flight = None;
        }
    }

    /// Marks actions whose ack is overdue as unsent; true if any.
    pub fn time_out_acks(&mut self, now: u64) -> bool {
        let mut any = false;
        for a in &mut self.items {
            if a.in_flight.is_some_and(|(_, deadline)| now >= deadline) {
                a.in_flight = None;
                any = true;
            }
        }
        any
    }

    /// Removes the actions not yet sent whose frame (`frame_len`) is over
    /// `max` bytes; returns their ids with their frame sizes.
    pub fn remove_oversize(
        &mut self,
        max: usize,
        frame_len: impl Fn(&Action) -> usize,
    ) -> Vec<(u64, usize)> {
        let mut gone = Vec::new();
        self.items.retain(|a| {
            let size = frame_len(a);
            let keep = a.in_flight.is_some() || size <= max;
            if !keep {
                gone.push((a.id, size));
            }
            keep
        });
        gone
    }

    /// Removes expired actions.
    pub fn expire(&mut self, now: u64) -> Vec<(u64, ActionError)> {
        let mut gone = Vec::new();
        self.items.retain(|a| {
            let keep = a.expires_at > now;
            if !keep {
                gone.push((a.id, ActionError::Expired));
            }
            keep
        });
        gone
    }

    /// The earliest ack deadline or expiry.
    pub fn next_deadline(&self) -> Option<u64> {
        self.items
            .iter()
            .map(|a| {
                a.in_flight
                    .map_or(a.expires_at, |(_, d)| d.min(a.expires_at))
            })
            .min()
    }

    /// The earliest expiry.
    pub fn next_expiry(&self) -> Option<u64> {
        self.items.iter().map(|a| a.expires_at).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_outbox_refuses_with_a_clear_error() {
        let mut o = Outbox::new(2);
        o.push("a", "1".into(), "k1".into(), 100).expect("fits");
        o.push("a", "2".into(), "k2".into(), 100).expect("fits");
        let err = o.push("a", "3".into(), "k3".into(), 100).expect_err("full");
        assert_eq!(err, SendError::OutboxFull(2));
        assert_eq!(err.to_string(), "outbox full: 2 actions are waiting");
    }

    #[test]
    fn overdue_ack_makes_the_action_go_out_again_with_the_same_key() {
        let mut o = Outbox::new(8);
        let id = o.push("a", "1".into(), "k1".into(), 1_000).expect("fits");
        o.mark_sent(id, 7, 50);
        assert!(o.next_unsent().is_none());
        assert!(!o.time_out_acks(49));
        assert!(o.time_out_acks(50));
        let again = o.next_unsent().expect("unsent again");
        assert_eq!(again.key, "k1");
        o.mark_sent(id, 8, 100);
        assert_eq!(o.acked(7), None, "a stale ack id matches nothing");
        assert_eq!(o.acked(8), Some(id));
        assert!(o.is_empty());
    }

    #[test]
    fn expired_actions_leave_in_order_and_report_expired() {
        let mut o = Outbox::new(8);
        let a = o.push("a", "1".into(), "k1".into(), 10).expect("fits");
        let b = o.push("a", "2".into(), "k2".into(), 20).expect("fits");
        assert_eq!(o.expire(15), vec![(a, ActionError::Expired)]);
        assert_eq!(o.next_unsent().map(|x| x.id), Some(b));
    }

    #[test]
    fn restored_actions_keep_keys_and_order() {
        let mut o = Outbox::new(8);
        o.push("a", "1".into(), "k1".into(), 10).expect("fits");
        o.push("b", "2".into(), "k2".into(), 10).expect("fits");
        let saved = encode_actions(&o.snapshot());
        assert_eq!(decode_actions(&saved).expect("de"), o.snapshot());
        assert_eq!(
            decode_actions(r#"[{"id":1},{"id":2,"name":"a","key":"k","expiresAt":5,"data":[1]}]"#)
                .expect("de")
                .len(),
            1,
            "a damaged entry is skipped, the rest kept"
        );
        let mut fresh = Outbox::new(8);
        let newer = fresh.push("c", "3".into(), "k3".into(), 10).expect("fits");
        let ids = fresh.restore(decode_actions(&saved).expect("de"));
        assert_eq!(ids.len(), 2);
        assert!(!ids.contains(&newer), "restored actions get fresh ids");
        let keys: Vec<_> = fresh.snapshot().into_iter().map(|a| a.key).collect();
        assert_eq!(keys, vec!["k1", "k2", "k3"], "restored ones go first");
        let again = fresh.restore(decode_actions(&saved).expect("de"));
        assert!(again.is_empty(), "a key is never queued twice");
    }
}
