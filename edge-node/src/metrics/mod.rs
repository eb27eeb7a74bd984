//! The node's Prometheus metrics, served on the admin listener.
//!
//! Every metric is named `edge_*`; docs/metrics.md lists them all. Two rules
//! keep the number of series bounded whatever clients and tenants do:
//!
//! - requests that match no service are counted under the service label
//!   `_unknown`, so that clients cannot create series by inventing hosts;
//! - at most `metrics.max_service_labels` services, the busiest, have a
//!   `service` label value of their own; the rest share `_other`
//!   ([`service_labels`]).
//!
//! With `metrics.enabled = false` the per-request counting is skipped; the
//! node's gauges (phase, in-flight, connections, snapshot) stay.

pub mod service_labels;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use edge_config::MetricsSection;
use prometheus::core::Collector;
use prometheus::{
    CounterVec, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

pub use service_labels::{OTHER_SERVICES, ServiceLabels};

/// The service label of requests that match no service.
pub const UNKNOWN_SERVICE: &str = "_unknown";

/// Latency buckets from 50 µs (a cached hello) to 60 s (the wall limit).
const LATENCY_BUCKETS_SECONDS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0, 30.0, 60.0,
];

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    enabled: bool,
    services: ServiceLabels,
    /// Responses by service, protocol and status class.
    requests: IntCounterVec,
    /// Time from request head to response head, by service.
    request_duration: HistogramVec,
    /// Time a guest ran (instantiation to its end), by service.
    guest_duration: HistogramVec,
    /// Guest CPU time, by service.
    guest_cpu_seconds: CounterVec,
    /// Time to instantiate a component for a request.
    instantiation_duration: Histogram,
    /// Guest executions that ended early, by service and reason.
    guest_terminations: IntCounterVec,
    pub module_cache_hits: IntCounter,
    pub module_cache_misses: IntCounter,
    /// Components loaded into the cache, by source (artifact, compiled,
    /// failed).
    pub module_loads: IntCounterVec,
    /// Requests refused by a node limit before reaching a guest, by limit.
    pub limit_refusals: IntCounterVec,
    pub in_flight_requests: IntGauge,
    /// Guests waiting for a turn on the CPU (see `sandbox::turns`).
    pub guests_waiting_for_cpu: IntGauge,
    /// Backend requests through the HTTP cache, by outcome (hit, miss,
    /// revalidated, stale, pass, collapsed).
    pub http_cache_requests: IntCounterVec,
    /// Body bytes, by direction: `served` from the cache, `stored` in it.
    pub http_cache_bytes: IntCounterVec,
    http_cache_entries: IntGauge,
    http_cache_size_bytes: IntGauge,
    /// Lookups in the edge cache of guests' own responses, by outcome.
    response_cache_lookups: IntCounterVec,
    /// Requests that reached a backend, by service, backend and outcome
    /// (status class, or the error a guest saw).
    backend_requests: IntCounterVec,
    backend_duration: HistogramVec,
    /// Open connections by protocol (`pending` until the first request).
    pub connections_open: IntGaugeVec,
    /// Connections accepted, by listener (http, https, quic).
    pub connections_accepted: IntCounterVec,
    /// 1 for the node's current phase (starting, serving, draining,
    /// stopped), 0 for the others.
    pub node_phase: IntGaugeVec,
    snapshot_version: IntGauge,
    snapshot_age_seconds: IntGauge,
    /// Snapshot services not served because their module did not load.
    pub snapshot_services_skipped: IntCounter,
    /// Domains a snapshot gave to two services; the newer claim is dropped.
    pub snapshot_duplicate_domains: IntCounter,
    /// When the snapshot being served was applied, Unix seconds.
    snapshot_applied_at: AtomicU64,
    /// Guest log lines, by outcome (shipped, or why dropped).
    pub guest_log_lines: IntCounterVec,
    service_labels: IntGauge,
    /// Keys guests read from the KV replica.
    pub kv_reads: IntCounter,
    /// Guests' KV writes, by outcome.
    pub kv_writes: IntCounterVec,
    /// The KV change feed's number the replica holds everything through.
    pub kv_feed_position: IntGauge,
    /// Times the replica was emptied and read again from the start.
    pub kv_feed_resets: IntCounter,
}

fn must<T>(metric: prometheus::Result<T>) -> T {
    match metric {
        Ok(metric) => metric,
        // Names and labels are literals below; a bad one fails every test.
        Err(e) => panic!("invalid metric definition: {e}"),
    }
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    must(IntCounterVec::new(Opts::new(name, help), labels))
}

fn counter(name: &str, help: &str) -> IntCounter {
    must(IntCounter::new(name, help))
}

fn gauge(name: &str, help: &str) -> IntGauge {
    must(IntGauge::new(name, help))
}

fn histogram_vec(name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    must(HistogramVec::new(
        HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS_SECONDS.to_vec()),
        labels,
    ))
}

/// The `protocol` label of a request.
pub fn protocol_label(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_2 => "http2",
        http::Version::HTTP_3 => "http3",
        _ => "http1",
    }
}

/// The `status_class` label: `2xx`, `4xx`, ...
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// How a guest's execution ended, as the `reason` of a termination.
#[derive(Debug, Clone, Copy)]
pub struct GuestRun<'a> {
    pub cpu: Duration,
    pub wall: Duration,
    pub instantiation: Option<Duration>,
    /// `None` when the guest finished normally.
    pub termination: Option<&'a str>,
}

impl Metrics {
    pub fn new(config: &MetricsSection) -> Self {
        let registry = Registry::new();
        let metrics = Self {
            enabled: config.enabled,
            services: ServiceLabels::new(
                usize::try_from(config.max_service_labels).unwrap_or(usize::MAX),
            ),
            requests: counter_vec(
                "edge_requests_total",
                "Responses by service, protocol and status class",
                &["service", "protocol", "status_class"],
            ),
            request_duration: histogram_vec(
                "edge_request_duration_seconds",
                "Time from request head to response head",
                &["service"],
            ),
            guest_duration: histogram_vec(
                "edge_guest_duration_seconds",
                "Time a guest ran for one request, from instantiation to its end",
                &["service"],
            ),
            guest_cpu_seconds: must(CounterVec::new(
                Opts::new("edge_guest_cpu_seconds_total", "Guest CPU time"),
                &["service"],
            )),
            instantiation_duration: must(Histogram::with_opts(
                HistogramOpts::new(
                    "edge_instantiation_duration_seconds",
                    "Time to instantiate a component for one request",
                )
                .buckets(LATENCY_BUCKETS_SECONDS.to_vec()),
            )),
            guest_terminations: counter_vec(
                "edge_guest_terminations_total",
                "Guest executions ended by the node, by reason",
                &["service", "reason"],
            ),
            module_cache_hits: counter(
                "edge_module_cache_hits_total",
                "Requests whose component was ready in memory",
            ),
            module_cache_misses: counter(
                "edge_module_cache_misses_total",
                "Requests whose component had to be loaded",
            ),
            module_loads: counter_vec(
                "edge_module_loads_total",
                "Components loaded, by source",
                &["source"],
            ),
            limit_refusals: counter_vec(
                "edge_limit_refusals_total",
                "Requests refused by a node limit, by limit",
                &["limit"],
            ),
            in_flight_requests: gauge(
                "edge_in_flight_requests",
                "Requests being handled, including guests still streaming a body",
            ),
            guests_waiting_for_cpu: gauge(
                "edge_guests_waiting_for_cpu",
                "Guests ready to run, waiting for their tenant's turn on the CPU",
            ),
            http_cache_requests: counter_vec(
                "edge_http_cache_requests_total",
                "Backend requests through the HTTP cache, by outcome",
                &["outcome"],
            ),
            http_cache_bytes: counter_vec(
                "edge_http_cache_bytes_total",
                "Body bytes served from the HTTP cache or stored in it",
                &["direction"],
            ),
            http_cache_entries: gauge("edge_http_cache_entries", "Entries in the HTTP cache"),
            http_cache_size_bytes: gauge(
                "edge_http_cache_size_bytes",
                "Bytes the HTTP cache's entries are charged",
            ),
            response_cache_lookups: counter_vec(
                "edge_response_cache_lookups_total",
                "Lookups in the edge cache of guests' own responses, by outcome",
                &["service", "outcome"],
            ),
            backend_requests: counter_vec(
                "edge_backend_requests_total",
                "Requests sent to backends, by outcome (status class or error)",
                &["service", "backend", "outcome"],
            ),
            backend_duration: histogram_vec(
                "edge_backend_duration_seconds",
                "Time from sending a backend request to its response head",
                &["service", "backend"],
            ),
            connections_open: must(IntGaugeVec::new(
                Opts::new(
                    "edge_connections_open",
                    "Open client connections by protocol",
                ),
                &["protocol"],
            )),
            connections_accepted: counter_vec(
                "edge_connections_accepted_total",
                "Client connections accepted, by listener",
                &["listener"],
            ),
            node_phase: must(IntGaugeVec::new(
                Opts::new(
                    "edge_node_phase",
                    "1 for the node's current lifecycle phase",
                ),
                &["phase"],
            )),
            snapshot_version: gauge(
                "edge_snapshot_version",
                "Version of the config snapshot being served (0: the config file)",
            ),
            snapshot_age_seconds: gauge(
                "edge_snapshot_age_seconds",
                "Seconds since the snapshot being served was applied",
            ),
            snapshot_applied_at: AtomicU64::new(0),
            snapshot_services_skipped: counter(
                "edge_snapshot_services_skipped_total",
                "Snapshot services not served because their module did not load",
            ),
            snapshot_duplicate_domains: counter(
                "edge_snapshot_duplicate_domains_total",
                "Domains a snapshot gave to two services (the newer claim is dropped)",
            ),
            guest_log_lines: counter_vec(
                "edge_guest_log_lines_total",
                "Guest log lines, by outcome",
                &["outcome"],
            ),
            service_labels: gauge(
                "edge_metrics_service_labels",
                "Services with a service label of their own",
            ),
            kv_reads: counter(
                "edge_kv_reads_total",
                "Keys guests read from the node's KV replica",
            ),
            kv_writes: counter_vec(
                "edge_kv_writes_total",
                "Guests' KV writes, by outcome: ok, refused (a limit), unavailable (the control plane), no_such_store",
                &["outcome"],
            ),
            kv_feed_position: gauge(
                "edge_kv_feed_position",
                "The KV change feed's number the node's replica holds everything through",
            ),
            kv_feed_resets: counter(
                "edge_kv_feed_resets_total",
                "Times the node's KV replica was emptied and read again from the start",
            ),
            registry,
        };
        let collectors: Vec<Box<dyn Collector>> = vec![
            Box::new(metrics.requests.clone()),
            Box::new(metrics.request_duration.clone()),
            Box::new(metrics.guest_duration.clone()),
            Box::new(metrics.guest_cpu_seconds.clone()),
            Box::new(metrics.instantiation_duration.clone()),
            Box::new(metrics.guest_terminations.clone()),
            Box::new(metrics.module_cache_hits.clone()),
            Box::new(metrics.module_cache_misses.clone()),
            Box::new(metrics.module_loads.clone()),
            Box::new(metrics.limit_refusals.clone()),
            Box::new(metrics.in_flight_requests.clone()),
            Box::new(metrics.guests_waiting_for_cpu.clone()),
            Box::new(metrics.http_cache_requests.clone()),
            Box::new(metrics.http_cache_bytes.clone()),
            Box::new(metrics.http_cache_entries.clone()),
            Box::new(metrics.http_cache_size_bytes.clone()),
            Box::new(metrics.response_cache_lookups.clone()),
            Box::new(metrics.backend_requests.clone()),
            Box::new(metrics.backend_duration.clone()),
            Box::new(metrics.connections_open.clone()),
            Box::new(metrics.connections_accepted.clone()),
            Box::new(metrics.node_phase.clone()),
            Box::new(metrics.snapshot_version.clone()),
            Box::new(metrics.snapshot_age_seconds.clone()),
            Box::new(metrics.snapshot_services_skipped.clone()),
            Box::new(metrics.snapshot_duplicate_domains.clone()),
            Box::new(metrics.guest_log_lines.clone()),
            Box::new(metrics.service_labels.clone()),
            Box::new(metrics.kv_reads.clone()),
            Box::new(metrics.kv_writes.clone()),
            Box::new(metrics.kv_feed_position.clone()),
            Box::new(metrics.kv_feed_resets.clone()),
        ];
        for collector in collectors {
            must(metrics.registry.register(collector));
        }
        metrics
    }

    /// The `service` label value for one request of `service` (see
    /// [`ServiceLabels`]).
    pub fn service_label(&self, service: &Arc<str>) -> Arc<str> {
        if !self.enabled {
            return Arc::clone(service);
        }
        self.services.label(service)
    }

    /// Chooses the services with their own label again; the node calls it
    /// every `metrics.service_label_rerank_ms`.
    pub fn rerank_services(&self) {
        self.services.rerank();
    }

    /// One answered request.
    pub fn record_request(&self, service: &str, protocol: &str, status: u16, elapsed: Duration) {
        if !self.enabled {
            return;
        }
        self.requests
            .with_label_values(&[service, protocol, status_class(status)])
            .inc();
        self.request_duration
            .with_label_values(&[service])
            .observe(elapsed.as_secs_f64());
    }

    /// One guest execution, when it ends.
    pub fn record_guest(&self, service: &str, run: GuestRun<'_>) {
        if !self.enabled {
            return;
        }
        self.guest_cpu_seconds
            .with_label_values(&[service])
            .inc_by(run.cpu.as_secs_f64());
        self.guest_duration
            .with_label_values(&[service])
            .observe(run.wall.as_secs_f64());
        if let Some(instantiation) = run.instantiation {
            self.instantiation_duration
                .observe(instantiation.as_secs_f64());
        }
        if let Some(reason) = run.termination {
            self.guest_terminations
                .with_label_values(&[service, reason])
                .inc();
        }
    }

    /// One backend request: `outcome` is the response's status class, or
    /// the error the guest got. `service` is the service's label: a service
    /// counted under `_other` has its backends counted under `_other` too,
    /// since their names are the tenants' to choose, and services without
    /// a label of their own are unbounded in number (a labelled one has at
    /// most `MAX_BACKENDS_PER_SERVICE`).
    pub fn record_backend(&self, service: &str, backend: &str, outcome: &str, elapsed: Duration) {
        if !self.enabled {
            return;
        }
        let backend = if service == OTHER_SERVICES {
            OTHER_SERVICES
        } else {
            backend
        };
        self.backend_requests
            .with_label_values(&[service, backend, outcome])
            .inc();
        self.backend_duration
            .with_label_values(&[service, backend])
            .observe(elapsed.as_secs_f64());
    }

    /// One lookup in the edge cache of a service's own responses.
    pub fn record_response_cache(&self, service: &str, hit: bool) {
        if !self.enabled {
            return;
        }
        let outcome = if hit { "hit" } else { "miss" };
        self.response_cache_lookups
            .with_label_values(&[service, outcome])
            .inc();
    }

    /// A new snapshot is being served.
    pub fn snapshot_applied(&self, version: u64) {
        self.snapshot_version
            .set(i64::try_from(version).unwrap_or(i64::MAX));
        self.snapshot_applied_at
            .store(unix_seconds(SystemTime::now()), Ordering::Relaxed);
    }

    /// The text exposition format, for `/metrics`. `cache_usage` is the HTTP
    /// cache's (entries, bytes), read at scrape time.
    pub fn render(&self, cache_usage: (u64, u64)) -> String {
        self.http_cache_entries
            .set(i64::try_from(cache_usage.0).unwrap_or(i64::MAX));
        self.http_cache_size_bytes
            .set(i64::try_from(cache_usage.1).unwrap_or(i64::MAX));
        let applied = self.snapshot_applied_at.load(Ordering::Relaxed);
        if applied > 0 {
            let age = unix_seconds(SystemTime::now()).saturating_sub(applied);
            self.snapshot_age_seconds
                .set(i64::try_from(age).unwrap_or(i64::MAX));
        }
        self.service_labels
            .set(i64::try_from(self.services.labelled_count()).unwrap_or(i64::MAX));
        let mut families = self.registry.gather();
        // Series of services that lost their own label are kept (so they
        // never go backwards) but not exported.
        for family in &mut families {
            let metrics = family.take_metric();
            let kept = metrics
                .into_iter()
                .filter(|metric| {
                    metric
                        .get_label()
                        .iter()
                        .filter(|pair| pair.name() == "service")
                        .all(|pair| self.services.is_exported(pair.value()))
                })
                .collect();
            family.set_metric(kept);
        }
        families.retain(|family| !family.get_metric().is_empty());
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for valid metric families.
        let _ = TextEncoder::new().encode(&families, &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// One open client connection in `edge_connections_open`: counted as
/// `pending` until its first request shows the protocol it speaks (a
/// cleartext connection may be HTTP/1.1 or h2c), then under that protocol.
#[derive(Debug)]
pub struct OpenConnection {
    by_protocol: IntGaugeVec,
    pending: IntGauge,
    protocol: OnceLock<IntGauge>,
}

impl OpenConnection {
    /// Counts a connection accepted on `listener` (http, https, quic).
    pub fn accepted(metrics: &Metrics, listener: &str) -> Self {
        metrics
            .connections_accepted
            .with_label_values(&[listener])
            .inc();
        let pending = metrics.connections_open.with_label_values(&["pending"]);
        pending.inc();
        Self {
            by_protocol: metrics.connections_open.clone(),
            pending,
            protocol: OnceLock::new(),
        }
    }

    /// A request arrived on the connection.
    pub fn request(&self, version: http::Version) {
        self.protocol.get_or_init(|| {
            let gauge = self
                .by_protocol
                .with_label_values(&[protocol_label(version)]);
            gauge.inc();
            self.pending.dec();
            gauge
        });
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        match self.protocol.get() {
            Some(gauge) => gauge.dec(),
            None => self.pending.dec(),
        }
    }
}

fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(&MetricsSection::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_of_services_without_a_label_share_one_series() {
        let metrics = Metrics::default();
        for i in 0..1_000 {
            let backend = format!("backend-{i}");
            metrics.record_backend(OTHER_SERVICES, &backend, "2xx", Duration::from_millis(1));
        }
        let page = metrics.render((0, 0));
        let series = page
            .lines()
            .filter(|line| line.starts_with("edge_backend_requests_total{"))
            .collect::<Vec<_>>();
        assert_eq!(series.len(), 1, "{series:?}");
        assert!(page.contains(
            r#"edge_backend_requests_total{backend="_other",outcome="2xx",service="_other"} 1000"#
        ));
    }
}
