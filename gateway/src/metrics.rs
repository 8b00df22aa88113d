//! Node-local Prometheus metrics (`GET /metrics`, text format 0.0.4).
//!
//! No label carries a user id: cardinality stays bounded by action names,
//! outcomes and job kinds.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::auth::unix_millis;

/// Upper bounds of the latency and duration buckets, in seconds.
const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];
const DURATION_BUCKETS: [f64; 10] = [0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0];

/// A cumulative histogram with fixed buckets.
#[derive(Debug)]
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    fn observe(&self, secs: f64, times: u64) {
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            if secs <= *bound {
                count.fetch_add(times, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(times, Ordering::Relaxed);
        self.sum_micros
            .fetch_add((secs * 1e6) as u64 * times, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {}",
                count.load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

/// The gateway's counters and histograms.
#[derive(Debug)]
pub struct Metrics {
    connections: AtomicI64,
    connects: AtomicU64,
    refused: AtomicU64,
    delivered: AtomicU64,
    slow_clients: AtomicU64,
    acks_undelivered: AtomicU64,
    latency: Histogram,
    sessions: Histogram,
    actions: Mutex<BTreeMap<(String, String), u64>>,
    jobs: Mutex<BTreeMap<(String, String), Histogram>>,
    kinds: Mutex<std::collections::BTreeSet<String>>,
}

/// Distinct job kinds a node labels metrics and analytics with; later kinds
/// count as [`OTHER_KIND`], so clients cannot grow the label set without bound.
pub const MAX_KIND_LABELS: usize = 64;

/// The label of job kinds past [`MAX_KIND_LABELS`].
pub const OTHER_KIND: &str = "other";

impl Default for Metrics {
    fn default() -> Self {
        Self {
            connections: AtomicI64::new(0),
            connects: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            slow_clients: AtomicU64::new(0),
            acks_undelivered: AtomicU64::new(0),
            latency: Histogram::new(&LATENCY_BUCKETS),
            sessions: Histogram::new(&DURATION_BUCKETS),
            actions: Mutex::default(),
            jobs: Mutex::default(),
            kinds: Mutex::default(),
        }
    }
}

impl Metrics {
    /// A socket connected.
    pub fn connected(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
        self.connects.fetch_add(1, Ordering::Relaxed);
    }

    /// A connected socket left after `secs`.
    pub fn disconnected(&self, secs: f64) {
        self.connections.fetch_sub(1, Ordering::Relaxed);
        self.sessions.observe(secs, 1);
    }

    /// An ack could not be queued (its socket was then closed).
    pub fn ack_undelivered(&self) {
        self.acks_undelivered.fetch_add(1, Ordering::Relaxed);
    }

    /// A CONNECT was refused.
    pub fn refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// One live event published at `ts_ms` was emitted to `sockets` sockets.
    pub fn delivered(&self, sockets: u64, ts_ms: u64) {
        self.delivered.fetch_add(sockets, Ordering::Relaxed);
        let secs = unix_millis().saturating_sub(ts_ms) as f64 / 1000.0;
        self.latency.observe(secs, 1);
    }

    /// A slow client was cut off.
    pub fn slow_client_disconnected(&self) {
        self.slow_clients.fetch_add(1, Ordering::Relaxed);
    }

    /// An action ended with `outcome` (`ok` or an error code).
    pub fn action(&self, name: &str, outcome: &str) {
        let mut actions = self.actions.lock().unwrap_or_else(|e| e.into_inner());
        *actions
            .entry((name.to_owned(), outcome.to_owned()))
            .or_default() += 1;
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
        let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        jobs.entry((kind.to_owned(), outcome.to_owned()))
            .or_insert_with(|| Histogram::new(&DURATION_BUCKETS))
            .observe(secs, 1);
    }

    /// Estimated p50/p95/p99 of the delivery latency in seconds (bucket
    /// upper bounds; `null` before any delivery).
    pub fn latency_quantiles(&self) -> serde_json::Value {
        let total = self.latency.count.load(Ordering::Relaxed);
        let q = |p: f64| -> serde_json::Value {
            if total == 0 {
                return serde_json::Value::Null;
            }
            let rank = (p * total as f64).ceil() as u64;
            for (bound, count) in self.latency.bounds.iter().zip(&self.latency.counts) {
                if count.load(Ordering::Relaxed) >= rank {
                    return serde_json::json!(bound);
                }
            }
            serde_json::json!(f64::INFINITY.min(f64::MAX))
        };
        serde_json::json!({"p50": q(0.5), "p95": q(0.95), "p99": q(0.99), "count": total})
    }

    /// Current connections on this node.
    pub fn connections(&self) -> i64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let gauge = |out: &mut String, name: &str, help: &str, kind: &str, v: String| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        };
        gauge(
            &mut out,
            "liveline_connections",
            "Socket.IO connections open on this node.",
            "gauge",
            self.connections().to_string(),
        );
        gauge(
            &mut out,
            "liveline_connects_total",
            "Accepted Socket.IO connections.",
            "counter",
            self.connects.load(Ordering::Relaxed).to_string(),
        );
        gauge(
            &mut out,
            "liveline_connects_refused_total",
            "Refused CONNECTs (auth, limits).",
            "counter",
            self.refused.load(Ordering::Relaxed).to_string(),
        );
        gauge(
            &mut out,
            "liveline_events_delivered_total",
            "Live events emitted to sockets.",
            "counter",
            self.delivered.load(Ordering::Relaxed).to_string(),
        );
        gauge(
            &mut out,
            "liveline_slow_clients_disconnected_total",
            "Sockets cut off because their outgoing buffer was full.",
            "counter",
            self.slow_clients.load(Ordering::Relaxed).to_string(),
        );
        gauge(
            &mut out,
            "liveline_acks_undelivered_total",
            "Acks that could not be queued; each closed its socket so the client resends.",
            "counter",
            self.acks_undelivered.load(Ordering::Relaxed).to_string(),
        );
        let name = "liveline_delivery_latency_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Publish-to-emit latency of live events.\n# TYPE {name} histogram"
        );
        self.latency.render(&mut out, name, "");
        let name = "liveline_session_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Duration of ended sessions.\n# TYPE {name} histogram"
        );
        self.sessions.render(&mut out, name, "");
        let name = "liveline_actions_total";
        let _ = writeln!(
            out,
            "# HELP {name} Client actions by name and outcome.\n# TYPE {name} counter"
        );
        for ((action, outcome), n) in self
            .actions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "{name}{{action=\"{}\",outcome=\"{}\"}} {n}",
                escape(action),
                escape(outcome)
            );
        }
        let name = "liveline_job_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Jobs run by this node's worker, by kind and outcome.\n# TYPE {name} histogram"
        );
        for ((kind, outcome), h) in self.jobs.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let labels = format!("kind=\"{}\",outcome=\"{}\"", escape(kind), escape(outcome));
            h.render(&mut out, name, &labels);
        }
        out
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
