//! Prometheus metrics, served in text format on the admin listener at
//! `/metrics`. One process-wide registry: adapters count what they do with a
//! single call, and nothing else in the code depends on metrics existing.
//!
//! Names follow the Prometheus conventions (docs/deployment.md lists them):
//! base units in the name, `_total` on counters, a `state` label whose values
//! add up to a whole, `pxed_build_info`, and the standard `process_*` family.

use std::sync::OnceLock;
use std::time::SystemTime;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
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
pub struct ListenerLabels {
    pub listener: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SubnetLabels {
    pub subnet: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolLabels {
    pub protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabels {
    pub protocol: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    pub subnet: String,
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    pub result: &'static str,
}

pub struct Metrics {
    registry: Registry,
    /// `process_*`, which carry no `pxed_` prefix by convention.
    process: Registry,
    requests: Family<RequestLabels, Counter>,
    dropped: Family<DropLabels, Counter>,
    http_connections: Family<ListenerLabels, Gauge>,
    tftp_transfers: Gauge,
    tftp_waiting: Gauge,
    sent_bytes: Family<ProtocolLabels, Counter>,
    render_seconds: Histogram,
    reloads: Family<ReloadLabels, Counter>,
    config_loaded_at: Gauge<f64, std::sync::atomic::AtomicU64>,
    config_last_reload_ok: Gauge,
    rules: Gauge,
    events_dropped: Family<ReasonLabels, Counter>,
    pool: Family<PoolLabels, Gauge>,
    pool_size: Family<SubnetLabels, Gauge>,
}

/// Reloads and the serving config.
#[allow(clippy::type_complexity)]
fn config_metrics(
    registry: &mut Registry,
) -> (
    Family<ReloadLabels, Counter>,
    Gauge<f64, std::sync::atomic::AtomicU64>,
    Gauge,
    Gauge,
) {
    let registry = &mut *registry;
    let reloads = reg(
        registry,
        "reloads",
        "Config reloads by result (ok, rejected)",
        Family::<ReloadLabels, Counter>::default(),
    );
    let config_loaded_at = reg(
        registry,
        "config_last_reload_success_timestamp_seconds",
        "When the serving config was loaded (Unix time)",
        Gauge::<f64, std::sync::atomic::AtomicU64>::default(),
    );
    let config_last_reload_ok = Gauge::default();
    // The config pxed started with loaded, or it would not have started.
    config_last_reload_ok.set(1);
    registry.register(
        "config_last_reload_successful",
        "1 if the last config reload was applied, 0 if it was rejected",
        config_last_reload_ok.clone(),
    );
    let rules = reg(
        registry,
        "config_rules",
        "Rules in the serving config",
        Gauge::default(),
    );
    (reloads, config_loaded_at, config_last_reload_ok, rules)
}

/// The DHCP pools: addresses in use by state, and each pool's size.
fn pool_metrics(
    registry: &mut Registry,
) -> (Family<PoolLabels, Gauge>, Family<SubnetLabels, Gauge>) {
    let pool = reg(
        registry,
        "dhcp_pool_addresses",
        "DHCP pool addresses in use by subnet and state (bound, offered, declined), every 5 s",
        Family::<PoolLabels, Gauge>::default(),
    );
    let pool_size = reg(
        registry,
        "dhcp_pool_size_addresses",
        "Addresses in each subnet's DHCP pool",
        Family::<SubnetLabels, Gauge>::default(),
    );
    (pool, pool_size)
}

/// `pxed_build_info{version="…"} 1`.
fn build_info(registry: &mut Registry) {
    let build_info = Family::<BuildLabels, Gauge>::default();
    build_info
        .get_or_create(&BuildLabels {
            version: env!("CARGO_PKG_VERSION"),
        })
        .set(1);
    registry.register(
        "build_info",
        "The running pxed's version (always 1)",
        build_info,
    );
}

/// Registers a handle to `metric` and returns it.
fn reg<M: prometheus_client::registry::Metric + Clone>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    metric: M,
) -> M {
    registry.register(name, help, metric.clone());
    metric
}

pub fn get() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("pxed");
        let requests = reg(
            &mut registry,
            "requests",
            "Requests by protocol, endpoint and outcome",
            Family::<RequestLabels, Counter>::default(),
        );
        let dropped = reg(
            &mut registry,
            "dropped",
            "Requests dropped unanswered by a limit or as malformed, by protocol and reason",
            Family::<DropLabels, Counter>::default(),
        );
        let http_connections = reg(
            &mut registry,
            "http_connections",
            "HTTP connections open now, by listener (http, admin)",
            Family::<ListenerLabels, Gauge>::default(),
        );
        let tftp_transfers = reg(
            &mut registry,
            "tftp_transfers",
            "TFTP transfers in progress",
            Gauge::default(),
        );
        let tftp_waiting = reg(
            &mut registry,
            "tftp_waiting",
            "TFTP read requests waiting for a transfer slot",
            Gauge::default(),
        );
        let sent_bytes = reg(
            &mut registry,
            "sent_bytes",
            "Payload bytes sent by transfers, by protocol",
            Family::<ProtocolLabels, Counter>::default(),
        );
        // 1 µs to ~16 ms: a cached script is sub-microsecond, a fresh render tens of µs.
        let render_seconds = reg(
            &mut registry,
            "render_duration_seconds",
            "Time to produce a script or menu",
            Histogram::new(exponential_buckets(1e-6, 2.0, 15)),
        );
        let (reloads, config_loaded_at, config_last_reload_ok, rules) =
            config_metrics(&mut registry);
        let (pool, pool_size) = pool_metrics(&mut registry);
        build_info(&mut registry);
        let events_dropped = reg(
            &mut registry,
            "events_dropped",
            "Boot events not recorded, by reason (queue_full, store_failed)",
            Family::<ReasonLabels, Counter>::default(),
        );
        let mut process = Registry::default();
        process.register_collector(Box::new(ProcessCollector));
        Metrics {
            registry,
            process,
            requests,
            dropped,
            http_connections,
            tftp_transfers,
            tftp_waiting,
            sent_bytes,
            render_seconds,
            reloads,
            config_loaded_at,
            config_last_reload_ok,
            rules,
            events_dropped,
            pool,
            pool_size,
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

    /// An HTTP connection on `listener` opens (+1) or closes (-1).
    pub fn http_connections(&self, listener: &'static str, delta: i64) {
        self.http_connections
            .get_or_create(&ListenerLabels { listener })
            .inc_by(delta);
    }

    /// A TFTP transfer starts (+1) or ends (-1).
    pub fn tftp_transfers(&self, delta: i64) {
        self.tftp_transfers.inc_by(delta);
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

    pub fn pool(&self, subnet: &str, state: &'static str, n: u64) {
        self.pool
            .get_or_create(&PoolLabels {
                subnet: subnet.to_string(),
                state,
            })
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn pool_size(&self, subnet: &str, n: u64) {
        self.pool_size
            .get_or_create(&SubnetLabels {
                subnet: subnet.to_string(),
            })
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn events_dropped(&self, reason: &'static str, n: usize) {
        self.events_dropped
            .get_or_create(&ReasonLabels { reason })
            .inc_by(u64::try_from(n).unwrap_or(u64::MAX));
    }

    /// A reload was applied (`ok`) or rejected; the success time itself
    /// is the serving config's load time (see [`Metrics::encode`]).
    pub fn reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "rejected" };
        self.reloads.get_or_create(&ReloadLabels { result }).inc();
        self.config_last_reload_ok.set(i64::from(ok));
    }

    /// The exposition, OpenMetrics or else Prometheus text 0.0.4 (see
    /// [`text_0_0_4`]), with the gauges that describe `config` brought up to
    /// date first.
    pub fn encode(&self, config: &Config, openmetrics: bool) -> String {
        let loaded_at = config
            .loaded_at
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        self.config_loaded_at.set(loaded_at.as_secs_f64());
        self.rules
            .set(i64::try_from(config.policy.rules.len()).unwrap_or(i64::MAX));
        let mut out = String::new();
        // pxed's registry (prefixed `pxed_`), then the unprefixed
        // `process_*` family, then one `# EOF`.
        use prometheus_client::encoding::text;
        if text::encode_registry(&mut out, &self.registry)
            .and_then(|()| text::encode_registry(&mut out, &self.process))
            .and_then(|()| text::encode_eof(&mut out))
            .is_err()
        {
            out.clear();
        }
        if openmetrics {
            out
        } else {
            text_0_0_4(&out)
        }
    }
}

/// Prometheus text format 0.0.4 from the OpenMetrics text prometheus-client
/// writes. They differ where 0.0.4 parsers (Prometheus' expfmt, `promtool
/// check metrics`, collectors that send no OpenMetrics `Accept`) care: there
/// a counter's `# HELP` and `# TYPE` name its sample, `x_total`, not the
/// family `x` (else the samples are untyped, without help), and there is no
/// `# UNIT` or `# EOF`. Samples are the same in both.
pub fn text_0_0_4(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 8 * counters.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| Some((p, line.strip_prefix(p)?)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                out.push_str(prefix);
                out.push_str(name);
                if counters.contains(name) {
                    out.push_str("_total");
                }
                if !tail.is_empty() {
                    out.push(' ');
                    out.push_str(tail);
                }
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// The standard `process_*` metrics (CPU, memory, descriptors, threads,
/// start time), read from `/proc` at each scrape by `metrics-process`.
#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let m = metrics_process::collector::collect();
        if let Some(cpu) = m.cpu_seconds_total {
            let counter = ConstCounter::new(cpu);
            let e = encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                None,
                counter.metric_type(),
            )?;
            counter.encode(e)?;
        }
        let gauges = [
            (
                "process_open_fds",
                "Number of open file descriptors",
                m.open_fds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors",
                m.max_fds,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                m.virtual_memory_bytes,
            ),
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                m.resident_memory_bytes,
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch in seconds",
                m.start_time_seconds,
            ),
            (
                "process_threads",
                "Number of OS threads in the process",
                m.threads,
            ),
        ];
        for (name, help, value) in gauges {
            let Some(value) = value else { continue };
            let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            let e = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
            gauge.encode(e)?;
        }
        Ok(())
    }
}
