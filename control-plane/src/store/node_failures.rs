//! Services nodes could not load: each node reports, after every snapshot
//! it applies, the services it left out and why; a tenant sees them next
//! to its versions.

use std::collections::HashMap;

use edge_config::protocol::ServiceFailure;
use sqlx::Row;

use super::db::{Store, StoreError, Tx, db, now_ms, service_id_by_platform_name, to_i64};
use super::records::{NodeFailure, Service};

/// Failures one report may carry; the rest are dropped. A snapshot with
/// more services that fail than this says enough.
pub const MAX_REPORTED_FAILURES: usize = 1_000;
/// Characters of one failure's error kept.
pub const MAX_FAILURE_ERROR_CHARS: usize = 1_024;

impl Store {
    /// What nodes heard from lately (healthy ones) reported about each
    /// version of the service: a node long gone says nothing.
    pub async fn node_failures(
        &self,
        service: &Service,
    ) -> Result<HashMap<i64, Vec<NodeFailure>>, StoreError> {
        let rows = sqlx::query(
            "SELECT f.version, n.name, f.error, f.reported_at FROM node_failures f \
             JOIN nodes n ON n.id = f.node_id WHERE f.service_id = $1 AND n.last_seen_at >= $2 \
             ORDER BY n.name, n.id",
        )
        .bind(&service.id)
        .bind(now_ms() - super::NODE_HEALTHY_WITHIN_MS)
        .fetch_all(&self.pool)
        .await
        .map_err(db("reading node failures"))?;
        let mut by_version: HashMap<i64, Vec<NodeFailure>> = HashMap::new();
        for row in &rows {
            by_version.entry(row.get(0)).or_default().push(NodeFailure {
                node: row.get(1),
                error: row.get(2),
                reported_at: row.get(3),
            });
        }
        Ok(by_version)
    }
}

/// What is kept of the failures a status reports, cut as soon as it
/// arrives: the first [`MAX_REPORTED_FAILURES`], each error cut to
/// [`MAX_FAILURE_ERROR_CHARS`], and no NUL, which PostgreSQL text refuses
/// (one would fail the batch it is written with).
pub fn kept_failures(mut failures: Vec<ServiceFailure>) -> Vec<ServiceFailure> {
    failures.truncate(MAX_REPORTED_FAILURES);
    failures.retain(|failure| !failure.service.contains('\0'));
    for failure in &mut failures {
        failure.error = failure
            .error
            .chars()
            .filter(|c| *c != '\0')
            .take(MAX_FAILURE_ERROR_CHARS)
            .collect();
    }
    failures
}

/// Replaces what `node_id` said last about the services it could not
/// load with `failures`, as [`kept_failures`] cut them. Services that do
/// not exist (any more) are left out.
pub(super) async fn replace_node_failures(
    tx: &mut Tx<'_>,
    node_id: &str,
    failures: &[ServiceFailure],
) -> Result<(), StoreError> {
    const DOING: &str = "recording a node status";
    forget_node_failures(tx, node_id, DOING).await?;
    for failure in failures {
        let Some(service_id) = service_id_by_platform_name(tx, &failure.service)
            .await
            .map_err(db(DOING))?
        else {
            continue;
        };
        sqlx::query(
            "INSERT INTO node_failures (node_id, service_id, version, error, reported_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(node_id)
        .bind(service_id)
        .bind(to_i64(failure.version))
        .bind(&failure.error)
        .bind(now_ms())
        .execute(&mut **tx)
        .await
        .map_err(db(DOING))?;
    }
    Ok(())
}

/// Deletes, in `tx`, every failure `node_id` reported: before its next
/// report replaces them, or when the node is removed.
pub(super) async fn forget_node_failures(
    tx: &mut Tx<'_>,
    node_id: &str,
    what: &'static str,
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM node_failures WHERE node_id = $1")
        .bind(node_id)
        .execute(&mut **tx)
        .await
        .map_err(db(what))?;
    Ok(())
}
