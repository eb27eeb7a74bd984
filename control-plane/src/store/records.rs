//! The rows the store hands out, as the API shows them.

use edge_config::protocol::ServiceSpec;
use serde::Serialize;
use sqlx::Row;

use super::db::{StoreError, spec_from};

#[derive(Debug, Clone, Serialize)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    pub created_at: i64,
    /// The operator lets this tenant's backends use private and loopback
    /// addresses.
    pub allow_private_backends: bool,
    /// Suspended by the operator: out of every snapshot, tokens refused.
    pub suspended: bool,
}

/// What anyone sees of an API token.
#[derive(Debug, Clone, Serialize)]
pub struct TokenInfo {
    pub id: String,
    pub label: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Service {
    #[serde(skip)]
    pub id: String,
    #[serde(skip)]
    pub tenant_id: String,
    #[serde(skip)]
    pub tenant_name: String,
    pub name: String,
    pub spec: ServiceSpec,
    pub active_version: Option<i64>,
    pub created_at: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Version {
    pub number: i64,
    pub module_sha256: String,
    pub spec: ServiceSpec,
    pub author: String,
    pub created_at: i64,
    /// Nodes that could not load this version, and why (reported after
    /// each snapshot they apply).
    pub node_failures: Vec<NodeFailure>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NodeRecord {
    pub id: String,
    pub name: String,
    pub engine_fingerprint: String,
    pub snapshot_version: i64,
    pub registered_at: i64,
    pub last_seen_at: i64,
    /// The last purge the node applied.
    pub purge_seq: i64,
    /// Heard from within [`NODE_HEALTHY_WITHIN_MS`].
    pub healthy: bool,
}

/// A node counts as healthy if it was heard from (long-poll or usage
/// report) within this long: twice the longest long-poll wait.
pub const NODE_HEALTHY_WITHIN_MS: i64 = 60_000;

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct UsageTotals {
    pub service: String,
    pub requests: i64,
    pub status_2xx: i64,
    pub status_3xx: i64,
    pub status_4xx: i64,
    pub status_5xx: i64,
    pub guest_cpu_micros: i64,
    pub bytes_out: i64,
}

/// One node's word on one version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeFailure {
    pub node: String,
    pub error: String,
    pub reported_at: i64,
}

pub(super) fn tenant_from_row(row: &sqlx::any::AnyRow) -> Tenant {
    Tenant {
        id: row.get(0),
        name: row.get(1),
        created_at: row.get(2),
        allow_private_backends: row.get::<i64, _>(3) != 0,
        suspended: row.get::<i64, _>(4) != 0,
    }
}

pub(super) fn service_from_row(row: &sqlx::any::AnyRow) -> Result<Service, StoreError> {
    Ok(Service {
        id: row.get(0),
        tenant_id: row.get(1),
        name: row.get(2),
        spec: spec_from(&row.get::<String, _>(3))?,
        active_version: row.get(4),
        created_at: row.get(5),
        tenant_name: row.get(6),
    })
}

pub(super) fn version_from_row(row: &sqlx::any::AnyRow) -> Result<Version, StoreError> {
    Ok(Version {
        number: row.get(0),
        module_sha256: row.get(1),
        spec: spec_from(&row.get::<String, _>(2))?,
        author: row.get(3),
        created_at: row.get(4),
        node_failures: Vec::new(),
    })
}
