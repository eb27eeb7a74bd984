//! Secrets: a tenant sets one (`PUT /v1/secrets/{name}`), lists their names
//! and deletes them. The value is sealed with the operator's key as it
//! arrives and is never returned, logged or counted by value; it reaches
//! guests of the services that list it, through `wasi:config/store`.
//! Without `--secrets-key-file` the control plane stores no secret: 503.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, put};
use axum::{Json, Router};
use edge_config::state::{MAX_SECRET_VALUE_BYTES, NewSecret, SecretInfo, check_name};

use super::state::AppState;
use crate::auth::TenantCaller;
use crate::error::ApiError;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/secrets", get(list))
        .route("/v1/secrets/{name}", put(set).delete(remove))
}

async fn set(
    caller: TenantCaller,
    State(state): State<AppState>,
    Path(name): Path<String>,
    Json(secret): Json<NewSecret>,
) -> Result<Json<SecretInfo>, ApiError> {
    check_name("secret", &name).map_err(|m| ApiError::bad_request("invalid_name", m))?;
    if secret.value.len() > MAX_SECRET_VALUE_BYTES {
        return Err(ApiError::bad_request(
            "invalid_secret",
            format!("a secret may be at most {MAX_SECRET_VALUE_BYTES} bytes"),
        ));
    }
    let key = state.config.secrets_key.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "secrets_unavailable",
            "this control plane has no secrets key (--secrets-key-file): it stores no secrets",
        )
    })?;
    state.quotas.activation(&caller.tenant.id)?;
    let sealed = key
        .seal(&caller.tenant.name, &name, secret.value.as_bytes())
        .map_err(|e| ApiError::internal("sealing a secret", &e))?;
    let info = state
        .store
        .set_secret(
            &caller.tenant.id,
            &name,
            &sealed,
            state.config.quotas.max_secrets_per_tenant,
        )
        .await?;
    state
        .snapshot_changed
        .send_replace(state.store.snapshot_version().await?);
    tracing::info!(tenant = %caller.tenant.name, secret = %name, "secret set");
    Ok(Json(info))
}

async fn list(
    caller: TenantCaller,
    State(state): State<AppState>,
) -> Result<Json<Vec<SecretInfo>>, ApiError> {
    Ok(Json(state.store.secrets(&caller.tenant.id).await?))
}

async fn remove(
    caller: TenantCaller,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.quotas.activation(&caller.tenant.id)?;
    if !state.store.delete_secret(&caller.tenant.id, &name).await? {
        return Err(ApiError::not_found(format!("secret {name:?}")));
    }
    state
        .snapshot_changed
        .send_replace(state.store.snapshot_version().await?);
    Ok(StatusCode::NO_CONTENT)
}
