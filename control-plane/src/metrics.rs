//! The control plane's `/metrics`: API traffic, uploads and compile times
//! counted as they happen; nodes, their lag behind the snapshot, and usage
//! per tenant and service read from the database at scrape time, so every
//! replica reports the same totals.

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::api::AppState;
use crate::error::ApiError;

#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    pub api_requests: IntCounterVec,
    /// Time to answer, by route (long-polls included: they wait by design).
    pub api_duration: HistogramVec,
    pub uploads: IntCounterVec,
    pub compile_duration: Histogram,
    /// Guest log lines nodes shipped, by outcome (stored, skipped: of a
    /// service that no longer exists).
    pub guest_log_lines: IntCounterVec,
    /// Snapshots read from the database and serialized: once per version
    /// per replica, however many nodes poll.
    pub snapshot_builds: prometheus::IntCounter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn must<T>(metric: prometheus::Result<T>) -> T {
    match metric {
        Ok(metric) => metric,
        // The names and labels are literals below; a bad one is a bug the
        // tests catch.
        Err(e) => panic!("invalid metric definition: {e}"),
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let api_requests = must(IntCounterVec::new(
            Opts::new("cp_api_requests_total", "API requests by route and status"),
            &["route", "status"],
        ));
        let api_duration = must(HistogramVec::new(
            HistogramOpts::new(
                "cp_api_request_duration_seconds",
                "Time to answer an API request, by route",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                60.0,
            ]),
            &["route"],
        ));
        let uploads = must(IntCounterVec::new(
            Opts::new("cp_uploads_total", "Module uploads by outcome"),
            &["outcome"],
        ));
        let compile_duration = must(Histogram::with_opts(
            HistogramOpts::new(
                "cp_compile_duration_seconds",
                "Compile worker time per upload",
            )
            .buckets(vec![0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]),
        ));
        let guest_log_lines = must(IntCounterVec::new(
            Opts::new(
                "cp_guest_log_lines_total",
                "Guest log lines shipped by nodes, by outcome",
            ),
            &["outcome"],
        ));
        let snapshot_builds = must(prometheus::IntCounter::new(
            "cp_snapshot_builds_total",
            "Snapshots read and serialized (once per version, shared by every node's poll)",
        ));
        for metric in [
            Box::new(api_requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(api_duration.clone()),
            Box::new(uploads.clone()),
            Box::new(compile_duration.clone()),
            Box::new(guest_log_lines.clone()),
            Box::new(snapshot_builds.clone()),
        ] {
            must(registry.register(metric));
        }
        Self {
            registry,
            api_requests,
            api_duration,
            uploads,
            compile_duration,
            guest_log_lines,
            snapshot_builds,
        }
    }
}

/// Counts every API request by its route template (never the raw path, so
/// the label set stays bounded).
pub async fn count_requests(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched".to_string(), |path| path.as_str().to_string());
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    state
        .metrics
        .api_requests
        .with_label_values(&[&route, response.status().as_str()])
        .inc();
    state
        .metrics
        .api_duration
        .with_label_values(&[&route])
        .observe(started.elapsed().as_secs_f64());
    response
}

pub async fn render(State(state): State<AppState>) -> Result<Response, ApiError> {
    // Gauges from the database, in a registry of their own per scrape.
    let scrape = Registry::new();
    let snapshot = IntGauge::new("cp_snapshot_version", "The newest config snapshot version")
        .map_err(|e| ApiError::internal("metrics", &e))?;
    snapshot.set(i64::try_from(state.store.snapshot_version().await?).unwrap_or(i64::MAX));
    let nodes = IntGaugeVec::new(
        Opts::new("cp_nodes", "Registered nodes by health"),
        &["health"],
    )
    .map_err(|e| ApiError::internal("metrics", &e))?;
    let lag = IntGaugeVec::new(
        Opts::new("cp_node_snapshot_lag", "Snapshot versions a node is behind"),
        &["node"],
    )
    .map_err(|e| ApiError::internal("metrics", &e))?;
    let latest = snapshot.get();
    for node in state.store.nodes().await? {
        let health = if node.healthy { "healthy" } else { "stale" };
        nodes.with_label_values(&[health]).inc();
        lag.with_label_values(&[&node.name])
            .set((latest - node.snapshot_version).max(0));
    }
    let labels = &["tenant", "service"];
    let requests = GaugeVec::new(
        Opts::new(
            "cp_usage_requests_total",
            "Requests served, reported by nodes",
        ),
        labels,
    )
    .map_err(|e| ApiError::internal("metrics", &e))?;
    let cpu = GaugeVec::new(
        Opts::new(
            "cp_usage_guest_cpu_seconds_total",
            "Guest CPU time, reported by nodes",
        ),
        labels,
    )
    .map_err(|e| ApiError::internal("metrics", &e))?;
    let bytes = GaugeVec::new(
        Opts::new(
            "cp_usage_bytes_out_total",
            "Response body bytes, reported by nodes",
        ),
        labels,
    )
    .map_err(|e| ApiError::internal("metrics", &e))?;
    for (tenant, usage) in state.store.all_usage().await? {
        let values = [tenant.as_str(), usage.service.as_str()];
        requests
            .with_label_values(&values)
            .set(usage.requests as f64);
        cpu.with_label_values(&values)
            .set(usage.guest_cpu_micros as f64 / 1e6);
        bytes.with_label_values(&values).set(usage.bytes_out as f64);
    }
    let up = Gauge::new("cp_up", "1 while the control plane answers")
        .map_err(|e| ApiError::internal("metrics", &e))?;
    up.set(1.0);
    for metric in [
        Box::new(snapshot) as Box<dyn prometheus::core::Collector>,
        Box::new(nodes),
        Box::new(lag),
        Box::new(requests),
        Box::new(cpu),
        Box::new(bytes),
        Box::new(up),
    ] {
        scrape
            .register(metric)
            .map_err(|e| ApiError::internal("metrics", &e))?;
    }
    let mut families = state.metrics.registry.gather();
    families.extend(scrape.gather());
    let mut out = Vec::new();
    TextEncoder::new()
        .encode(&families, &mut out)
        .map_err(|e| ApiError::internal("encoding metrics", &e))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            TextEncoder::new().format_type().to_string(),
        )],
        out,
    )
        .into_response())
}
