//! A service's TLS certificate: `PUT` a PEM chain and key, `GET` what is
//! stored (never the key), `DELETE` it. An upload is checked before it is
//! stored: the PEM parses, the key matches the certificate, and the
//! certificate covers every domain of the service. It reaches the nodes in
//! the next snapshot, which the upload triggers: no deploy, no restart.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::put;
use axum::{Json, Router};
use edge_config::CertificatePem;
use edge_platform::ServingCertificate;

use super::services::OwnService;
use super::state::AppState;
use crate::error::ApiError;
use crate::store::Service;
use crate::store::certificates::CertificateInfo;

pub fn router() -> Router<AppState> {
    Router::new().route(
        "/v1/services/{service}/certificate",
        put(upload).get(show).delete(remove),
    )
}

async fn upload(
    OwnService { caller, service }: OwnService,
    State(state): State<AppState>,
    Json(pem): Json<CertificatePem>,
) -> Result<Json<CertificateInfo>, ApiError> {
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
    tracing::info!(service = %service.name, tenant = %caller.tenant.name, %fingerprint, "certificate uploaded");
    certificate_info(&state, &service).await
}

async fn show(
    OwnService { service, .. }: OwnService,
    State(state): State<AppState>,
) -> Result<Json<CertificateInfo>, ApiError> {
    certificate_info(&state, &service).await
}

async fn certificate_info(
    state: &AppState,
    service: &Service,
) -> Result<Json<CertificateInfo>, ApiError> {
    state
        .store
        .certificate_info(service)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("certificate of service {}", service.name)))
}

async fn remove(
    OwnService { caller, service }: OwnService,
    State(state): State<AppState>,
) -> Result<StatusCode, ApiError> {
    state.quotas.activation(&caller.tenant.id)?;
    if !state.store.delete_certificate(&service).await? {
        return Err(ApiError::not_found(format!(
            "certificate of service {}",
            service.name
        )));
    }
    let version = state.store.snapshot_version().await?;
    state.snapshot_changed.send_replace(version);
    Ok(StatusCode::NO_CONTENT)
}
