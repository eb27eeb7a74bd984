//! A service's TLS certificate: `PUT` a PEM chain and key, `GET` what is
//! stored (never the key), `DELETE` it. An upload is checked before it is
//! stored: the PEM parses, the key matches the certificate, and the
//! certificate covers every domain of the service. It reaches the nodes in
//! the next snapshot, which the upload triggers: no deploy, no restart.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::put;
use axum::{Json, Router};
use edge_config::CertificatePem;
use edge_platform::ServingCertificate;

use super::services::own_service;
use super::state::AppState;
use crate::auth::TenantCaller;
use crate::error::ApiError;
use crate::store::certificates::CertificateInfo;

pub fn router() -> Router<AppState> {
    Router::new().route(
        "/v1/services/{service}/certificate",
        put(upload).get(show).delete(remove),
    )
}

async fn upload(
    caller: TenantCaller,
    State(state): State<AppState>,
    Path(name): Path<String>,
    Json(pem): Json<CertificatePem>,
) -> Result<Json<CertificateInfo>, ApiError> {
    let service = own_service(&state, &caller, &name).await?;
    state.quotas.activation(&caller.tenant.id)?;
    let checked = ServingCertificate::from_pem(
        &pem,
        &service.spec.domains,
        &edge_platform::certificates::provider(),
    )
    .map_err(|e| ApiError::bad_request("invalid_certificate", e.to_string()))?;
    let fingerprint = checked.fingerprint_sha256();
    let version = state
        .store
        .put_certificate(&service, &pem, &fingerprint)
        .await?;
    state.snapshot_changed.send_replace(version);
    tracing::info!(service = %name, tenant = %caller.tenant.name, %fingerprint, "certificate uploaded");
    show(caller, State(state), Path(name)).await
}

async fn show(
    caller: TenantCaller,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<CertificateInfo>, ApiError> {
    let service = own_service(&state, &caller, &name).await?;
    state
        .store
        .certificate_info(&service)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("certificate of service {name}")))
}

async fn remove(
    caller: TenantCaller,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let service = own_service(&state, &caller, &name).await?;
    state.quotas.activation(&caller.tenant.id)?;
    if !state.store.delete_certificate(&service).await? {
        return Err(ApiError::not_found(format!(
            "certificate of service {name}"
        )));
    }
    let version = state.store.snapshot_version().await?;
    state.snapshot_changed.send_replace(version);
    Ok(StatusCode::NO_CONTENT)
}
