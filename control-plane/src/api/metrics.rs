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
