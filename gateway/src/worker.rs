//! The in-process demo worker: turns each started job into a realistic stream
//! of events over about three seconds, and each placed order into
//! `accepted`, `partially_filled`, `filled` a step apart. It stops as soon as a
//! publish is refused because the job or order was cancelled. It also
//! publishes market ticks on `market:{symbol}` ([`run_market`]).
//!
//! It takes jobs from the broker's actions queue (with Redis: the stream
//! `{prefix}actions`, consumer group `workers`, one consumer per node), so on
//! several nodes each job runs once. An action is acknowledged when its job ends.

use std::sync::Arc;
use std::time::Duration;

use liveline::contract::{
    ACTION_JOB_START_V1, ACTION_TRADE_PLACE_V1, JOB_CHUNK_V1, JOB_RESULT_V1, JOB_STATUS_V1,
    JobChunk, JobResult, JobState, JobStatus, MARKET_TICK_V1, MarketTick, OrderState,
    TRADE_ORDER_V1,
};
use rand::RngExt;
use serde_json::{Value, json};

use crate::actions::order_event;
use crate::auth::unix_millis;
use crate::broker::{Broker, BrokerError, JobRecord, OrderRecord, today};
use crate::metrics::Metrics;
use crate::publish::{PublishError, Publisher};
use crate::stream::Stream;

/// The demo's public topic prefix: `market:{symbol}` carries a symbol's ticks.
pub const MARKET_PREFIX: &str = "market:";

/// The topic of a market symbol, `market:{symbol}`.
pub fn market_stream(symbol: &str) -> Stream {
    Stream::Topic {
        name: format!("{MARKET_PREFIX}{symbol}"),
    }
}

/// Publishes through `publisher`; `Ok(false)` when the job or order ended
/// (cancelled elsewhere) or is gone.
async fn emit(
    publisher: &Publisher,
    stream: &Stream,
    event: &str,
    data: Value,
) -> Result<bool, BrokerError> {
    match publisher.publish(stream, event, data).await {
        Ok(_) => Ok(true),
        Err(PublishError::Ended(_) | PublishError::NotFound(_)) => Ok(false),
        Err(PublishError::Unavailable(e)) => Err(e),
        Err(e) => Err(BrokerError::Corrupt(e.to_string())),
    }
}

/// Pause between two steps of a demo job.
pub const STEP: Duration = Duration::from_millis(500);

/// Pause between two market ticks.
pub const MARKET_TICK: Duration = Duration::from_millis(500);

/// The lease name of the market ticker (one node publishes ticks).
pub const MARKET_LEASE: &str = "market";

/// Where a symbol's random walk starts when its stream has no tick yet.
pub fn base_price(symbol: &str) -> f64 {
    match symbol {
        "BTC-USD" => 65_000.0,
        "ETH-USD" => 3_200.0,
        "SOL-USD" => 150.0,
        _ => 100.0,
    }
}

/// The latest `market:tick:v1` price of `symbol`, or its base price.
pub async fn market_price(broker: &dyn Broker, symbol: &str) -> f64 {
    let stream = market_stream(symbol);
    if let Ok(Some(head)) = broker.head(&stream).await {
        if head.seq > 0 {
            if let Ok(events) = broker.history(&stream, head.seq - 1).await {
                if let Some(p) = events
                    .last()
                    .and_then(|(_, env)| env.data.get("price"))
                    .and_then(Value::as_f64)
                {
                    return p;
                }
            }
        }
    }
    base_price(symbol)
}

fn round(x: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (x * f).round() / f
}

/// Publishes a `market:tick:v1` `{symbol, price}` on each `market:{symbol}`
/// every `tick` (a random walk of about 0.1% a step), forever. With several
/// nodes only the holder of the [`MARKET_LEASE`] publishes.
pub async fn run_market(
    broker: Arc<dyn Broker>,
    publisher: Publisher,
    symbols: Vec<String>,
    tick: Duration,
    node: String,
) {
    let tick = tick.max(Duration::from_millis(10));
    let lease = (tick * 4).max(Duration::from_secs(2));
    let mut prices: std::collections::HashMap<String, f64> = Default::default();
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        match broker.try_lead(MARKET_LEASE, &node, lease).await {
            Ok(true) => {}
            Ok(false) => {
                // Another node ticks; continue from its prices if we lead later.
                prices.clear();
                continue;
            }
            Err(e) => {
                tracing::debug!(error = %e, "market: lease failed");
                prices.clear();
                continue;
            }
        }
        for symbol in &symbols {
            let last = match prices.get(symbol) {
                Some(p) => *p,
                None => market_price(&*broker, symbol).await,
            };
            let step: f64 = rand::rng().random_range(-0.001..=0.001);
            let price = round((last * (1.0 + step)).max(0.01), 2);
            prices.insert(symbol.clone(), price);
            let tick = MarketTick {
                symbol: symbol.clone(),
                price,
            };
            if let Err(e) = publisher
                .publish(&market_stream(symbol), MARKET_TICK_V1, to_value(&tick))
                .await
            {
                tracing::debug!(error = %e, "market: tick not published");
            }
        }
    }
}

/// Publishes one order's `trade:order:v1` events, a step apart: `accepted`,
/// one or two `partially_filled` with `filledQty` growing, then `filled`, at
/// the market price (or the limit price). `Ok(false)` when it stopped because
/// the order ended elsewhere (cancelled).
pub async fn run_order(
    broker: &dyn Broker,
    publisher: &Publisher,
    order: &OrderRecord,
    step: Duration,
) -> Result<bool, BrokerError> {
    let fractions: &[f64] = if rand::rng().random_bool(0.5) {
        &[0.4, 0.75, 1.0]
    } else {
        &[0.5, 1.0]
    };
    tokio::time::sleep(step).await;
    let quote = order.limit_price.unwrap_or(0.0);
    if !order_update(publisher, order, OrderState::Accepted, 0.0, quote).await? {
        return Ok(false);
    }
    let (mut filled, mut cost) = (0.0f64, 0.0f64);
    for &f in fractions {
        tokio::time::sleep(step).await;
        let fill_price = match order.limit_price {
            Some(p) => p,
            None => market_price(broker, &order.symbol).await,
        };
        let target = if f >= 1.0 {
            order.qty
        } else {
            round(order.qty * f, 8)
        };
        cost += (target - filled) * fill_price;
        filled = target;
        let avg = round(cost / filled.max(f64::MIN_POSITIVE), 2);
        let state = if f >= 1.0 {
            OrderState::Filled
        } else {
            OrderState::PartiallyFilled
        };
        if !order_update(publisher, order, state, filled, avg).await? {
            return Ok(false);
        }
    }
    Ok(true)
}

async fn order_update(
    publisher: &Publisher,
    order: &OrderRecord,
    state: OrderState,
    filled_qty: f64,
    price: f64,
) -> Result<bool, BrokerError> {
    let data = order_event(order, state, filled_qty, price);
    let stream = Stream::Order {
        id: order.id.clone(),
    };
    emit(publisher, &stream, TRADE_ORDER_V1, data).await
}

/// Takes actions as consumer `consumer` and runs every started job, forever.
pub async fn run(
    broker: Arc<dyn Broker>,
    publisher: Publisher,
    consumer: String,
    step: Duration,
    metrics: Arc<Metrics>,
) {
    loop {
        let batch = match broker
            .read_actions(&consumer, 16, Duration::from_secs(1))
            .await
        {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "worker: reading actions failed");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        for (id, action) in batch {
            if action.action == ACTION_TRADE_PLACE_V1 {
                let Ok(order) = serde_json::from_value::<OrderRecord>(action.data) else {
                    tracing::warn!(%id, "worker: trade:place without an order record");
                    let _ = broker.ack_action(&id).await;
                    continue;
                };
                let broker = broker.clone();
                let publisher = publisher.clone();
                tokio::spawn(async move {
                    if let Err(e) = run_order(&*broker, &publisher, &order, step).await {
                        tracing::warn!(order = %order.id, error = %e, "demo order failed");
                    }
                    if let Err(e) = broker.ack_action(&id).await {
                        tracing::warn!(error = %e, "worker: ack failed");
                    }
                });
                continue;
            }
            if action.action != ACTION_JOB_START_V1 {
                let _ = broker.ack_action(&id).await;
                continue;
            }
            let Ok(job) = serde_json::from_value::<JobRecord>(action.data) else {
                tracing::warn!(%id, "worker: job:start without a job record");
                let _ = broker.ack_action(&id).await;
                continue;
            };
            let broker = broker.clone();
            let publisher = publisher.clone();
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let outcome = match run_job(&publisher, &job, step).await {
                    Ok(true) => Some("completed"),
                    Ok(false) => None,
                    Err(e) => {
                        tracing::warn!(job = %job.id, error = %e, "demo job failed");
                        Some("failed")
                    }
                };
                if let Some(outcome) = outcome {
                    let secs = unix_millis().saturating_sub(job.created_at) as f64 / 1000.0;
                    let kind = metrics.kind_label(&job.kind);
                    metrics.job_finished(&kind, outcome, secs);
                    let _ = broker.record_job(&today(), &kind, outcome, secs).await;
                }
                if let Err(e) = broker.ack_action(&id).await {
                    tracing::warn!(error = %e, "worker: ack failed");
                }
            });
        }
    }
}

/// Publishes one job's events. `Ok(false)` when it stopped because the job
/// ended elsewhere (cancelled).
pub async fn run_job(
    publisher: &Publisher,
    job: &JobRecord,
    step: Duration,
) -> Result<bool, BrokerError> {
    let query = job
        .params
        .get("query")
        .and_then(Value::as_str)
        .unwrap_or("rust websockets")
        .to_owned();
    let steps: &[(f64, String)] = &[
        (0.2, "planning the search".to_owned()),
        (0.4, "searching: 3 sources found".to_owned()),
        (0.6, "searching: 7 sources found".to_owned()),
        (0.8, "reading sources".to_owned()),
    ];
    for (progress, message) in steps {
        tokio::time::sleep(step).await;
        if !status(publisher, job, JobState::Running, *progress, message).await? {
            return Ok(false);
        }
    }
    // Both kinds stream their answer token by token as `job:chunk:v1`, the
    // way a model generates it; the result carries the whole text too.
    let (text, answer) = match job.kind.as_str() {
        "llm" => {
            let text = "Liveline streams events instead of polling.".to_owned();
            (text.clone(), json!({ "text": text }))
        }
        _ => {
            let summary = format!("7 sources about \"{query}\" agree: push beats polling.");
            let answer = json!({ "query": query, "summary": summary, "sources": 7 });
            (summary, answer)
        }
    };
    for (index, piece) in text.split_inclusive(' ').enumerate() {
        tokio::time::sleep(step / 3).await;
        let chunk = JobChunk {
            job_id: job.id.clone(),
            index: index as u64,
            text: piece.to_owned(),
        };
        if !event(publisher, job, JOB_CHUNK_V1, to_value(&chunk)).await? {
            return Ok(false);
        }
    }
    tokio::time::sleep(step).await;
    let result = JobResult {
        job_id: job.id.clone(),
        result: answer,
    };
    if !event(publisher, job, JOB_RESULT_V1, to_value(&result)).await? {
        return Ok(false);
    }
    status(publisher, job, JobState::Completed, 1.0, "completed").await
}

async fn status(
    publisher: &Publisher,
    job: &JobRecord,
    state: JobState,
    progress: f64,
    message: &str,
) -> Result<bool, BrokerError> {
    let data = JobStatus {
        job_id: job.id.clone(),
        status: state,
        progress,
        message: message.to_owned(),
    };
    event(publisher, job, JOB_STATUS_V1, to_value(&data)).await
}

async fn event(
    publisher: &Publisher,
    job: &JobRecord,
    name: &str,
    data: Value,
) -> Result<bool, BrokerError> {
    let stream = Stream::Job { id: job.id.clone() };
    emit(publisher, &stream, name, data).await
}

fn to_value<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}
