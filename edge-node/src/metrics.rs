//! The node's Prometheus metrics, served on the admin listener.
//!
//! Every metric is named `edge_*`; docs/operations.md lists them. Requests
//! that match no service are counted under the service label `_unknown`, so
//! that clients cannot create series by inventing hosts.

use prometheus::{CounterVec, Encoder, TextEncoder};
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

/// The service label of requests that match no service.
pub const UNKNOWN_SERVICE: &str = "_unknown";

/// Latency buckets from 50 µs (a cached hello) to 60 s (the wall limit).
const LATENCY_BUCKETS_SECONDS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0, 30.0, 60.0,
];

#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// Responses by service and status code.
    pub requests: IntCounterVec,
    /// Time from request head to response head, by service.
    pub request_duration: HistogramVec,
    /// Time to instantiate a component for a request.
    pub instantiation_duration: Histogram,
    /// Guest executions that ended early, by service and reason
    /// (cpu, wall, memory, trap, no_response).
    pub guest_terminations: IntCounterVec,
    /// Guest CPU time, by service.
    pub guest_cpu_seconds: CounterVec,
    pub module_cache_hits: IntCounter,
    pub module_cache_misses: IntCounter,
    /// Components loaded into the cache, by source (artifact, compiled,
    /// failed).
    pub module_loads: IntCounterVec,
    /// Requests refused by a node limit before reaching a guest, by limit.
    pub limit_refusals: IntCounterVec,
    pub in_flight_requests: IntGauge,
    /// Backend requests through the HTTP cache, by outcome (hit, miss,
    /// revalidated, stale, pass, collapsed).
    pub http_cache_requests: IntCounterVec,
    /// 1 for the node's current phase (starting, serving, draining,
    /// stopped), 0 for the others.
    pub node_phase: IntGaugeVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let metrics = Self {
            requests: IntCounterVec::new(
                Opts::new(
                    "edge_requests_total",
                    "Responses by service and status code",
                ),
                &["service", "status"],
            )
            .expect("valid metric"),
            request_duration: HistogramVec::new(
                HistogramOpts::new(
                    "edge_request_duration_seconds",
                    "Time from request head to response head",
                )
                .buckets(LATENCY_BUCKETS_SECONDS.to_vec()),
                &["service"],
            )
            .expect("valid metric"),
            instantiation_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "edge_instantiation_duration_seconds",
                    "Time to instantiate a component for one request",
                )
                .buckets(LATENCY_BUCKETS_SECONDS.to_vec()),
            )
            .expect("valid metric"),
            guest_terminations: IntCounterVec::new(
                Opts::new(
                    "edge_guest_terminations_total",
                    "Guest executions ended by the node, by reason",
                ),
                &["service", "reason"],
            )
            .expect("valid metric"),
            guest_cpu_seconds: CounterVec::new(
                Opts::new("edge_guest_cpu_seconds_total", "Guest CPU time"),
                &["service"],
            )
            .expect("valid metric"),
            module_cache_hits: IntCounter::new(
                "edge_module_cache_hits_total",
                "Requests whose component was ready in memory",
            )
            .expect("valid metric"),
            module_cache_misses: IntCounter::new(
                "edge_module_cache_misses_total",
                "Requests whose component had to be loaded",
            )
            .expect("valid metric"),
            module_loads: IntCounterVec::new(
                Opts::new("edge_module_loads_total", "Components loaded, by source"),
                &["source"],
            )
            .expect("valid metric"),
            limit_refusals: IntCounterVec::new(
                Opts::new(
                    "edge_limit_refusals_total",
                    "Requests refused by a node limit, by limit",
                ),
                &["limit"],
            )
            .expect("valid metric"),
            in_flight_requests: IntGauge::new(
                "edge_in_flight_requests",
                "Requests being handled, including guests still streaming a body",
            )
            .expect("valid metric"),
            http_cache_requests: IntCounterVec::new(
                Opts::new(
                    "edge_http_cache_requests_total",
                    "Backend requests through the HTTP cache, by outcome",
                ),
                &["outcome"],
            )
            .expect("valid metric"),
            node_phase: IntGaugeVec::new(
                Opts::new(
                    "edge_node_phase",
                    "1 for the node's current lifecycle phase",
                ),
                &["phase"],
            )
            .expect("valid metric"),
            registry,
        };
        let collectors: [Box<dyn prometheus::core::Collector>; 12] = [
            Box::new(metrics.node_phase.clone()),
            Box::new(metrics.http_cache_requests.clone()),
            Box::new(metrics.requests.clone()),
            Box::new(metrics.request_duration.clone()),
            Box::new(metrics.instantiation_duration.clone()),
            Box::new(metrics.guest_terminations.clone()),
            Box::new(metrics.guest_cpu_seconds.clone()),
            Box::new(metrics.module_cache_hits.clone()),
            Box::new(metrics.module_cache_misses.clone()),
            Box::new(metrics.module_loads.clone()),
            Box::new(metrics.limit_refusals.clone()),
            Box::new(metrics.in_flight_requests.clone()),
        ];
        for collector in collectors {
            metrics
                .registry
                .register(collector)
                .expect("metric names are unique");
        }
        metrics
    }

    /// The text exposition format, for `/metrics`.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for valid metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
