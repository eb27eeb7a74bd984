//! Who is calling: the operator (admin token), a tenant (one of its API
//! tokens, stored only as a sha256), a machine joining the cluster (the
//! cluster token, good for registering and nothing else), or a registered
//! node (the credential it got at registration, stored only as a sha256).
//! Secrets are compared in constant time.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};

use crate::api::state::AppState;
use crate::error::ApiError;
use crate::store::{Tenant, random_hex};

/// A new API token: 32 random bytes, hex, with a prefix that says what it is.
pub fn new_token() -> String {
    format!("edge_{}", random_hex(32))
}

/// What the database keeps of a token.
pub fn token_sha256(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn bearer(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// Equal-length comparison that does not stop at the first difference.
fn same_secret(given: &str, expected: &str) -> bool {
    let (a, b) = (
        Sha256::digest(given.as_bytes()),
        Sha256::digest(expected.as_bytes()),
    );
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

fn require_secret(parts: &Parts, expected: &str) -> Result<(), ApiError> {
    match bearer(parts) {
        Some(token) if same_secret(token, expected) => Ok(()),
        _ => Err(ApiError::unauthorized()),
    }
}

/// The caller is the operator.
#[derive(Debug)]
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        require_secret(parts, &state.config.admin_token).map(|()| Admin)
    }
}

/// The caller holds the cluster token: it may register as a node.
#[derive(Debug)]
pub struct ClusterNode;

impl FromRequestParts<AppState> for ClusterNode {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        require_secret(parts, &state.config.cluster_token).map(|()| ClusterNode)
    }
}

/// The caller is a registered node, identified by its own credential: what
/// it reports is recorded as its own, and a node's credential can be
/// told from every other node's.
#[derive(Debug)]
pub struct NodeCaller {
    pub id: String,
}

impl NodeCaller {
    /// Passes if the store found this node's row to record what it said
    /// (`recorded`): a node removed since it authenticated is not found.
    pub fn still_registered(&self, recorded: bool) -> Result<(), ApiError> {
        if recorded {
            Ok(())
        } else {
            Err(ApiError::not_found(format!("node {}", self.id)))
        }
    }
}

impl FromRequestParts<AppState> for NodeCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts).ok_or_else(ApiError::unauthorized)?;
        let sha256 = token_sha256(token);
        let lookup = match state.node_credentials.node(&sha256) {
            Ok(id) => return Ok(Self { id }),
            Err(lookup) => lookup,
        };
        match state.store.node_by_token(&sha256).await? {
            Some(id) => {
                state.node_credentials.found(lookup, &sha256, &id);
                Ok(Self { id })
            }
            None => Err(ApiError::unauthorized()),
        }
    }
}

/// The caller holds the cluster token or a node's credential: enough to
/// fetch modules by hash (a node repairing its artifacts at start fetches
/// before it registers; the cluster token can register anyway).
#[derive(Debug)]
pub struct ClusterMember;

impl FromRequestParts<AppState> for ClusterMember {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if require_secret(parts, &state.config.cluster_token).is_ok() {
            return Ok(Self);
        }
        NodeCaller::from_request_parts(parts, state)
            .await
            .map(|_| Self)
    }
}

/// The caller is a tenant, identified by one of its tokens.
#[derive(Debug)]
pub struct TenantCaller {
    pub tenant: Tenant,
    /// The token's label: recorded as the author of what it deploys.
    pub token_label: String,
}

impl FromRequestParts<AppState> for TenantCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts).ok_or_else(ApiError::unauthorized)?;
        match state.store.tenant_by_token(&token_sha256(token)).await? {
            Some((tenant, _)) if tenant.suspended => Err(ApiError::new(
                http::StatusCode::FORBIDDEN,
                "tenant_suspended",
                "this tenant is suspended by the operator",
            )),
            Some((tenant, token_label)) => Ok(Self {
                tenant,
                token_label,
            }),
            None => Err(ApiError::unauthorized()),
        }
    }
}
