//! Tenants, created by the operator. The response is the only time a token
//! is shown: the database keeps its sha256.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, post};
use axum::{Json, Router};

use super::state::AppState;
use crate::auth::{Admin, TenantCaller, new_token, token_sha256};
use crate::error::ApiError;
use crate::store::{Tenant, TokenInfo};
use edge_config::api::{CreatedTenant, CreatedToken, NewTenant, NewToken, Revoked, Suspension};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/tenants", post(create).get(list))
        .route("/v1/tokens", post(create_token).get(list_tokens))
        .route("/v1/tokens/{id}", delete(revoke_token))
        .route("/v1/tenants/{tenant}/suspend", post(set_suspended::<true>))
        .route("/v1/tenants/{tenant}/resume", post(set_suspended::<false>))
        .route("/v1/tenants/{tenant}/tokens", delete(revoke_tenant_tokens))
}

/// The operator's kill switch (`SUSPENDED`) and its undo: a suspended
/// tenant's services leave every node's snapshot at once, and its tokens
/// get 403 until it is resumed.
async fn set_suspended<const SUSPENDED: bool>(
    _: Admin,
    State(state): State<AppState>,
    Path(tenant): Path<String>,
) -> Result<Json<Suspension>, ApiError> {
    let snapshot_version = state
        .store
        .set_suspended(&tenant, SUSPENDED)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("tenant {tenant}")))?;
    state.snapshot_changed.send_replace(snapshot_version);
    Ok(Json(Suspension {
        tenant,
        suspended: SUSPENDED,
        snapshot_version,
    }))
}

/// The operator revokes every token of a tenant.
async fn revoke_tenant_tokens(
    _: Admin,
    State(state): State<AppState>,
    Path(tenant): Path<String>,
) -> Result<Json<Revoked>, ApiError> {
    let tenant = state
        .store
        .tenant_by_name(&tenant)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("tenant {tenant}")))?;
    let revoked = state.store.revoke_tokens(&tenant.id, None).await?;
    Ok(Json(Revoked { revoked }))
}

async fn list_tokens(
    caller: TenantCaller,
    State(state): State<AppState>,
) -> Result<Json<Vec<TokenInfo>>, ApiError> {
    Ok(Json(state.store.tokens(&caller.tenant.id).await?))
}

/// A tenant revokes one of its own tokens (the one calling included).
async fn revoke_token(
    caller: TenantCaller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    match state
        .store
        .revoke_tokens(&caller.tenant.id, Some(&id))
        .await?
    {
        0 => Err(ApiError::not_found(format!("token {id}"))),
        _ => Ok(StatusCode::NO_CONTENT),
    }
}

async fn create(
    _: Admin,
    State(state): State<AppState>,
    Json(new): Json<NewTenant>,
) -> Result<(StatusCode, Json<CreatedTenant>), ApiError> {
    ApiError::check_name("name", &new.name)?;
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

/// A tenant makes another token for itself (for CI, say).
async fn create_token(
    caller: TenantCaller,
    State(state): State<AppState>,
    Json(new): Json<NewToken>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    ApiError::check_name("label", &new.label)?;
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
