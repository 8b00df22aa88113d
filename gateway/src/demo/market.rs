//! The demo's market: random-walk ticks on the public topics
//! `market:{symbol}`, and orders (jobs of kind `order`) that fill against
//! them. A market order fills at once at the market price, in one to three
//! parts (the demo's book); a limit order waits until the market crosses its
//! limit (a buy at or below it, a sell at or above it) and then fills at the
//! market price. An order ends filled, rejected (bad params) or cancelled
//! (`job:cancel:v1`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use liveline::contract::{
    JobState, MARKET_TICK_V1, MarketTick, OrderState, TRADE_ORDER_V1, TradeOrder,
};
use rand::RngExt;
use serde::Deserialize;
use serde_json::Value;

use super::jobs::status;
use super::{Demo, emit, to_value};
use crate::broker::{Broker, BrokerError, JobRecord};
use crate::publish::Publisher;
use crate::stream::Stream;

/// The demo's public topic prefix: `market:{symbol}` carries a symbol's ticks.
pub const MARKET_PREFIX: &str = "market:";

/// The lease name of the market ticker (one node publishes ticks).
pub const MARKET_LEASE: &str = "market";

/// Largest accepted order quantity.
pub const MAX_QTY: f64 = 1e9;

/// The topic of a market symbol, `market:{symbol}`.
pub fn market_stream(symbol: &str) -> Stream {
    Stream::Topic {
        name: format!("{MARKET_PREFIX}{symbol}"),
    }
}

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
    let mut prices: HashMap<String, f64> = HashMap::new();
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

/// The params of an order job.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OrderParams {
    symbol: String,
    side: Side,
    qty: f64,
    /// The limit; none for a market order.
    #[serde(default)]
    price: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Side {
    Buy,
    Sell,
}

impl Side {
    fn as_str(self) -> &'static str {
        match self {
            Self::Buy => "buy",
            Self::Sell => "sell",
        }
    }
}

/// The order `params` describe, or why it is rejected.
fn parse_order(params: &Value, symbols: &[String]) -> Result<OrderParams, String> {
    let order: OrderParams = serde_json::from_value(params.clone())
        .map_err(|e| format!("params must be {{symbol, side, qty, price?}}: {e}"))?;
    if !symbols.contains(&order.symbol) {
        return Err(format!(
            "{:?} is not traded here; one of: {}",
            order.symbol,
            symbols.join(", ")
        ));
    }
    if !(order.qty.is_finite() && order.qty > 0.0 && order.qty <= MAX_QTY) {
        return Err(format!("qty must be greater than 0 and at most {MAX_QTY}"));
    }
    if order.price.is_some_and(|p| !(p.is_finite() && p > 0.0)) {
        return Err("price, when given, must be greater than 0".to_owned());
    }
    Ok(order)
}

/// Whether a `side` order with `limit` fills at market price `px`.
fn crosses(side: Side, limit: Option<f64>, px: f64) -> bool {
    match (side, limit) {
        (_, None) => true,
        (Side::Buy, Some(limit)) => px <= limit,
        (Side::Sell, Some(limit)) => px >= limit,
    }
}

/// Runs one order job: `accepted`, then fills as the market allows. The
/// outcome to count, or `None` when it was cancelled.
pub async fn run_order(demo: &Demo, job: &JobRecord) -> Result<Option<&'static str>, BrokerError> {
    let publisher = &demo.publisher;
    let stream = Stream::Job { id: job.id.clone() };
    let event = |status: OrderState, symbol: &str, side: &str, qty, filled_qty, price| TradeOrder {
        order_id: job.id.clone(),
        symbol: symbol.to_owned(),
        side: side.to_owned(),
        qty,
        filled_qty,
        price,
        status,
    };
    let order = match parse_order(&job.params, &demo.symbols) {
        Ok(order) => order,
        Err(reason) => {
            let symbol = job
                .params
                .get("symbol")
                .and_then(Value::as_str)
                .unwrap_or("");
            let side = job.params.get("side").and_then(Value::as_str).unwrap_or("");
            let qty = job.params.get("qty").and_then(Value::as_f64).unwrap_or(0.0);
            let data = to_value(&event(OrderState::Rejected, symbol, side, qty, 0.0, 0.0));
            if !emit(publisher, &stream, TRADE_ORDER_V1, data).await? {
                return Ok(None);
            }
            let message = format!("rejected: {reason}");
            status(publisher, job, JobState::Failed, 0.0, &message).await?;
            return Ok(Some("failed"));
        }
    };
    let (symbol, side) = (order.symbol.as_str(), order.side.as_str());
    let quote = order.price.unwrap_or(0.0);
    tokio::time::sleep(demo.step).await;
    let accepted = to_value(&event(
        OrderState::Accepted,
        symbol,
        side,
        order.qty,
        0.0,
        quote,
    ));
    if !emit(publisher, &stream, TRADE_ORDER_V1, accepted).await?
        || !status(publisher, job, JobState::Running, 0.0, "open").await?
    {
        return Ok(None);
    }
    // The book: how the quantity fills, in parts a step apart.
    let parts: &[f64] = match rand::rng().random_range(0..3) {
        0 => &[1.0],
        1 => &[0.5, 1.0],
        _ => &[0.4, 0.75, 1.0],
    };
    let (mut filled, mut cost, mut part) = (0.0f64, 0.0f64, 0);
    loop {
        tokio::time::sleep(demo.step).await;
        // A limit order that waits publishes nothing: it learns of a cancel
        // from its record.
        match demo.broker.job(&job.id).await? {
            Some(j) if !j.status.is_terminal() => {}
            _ => return Ok(None),
        }
        let px = market_price(&*demo.broker, symbol).await;
        if !crosses(order.side, order.price, px) {
            continue;
        }
        let target = if parts[part] >= 1.0 {
            order.qty
        } else {
            round(order.qty * parts[part], 8)
        };
        cost += (target - filled) * px;
        filled = target;
        part += 1;
        let avg = round(cost / filled.max(f64::MIN_POSITIVE), 2);
        let done = part == parts.len();
        let state = if done {
            OrderState::Filled
        } else {
            OrderState::PartiallyFilled
        };
        let data = to_value(&event(state, symbol, side, order.qty, filled, avg));
        if !emit(publisher, &stream, TRADE_ORDER_V1, data).await? {
            return Ok(None);
        }
        let progress = round(filled / order.qty, 4);
        let (job_state, message) = if done {
            (JobState::Completed, format!("filled {filled} at {avg}"))
        } else {
            (
                JobState::Running,
                format!("filled {filled} of {}", order.qty),
            )
        };
        if !status(publisher, job, job_state, progress, &message).await? {
            return Ok(None);
        }
        if done {
            return Ok(Some("completed"));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn limit_orders_fill_only_when_the_market_crosses() {
        assert!(crosses(Side::Buy, None, 100.0));
        assert!(crosses(Side::Buy, Some(100.0), 99.0));
        assert!(!crosses(Side::Buy, Some(1.0), 64_868.0));
        assert!(crosses(Side::Sell, Some(100.0), 101.0));
        assert!(!crosses(Side::Sell, Some(100.0), 99.0));
    }

    #[test]
    fn bad_orders_are_rejected_with_a_reason() {
        let symbols = vec!["BTC-USD".to_owned()];
        let ok = json!({"symbol": "BTC-USD", "side": "buy", "qty": 1});
        assert!(parse_order(&ok, &symbols).is_ok());
        for (bad, why) in [
            (
                json!({"symbol": "DOGE", "side": "buy", "qty": 1}),
                "not traded",
            ),
            (json!({"symbol": "BTC-USD", "side": "buy", "qty": 0}), "qty"),
            (
                json!({"symbol": "BTC-USD", "side": "buy", "qty": 1, "price": -1}),
                "price",
            ),
            (
                json!({"symbol": "BTC-USD", "side": "hold", "qty": 1}),
                "params",
            ),
        ] {
            let err = parse_order(&bad, &symbols).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }
}
