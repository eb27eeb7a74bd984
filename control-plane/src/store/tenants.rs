//! Tenants, their API tokens, and suspension.

use sqlx::Row;

use super::db::{Store, StoreError, commit_new_snapshot_if, db, now_ms, random_hex};
use super::records::{Tenant, TokenInfo, tenant_from_row};

impl Store {
    /// Creates a tenant and its first API token, stored as its sha256.
    pub async fn create_tenant(
        &self,
        name: &str,
        token_sha256: &str,
        allow_private_backends: bool,
    ) -> Result<Tenant, StoreError> {
        let tenant = Tenant {
            id: random_hex(8),
            name: name.to_string(),
            created_at: now_ms(),
            allow_private_backends,
            suspended: false,
        };
        let mut tx = self.begin("creating a tenant").await?;
        sqlx::query(
            "INSERT INTO tenants (id, name, created_at, allow_private_backends) VALUES ($1, $2, $3, $4)",
        )
        .bind(&tenant.id)
        .bind(&tenant.name)
        .bind(tenant.created_at)
        .bind(i64::from(allow_private_backends))
            .execute(&mut *tx)
            .await
            .map_err(db("tenant"))?;
        insert_token(
            &mut *tx,
            &tenant.id,
            token_sha256,
            "initial",
            tenant.created_at,
        )
        .await?;
        tx.commit().await.map_err(db("creating a tenant"))?;
        Ok(tenant)
    }

    pub async fn add_token(
        &self,
        tenant_id: &str,
        token_sha256: &str,
        label: &str,
    ) -> Result<(), StoreError> {
        insert_token(&self.pool, tenant_id, token_sha256, label, now_ms()).await
    }

    /// Suspends or resumes the tenant named `name` and bumps the snapshot
    /// version, so its services leave (or rejoin) every node. `None` if
    /// there is no such tenant.
    pub async fn set_suspended(
        &self,
        name: &str,
        suspended: bool,
    ) -> Result<Option<u64>, StoreError> {
        let mut tx = self.begin("suspending a tenant").await?;
        let done = sqlx::query("UPDATE tenants SET suspended = $1 WHERE name = $2")
            .bind(i64::from(suspended))
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(db("suspending a tenant"))?;
        commit_new_snapshot_if(tx, done.rows_affected() > 0, "suspending a tenant").await
    }

    /// A tenant's tokens: their ids (the first 12 hex digits of their
    /// sha256), labels and creation times; never the tokens.
    pub async fn tokens(&self, tenant_id: &str) -> Result<Vec<TokenInfo>, StoreError> {
        let rows = sqlx::query(
            "SELECT substr(token_sha256, 1, 12), label, created_at FROM api_tokens \
             WHERE tenant_id = $1 ORDER BY created_at, label",
        )
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db("listing tokens"))?;
        Ok(rows
            .iter()
            .map(|row| TokenInfo {
                id: row.get(0),
                label: row.get(1),
                created_at: row.get(2),
            })
            .collect())
    }

    /// Revokes the tenant's token with id `id` (every one if `None`).
    /// Returns how many went; a revoked token is refused from the next
    /// request on.
    pub async fn revoke_tokens(
        &self,
        tenant_id: &str,
        id: Option<&str>,
    ) -> Result<u64, StoreError> {
        let done = match id {
            Some(id) => sqlx::query(
                "DELETE FROM api_tokens WHERE tenant_id = $1 AND substr(token_sha256, 1, 12) = $2",
            )
            .bind(tenant_id)
            .bind(id),
            None => sqlx::query("DELETE FROM api_tokens WHERE tenant_id = $1").bind(tenant_id),
        }
        .execute(&self.pool)
        .await
        .map_err(db("revoking tokens"))?;
        Ok(done.rows_affected())
    }

    pub async fn list_tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, name, created_at, allow_private_backends, suspended FROM tenants ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db("listing tenants"))?;
        Ok(rows.iter().map(tenant_from_row).collect())
    }

    /// The tenant a token belongs to, and the token's label.
    pub async fn tenant_by_token(
        &self,
        token_sha256: &str,
    ) -> Result<Option<(Tenant, String)>, StoreError> {
        let row = sqlx::query(
            "SELECT t.id, t.name, t.created_at, t.allow_private_backends, t.suspended, k.label \
             FROM api_tokens k JOIN tenants t ON t.id = k.tenant_id WHERE k.token_sha256 = $1",
        )
        .bind(token_sha256)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("checking a token"))?;
        Ok(row.map(|row| (tenant_from_row(&row), row.get::<String, _>(5))))
    }

    pub async fn tenant_by_name(&self, name: &str) -> Result<Option<Tenant>, StoreError> {
        let row = sqlx::query(
            "SELECT id, name, created_at, allow_private_backends, suspended FROM tenants WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("reading a tenant"))?;
        Ok(row.as_ref().map(tenant_from_row))
    }

    // ----- services -------------------------------------------------------
}

/// Stores a token of the tenant (as its sha256) on `executor`: the pool, or
/// the transaction that creates the tenant with its first token.
async fn insert_token<'c>(
    executor: impl sqlx::Executor<'c, Database = sqlx::Any>,
    tenant_id: &str,
    token_sha256: &str,
    label: &str,
    created_at: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO api_tokens (token_sha256, tenant_id, label, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(token_sha256)
    .bind(tenant_id)
    .bind(label)
    .bind(created_at)
    .execute(executor)
    .await
    .map_err(db("creating a token"))?;
    Ok(())
}
