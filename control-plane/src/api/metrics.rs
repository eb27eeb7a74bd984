//! The control plane's `/metrics` route, and the counter every API request
//! goes through (see [`crate::metrics`] for what is counted).

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus::{Encoder, Gauge, GaugeVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

use super::state::AppState;
use crate::error::ApiError;

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

/// A gauge a scrape could not make or register: a 500 like any other.
fn metrics_error(e: prometheus::Error) -> ApiError {
    ApiError::internal("metrics", &e)
}

/// A per-service usage gauge, labelled by tenant and service.
fn usage_gauge(name: &str, help: &str) -> Result<GaugeVec, ApiError> {
    GaugeVec::new(Opts::new(name, help), &["tenant", "service"]).map_err(metrics_error)
}

pub async fn render(State(state): State<AppState>) -> Result<Response, ApiError> {
    // Gauges from the database, in a registry of their own per scrape.
    let scrape = Registry::new();
    let snapshot = IntGauge::new("cp_snapshot_version", "The newest config snapshot version")
        .map_err(metrics_error)?;
    snapshot.set(i64::try_from(state.store.snapshot_version().await?).unwrap_or(i64::MAX));
    let nodes = IntGaugeVec::new(
        Opts::new("cp_nodes", "Registered nodes by health"),
        &["health"],
    )
    .map_err(metrics_error)?;
    let lag = IntGaugeVec::new(
        Opts::new("cp_node_snapshot_lag", "Snapshot versions a node is behind"),
        &["node"],
    )
    .map_err(metrics_error)?;
    let latest = snapshot.get();
    for node in state.store.nodes().await? {
        let health = if node.healthy { "healthy" } else { "stale" };
        nodes.with_label_values(&[health]).inc();
        lag.with_label_values(&[&node.name])
            .set((latest - node.snapshot_version).max(0));
    }
    let requests = usage_gauge(
        "cp_usage_requests_total",
        "Requests served, reported by nodes",
    )?;
    let cpu = usage_gauge(
        "cp_usage_guest_cpu_seconds_total",
        "Guest CPU time, reported by nodes",
    )?;
    let bytes = usage_gauge(
        "cp_usage_bytes_out_total",
        "Response body bytes, reported by nodes",
    )?;
    for (tenant, usage) in state.store.all_usage().await? {
        let values = [tenant.as_str(), usage.service.as_str()];
        requests
            .with_label_values(&values)
            .set(usage.requests as f64);
        cpu.with_label_values(&values)
            .set(usage.guest_cpu_micros as f64 / 1e6);
        bytes.with_label_values(&values).set(usage.bytes_out as f64);
    }
    let kv_seq = IntGauge::new(
        "cp_kv_change_seq",
        "The newest KV change number: a node's edge_kv_feed_position behind it is its lag",
    )
    .map_err(metrics_error)?;
    kv_seq.set(i64::try_from(state.store.kv_seq().await?).unwrap_or(i64::MAX));
    let up = Gauge::new("cp_up", "1 while the control plane answers").map_err(metrics_error)?;
    up.set(1.0);
    for metric in [
        Box::new(snapshot) as Box<dyn prometheus::core::Collector>,
        Box::new(nodes),
        Box::new(lag),
        Box::new(requests),
        Box::new(cpu),
        Box::new(bytes),
        Box::new(kv_seq),
        Box::new(up),
    ] {
        scrape.register(metric).map_err(metrics_error)?;
    }
    let mut families = state.metrics.gather();
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
