//! Nodes: registration, credentials, when each was last heard from.

use sqlx::Row;

use super::db::{Store, StoreError, db, now_ms, random_hex, to_i64};
use super::node_failures;
use super::records::{NODE_HEALTHY_WITHIN_MS, NodeRecord, NodeSighting};

impl Store {
    pub async fn register_node(
        &self,
        name: &str,
        engine_fingerprint: &str,
        token_sha256: &str,
    ) -> Result<String, StoreError> {
        let id = random_hex(8);
        let now = now_ms();
        sqlx::query(
            "INSERT INTO nodes (id, name, engine_fingerprint, snapshot_version, registered_at, \
             last_seen_at, token_sha256) VALUES ($1, $2, $3, 0, $4, $4, $5)",
        )
        .bind(&id)
        .bind(name)
        .bind(engine_fingerprint)
        .bind(now)
        .bind(token_sha256)
        .execute(&self.pool)
        .await
        .map_err(db("registering a node"))?;
        Ok(id)
    }

    /// Removes a node and what it reported; false if there is none.
    pub async fn remove_node(&self, node_id: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin("removing a node").await?;
        // The node's row first, as a write of its sightings locks it first.
        let removed = sqlx::query("DELETE FROM nodes WHERE id = $1")
            .bind(node_id)
            .execute(&mut *tx)
            .await
            .map_err(db("removing a node"))?;
        node_failures::forget_node_failures(&mut tx, node_id, "removing a node").await?;
        tx.commit().await.map_err(db("removing a node"))?;
        Ok(removed.rows_affected() > 0)
    }

    /// The node whose credential hashes to `token_sha256`.
    pub async fn node_by_token(&self, token_sha256: &str) -> Result<Option<String>, StoreError> {
        let row =
            sqlx::query("SELECT id FROM nodes WHERE token_sha256 = $1 AND token_sha256 <> ''")
                .bind(token_sha256)
                .fetch_optional(&self.pool)
                .await
                .map_err(db("reading a node credential"))?;
        Ok(row.map(|row| row.get(0)))
    }

    /// Records that a node was seen, and the snapshot version it serves.
    /// Returns false for an unknown node.
    pub async fn node_seen(
        &self,
        node_id: &str,
        snapshot_version: u64,
    ) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE nodes SET last_seen_at = $1, snapshot_version = $2 WHERE id = $3")
                .bind(now_ms())
                .bind(to_i64(snapshot_version))
                .bind(node_id)
                .execute(&self.pool)
                .await
                .map_err(db("recording a node"))?;
        Ok(done.rows_affected() > 0)
    }

    /// Writes many nodes' sightings in one transaction; a node removed
    /// meanwhile is skipped. A status replaces the failures the node
    /// reported before.
    pub async fn record_sightings(
        &self,
        sightings: &[(String, NodeSighting)],
    ) -> Result<(), StoreError> {
        let mut tx = self.begin("recording what nodes polled with").await?;
        for (node_id, sighting) in sightings {
            let seen = sqlx::query(
                // When and how far only move forward: another replica, or
                // a node's usage report, may have written newer values.
                "UPDATE nodes SET \
                 last_seen_at = CASE WHEN $1 > last_seen_at THEN $1 ELSE last_seen_at END, \
                 snapshot_version = COALESCE($2, snapshot_version), \
                 purge_seq = CASE WHEN COALESCE($3, purge_seq) > purge_seq THEN $3 ELSE purge_seq END \
                 WHERE id = $4",
            )
            .bind(sighting.seen_at_ms)
            .bind(sighting.snapshot_version.map(to_i64))
            .bind(sighting.purge_seq.map(to_i64))
            .bind(node_id)
            .execute(&mut *tx)
            .await
            .map_err(db("recording what nodes polled with"))?;
            if let Some(failures) = &sighting.failures
                && seen.rows_affected() > 0
            {
                node_failures::replace_node_failures(&mut tx, node_id, failures).await?;
            }
        }
        tx.commit()
            .await
            .map_err(db("recording what nodes polled with"))
    }

    pub async fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, name, engine_fingerprint, snapshot_version, registered_at, last_seen_at, \
             purge_seq FROM nodes ORDER BY name, id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db("listing nodes"))?;
        let now = now_ms();
        Ok(rows
            .iter()
            .map(|row| {
                let last_seen_at: i64 = row.get(5);
                NodeRecord {
                    id: row.get(0),
                    name: row.get(1),
                    engine_fingerprint: row.get(2),
                    snapshot_version: row.get(3),
                    registered_at: row.get(4),
                    last_seen_at,
                    purge_seq: row.get(6),
                    healthy: now - last_seen_at <= NODE_HEALTHY_WITHIN_MS,
                }
            })
            .collect())
    }
}
