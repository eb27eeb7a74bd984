//! Purges: a tenant asks for one (`POST /v1/purge`), every node applies it
//! in order through a long-poll of its own (`GET /v1/node/purges?after=N`),
//! and the tenant can follow how many nodes have (`GET /v1/purge/{seq}`).
//!
//! A node's next poll acknowledges everything through its `after`.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use edge_config::limits::CACHE_MAX_SURROGATE_KEY_BYTES;
use edge_config::protocol::PurgeTarget;

use super::state::{AfterQuery, AppState};
use crate::auth::{NodeCaller, TenantCaller};
use crate::error::ApiError;
use crate::store::purges::PurgeStatus;
use edge_config::api::{PurgeAccepted, PurgeRequest};

/// Longest URL a purge may name.
pub const MAX_PURGE_URL_BYTES: usize = 8 * 1024;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/purge", post(create))
        .route("/v1/purge/{seq}", get(status))
        .route("/v1/node/purges", get(poll))
}

/// Checks a purge target and puts a URL into the spelling cache keys use.
fn normalized(target: PurgeTarget) -> Result<PurgeTarget, ApiError> {
    match target {
        PurgeTarget::Url(url) => {
            if url.len() > MAX_PURGE_URL_BYTES {
                return Err(ApiError::bad_request(
                    "invalid_purge",
                    format!("url: longer than {MAX_PURGE_URL_BYTES} bytes"),
                ));
            }
            edge_platform::urls::normalize_url(&url)
                .map(PurgeTarget::Url)
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_purge",
                        format!("url: {url:?} is not an absolute http(s) URL"),
                    )
                })
        }
        PurgeTarget::SurrogateKey(key) => {
            let valid = !key.is_empty()
                && key.len() <= CACHE_MAX_SURROGATE_KEY_BYTES
                && !key.contains(char::is_whitespace);
            if valid {
                Ok(PurgeTarget::SurrogateKey(key))
            } else {
                Err(ApiError::bad_request(
                    "invalid_purge",
                    format!(
                        "surrogate_key: must be 1 to {CACHE_MAX_SURROGATE_KEY_BYTES} bytes without whitespace"
                    ),
                ))
            }
        }
    }
}

async fn create(
    caller: TenantCaller,
    State(state): State<AppState>,
    Json(purge): Json<PurgeRequest>,
) -> Result<(StatusCode, Json<PurgeAccepted>), ApiError> {
    let soft = purge.soft;
    let target = purge
        .target()
        .map_err(|message| ApiError::bad_request("invalid_purge", message))?;
    let target = normalized(target)?;
    state.quotas.purge(&caller.tenant.id)?;
    let seq = state
        .store
        .add_purge(&caller.tenant.id, &target, soft)
        .await?;
    state.purges_changed.send_replace(seq);
    Ok((StatusCode::ACCEPTED, Json(PurgeAccepted { seq })))
}

async fn status(
    caller: TenantCaller,
    State(state): State<AppState>,
    Path(seq): Path<u64>,
) -> Result<Json<PurgeStatus>, ApiError> {
    state
        .store
        .purge_status(&caller.tenant.id, seq)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("purge {seq}")))
}

/// Answers as soon as there is a purge after `after`, or with 304 after the
/// wait. Records `after` as the node's acknowledgement.
async fn poll(
    node: NodeCaller,
    State(state): State<AppState>,
    Query(query): Query<AfterQuery>,
) -> Result<Response, ApiError> {
    state.sightings.applied_purges(&node.id, query.after);
    let batch = super::state::long_poll(
        state.config.snapshot_wait,
        &state.purges_changed,
        || async {
            let newest = *state.purges_changed.borrow();
            let batch = state
                .purge_batches
                .batch_after(query.after, newest, || {
                    state.store.purges_after(query.after)
                })
                .await?;
            Ok((batch.through > query.after).then_some(batch))
        },
    )
    .await?;
    Ok(match batch {
        Some(batch) => Json(batch).into_response(),
        None => StatusCode::NOT_MODIFIED.into_response(),
    })
}
