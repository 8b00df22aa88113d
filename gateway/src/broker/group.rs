//! Group commit of publishes on one Redis: appends that arrive while a call
//! of the publish script is in flight go together in the next call, as one
//! group (`publish.lua`, ARGV[1] an array of calls). One publish alone goes
//! at once, as a group of one; under load, groups grow by themselves, and
//! Redis reads one request, runs one script and writes one reply for many
//! events.
//!
//! Every call of a group succeeds or fails alone (a job that ended refuses
//! its own event, not its neighbours'). A group carries at most
//! [`MAX_BATCH`] events in all, the script's bound. On a Redis Cluster the
//! keys of one script call must share a slot, so there every append is a
//! group of one ([`invoke`] without a [`Committer`]).

use redis::Script;
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};

use super::circuit::Guarded;
use super::{BrokerError, MAX_BATCH};

/// One append, as the script takes it.
#[derive(Debug)]
pub(super) struct Call {
    /// The stream's four keys: seq, epoch, hist, rec.
    pub keys: [String; 4],
    /// The call's JSON object (stream, event, ..., count).
    pub call: String,
    /// Each event's data, JSON text.
    pub data: Vec<String>,
}

/// What the script answered for one call of a group.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub(super) enum Outcome {
    /// Stored: `seq` is the first event's, the others follow; `ts` in ms.
    Stored { epoch: String, seq: u64, ts: u64 },
    /// Refused: `CODE message` (NOTFOUND, ENDED, INVALID).
    Refused { error: String },
}

impl Outcome {
    /// The code of a refusal (its first word).
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Stored { .. } => None,
            Self::Refused { error } => error.split(' ').next(),
        }
    }
}

/// The groups a queue of appends makes, in order: each takes calls while
/// their events fit in [`MAX_BATCH`] (a call alone always fits: the
/// publisher refuses bigger batches). Returns how many calls of `sizes` go
/// in the first group.
pub(super) fn take(sizes: impl IntoIterator<Item = usize>) -> usize {
    let mut events = 0;
    let mut n = 0;
    for size in sizes {
        if n > 0 && events + size > MAX_BATCH {
            break;
        }
        events += size;
        n += 1;
    }
    n
}

/// Runs `group` as one call of the publish script; one outcome per call, in order.
pub(super) async fn invoke(
    conn: &mut Guarded,
    script: &Script,
    group: &[&Call],
) -> Result<Vec<Outcome>, BrokerError> {
    let mut inv = script.prepare_invoke();
    let mut calls =
        String::with_capacity(group.iter().map(|c| c.call.len() + 1).sum::<usize>() + 2);
    calls.push('[');
    for (i, call) in group.iter().enumerate() {
        for key in &call.keys {
            inv.key(key);
        }
        if i > 0 {
            calls.push(',');
        }
        calls.push_str(&call.call);
    }
    calls.push(']');
    inv.arg(calls);
    for call in group {
        for data in &call.data {
            inv.arg(data);
        }
    }
    let reply: String = inv.invoke_async(conn).await?;
    let outcomes: Vec<Outcome> = serde_json::from_str(&reply)
        .map_err(|e| BrokerError::Corrupt(format!("publish group reply: {e}")))?;
    if outcomes.len() != group.len() {
        return Err(BrokerError::Corrupt(format!(
            "publish group reply: {} outcomes for {} calls",
            outcomes.len(),
            group.len()
        )));
    }
    Ok(outcomes)
}

struct Pending {
    call: Call,
    reply: oneshot::Sender<Result<Outcome, BrokerError>>,
}

/// Gathers concurrent appends into groups, one script call in flight at a time.
pub(super) struct Committer {
    tx: mpsc::UnboundedSender<Pending>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn gone() -> BrokerError {
    BrokerError::Corrupt("the publish group committer stopped".to_owned())
}

impl Committer {
    pub fn spawn(conn: Guarded, script: Script) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(rx, conn, script));
        Self { tx, task }
    }

    /// Appends `call` with the next group; its outcome.
    pub async fn append(&self, call: Call) -> Result<Outcome, BrokerError> {
        let (reply, outcome) = oneshot::channel();
        self.tx.send(Pending { call, reply }).map_err(|_| gone())?;
        outcome.await.map_err(|_| gone())?
    }
}

async fn run(mut rx: mpsc::UnboundedReceiver<Pending>, mut conn: Guarded, script: Script) {
    let mut queue: Vec<Pending> = Vec::new();
    loop {
        if queue.is_empty() {
            match rx.recv().await {
                Some(p) => queue.push(p),
                None => return,
            }
        }
        // Everything waiting now, up to one group's worth, and one call more
        // (so the bound is seen; it waits for the next group).
        let mut events: usize = queue.iter().map(|p| p.call.data.len()).sum();
        while events <= MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => {
                    events += p.call.data.len();
                    queue.push(p);
                }
                Err(_) => break,
            }
        }
        let n = take(queue.iter().map(|p| p.call.data.len()));
        let group: Vec<Pending> = queue.drain(..n).collect();
        let calls: Vec<&Call> = group.iter().map(|p| &p.call).collect();
        let result = invoke(&mut conn, &script, &calls).await;
        match result {
            Ok(outcomes) => {
                for (p, outcome) in group.into_iter().zip(outcomes) {
                    let _ = p.reply.send(Ok(outcome));
                }
            }
            // Every call of the group fails with it.
            Err(e) => {
                for p in group {
                    let _ = p.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{MAX_BATCH, Outcome, take};

    #[test]
    fn a_group_takes_calls_while_their_events_fit() {
        assert_eq!(take([1, 1, 1]), 3);
        assert_eq!(take([MAX_BATCH - 1, 1, 1]), 2);
        assert_eq!(take([MAX_BATCH, 1]), 1);
        assert_eq!(take([3, MAX_BATCH]), 1);
        assert_eq!(take(std::iter::repeat_n(1, MAX_BATCH + 5)), MAX_BATCH);
        assert_eq!(take([]), 0);
    }

    #[test]
    fn outcomes_parse_as_the_script_writes_them() {
        let v: Vec<Outcome> = serde_json::from_str(
            r#"[{"epoch":"0000abcd00001000","seq":7,"ts":1700000000000},{"error":"ENDED the job 9 already ended"}]"#,
        )
        .expect("the reply parses");
        assert_eq!(
            v[0],
            Outcome::Stored {
                epoch: "0000abcd00001000".into(),
                seq: 7,
                ts: 1_700_000_000_000
            }
        );
        assert_eq!(v[1].code(), Some("ENDED"));
        assert_eq!(v[0].code(), None);
    }
}
