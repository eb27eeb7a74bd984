//! Tenants' secrets, kept only sealed (see `edge_platform::secrets`): the
//! control plane seals a value when it is set and never opens it again.

use edge_config::state::{SealedSecret, SecretInfo};
use sqlx::Row;

use super::db::{Counter, Store, StoreError, add_to_counter, commit_new_snapshot, db, now_ms};

impl Store {
    /// Sets `tenant_id`'s secret `name` to the `sealed` value, unless that
    /// would make more than `max_secrets`. Nodes get it with the next
    /// snapshot, for the services that list it.
    pub async fn set_secret(
        &self,
        tenant_id: &str,
        name: &str,
        sealed: &str,
        max_secrets: u64,
    ) -> Result<SecretInfo, StoreError> {
        let mut tx = self.begin("setting a secret").await?;
        // Serialized (the KV counter's row lock), so that two at once
        // cannot both pass the quota.
        add_to_counter(&mut tx, Counter::KvChanges, 0, "setting a secret").await?;
        let exists = sqlx::query("SELECT 1 FROM secrets WHERE tenant_id = $1 AND name = $2")
            .bind(tenant_id)
            .bind(name)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db("reading a secret"))?
            .is_some();
        if !exists {
            let count: i64 = sqlx::query("SELECT COUNT(*) FROM secrets WHERE tenant_id = $1")
                .bind(tenant_id)
                .fetch_one(&mut *tx)
                .await
                .map_err(db("counting secrets"))?
                .get(0);
            if u64::try_from(count).unwrap_or(0) >= max_secrets {
                return Err(StoreError::KvQuota(format!(
                    "a tenant may have at most {max_secrets} secrets"
                )));
            }
        }
        let updated_at = now_ms();
        sqlx::query(
            "INSERT INTO secrets (tenant_id, name, sealed, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant_id, name) DO UPDATE SET sealed = excluded.sealed, \
             updated_at = excluded.updated_at",
        )
        .bind(tenant_id)
        .bind(name)
        .bind(sealed)
        .bind(updated_at)
        .execute(&mut *tx)
        .await
        .map_err(db("setting a secret"))?;
        commit_new_snapshot(tx, "setting a secret").await?;
        Ok(SecretInfo {
            name: name.to_string(),
            updated_at,
        })
    }

    /// The names of `tenant_id`'s secrets: never their values.
    pub async fn secrets(&self, tenant_id: &str) -> Result<Vec<SecretInfo>, StoreError> {
        let rows =
            sqlx::query("SELECT name, updated_at FROM secrets WHERE tenant_id = $1 ORDER BY name")
                .bind(tenant_id)
                .fetch_all(&self.pool)
                .await
                .map_err(db("listing secrets"))?;
        Ok(rows
            .iter()
            .map(|row| SecretInfo {
                name: row.get(0),
                updated_at: row.get(1),
            })
            .collect())
    }

    /// Deletes `tenant_id`'s secret `name`; whether there was one.
    pub async fn delete_secret(&self, tenant_id: &str, name: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin("deleting a secret").await?;
        let done = sqlx::query("DELETE FROM secrets WHERE tenant_id = $1 AND name = $2")
            .bind(tenant_id)
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(db("deleting a secret"))?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        commit_new_snapshot(tx, "deleting a secret").await?;
        Ok(true)
    }

    /// Every sealed secret, by tenant name and secret name, read in `tx`
    /// for the snapshot.
    pub(super) async fn snapshot_secrets(
        tx: &mut super::db::Tx<'_>,
    ) -> Result<std::collections::HashMap<(String, String), SealedSecret>, StoreError> {
        let rows = sqlx::query(
            "SELECT t.name, s.name, s.sealed FROM secrets s JOIN tenants t ON t.id = s.tenant_id \
             WHERE t.suspended = 0",
        )
        .fetch_all(&mut **tx)
        .await
        .map_err(db("reading the snapshot's secrets"))?;
        Ok(rows
            .iter()
            .map(|row| {
                let name: String = row.get(1);
                (
                    (row.get(0), name.clone()),
                    SealedSecret {
                        name,
                        sealed: row.get(2),
                    },
                )
            })
            .collect())
    }
}
