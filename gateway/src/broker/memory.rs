//! An in-process broker: the default when no Redis is configured.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use async_trait::async_trait;
use liveline::contract::Envelope;
use serde_json::Value;
use tokio::sync::mpsc;

use super::{
    Broker, BrokerError, JobRecord, LiveMessage, StatusUpdate, StreamHead, job_stream, new_epoch,
};
use crate::auth::unix_millis;

/// Streams, jobs and live channels held in this process. Everything happens
/// under one lock, so seq order is delivery order.
#[derive(Debug)]
pub struct MemoryBroker {
    history_len: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    streams: HashMap<String, StreamState>,
    jobs: HashMap<String, JobRecord>,
    live: HashMap<String, mpsc::UnboundedSender<LiveMessage>>,
    remembered: HashMap<(String, String, String), Value>,
}

#[derive(Debug)]
struct StreamState {
    epoch: String,
    seq: u64,
    history: VecDeque<(String, Envelope<Value>)>,
}

impl MemoryBroker {
    /// A broker keeping at most `history_len` events per stream.
    pub fn new(history_len: usize) -> Self {
        Self {
            history_len: history_len.max(1),
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data behind (every
        // mutation is a single step), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Inner {
    fn append(
        &mut self,
        history_len: usize,
        user: &str,
        stream: &str,
        event: &str,
        data: Value,
    ) -> Envelope<Value> {
        let state = self
            .streams
            .entry(stream.to_owned())
            .or_insert_with(|| StreamState {
                epoch: new_epoch(),
                seq: 0,
                history: VecDeque::new(),
            });
        state.seq += 1;
        let envelope = Envelope {
            stream: stream.to_owned(),
            epoch: state.epoch.clone(),
            seq: state.seq,
            ts: unix_millis(),
            data,
        };
        state
            .history
            .push_back((event.to_owned(), envelope.clone()));
        while state.history.len() > history_len {
            state.history.pop_front();
        }
        if let Some(tx) = self.live.get(user) {
            let msg = LiveMessage {
                user: user.to_owned(),
                event: event.to_owned(),
                envelope: envelope.clone(),
            };
            if tx.send(msg).is_err() {
                self.live.remove(user);
            }
        }
        envelope
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    async fn publish(
        &self,
        user: &str,
        stream: &str,
        event: &str,
        data: Value,
    ) -> Result<Envelope<Value>, BrokerError> {
        Ok(self
            .lock()
            .append(self.history_len, user, stream, event, data))
    }

    async fn publish_job(
        &self,
        user: &str,
        job_id: &str,
        event: &str,
        data: Value,
        update: Option<StatusUpdate>,
    ) -> Result<Option<Envelope<Value>>, BrokerError> {
        let mut inner = self.lock();
        let Some(job) = inner.jobs.get_mut(job_id) else {
            return Ok(None);
        };
        if job.status.is_terminal() {
            return Ok(None);
        }
        if let Some(update) = update {
            job.status = update.status;
            job.progress = update.progress;
            job.message = update.message;
            job.updated_at = unix_millis();
        }
        let stream = job_stream(job_id);
        Ok(Some(inner.append(
            self.history_len,
            user,
            &stream,
            event,
            data,
        )))
    }

    async fn history(
        &self,
        stream: &str,
        after_seq: u64,
    ) -> Result<Vec<(String, Envelope<Value>)>, BrokerError> {
        let inner = self.lock();
        Ok(inner
            .streams
            .get(stream)
            .map(|s| {
                s.history
                    .iter()
                    .filter(|(_, e)| e.seq > after_seq)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn head(&self, stream: &str) -> Result<Option<StreamHead>, BrokerError> {
        Ok(self.lock().streams.get(stream).map(|s| StreamHead {
            epoch: s.epoch.clone(),
            seq: s.seq,
        }))
    }

    async fn subscribe(
        &self,
        user: &str,
    ) -> Result<mpsc::UnboundedReceiver<LiveMessage>, BrokerError> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().live.insert(user.to_owned(), tx);
        Ok(rx)
    }

    async fn unsubscribe(&self, user: &str) -> Result<(), BrokerError> {
        self.lock().live.remove(user);
        Ok(())
    }

    async fn create_job(&self, job: &JobRecord) -> Result<(), BrokerError> {
        self.lock().jobs.insert(job.id.clone(), job.clone());
        Ok(())
    }

    async fn job(&self, id: &str) -> Result<Option<JobRecord>, BrokerError> {
        Ok(self.lock().jobs.get(id).cloned())
    }

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

    async fn ping(&self) -> Result<(), BrokerError> {
        Ok(())
    }
}
