//! Purges: numbered in one sequence, kept for [`PURGE_RETENTION_MS`], read
//! by nodes in order, acknowledged per node.

use edge_config::protocol::{Purge, PurgeBatch, PurgeTarget};
use sqlx::Row;

use super::db::{Counter, Store, StoreError, advance_counter, db, now_ms, read_counter, to_i64};
pub use edge_config::api::PurgeStatus;

/// Purges older than this are pruned. A node that was away longer is told
/// to drop its whole cache instead ([`PurgeBatch::reset`]).
pub const PURGE_RETENTION_MS: i64 = 24 * 3600 * 1000;
/// Purges handed to a node in one answer.
pub const MAX_PURGES_PER_BATCH: i64 = 1_000;

fn target_from(kind: &str, value: String) -> Result<PurgeTarget, StoreError> {
    match kind {
        "url" => Ok(PurgeTarget::Url(value)),
        "surrogate_key" => Ok(PurgeTarget::SurrogateKey(value)),
        other => Err(StoreError::Corrupt(format!("purge kind {other:?}"))),
    }
}

fn kind_and_value(target: &PurgeTarget) -> (&'static str, &str) {
    match target {
        PurgeTarget::Url(url) => ("url", url),
        PurgeTarget::SurrogateKey(key) => ("surrogate_key", key),
    }
}

impl Store {
    /// Records a purge and returns its number. Expired ones are pruned
    /// elsewhere ([`Store::prune`]), not on this path.
    pub async fn add_purge(
        &self,
        tenant_id: &str,
        target: &PurgeTarget,
        soft: bool,
    ) -> Result<u64, StoreError> {
        let (kind, value) = kind_and_value(target);
        let now = now_ms();
        let mut tx = self.begin("recording a purge").await?;
        let seq = advance_counter(&mut tx, Counter::Purges, 1, "numbering a purge").await?;
        sqlx::query(
            "INSERT INTO purges (seq, tenant_id, kind, value, created_at, soft) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(to_i64(seq))
        .bind(tenant_id)
        .bind(kind)
        .bind(value)
        .bind(now)
        .bind(i64::from(soft))
        .execute(&mut *tx)
        .await
        .map_err(db("recording a purge"))?;
        tx.commit().await.map_err(db("recording a purge"))?;
        Ok(seq)
    }

    /// Deletes expired purges (by the `purges_by_age` index), at most
    /// `batch` of them; returns how many went.
    pub async fn prune_purges(&self, batch: i64) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM purges WHERE seq IN \
             (SELECT seq FROM purges WHERE created_at < $1 ORDER BY created_at LIMIT $2)",
        )
        .bind(now_ms() - PURGE_RETENTION_MS)
        .bind(batch)
        .execute(&self.pool)
        .await
        .map_err(db("pruning purges"))?;
        Ok(done.rows_affected())
    }

    /// The number of the newest purge (0 if none).
    pub async fn purge_seq(&self) -> Result<u64, StoreError> {
        read_counter(&self.pool, Counter::Purges, "reading the purge counter").await
    }

    /// The purges after `after`, in order.
    pub async fn purges_after(&self, after: u64) -> Result<PurgeBatch, StoreError> {
        let latest = self.purge_seq().await?;
        if latest <= after {
            return Ok(PurgeBatch {
                through: after,
                ..PurgeBatch::default()
            });
        }
        let rows = sqlx::query(
            "SELECT p.seq, t.name, p.kind, p.value, p.soft FROM purges p \
             JOIN tenants t ON t.id = p.tenant_id \
             WHERE p.seq > $1 ORDER BY p.seq LIMIT $2",
        )
        .bind(to_i64(after))
        .bind(MAX_PURGES_PER_BATCH)
        .fetch_all(&self.pool)
        .await
        .map_err(db("reading purges"))?;
        let purges = rows
            .into_iter()
            .map(|row| {
                Ok(Purge {
                    seq: u64::try_from(row.get::<i64, _>(0)).unwrap_or(0),
                    tenant: row.get(1),
                    target: target_from(&row.get::<String, _>(2), row.get(3))?,
                    soft: row.get::<i64, _>(4) != 0,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        // The first purge after `after` is gone: it was pruned unseen.
        let reset = purges.first().is_none_or(|first| first.seq != after + 1);
        let through = purges.last().map_or(latest, |last| last.seq);
        Ok(PurgeBatch {
            through: if purges.len() as i64 == MAX_PURGES_PER_BATCH {
                through
            } else {
                latest
            },
            reset,
            purges,
        })
    }

    /// A tenant's purge and how many healthy nodes applied it; `None` if it
    /// is not the tenant's (or was pruned).
    pub async fn purge_status(
        &self,
        tenant_id: &str,
        seq: u64,
    ) -> Result<Option<PurgeStatus>, StoreError> {
        let row = sqlx::query(
            "SELECT kind, value, created_at, soft FROM purges WHERE seq = $1 AND tenant_id = $2",
        )
        .bind(to_i64(seq))
        .bind(tenant_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("reading a purge"))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let nodes = self.nodes().await?;
        let healthy: Vec<_> = nodes.iter().filter(|n| n.healthy).collect();
        Ok(Some(PurgeStatus {
            seq,
            target: target_from(&row.get::<String, _>(0), row.get(1))?,
            soft: row.get::<i64, _>(3) != 0,
            created_at: row.get(2),
            nodes: healthy.len() as u64,
            acknowledged: healthy
                .iter()
                .filter(|n| u64::try_from(n.purge_seq).unwrap_or(0) >= seq)
                .count() as u64,
        }))
    }
}
