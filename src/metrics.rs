//! Prometheus metrics, served in text format on the admin listener at
//! `/metrics`. One process-wide registry: adapters count what they do with a
//! single call, and nothing else in the code depends on metrics existing.

use std::sync::OnceLock;
use std::time::SystemTime;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::config::Config;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub protocol: &'static str,
    pub endpoint: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolLabels {
    pub protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabels {
    pub protocol: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    pub result: &'static str,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    dropped: Family<DropLabels, Counter>,
    in_progress: Family<ProtocolLabels, Gauge>,
    tftp_waiting: Gauge,
    sent_bytes: Family<ProtocolLabels, Counter>,
    render_seconds: Histogram,
    reloads: Family<ReloadLabels, Counter>,
    config_age: Gauge<f64, std::sync::atomic::AtomicU64>,
    rules: Gauge,
    events_dropped: Family<ReasonLabels, Counter>,
}

pub fn get() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("pxed");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests by protocol, endpoint and outcome",
            requests.clone(),
        );
        let dropped = Family::<DropLabels, Counter>::default();
        registry.register(
            "dropped",
            "Requests dropped unanswered by a limit or as malformed, by protocol and reason",
            dropped.clone(),
        );
        let in_progress = Family::<ProtocolLabels, Gauge>::default();
        registry.register(
            "in_progress",
            "TFTP transfers and HTTP connections open now",
            in_progress.clone(),
        );
        let tftp_waiting = Gauge::default();
        registry.register(
            "tftp_waiting",
            "TFTP read requests waiting for a transfer slot",
            tftp_waiting.clone(),
        );
        let sent_bytes = Family::<ProtocolLabels, Counter>::default();
        registry.register(
            "sent_bytes",
            "Payload bytes sent by transfers, by protocol",
            sent_bytes.clone(),
        );
        // 1 µs to ~16 ms: a cached script is sub-microsecond, a fresh render tens of µs.
        let render_seconds = Histogram::new(exponential_buckets(1e-6, 2.0, 15));
        registry.register(
            "render_duration_seconds",
            "Time to produce a script or menu",
            render_seconds.clone(),
        );
        let reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "reloads",
            "Config reloads by result (ok, rejected)",
            reloads.clone(),
        );
        let config_age = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "config_age_seconds",
            "Seconds since the serving config was loaded",
            config_age.clone(),
        );
        let rules = Gauge::default();
        registry.register("config_rules", "Rules in the serving config", rules.clone());
        let events_dropped = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "events_dropped",
            "Boot events not recorded, by reason (queue_full, store_failed)",
            events_dropped.clone(),
        );
        Metrics {
            registry,
            requests,
            dropped,
            in_progress,
            tftp_waiting,
            sent_bytes,
            render_seconds,
            reloads,
            config_age,
            rules,
            events_dropped,
        }
    }

    pub fn request(&self, protocol: &'static str, endpoint: &'static str, outcome: &'static str) {
        self.requests
            .get_or_create(&RequestLabels {
                protocol,
                endpoint,
                outcome,
            })
            .inc();
    }

    /// One request dropped: `reason` is a fixed label (`rate_mac`, `busy`, …).
    pub fn dropped(&self, protocol: &'static str, reason: &'static str) {
        self.dropped_n(protocol, reason, 1);
    }

    pub fn dropped_n(&self, protocol: &'static str, reason: &'static str, n: u64) {
        self.dropped
            .get_or_create(&DropLabels { protocol, reason })
            .inc_by(n);
    }

    /// A TFTP transfer or an HTTP connection starts (+1) or ends (-1).
    pub fn in_progress(&self, protocol: &'static str, delta: i64) {
        self.in_progress
            .get_or_create(&ProtocolLabels { protocol })
            .inc_by(delta);
    }

    pub fn tftp_waiting(&self, n: usize) {
        self.tftp_waiting.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn sent(&self, protocol: &'static str, bytes: u64) {
        self.sent_bytes
            .get_or_create(&ProtocolLabels { protocol })
            .inc_by(bytes);
    }

    pub fn render_time(&self, seconds: f64) {
        self.render_seconds.observe(seconds);
    }

    pub fn events_dropped(&self, reason: &'static str, n: usize) {
        self.events_dropped
            .get_or_create(&ReasonLabels { reason })
            .inc_by(u64::try_from(n).unwrap_or(u64::MAX));
    }

    pub fn reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "rejected" };
        self.reloads.get_or_create(&ReloadLabels { result }).inc();
    }

    /// The text exposition, with the gauges that describe `config` brought up
    /// to date first.
    pub fn encode(&self, config: &Config) -> String {
        let age = SystemTime::now()
            .duration_since(config.loaded_at)
            .unwrap_or_default();
        self.config_age.set(age.as_secs_f64());
        self.rules
            .set(i64::try_from(config.policy.rules.len()).unwrap_or(i64::MAX));
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
