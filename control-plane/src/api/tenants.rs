//! Tenants, created by the operator. The response is the only time a token
//! is shown: the database keeps its sha256.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use edge_config::service::validate_service_name;
use serde::{Deserialize, Serialize};

use super::AppState;
use crate::auth::{Admin, TenantCaller, new_token, token_sha256};
use crate::error::ApiError;
use crate::store::Tenant;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/tenants", post(create).get(list))
        .route("/v1/tokens", post(create_token))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTenant {
    pub name: String,
    /// Whether the tenant's backends may be on private, loopback or
    /// link-local addresses: only for origins inside the operator's own
    /// network.
    #[serde(default)]
    pub allow_private_backends: bool,
}

#[derive(Debug, Serialize)]
pub struct CreatedTenant {
    pub tenant: Tenant,
    pub token: String,
}

async fn create(
    _: Admin,
    State(state): State<AppState>,
    Json(new): Json<NewTenant>,
) -> Result<(StatusCode, Json<CreatedTenant>), ApiError> {
    validate_service_name(&new.name)
        .map_err(|message| ApiError::bad_request("invalid_name", format!("name: {message}")))?;
    let token = new_token();
    let tenant = state
        .store
        .create_tenant(&new.name, &token_sha256(&token), new.allow_private_backends)
        .await?;
    Ok((StatusCode::CREATED, Json(CreatedTenant { tenant, token })))
}

async fn list(_: Admin, State(state): State<AppState>) -> Result<Json<Vec<Tenant>>, ApiError> {
    Ok(Json(state.store.list_tenants().await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    pub label: String,
}

#[derive(Debug, Serialize)]
pub struct CreatedToken {
    pub label: String,
    pub token: String,
}

/// A tenant makes another token for itself (for CI, say).
async fn create_token(
    caller: TenantCaller,
    State(state): State<AppState>,
    Json(new): Json<NewToken>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    validate_service_name(&new.label)
        .map_err(|message| ApiError::bad_request("invalid_name", format!("label: {message}")))?;
    let token = new_token();
    state
        .store
        .add_token(&caller.tenant.id, &token_sha256(&token), &new.label)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            label: new.label,
            token,
        }),
    ))
}
