//! Guest log lines: nodes ship them (cluster token), and a tenant reads its
//! own services' lines, oldest first, after the last line it saw. Another
//! tenant's service is 404, like every service lookup.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use edge_config::protocol::{
    GuestLogBatch, MAX_GUEST_LOG_BATCH_BYTES, MAX_GUEST_LOG_LINES_PER_BATCH,
};
use serde::Deserialize;

use super::services::OwnService;
use super::state::AppState;
use crate::auth::NodeCaller;
use crate::error::ApiError;
use edge_config::api::LogPage;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/node/logs",
            post(ship).layer(axum::extract::DefaultBodyLimit::max(
                MAX_GUEST_LOG_BATCH_BYTES,
            )),
        )
        .route("/v1/services/{service}/logs", get(read))
}

async fn ship(
    node: NodeCaller,
    State(state): State<AppState>,
    Json(batch): Json<GuestLogBatch>,
) -> Result<StatusCode, ApiError> {
    if batch.lines.len() > MAX_GUEST_LOG_LINES_PER_BATCH {
        return Err(ApiError::bad_request(
            "too_many_lines",
            format!("at most {MAX_GUEST_LOG_LINES_PER_BATCH} lines per shipment"),
        ));
    }
    let stored = state.store.add_guest_logs(&node.id, &batch.lines).await?;
    let metric = &state.metrics.guest_log_lines;
    metric.with_label_values(&["stored"]).inc_by(stored as u64);
    metric
        .with_label_values(&["skipped"])
        .inc_by((batch.lines.len() - stored) as u64);
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
pub struct ReadQuery {
    /// The last line id seen; without it, the newest `limit` lines.
    after: Option<i64>,
    /// Only the lines of this request (its `x-request-id`).
    request_id: Option<String>,
    #[serde(default = "default_limit")]
    limit: u64,
}

fn default_limit() -> u64 {
    100
}

async fn read(
    OwnService { service, .. }: OwnService,
    State(state): State<AppState>,
    Query(query): Query<ReadQuery>,
) -> Result<Json<LogPage>, ApiError> {
    let lines = state
        .store
        .guest_logs(
            &service,
            query.after,
            query.request_id.as_deref(),
            query.limit,
        )
        .await?;
    let next_after = lines.last().map(|line| line.id).or(query.after);
    Ok(Json(LogPage { lines, next_after }))
}
