//! The rows the store hands out, as the API shows them.

use edge_config::protocol::{ServiceFailure, ServiceSpec};
use serde::Serialize;
use sqlx::Row;

use super::db::{StoreError, spec_from};
pub use edge_config::api::{NodeFailure, NodeRecord, Tenant, TokenInfo, UsageTotals, Version};

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

/// A node counts as healthy if it was heard from (long-poll or usage
/// report) within this long: twice the longest long-poll wait.
pub const NODE_HEALTHY_WITHIN_MS: i64 = 60_000;

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

/// What a node's polls and status reports said of it since its row was
/// last written.
#[derive(Debug, Default, Clone)]
pub struct NodeSighting {
    pub seen_at_ms: i64,
    /// The snapshot version it serves, if a snapshot poll or a status said.
    pub snapshot_version: Option<u64>,
    /// The purges it applied, through this number, if a purge poll said.
    pub purge_seq: Option<u64>,
    /// The services it could not load in that snapshot, if a status said.
    pub failures: Option<Vec<ServiceFailure>>,
}
