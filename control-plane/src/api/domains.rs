//! A service's domains: its platform name, and the custom domains it
//! claims. A custom domain is pending, and reaches no node, until its
//! tenant proves control of it, by publishing the TXT record the claim
//! names (`_edge-challenge.<domain>`) and asking for it to be checked, or
//! until the operator approves it.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use edge_config::domain::challenge_record;

use super::services::{check_domain, own_service};
use super::state::AppState;
use crate::auth::{Admin, TenantCaller};
use crate::dns::DnsError;
use crate::error::ApiError;
use crate::store::Service;
use crate::store::domains::DomainClaim;
use edge_config::api::{Approved, NewDomain};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/services/{service}/domains", get(list).post(add))
        .route("/v1/services/{service}/domains/{domain}", delete(remove))
        .route(
            "/v1/services/{service}/domains/{domain}/verify",
            post(verify),
        )
        .route("/v1/domains/{domain}/approve", post(approve))
}

async fn list(
    caller: TenantCaller,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Vec<DomainClaim>>, ApiError> {
    let service = own_service(&state, &caller, &name).await?;
    Ok(Json(state.store.domains(&service).await?))
}

/// The caller's service `name` and `domain` in its normal spelling (400
/// `invalid_domain` if it is not one the service may claim).
async fn own_service_and_domain(
    state: &AppState,
    caller: &TenantCaller,
    name: &str,
    domain: &str,
) -> Result<(Service, String), ApiError> {
    let service = own_service(state, caller, name).await?;
    let domain = check_domain(state, caller, name, domain)
        .map_err(|message| ApiError::bad_request("invalid_domain", message))?;
    Ok((service, domain))
}

/// Claims a custom domain for the service (409 if it overlaps another
/// tenant's) and adds it to the spec: it is served from the next version
/// on, once approved.
async fn add(
    caller: TenantCaller,
    State(state): State<AppState>,
    Path(name): Path<String>,
    Json(new): Json<NewDomain>,
) -> Result<(StatusCode, Json<DomainClaim>), ApiError> {
    let (service, domain) = own_service_and_domain(&state, &caller, &name, &new.domain).await?;
    state.store.add_domain(&service, &domain).await?;
    let claim = state
        .store
        .domains(&service)
        .await?
        .into_iter()
        .find(|claim| claim.domain == domain)
        .ok_or_else(|| ApiError::not_found(format!("domain {domain}")))?;
    Ok((StatusCode::CREATED, Json(claim)))
}

/// Releases the claim at once (nodes stop routing the domain) and drops it
/// from the spec.
async fn remove(
    caller: TenantCaller,
    State(state): State<AppState>,
    Path((name, domain)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let (service, domain) = own_service_and_domain(&state, &caller, &name, &domain).await?;
    state.quotas.activation(&caller.tenant.id)?;
    let version = state
        .store
        .remove_domain(&service, &domain)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("domain {domain}")))?;
    state.snapshot_changed.send_replace(version);
    Ok(StatusCode::NO_CONTENT)
}

/// Reads the claim's TXT record through the operator's resolver; if it
/// holds the token, the claim is verified and nodes route the domain from
/// the next snapshot. 409 while the record is missing or wrong.
async fn verify(
    caller: TenantCaller,
    State(state): State<AppState>,
    Path((name, domain)): Path<(String, String)>,
) -> Result<Json<DomainClaim>, ApiError> {
    let (service, domain) = own_service_and_domain(&state, &caller, &name, &domain).await?;
    // Each check is a DNS query through the operator's resolver.
    state.quotas.activation(&caller.tenant.id)?;
    let claim_of = |claims: Vec<DomainClaim>| {
        claims
            .into_iter()
            .find(|claim| claim.domain == domain)
            .ok_or_else(|| ApiError::not_found(format!("domain {domain}")))
    };
    let Some(token) = state.store.claim_token(&service, &domain).await? else {
        return Err(ApiError::not_found(format!("domain {domain}")));
    };
    let Some(token) = token else {
        return Ok(Json(claim_of(state.store.domains(&service).await?)?));
    };
    let Some(resolver) = state.config.dns_resolver else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "verification_unavailable",
            "this platform checks no DNS records: ask its operator to approve the domain",
        ));
    };
    let record = challenge_record(&domain);
    let unproved = |why: String| {
        ApiError::new(
            StatusCode::CONFLICT,
            "domain_unverified",
            format!("{why}: publish TXT {record} \"{token}\" and try again"),
        )
    };
    match resolver.holds(&record, &token).await {
        Ok(true) => {}
        Ok(false) => {
            return Err(unproved(format!(
                "no TXT record at {record} holds the token"
            )));
        }
        Err(DnsError::NoRecord(_)) => return Err(unproved(format!("no TXT record at {record}"))),
        Err(e @ DnsError::Lookup { .. }) => {
            tracing::warn!(error = %e, "checking a domain challenge");
            return Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "dns_unavailable",
                format!("the platform's resolver did not answer for {record}; try again later"),
            ));
        }
    }
    let snapshot_version = state
        .store
        .verify_claim(&service, &domain, &token)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("domain {domain}")))?;
    state.snapshot_changed.send_replace(snapshot_version);
    Ok(Json(claim_of(state.store.domains(&service).await?)?))
}

/// The operator vouches for a claim: nodes route it from the next snapshot.
async fn approve(
    _: Admin,
    State(state): State<AppState>,
    Path(domain): Path<String>,
) -> Result<Json<Approved>, ApiError> {
    let domain = edge_config::domain::normalize_domain(&domain)
        .map_err(|message| ApiError::bad_request("invalid_domain", message))?;
    let snapshot_version = state
        .store
        .verify_domain(&domain)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("a claim on {domain}")))?;
    state.snapshot_changed.send_replace(snapshot_version);
    Ok(Json(Approved {
        domain,
        snapshot_version,
    }))
}
