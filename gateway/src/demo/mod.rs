//! The demo: research searches, LLM answers streamed token by token, market
//! ticks and orders. It is a user of the layer like any other worker: it
//! takes `job:start:v1` actions of its kinds (`research`, `llm`, `order`)
//! from the work queue, publishes through the [`Publisher`], and publishes
//! ticks on its public topics `market:{symbol}`. Nothing else in the gateway
//! knows these kinds, events or topics.
//!
//! On several nodes each job runs once: the demo reads the actions queue in
//! the consumer group [`crate::broker::WORKER_GROUP`], one consumer per node,
//! and one node at a time (the holder of a lease) publishes ticks.

mod corpus;
mod jobs;
mod market;

use std::sync::Arc;
use std::time::Duration;

use liveline::contract::ACTION_JOB_START_V1;
use serde_json::Value;

use crate::auth::unix_millis;
use crate::broker::{Broker, BrokerError, JobRecord, today};
use crate::metrics::Metrics;
use crate::publish::{PublishError, Publisher};
use crate::stream::Stream;

pub use self::market::{MARKET_LEASE, MARKET_PREFIX, base_price, market_price, run_market};

/// The job kinds the demo runs.
pub const KINDS: &[&str] = &["research", "llm", ORDER_KIND];

/// The job kind of an order: params `{symbol, side, qty, price?}`; its
/// `trade:order:v1` events come on the job's stream.
pub const ORDER_KIND: &str = "order";

/// Pause between two steps of a demo job.
pub const STEP: Duration = Duration::from_millis(500);

/// Pause between two market ticks.
pub const MARKET_TICK: Duration = Duration::from_millis(500);

/// The demo's symbols when none are configured.
pub const DEFAULT_SYMBOLS: &[&str] = &["BTC-USD", "ETH-USD", "SOL-USD"];

/// How the demo runs (`serve --demo-worker`, `--demo-step-ms`, `--symbols`,
/// `--market-tick-ms`).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Run the demo in this gateway (off by default).
    pub enabled: bool,
    /// Pause between two steps of a job (default 500 ms).
    pub step: Duration,
    /// The symbols it trades; each has a public topic `market:{symbol}`.
    pub symbols: Vec<String>,
    /// Pause between two market ticks (default 500 ms).
    pub market_tick: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            enabled: false,
            step: STEP,
            symbols: DEFAULT_SYMBOLS.iter().map(|s| (*s).to_owned()).collect(),
            market_tick: MARKET_TICK,
        }
    }
}

/// The public topic prefixes the demo publishes on (the gateway makes them
/// public when the demo runs).
pub const PUBLIC_PREFIXES: &[&str] = &[MARKET_PREFIX];

/// Starts the demo on a node: its job runner (consumer `node` of the work
/// queue) and its ticker. The tasks run until aborted.
pub fn spawn(
    settings: &Settings,
    broker: Arc<dyn Broker>,
    publisher: Publisher,
    metrics: Arc<Metrics>,
    node: &str,
) -> Vec<tokio::task::JoinHandle<()>> {
    let demo = Demo {
        broker: broker.clone(),
        publisher: publisher.clone(),
        step: settings.step,
        symbols: settings.symbols.clone(),
        metrics,
    };
    vec![
        tokio::spawn(demo.run(node.to_owned())),
        tokio::spawn(run_market(
            broker,
            publisher,
            settings.symbols.clone(),
            settings.market_tick,
            node.to_owned(),
        )),
    ]
}

/// Publishes through `publisher`; `Ok(false)` when the job ended (cancelled
/// elsewhere) or is gone.
async fn emit(
    publisher: &Publisher,
    stream: &Stream,
    event: &str,
    data: Value,
) -> Result<bool, BrokerError> {
    match publisher.publish(stream, event, data).await {
        Ok(_) => Ok(true),
        Err(PublishError::Ended | PublishError::NotFound) => Ok(false),
        Err(PublishError::Unavailable(e)) => Err(e),
        Err(e) => Err(BrokerError::Corrupt(e.to_string())),
    }
}

fn to_value<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// What the demo runs with.
#[derive(Clone)]
pub struct Demo {
    /// Where it reads actions and job records.
    pub broker: Arc<dyn Broker>,
    /// Where it publishes.
    pub publisher: Publisher,
    /// Pause between two steps of a job.
    pub step: Duration,
    /// The symbols it trades.
    pub symbols: Vec<String>,
    /// Job durations by kind and outcome.
    pub metrics: Arc<Metrics>,
}

impl Demo {
    /// Takes actions as consumer `consumer` and runs every started job of
    /// the demo's kinds, forever.
    pub async fn run(self, consumer: String) {
        loop {
            let batch = match self
                .broker
                .read_actions(&consumer, 16, Duration::from_secs(1))
                .await
            {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "demo: reading actions failed");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            for (id, action) in batch {
                let job = (action.action == ACTION_JOB_START_V1)
                    .then(|| serde_json::from_value::<JobRecord>(action.data).ok())
                    .flatten()
                    .filter(|job| KINDS.contains(&job.kind.as_str()));
                let Some(job) = job else {
                    let _ = self.broker.ack_action(&id).await;
                    continue;
                };
                let demo = self.clone();
                tokio::spawn(async move {
                    demo.run_job(&job).await;
                    if let Err(e) = demo.broker.ack_action(&id).await {
                        tracing::warn!(error = %e, "demo: ack failed");
                    }
                });
            }
        }
    }

    /// Runs one job to its end and counts it.
    async fn run_job(&self, job: &JobRecord) {
        let ran = match job.kind.as_str() {
            ORDER_KIND => market::run_order(self, job).await,
            _ => jobs::run_answer(&self.publisher, job, self.step).await,
        };
        let outcome = match ran {
            Ok(Some(outcome)) => outcome,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(job = %job.id, error = %e, "demo job failed");
                "failed"
            }
        };
        let secs = unix_millis().saturating_sub(job.created_at) as f64 / 1000.0;
        let kind = self.metrics.kind_label(&job.kind);
        self.metrics.job_finished(&kind, outcome, secs);
        let _ = self.broker.record_job(&today(), &kind, outcome, secs).await;
    }
}
