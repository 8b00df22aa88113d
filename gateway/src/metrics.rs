//! Node-local Prometheus metrics (`GET /metrics`), kept in a
//! `prometheus-client` registry per node and rendered in the OpenMetrics text
//! format.
//!
//! No label carries a user id: cardinality stays bounded by action names
//! (app actions count as `app` unless the gateway lists them), outcomes and
//! job kinds (at most [`MAX_KIND_LABELS`]).

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::auth::unix_millis;

/// The content type of [`Metrics::render`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds of the delivery latency buckets, in seconds.
const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Upper bounds of the session and job duration buckets, in seconds.
const DURATION_BUCKETS: [f64; 10] = [0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0];

/// Distinct job kinds a node labels metrics and analytics with; later kinds
/// count as [`OTHER_KIND`], so clients cannot grow the label set without bound.
pub const MAX_KIND_LABELS: usize = 64;

/// The label of job kinds past [`MAX_KIND_LABELS`].
pub const OTHER_KIND: &str = "other";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    action: String,
    outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    kind: String,
    outcome: String,
}

/// The delivery latency histogram: lock-free on the delivery path, and read
/// back for the analytics summary's quantiles (which `prometheus-client`'s
/// own histogram does not expose). Counts are per bucket; the last is +Inf.
#[derive(Debug)]
struct Latency {
    counts: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl Latency {
    fn new() -> Self {
        Self {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_micros: AtomicU64::new(0),
        }
    }

    fn observe(&self, secs: f64) {
        let i = LATENCY_BUCKETS
            .iter()
            .position(|bound| secs <= *bound)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add((secs * 1e6) as u64, Ordering::Relaxed);
    }

    /// (upper bound, count) per bucket, +Inf last as `f64::MAX`.
    fn buckets(&self) -> Vec<(f64, u64)> {
        LATENCY_BUCKETS
            .iter()
            .copied()
            .chain(std::iter::once(f64::MAX))
            .zip(&self.counts)
            .map(|(bound, n)| (bound, n.load(Ordering::Relaxed)))
            .collect()
    }
}

/// [`Latency`] as a registered metric.
#[derive(Debug, Clone)]
struct LatencyMetric(std::sync::Arc<Latency>);

impl EncodeMetric for LatencyMetric {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let buckets = self.0.buckets();
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.0.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// Counts one client event in [`Metrics::handling`] while it lives.
#[derive(Debug)]
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The gateway's counters and histograms.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    connections: Gauge,
    in_flight: Gauge,
    connects: Counter,
    refused: Counter,
    delivered: Counter,
    slow_clients: Counter,
    acks_undelivered: Counter,
    latency: std::sync::Arc<Latency>,
    sessions: Histogram,
    actions: Family<ActionLabels, Counter>,
    jobs: Family<JobLabels, Histogram, fn() -> Histogram>,
    kinds: Mutex<BTreeSet<String>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let connections = Gauge::default();
        registry.register(
            "liveline_connections",
            "Socket.IO connections open on this node",
            connections.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "liveline_events_in_flight",
            "Client events (actions, probes, replay requests) being handled now",
            in_flight.clone(),
        );
        let counter = |registry: &mut Registry, name: &str, help: &str| {
            let c = Counter::default();
            registry.register(name, help, c.clone());
            c
        };
        let connects = counter(
            &mut registry,
            "liveline_connects",
            "Accepted Socket.IO connections",
        );
        let refused = counter(
            &mut registry,
            "liveline_connects_refused",
            "Refused CONNECTs (auth, limits)",
        );
        let delivered = counter(
            &mut registry,
            "liveline_events_delivered",
            "Live events emitted to sockets",
        );
        let slow_clients = counter(
            &mut registry,
            "liveline_slow_clients_disconnected",
            "Sockets cut off because their outgoing buffer (or resume buffer) was full",
        );
        let acks_undelivered = counter(
            &mut registry,
            "liveline_acks_undelivered",
            "Acks that could not be queued; each closed its socket so the client resends",
        );
        let latency = std::sync::Arc::new(Latency::new());
        registry.register(
            "liveline_delivery_latency_seconds",
            "Publish-to-emit latency of live events",
            LatencyMetric(latency.clone()),
        );
        let sessions = duration_histogram();
        registry.register(
            "liveline_session_duration_seconds",
            "Duration of ended sessions",
            sessions.clone(),
        );
        let actions = Family::<ActionLabels, Counter>::default();
        registry.register(
            "liveline_actions",
            "Client actions by name and outcome",
            actions.clone(),
        );
        let jobs = Family::<JobLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            duration_histogram,
        );
        registry.register(
            "liveline_job_duration_seconds",
            "Jobs run by this node's demo, by kind and outcome",
            jobs.clone(),
        );
        Self {
            registry,
            connections,
            in_flight,
            connects,
            refused,
            delivered,
            slow_clients,
            acks_undelivered,
            latency,
            sessions,
            actions,
            jobs,
            kinds: Mutex::default(),
        }
    }
}

impl Metrics {
    /// A client event is being handled until the guard drops.
    pub fn handling(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }

    /// Client events being handled now.
    pub fn events_in_flight(&self) -> i64 {
        self.in_flight.get()
    }

    /// A socket connected.
    pub fn connected(&self) {
        self.connections.inc();
        self.connects.inc();
    }

    /// Sockets open now, and sockets that connected and have left since the
    /// process started.
    pub fn connection_counts(&self) -> (u64, u64) {
        let open = u64::try_from(self.connections.get()).unwrap_or(0);
        (open, self.connects.get().saturating_sub(open))
    }

    /// A connected socket left after `secs`.
    pub fn disconnected(&self, secs: f64) {
        self.connections.dec();
        self.sessions.observe(secs);
    }

    /// An ack could not be queued (its socket was then closed).
    pub fn ack_undelivered(&self) {
        self.acks_undelivered.inc();
    }

    /// A CONNECT was refused.
    pub fn refused(&self) {
        self.refused.inc();
    }

    /// One live event published at `ts_ms` was emitted to `sockets` sockets.
    pub fn delivered(&self, sockets: u64, ts_ms: u64) {
        self.delivered.inc_by(sockets);
        let secs = unix_millis().saturating_sub(ts_ms) as f64 / 1000.0;
        self.latency.observe(secs);
    }

    /// A slow client was cut off.
    pub fn slow_client_disconnected(&self) {
        self.slow_clients.inc();
    }

    /// An action ended with `outcome` (`ok` or an error code).
    pub fn action(&self, name: &str, outcome: &str) {
        self.actions
            .get_or_create(&ActionLabels {
                action: name.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// The label job `kind` is counted under: the kind itself for the first
    /// [`MAX_KIND_LABELS`] distinct kinds this node saw, [`OTHER_KIND`] after.
    pub fn kind_label(&self, kind: &str) -> String {
        let mut kinds = self.kinds.lock().unwrap_or_else(|e| e.into_inner());
        if kinds.contains(kind) {
            return kind.to_owned();
        }
        if kinds.len() < MAX_KIND_LABELS {
            kinds.insert(kind.to_owned());
            return kind.to_owned();
        }
        OTHER_KIND.to_owned()
    }

    /// A job of `kind` ended with `outcome` after `secs`.
    pub fn job_finished(&self, kind: &str, outcome: &str, secs: f64) {
        self.jobs
            .get_or_create(&JobLabels {
                kind: kind.to_owned(),
                outcome: outcome.to_owned(),
            })
            .observe(secs);
    }

    /// Estimated p50/p95/p99 of the delivery latency in seconds (bucket
    /// upper bounds; `null` before any delivery).
    pub fn latency_quantiles(&self) -> serde_json::Value {
        let buckets = self.latency.buckets();
        let total: u64 = buckets.iter().map(|(_, n)| n).sum();
        let q = |p: f64| -> serde_json::Value {
            if total == 0 {
                return serde_json::Value::Null;
            }
            let rank = (p * total as f64).ceil() as u64;
            let mut seen = 0;
            for (bound, n) in &buckets {
                seen += n;
                if seen >= rank {
                    return serde_json::json!(bound);
                }
            }
            serde_json::json!(f64::MAX)
        };
        serde_json::json!({"p50": q(0.5), "p95": q(0.95), "p99": q(0.99), "count": total})
    }

    /// Current connections on this node.
    pub fn connections(&self) -> i64 {
        self.connections.get()
    }

    /// The OpenMetrics text exposition ([`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "metrics: encoding failed");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_render_with_their_labels_and_quantiles_read_the_latency_buckets() {
        let m = Metrics::default();
        m.connected();
        m.action("job:start:v1", "ok");
        m.job_finished("summarize-pdf", "completed", 2.0);
        m.delivered(3, unix_millis());
        let text = m.render();
        assert!(text.contains("liveline_connections 1"), "{text}");
        assert!(text.contains("liveline_connects_total 1"), "{text}");
        assert!(text.contains("liveline_events_delivered_total 3"), "{text}");
        assert!(
            text.contains("liveline_actions_total{action=\"job:start:v1\",outcome=\"ok\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "liveline_job_duration_seconds_count{kind=\"summarize-pdf\",outcome=\"completed\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("liveline_delivery_latency_seconds_bucket{le=\"+Inf\"} 1"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
        let q = m.latency_quantiles();
        assert_eq!(q["count"], 1);
        assert!(q["p99"].as_f64().unwrap_or(f64::MAX) <= 0.1, "{q}");
    }

    #[test]
    fn job_kinds_past_the_label_cap_count_as_other() {
        let m = Metrics::default();
        for i in 0..MAX_KIND_LABELS {
            assert_eq!(m.kind_label(&format!("k{i}")), format!("k{i}"));
        }
        assert_eq!(m.kind_label("one-more"), OTHER_KIND);
        assert_eq!(m.kind_label("k0"), "k0", "a known kind keeps its label");
    }
}
