//! KV stores: the source of truth for every node's replica.
//!
//! Each key's newest value is one row of `kv_entries`, numbered by the change
//! that wrote it. A write takes its numbers from `kv_counter` first, and the
//! counter's row stays locked until the write commits, so writes commit in
//! the order of their numbers: a node that has read the feed through N has
//! missed nothing at or below N. The feed is `kv_entries` by number: a key
//! changed twice since a node's last poll is sent once, with its newest
//! value. A deleted key stays as a tombstone (no value) for
//! [`KV_TOMBSTONE_RETENTION_MS`], so that nodes hear of the delete; a
//! deleted store leaves one tombstone with the empty key.
//!
//! Increments are decided here, under the same lock, so concurrent
//! increments from any number of nodes add up exactly.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use edge_config::state::{
    KV_FEED_BATCH, KV_FEED_BATCH_BYTES, KV_MAX_VALUE_BYTES, KV_TOMBSTONE_RETENTION_MS, KvChange,
    KvExpect, KvFeedBatch, KvKeyPage, KvOp, KvStoreInfo, KvWritten, SnapshotKvStore, check_key,
};
use sqlx::Row;

use super::db::{
    Counter, Store, StoreError, Tx, add_to_counter, advance_counter, commit_new_snapshot, db,
    now_ms, random_hex, read_counter, to_i64,
};
use super::usage::PRUNE_BATCH;

/// What a tenant's KV stores may hold (the operator's quotas).
#[derive(Debug, Clone, Copy)]
pub struct KvQuotas {
    pub max_keys_per_store: u64,
    pub max_bytes_per_tenant: u64,
}

/// One key's change within a write.
enum Change {
    Put(Vec<u8>),
    Delete,
    Add(u64),
}

/// The changes `op` makes, key by key, after checking every key and value.
fn changes_of(op: &KvOp) -> Result<Vec<(&str, Change)>, StoreError> {
    let invalid = |message: String| StoreError::KvInvalid(message);
    let value_ok = |value: &[u8]| {
        if value.len() > KV_MAX_VALUE_BYTES {
            Err(invalid(format!(
                "a value may be at most {KV_MAX_VALUE_BYTES} bytes"
            )))
        } else {
            Ok(())
        }
    };
    let changes = match op {
        KvOp::Set { key, value, .. } => {
            value_ok(value)?;
            vec![(key.as_str(), Change::Put(value.clone()))]
        }
        KvOp::SetMany { entries } => entries
            .iter()
            .map(|entry| {
                value_ok(&entry.value)?;
                Ok((entry.key.as_str(), Change::Put(entry.value.clone())))
            })
            .collect::<Result<_, StoreError>>()?,
        KvOp::Delete { key, .. } => vec![(key.as_str(), Change::Delete)],
        KvOp::DeleteMany { keys } => keys
            .iter()
            .map(|key| (key.as_str(), Change::Delete))
            .collect(),
        KvOp::Increment { key, delta } => vec![(key.as_str(), Change::Add(*delta))],
    };
    for (key, _) in &changes {
        check_key(key).map_err(invalid)?;
    }
    Ok(changes)
}

/// An increment's operand: the stored value as a decimal `u64`.
fn counter_value(key: &str, value: Option<&[u8]>) -> Result<u64, StoreError> {
    let Some(value) = value else {
        return Ok(0);
    };
    std::str::from_utf8(value)
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok())
        .ok_or_else(|| {
            StoreError::KvInvalid(format!(
                "{key:?} does not hold a decimal number to increment"
            ))
        })
}

fn decode(text: &str) -> Result<Vec<u8>, StoreError> {
    STANDARD
        .decode(text)
        .map_err(|e| StoreError::Corrupt(format!("kv value: {e}")))
}

impl Store {
    /// Creates `tenant_id`'s store `name`, unless it has `max_stores`
    /// already. Nodes learn of it in the next snapshot.
    pub async fn create_kv_store(
        &self,
        tenant_id: &str,
        name: &str,
        max_stores: u64,
    ) -> Result<KvStoreInfo, StoreError> {
        let mut tx = self.begin("creating a KV store").await?;
        // The counter's row lock serializes creations, so that two at once
        // cannot both pass the quota.
        add_to_counter(&mut tx, Counter::KvChanges, 0, "creating a KV store").await?;
        let count: i64 = sqlx::query("SELECT COUNT(*) FROM kv_stores WHERE tenant_id = $1")
            .bind(tenant_id)
            .fetch_one(&mut *tx)
            .await
            .map_err(db("counting KV stores"))?
            .get(0);
        if u64::try_from(count).unwrap_or(0) >= max_stores {
            return Err(StoreError::KvQuota(format!(
                "a tenant may have at most {max_stores} KV stores"
            )));
        }
        let created_at = now_ms();
        sqlx::query(
            "INSERT INTO kv_stores (id, tenant_id, name, created_at, keys, bytes) \
             VALUES ($1, $2, $3, $4, 0, 0)",
        )
        .bind(random_hex(12))
        .bind(tenant_id)
        .bind(name)
        .bind(created_at)
        .execute(&mut *tx)
        .await
        .map_err(db("KV store"))?;
        commit_new_snapshot(tx, "creating a KV store").await?;
        Ok(KvStoreInfo {
            name: name.to_string(),
            created_at,
            keys: 0,
            bytes: 0,
        })
    }

    pub async fn kv_stores(&self, tenant_id: &str) -> Result<Vec<KvStoreInfo>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, created_at, keys, bytes FROM kv_stores WHERE tenant_id = $1 ORDER BY name",
        )
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db("listing KV stores"))?;
        Ok(rows
            .iter()
            .map(|row| KvStoreInfo {
                name: row.get(0),
                created_at: row.get(1),
                keys: u64::try_from(row.get::<i64, _>(2)).unwrap_or(0),
                bytes: u64::try_from(row.get::<i64, _>(3)).unwrap_or(0),
            })
            .collect())
    }

    /// The id of `tenant_id`'s store `name`.
    pub async fn kv_store_id(
        &self,
        tenant_id: &str,
        name: &str,
    ) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT id FROM kv_stores WHERE tenant_id = $1 AND name = $2")
            .bind(tenant_id)
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(db("reading a KV store"))?;
        Ok(row.map(|row| row.get(0)))
    }

    /// Deletes `tenant_id`'s store `name` and every key in it, leaving the
    /// store's tombstone in the feed: nodes drop their copy when it comes.
    /// Returns whether there was one.
    pub async fn delete_kv_store(&self, tenant_id: &str, name: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin("deleting a KV store").await?;
        let seq = advance_counter(&mut tx, Counter::KvChanges, 1, "numbering KV changes").await?;
        let row = sqlx::query("SELECT id FROM kv_stores WHERE tenant_id = $1 AND name = $2")
            .bind(tenant_id)
            .bind(name)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db("deleting a KV store"))?;
        let Some(row) = row else {
            return Ok(false);
        };
        let id: String = row.get(0);
        sqlx::query("DELETE FROM kv_stores WHERE id = $1")
            .bind(&id)
            .execute(&mut *tx)
            .await
            .map_err(db("deleting a KV store"))?;
        sqlx::query(
            "INSERT INTO kv_entries (store_id, key, value, value_bytes, seq, updated_at) \
             VALUES ($1, '', NULL, 0, $2, $3)",
        )
        .bind(&id)
        .bind(to_i64(seq))
        .bind(now_ms())
        .execute(&mut *tx)
        .await
        .map_err(db("deleting a KV store"))?;
        commit_new_snapshot(tx, "deleting a KV store").await?;
        // The store's keys go in batches, outside the lock every write
        // takes: nodes drop them at the tombstone already, and what a crash
        // leaves behind the pruning task sweeps.
        while self.delete_orphan_entries(Some(&id), PRUNE_BATCH).await? == PRUNE_BATCH as u64 {}
        Ok(true)
    }

    /// Deletes up to `batch` entries of a deleted store (`store`, or any),
    /// keeping stores' tombstones for the feed; returns how many went.
    async fn delete_orphan_entries(
        &self,
        store: Option<&str>,
        batch: i64,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM kv_entries WHERE (store_id, key) IN (SELECT e.store_id, e.key \
             FROM kv_entries e WHERE ($1 IS NULL OR e.store_id = $1) AND e.key <> '' \
             AND NOT EXISTS (SELECT 1 FROM kv_stores s WHERE s.id = e.store_id) LIMIT $2)",
        )
        .bind(store)
        .bind(batch)
        .execute(&self.pool)
        .await
        .map_err(db("deleting a deleted store's keys"))?;
        Ok(done.rows_affected())
    }

    /// The value of `key` in store `store_id` and its version (the number
    /// of the change that wrote it), if it has one.
    pub async fn kv_get(
        &self,
        store_id: &str,
        key: &str,
    ) -> Result<Option<(Vec<u8>, u64)>, StoreError> {
        let entry = stored_entry(&self.pool, store_id, key).await?;
        Ok(entry.map(|(version, value)| (value, version)))
    }

    /// Up to `limit` keys of store `store_id` after `after`, in order, that
    /// start with `prefix`.
    pub async fn kv_keys(
        &self,
        store_id: &str,
        prefix: &str,
        after: &str,
        limit: usize,
    ) -> Result<KvKeyPage, StoreError> {
        // The prefix is compared as a prefix (no LIKE escaping, and no
        // range that a locale's collation could order otherwise); the
        // order is the database's, the same for every page.
        let rows = sqlx::query(
            "SELECT key FROM kv_entries WHERE store_id = $1 AND value IS NOT NULL \
             AND key > $2 AND substr(key, 1, CAST($3 AS INTEGER)) = $4 ORDER BY key LIMIT $5",
        )
        .bind(store_id)
        .bind(after)
        .bind(i64::try_from(prefix.chars().count()).unwrap_or(i64::MAX))
        .bind(prefix)
        .bind(i64::try_from(limit + 1).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(db("listing KV keys"))?;
        let mut keys: Vec<String> = rows.iter().map(|row| row.get::<String, _>(0)).collect();
        let more = keys.len() > limit;
        keys.truncate(limit);
        let cursor = more.then(|| keys.last().cloned()).flatten();
        Ok(KvKeyPage { keys, cursor })
    }

    /// Applies `op` to `tenant_id`'s store `store_id`, within `quotas`, in
    /// one transaction: all of it or nothing. Returns the changes, numbered
    /// in the feed's order, for the writer's own replica.
    pub async fn kv_write(
        &self,
        tenant_id: &str,
        store_id: &str,
        op: &KvOp,
        quotas: KvQuotas,
    ) -> Result<KvWritten, StoreError> {
        let changes = changes_of(op)?;
        // Conditions are on single-key writes.
        let expect = match op {
            KvOp::Set { expect, .. } | KvOp::Delete { expect, .. } => *expect,
            _ => None,
        };
        if changes.is_empty() {
            return Ok(KvWritten::default());
        }
        let mut tx = self.begin("writing KV keys").await?;
        // Numbers first: the counter's row lock orders this write with
        // every other until it commits.
        let count = i64::try_from(changes.len()).unwrap_or(i64::MAX);
        let last =
            advance_counter(&mut tx, Counter::KvChanges, count, "numbering KV changes").await?;
        let first = last + 1 - changes.len() as u64;
        let store = sqlx::query("SELECT keys FROM kv_stores WHERE id = $1 AND tenant_id = $2")
            .bind(store_id)
            .bind(tenant_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db("reading a KV store"))?
            .ok_or(StoreError::NoSuchStore)?;
        let keys_now: i64 = store.get(0);
        let now = now_ms();
        let mut written = KvWritten::default();
        let (mut keys_delta, mut bytes_delta) = (0i64, 0i64);
        for (i, (key, change)) in changes.into_iter().enumerate() {
            let seq = first + i as u64;
            let stored = stored_entry(&mut *tx, store_id, key).await?;
            if let Some(expect) = expect {
                check_expected(key, expect, stored.as_ref().map(|(seq, _)| *seq))?;
            }
            let old = stored.map(|(_, value)| value);
            let old_bytes = old.as_ref().map_or(0, |v| (key.len() + v.len()) as i64);
            let new = match change {
                Change::Put(value) => Some(value),
                Change::Delete if old.is_none() => continue,
                Change::Delete => None,
                Change::Add(delta) => {
                    let sum = counter_value(key, old.as_deref())?
                        .checked_add(delta)
                        .ok_or_else(|| {
                            StoreError::KvInvalid(format!("incrementing {key:?} overflows a u64"))
                        })?;
                    written.incremented = Some(sum);
                    Some(sum.to_string().into_bytes())
                }
            };
            let new_bytes = new.as_ref().map_or(0, |v| (key.len() + v.len()) as i64);
            keys_delta += i64::from(new.is_some()) - i64::from(old.is_some());
            bytes_delta += new_bytes - old_bytes;
            sqlx::query(
                "INSERT INTO kv_entries (store_id, key, value, value_bytes, seq, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (store_id, key) DO UPDATE SET value = excluded.value, \
                 value_bytes = excluded.value_bytes, seq = excluded.seq, \
                 updated_at = excluded.updated_at",
            )
            .bind(store_id)
            .bind(key)
            .bind(new.as_ref().map(|v| STANDARD.encode(v)))
            .bind(new.as_ref().map_or(0, |v| v.len() as i64))
            .bind(to_i64(seq))
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db("writing a KV key"))?;
            written.changes.push(KvChange {
                seq,
                store: store_id.to_string(),
                key: key.to_string(),
                value: new,
            });
        }
        if keys_delta > 0
            && u64::try_from(keys_now + keys_delta).unwrap_or(0) > quotas.max_keys_per_store
        {
            return Err(StoreError::KvQuota(format!(
                "a KV store may hold at most {} keys",
                quotas.max_keys_per_store
            )));
        }
        if bytes_delta > 0 {
            let tenant_bytes: i64 =
                sqlx::query("SELECT CAST(COALESCE(SUM(bytes), 0) AS BIGINT) FROM kv_stores WHERE tenant_id = $1")
                    .bind(tenant_id)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(db("reading KV usage"))?
                    .get(0);
            if u64::try_from(tenant_bytes + bytes_delta).unwrap_or(0) > quotas.max_bytes_per_tenant
            {
                return Err(StoreError::KvQuota(format!(
                    "a tenant's KV stores may hold at most {} bytes of keys and values",
                    quotas.max_bytes_per_tenant
                )));
            }
        }
        sqlx::query("UPDATE kv_stores SET keys = keys + $1, bytes = bytes + $2 WHERE id = $3")
            .bind(keys_delta)
            .bind(bytes_delta)
            .bind(store_id)
            .execute(&mut *tx)
            .await
            .map_err(db("counting KV usage"))?;
        tx.commit().await.map_err(db("writing KV keys"))?;
        Ok(written)
    }

    /// The feed after `after`: the newest change of every key changed
    /// since, in order, at most [`KV_FEED_BATCH`] of them and about
    /// [`KV_FEED_BATCH_BYTES`] of values. `floor` is the pruned tombstones
    /// the node's last reset was told of: tombstones pruned up to there do
    /// not reset it again.
    pub async fn kv_feed(&self, after: u64, floor: u64) -> Result<KvFeedBatch, StoreError> {
        let (latest, pruned_through) = self.kv_counters().await?;
        // A node ahead of this database followed another one; a node
        // behind the pruned tombstones missed deletes. Either starts over.
        let reset = after > latest || pruned_through > after.max(floor);
        let from = if reset { 0 } else { after };
        if !reset && latest == after {
            return Ok(KvFeedBatch {
                through: after,
                pruned_through,
                ..KvFeedBatch::default()
            });
        }
        let rows = sqlx::query(
            "SELECT seq, store_id, key, value, value_bytes FROM kv_entries WHERE seq > $1 \
             ORDER BY seq LIMIT $2",
        )
        .bind(to_i64(from))
        .bind(KV_FEED_BATCH as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(db("reading the KV feed"))?;
        // Tombstones pruned while the page was read may be missing from it.
        let (_, pruned_since) = self.kv_counters().await?;
        if !reset && pruned_since > after.max(floor) {
            return Box::pin(self.kv_feed(after, floor)).await;
        }
        let mut changes = Vec::with_capacity(rows.len());
        let mut bytes = 0usize;
        for row in &rows {
            if !changes.is_empty() && bytes >= KV_FEED_BATCH_BYTES {
                break;
            }
            bytes += usize::try_from(row.get::<i64, _>(4)).unwrap_or(0);
            changes.push(KvChange {
                seq: u64::try_from(row.get::<i64, _>(0)).unwrap_or(0),
                store: row.get(1),
                key: row.get(2),
                value: row
                    .get::<Option<String>, _>(3)
                    .map(|text| decode(&text))
                    .transpose()?,
            });
        }
        let last = changes.last().map_or(from, |change| change.seq);
        // A page cut short stops at its last change; otherwise it holds
        // everything through `latest` (and perhaps a later write that
        // committed since the counter was read).
        let more = changes.len() < rows.len() || rows.len() == KV_FEED_BATCH;
        Ok(KvFeedBatch {
            through: if more { last } else { last.max(latest) },
            reset,
            changes,
            pruned_through,
            more,
        })
    }

    /// The newest change number and the newest pruned tombstone.
    async fn kv_counters(&self) -> Result<(u64, u64), StoreError> {
        let row = sqlx::query("SELECT seq, pruned_through FROM kv_counter WHERE id = 1")
            .fetch_one(&self.pool)
            .await
            .map_err(db("reading the KV counter"))?;
        Ok((
            u64::try_from(row.get::<i64, _>(0)).unwrap_or(0),
            u64::try_from(row.get::<i64, _>(1)).unwrap_or(0),
        ))
    }

    /// The newest change number (0 if none).
    pub async fn kv_seq(&self) -> Result<u64, StoreError> {
        read_counter(&self.pool, Counter::KvChanges, "reading the KV counter").await
    }

    /// Deletes tombstones older than [`KV_TOMBSTONE_RETENTION_MS`], at
    /// most `batch` of them, and records the newest one pruned: a node
    /// behind it can no longer hear of those deletes. Returns how many went.
    pub async fn prune_kv_tombstones(&self, batch: i64) -> Result<u64, StoreError> {
        while self.delete_orphan_entries(None, batch).await? == u64::try_from(batch).unwrap_or(0) {}
        let mut tx = self.begin("pruning KV tombstones").await?;
        // The counter first, as every write takes it: the same order of
        // locks everywhere, so no two transactions wait on each other.
        add_to_counter(&mut tx, Counter::KvChanges, 0, "pruning KV tombstones").await?;
        let cutoff = now_ms() - KV_TOMBSTONE_RETENTION_MS;
        let newest: Option<i64> = sqlx::query(
            "SELECT MAX(seq) FROM (SELECT seq FROM kv_entries WHERE value IS NULL \
             AND updated_at < $1 ORDER BY updated_at LIMIT $2) oldest",
        )
        .bind(cutoff)
        .bind(batch)
        .fetch_one(&mut *tx)
        .await
        .map_err(db("pruning KV tombstones"))?
        .get(0);
        let Some(newest) = newest else {
            return Ok(0);
        };
        let done = sqlx::query(
            "DELETE FROM kv_entries WHERE value IS NULL AND seq <= $1 AND updated_at < $2",
        )
        .bind(newest)
        .bind(cutoff)
        .execute(&mut *tx)
        .await
        .map_err(db("pruning KV tombstones"))?;
        sqlx::query(
            "UPDATE kv_counter SET pruned_through = $1 WHERE id = 1 AND pruned_through < $1",
        )
        .bind(newest)
        .execute(&mut *tx)
        .await
        .map_err(db("pruning KV tombstones"))?;
        tx.commit().await.map_err(db("pruning KV tombstones"))?;
        Ok(done.rows_affected())
    }

    /// Every store of every tenant not suspended, for the snapshot.
    pub(super) async fn snapshot_kv_stores(
        tx: &mut Tx<'_>,
    ) -> Result<Vec<SnapshotKvStore>, StoreError> {
        let rows = sqlx::query(
            "SELECT k.id, t.name, k.name FROM kv_stores k JOIN tenants t ON t.id = k.tenant_id \
             WHERE t.suspended = 0 ORDER BY t.name, k.name",
        )
        .fetch_all(&mut **tx)
        .await
        .map_err(db("reading the snapshot's KV stores"))?;
        Ok(rows
            .iter()
            .map(|row| SnapshotKvStore {
                id: row.get(0),
                tenant: row.get(1),
                name: row.get(2),
            })
            .collect())
    }
}

/// The live value of `key` in `store_id` and its version, read on
/// `executor`: the pool, or a write's transaction.
async fn stored_entry<'c>(
    executor: impl sqlx::Executor<'c, Database = sqlx::Any>,
    store_id: &str,
    key: &str,
) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
    let row = sqlx::query(
        "SELECT seq, value FROM kv_entries WHERE store_id = $1 AND key = $2 \
         AND value IS NOT NULL",
    )
    .bind(store_id)
    .bind(key)
    .fetch_optional(executor)
    .await
    .map_err(db("reading a KV key"))?;
    row.map(|row| {
        let seq = u64::try_from(row.get::<i64, _>(0)).unwrap_or(0);
        decode(&row.get::<String, _>(1)).map(|value| (seq, value))
    })
    .transpose()
}

/// Whether `key`, at `version` (`None`: absent), is as `expect`ed.
fn check_expected(key: &str, expect: KvExpect, version: Option<u64>) -> Result<(), StoreError> {
    let holds = match expect {
        KvExpect::Absent => version.is_none(),
        KvExpect::Version(expected) => version == Some(expected),
    };
    if holds {
        return Ok(());
    }
    let now = version.map_or("absent".to_string(), |v| format!("at version {v}"));
    Err(StoreError::KvConflict(format!(
        "{key:?} is {now}, not as the write expected"
    )))
}
