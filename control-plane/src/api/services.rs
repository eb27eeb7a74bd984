//! A tenant's services: create and change them, upload modules, make
//! versions, activate and roll back, read usage. Every route is scoped to the
//! calling tenant: another tenant's service answers 404, exactly as one that
//! does not exist.

use axum::body::Body;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::routing::{get, post};
use axum::{Json, Router};
use edge_config::domain::{normalize_domain, within};
use edge_config::protocol::ServiceSpec;
use edge_config::validate::ConfigErrors;
use edge_platform::ModuleHash;
use std::collections::HashMap;

use super::state::AppState;
use crate::auth::TenantCaller;
use crate::compile::CompileError;
use crate::error::ApiError;
use crate::quotas::quota_exceeded;
use crate::store::rollouts::CanaryOutcome;
use crate::store::{Service, UsageTotals, Version};
use crate::validate::validate_component;
use edge_config::api::{
    Activated, Activation, CanaryEnded, CanaryStarted, NewCanary, NewService, NewVersion, Rollout,
    UploadedModule, VersionCreated,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/services", post(create).get(list))
        .route(
            "/v1/services/{service}",
            get(show).put(update).delete(delete),
        )
        .route("/v1/services/{service}/modules", post(upload))
        .route(
            "/v1/services/{service}/versions",
            post(create_version).get(versions),
        )
        .route("/v1/services/{service}/activate", post(activate))
        .route("/v1/services/{service}/rollback", post(rollback))
        .route("/v1/services/{service}/canary", post(start_canary))
        .route(
            "/v1/services/{service}/canary/promote",
            post(promote_canary),
        )
        .route("/v1/services/{service}/canary/abort", post(abort_canary))
        .route("/v1/services/{service}/rollout", get(rollout))
        .route("/v1/usage", get(usage))
}

/// Checks a spec for service `service` and puts its domains in their one
/// spelling (see [`normalize_domain`]); backends must stay on public
/// addresses unless the operator allowed this tenant otherwise.
fn check_spec(
    state: &AppState,
    caller: &TenantCaller,
    service: &str,
    mut spec: ServiceSpec,
) -> Result<ServiceSpec, ApiError> {
    let mut errors = ConfigErrors::default();
    let mut domains = Vec::with_capacity(spec.domains.len());
    for (i, domain) in spec.domains.iter().enumerate() {
        match check_domain(state, caller, service, domain) {
            Ok(domain) if domains.contains(&domain) => {
                errors.push(format!("domains[{i}]"), format!("{domain} is listed twice"));
            }
            Ok(domain) => domains.push(domain),
            Err(message) => errors.push(format!("domains[{i}]"), message),
        }
    }
    spec.domains = domains;
    if let Err(more) = spec.validate(&state.config.sandbox) {
        errors.0.extend(more.0);
    }
    if !caller.tenant.allow_private_backends {
        for (name, backend) in &spec.backends {
            if backend.allow_private_addresses {
                errors.push(
                    format!("backends.{name}.allow_private_addresses"),
                    format!(
                        "the operator has not allowed tenant {} to reach private addresses",
                        caller.tenant.name
                    ),
                );
            }
        }
    }
    errors.into_result().map_err(|errors| {
        let list: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
        ApiError::bad_request("invalid_spec", list.join("; "))
    })?;
    // Stored with every version and shipped to every node.
    let bytes = serde_json::to_vec(&spec).map_or(usize::MAX, |json| json.len());
    let max = state.quotas.config.max_spec_bytes;
    if bytes > max {
        return Err(quota_exceeded(format!(
            "the spec is {bytes} bytes as JSON; at most {max} (--max-spec-bytes)"
        )));
    }
    Ok(spec)
}

/// A custom domain in its one spelling. Names under the platform domain
/// are the platform's to give: only the service's own is accepted.
pub(super) fn check_domain(
    state: &AppState,
    caller: &TenantCaller,
    service: &str,
    domain: &str,
) -> Result<String, String> {
    let domain = normalize_domain(domain)?;
    let platform = state.store.platform_domain();
    let own = format!("{service}.{}.{platform}", caller.tenant.name);
    if domain != own && within(&domain, platform) {
        return Err(format!(
            "{domain} is under the platform domain {platform}; this service's name there is {own}"
        ));
    }
    Ok(domain)
}

async fn create(
    caller: TenantCaller,
    State(state): State<AppState>,
    Json(new): Json<NewService>,
) -> Result<(StatusCode, Json<Service>), ApiError> {
    ApiError::check_name("name", &new.name)?;
    let spec = check_spec(&state, &caller, &new.name, new.spec)?;
    let max = state.quotas.config.max_services_per_tenant;
    if state.store.list_services(&caller.tenant.id).await?.len() as u64 >= max {
        return Err(quota_exceeded(format!(
            "a tenant may have at most {max} services (--max-services-per-tenant)"
        )));
    }
    let service = state
        .store
        .create_service(&caller.tenant, &new.name, &spec)
        .await?;
    Ok((StatusCode::CREATED, Json(service)))
}

async fn list(
    caller: TenantCaller,
    State(state): State<AppState>,
) -> Result<Json<Vec<Service>>, ApiError> {
    Ok(Json(state.store.list_services(&caller.tenant.id).await?))
}

/// The caller's service, or 404 whether it is missing or another tenant's.
pub(super) async fn own_service(
    state: &AppState,
    caller: &TenantCaller,
    name: &str,
) -> Result<Service, ApiError> {
    state
        .store
        .service(&caller.tenant.id, name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("service {name}")))
}

/// The caller's own service named by the path's `{service}`, resolved
/// before the handler runs: 404 whether it is missing or another tenant's.
#[derive(Debug)]
pub(super) struct OwnService {
    pub(super) caller: TenantCaller,
    pub(super) service: Service,
}

impl FromRequestParts<AppState> for OwnService {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = TenantCaller::from_request_parts(parts, state).await?;
        let Path(params) = Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_request("invalid_path", e.body_text()))?;
        let name = params
            .get("service")
            .ok_or_else(|| ApiError::not_found("service"))?;
        let service = own_service(state, &caller, name).await?;
        Ok(Self { caller, service })
    }
}

async fn show(OwnService { service, .. }: OwnService) -> Json<Service> {
    Json(service)
}

/// Replaces the spec. Like a module, it reaches the nodes with the next
/// version.
async fn update(
    OwnService { caller, service }: OwnService,
    State(state): State<AppState>,
    Json(spec): Json<ServiceSpec>,
) -> Result<Json<Service>, ApiError> {
    let spec = check_spec(&state, &caller, &service.name, spec)?;
    state.store.update_service(&service, &spec).await?;
    Ok(Json(own_service(&state, &caller, &service.name).await?))
}

/// Deletes the service: nodes stop serving it, and its domains are free.
async fn delete(
    OwnService { caller, service }: OwnService,
    State(state): State<AppState>,
) -> Result<StatusCode, ApiError> {
    state.quotas.activation(&caller.tenant.id)?;
    let version = state.store.delete_service(&service).await?;
    state.snapshot_changed.send_replace(version);
    Ok(StatusCode::NO_CONTENT)
}

/// Uploads a component (the raw bytes as the body). It is validated,
/// compiled in a child process, and stored content-addressed: the same bytes
/// uploaded twice are stored once. The service is resolved (404 for one
/// the caller does not own) before a byte of the body is read.
async fn upload(
    OwnService { caller, .. }: OwnService,
    State(state): State<AppState>,
    body: Body,
) -> Result<(StatusCode, Json<UploadedModule>), ApiError> {
    let outcome = match state.quotas.upload(&caller.tenant.id) {
        Ok(_uploading) => store_upload(&state, &caller, body).await,
        Err(limited) => Err(limited.into()),
    };
    let label = match &outcome {
        Err(e) if e.status == StatusCode::TOO_MANY_REQUESTS => "rate_limited",
        Ok((StatusCode::OK, _)) => "duplicate",
        Ok(_) => "stored",
        Err(e) if e.status == StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        Err(e) if e.status == StatusCode::BAD_REQUEST => "refused",
        Err(_) => "failed",
    };
    state.metrics.uploads.with_label_values(&[label]).inc();
    outcome
}

/// 200 for bytes this tenant uploaded before, 201 otherwise: whether
/// another tenant has the same bytes is not told.
async fn store_upload(
    state: &AppState,
    caller: &TenantCaller,
    body: Body,
) -> Result<(StatusCode, Json<UploadedModule>), ApiError> {
    let limit = state.config.max_upload_bytes;
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "upload_too_large",
            format!("modules may be at most {limit} bytes"),
        )
    })?;
    validate_component(&bytes)
        .map_err(|e| ApiError::bad_request("invalid_component", e.to_string()))?;
    let hash = ModuleHash::of(&bytes);
    let uploaded = UploadedModule {
        module_sha256: hash.to_hex(),
        size_bytes: bytes.len() as u64,
    };
    let compiled = state
        .blobs
        .has_compiled(&hash)
        .await
        .map_err(|e| ApiError::internal("reading a stored module", &e))?;
    if compiled && state.store.module_exists(&uploaded.module_sha256).await? {
        return record_upload(state, caller, uploaded).await;
    }

    let max = state.quotas.config.max_module_bytes_per_tenant;
    let stored = state.store.tenant_module_bytes(&caller.tenant.id).await?;
    if stored.saturating_add(uploaded.size_bytes) > max {
        return Err(quota_exceeded(format!(
            "this tenant's modules take {stored} bytes; with this one it would pass its {max} (--max-module-bytes-per-tenant)"
        )));
    }
    let _compiling = state.quotas.compile()?;
    let work = tempfile::tempdir_in(&state.config.data_dir)
        .map_err(|e| ApiError::internal("creating a compile directory", &e))?;
    let input = work.path().join("component.wasm");
    let output = work.path().join("component.cwasm");
    tokio::fs::write(&input, &bytes)
        .await
        .map_err(|e| ApiError::internal("writing an upload", &e))?;
    let started = std::time::Instant::now();
    let compiled = state
        .compiler
        .compile(&input, &output, &state.config.sandbox)
        .await;
    state
        .metrics
        .compile_duration
        .observe(started.elapsed().as_secs_f64());
    compiled.map_err(|e| match e {
        CompileError::Refused(message) => ApiError::bad_request("invalid_component", message),
        CompileError::Timeout(_) => ApiError::bad_request("compile_timeout", e.to_string()),
        CompileError::OutOfMemory(_) => ApiError::bad_request("compile_memory", e.to_string()),
        CompileError::Worker(_) => ApiError::internal("compiling an upload", &e),
    })?;
    let compiled = tokio::fs::read(&output)
        .await
        .map_err(|e| ApiError::internal("reading a compiled artifact", &e))?;
    state
        .blobs
        .put(bytes.to_vec(), compiled)
        .await
        .map_err(|e| ApiError::internal("storing a module", &e))?;
    // Recorded only once the component and its artifact are durable where
    // every replica reads them: a module row always has its blobs.
    record_upload(state, caller, uploaded).await
}

async fn record_upload(
    state: &AppState,
    caller: &TenantCaller,
    uploaded: UploadedModule,
) -> Result<(StatusCode, Json<UploadedModule>), ApiError> {
    let had_it = state
        .store
        .record_module(
            &caller.tenant.id,
            &uploaded.module_sha256,
            uploaded.size_bytes,
        )
        .await?;
    let status = if had_it {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(uploaded)))
}

/// A new immutable version: the module plus the service's current spec.
async fn create_version(
    OwnService { caller, service }: OwnService,
    State(state): State<AppState>,
    Json(new): Json<NewVersion>,
) -> Result<(StatusCode, Json<VersionCreated>), ApiError> {
    // Another tenant's module answers as one that does not exist.
    if !state
        .store
        .tenant_has_module(&caller.tenant.id, &new.module_sha256)
        .await?
    {
        return Err(ApiError::not_found(format!("module {}", new.module_sha256)));
    }
    let max = state.quotas.config.max_versions_per_service;
    if state.store.versions(&service).await?.len() as u64 >= max {
        return Err(quota_exceeded(format!(
            "a service may have at most {max} versions (--max-versions-per-service); delete the service or ask the operator"
        )));
    }
    let version = state
        .store
        .create_version(&service, &new.module_sha256, &caller.token_label)
        .await?;
    let snapshot_version = if new.activate {
        activate_version(&state, &caller, &service, version.number).await?
    } else {
        None
    };
    Ok((
        StatusCode::CREATED,
        Json(VersionCreated {
            version: version.number,
            module_sha256: version.module_sha256,
            active: new.activate,
            snapshot_version,
        }),
    ))
}

async fn versions(
    OwnService { service, .. }: OwnService,
    State(state): State<AppState>,
) -> Result<Json<Vec<Version>>, ApiError> {
    Ok(Json(state.store.versions(&service).await?))
}

async fn activate_version(
    state: &AppState,
    caller: &TenantCaller,
    service: &Service,
    number: i64,
) -> Result<Option<u64>, ApiError> {
    state.quotas.activation(&service.tenant_id)?;
    let snapshot = state
        .store
        .activate(service, number, &caller.token_label)
        .await?;
    if let Some(version) = snapshot {
        state.snapshot_changed.send_replace(version);
    }
    Ok(snapshot)
}

async fn activate(
    OwnService { caller, service }: OwnService,
    State(state): State<AppState>,
    Json(activation): Json<Activation>,
) -> Result<Json<Activated>, ApiError> {
    let snapshot_version = activate_version(&state, &caller, &service, activation.version)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("version {}", activation.version)))?;
    Ok(Json(Activated {
        active_version: activation.version,
        snapshot_version,
    }))
}

/// Activates the newest version older than the active one.
async fn rollback(
    OwnService { caller, service }: OwnService,
    State(state): State<AppState>,
) -> Result<Json<Activated>, ApiError> {
    let Some(active) = service.active_version else {
        return Err(ApiError::bad_request(
            "nothing_to_roll_back",
            "the service has no active version",
        ));
    };
    let previous = state
        .store
        .versions(&service)
        .await?
        .into_iter()
        .map(|v| v.number)
        .filter(|&n| n < active)
        .max()
        .ok_or_else(|| {
            ApiError::bad_request(
                "nothing_to_roll_back",
                format!("version {active} is the oldest"),
            )
        })?;
    let snapshot_version = activate_version(&state, &caller, &service, previous)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("version {previous}")))?;
    Ok(Json(Activated {
        active_version: previous,
        snapshot_version,
    }))
}

/// Starts a canary: a version of the service serving `percent` of its
/// requests beside the active one, sticky per client, rolled back by the
/// control plane if its error rate passes the active version's by the
/// policy's threshold.
async fn start_canary(
    OwnService { caller, service }: OwnService,
    State(state): State<AppState>,
    Json(new): Json<NewCanary>,
) -> Result<(StatusCode, Json<CanaryStarted>), ApiError> {
    let mut errors = ConfigErrors::default();
    errors.check_range("percent", u64::from(new.percent), 1, 99);
    new.sticky.validate("sticky", &mut errors);
    new.rollback.validate("rollback", &mut errors);
    errors
        .into_result()
        .map_err(|errors| ApiError::bad_request("invalid_canary", errors.to_string()))?;
    state.quotas.activation(&service.tenant_id)?;
    let (canary, snapshot_version) = state
        .store
        .start_canary(&service, &new, &caller.token_label)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("version {}", new.version)))?;
    state.snapshot_changed.send_replace(snapshot_version);
    Ok((
        StatusCode::CREATED,
        Json(CanaryStarted {
            canary,
            snapshot_version,
        }),
    ))
}

async fn promote_canary(
    own: OwnService,
    State(state): State<AppState>,
) -> Result<Json<CanaryEnded>, ApiError> {
    end_canary(&state, own, CanaryOutcome::Promoted).await
}

async fn abort_canary(
    own: OwnService,
    State(state): State<AppState>,
) -> Result<Json<CanaryEnded>, ApiError> {
    end_canary(&state, own, CanaryOutcome::Aborted).await
}

async fn end_canary(
    state: &AppState,
    OwnService { caller, service }: OwnService,
    outcome: CanaryOutcome,
) -> Result<Json<CanaryEnded>, ApiError> {
    state.quotas.activation(&service.tenant_id)?;
    let reason = format!("{} by {}", outcome.label(), caller.token_label);
    let ended = state
        .store
        .end_canary(&service, outcome, &caller.token_label, &reason)
        .await?;
    state
        .metrics
        .canary_ends
        .with_label_values(&[outcome.label()])
        .inc();
    state.snapshot_changed.send_replace(ended.snapshot_version);
    Ok(Json(ended))
}

/// The active version, the canary if one runs, and who activated what and
/// how each ended.
async fn rollout(
    OwnService { service, .. }: OwnService,
    State(state): State<AppState>,
) -> Result<Json<Rollout>, ApiError> {
    Ok(Json(state.store.rollout(&service).await?))
}

async fn usage(
    caller: TenantCaller,
    State(state): State<AppState>,
) -> Result<Json<Vec<UsageTotals>>, ApiError> {
    Ok(Json(state.store.usage(&caller.tenant.id).await?))
}
