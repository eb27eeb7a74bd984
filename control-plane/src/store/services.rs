//! Services, their modules and versions, and activation.

use std::collections::HashSet;

use edge_config::protocol::ServiceSpec;
use sqlx::Row;

use super::db::{
    Store, StoreError, active_spec, commit_new_snapshot, current_spec, db, now_ms, random_hex,
    spec_from, spec_text, to_i64, write_spec,
};
use super::domains;
use super::records::{Service, Tenant, Version, service_from_row, version_from_row};
use super::rollouts::{CanaryOutcome, end_canary_in, running_canary};

impl Store {
    /// Creates a service and claims its custom domains (pending). Fails with
    /// `Conflict` if the tenant already has a service of that name, and
    /// `DomainConflict` if a domain overlaps another tenant's claim.
    pub async fn create_service(
        &self,
        tenant: &Tenant,
        name: &str,
        spec: &ServiceSpec,
    ) -> Result<Service, StoreError> {
        let service = Service {
            id: random_hex(8),
            tenant_id: tenant.id.clone(),
            tenant_name: tenant.name.clone(),
            name: name.to_string(),
            spec: spec.clone(),
            active_version: None,
            created_at: now_ms(),
        };
        let mut tx = self.begin("creating a service").await?;
        domains::lock_claims(&mut tx).await?;
        sqlx::query(
            "INSERT INTO services (id, tenant_id, name, spec, active_version, created_at) \
             VALUES ($1, $2, $3, $4, NULL, $5)",
        )
        .bind(&service.id)
        .bind(&tenant.id)
        .bind(name)
        .bind(spec_text(spec))
        .bind(service.created_at)
        .execute(&mut *tx)
        .await
        .map_err(db("a service with this name"))?;
        domains::claim(
            &mut tx,
            &service,
            &self.custom_domains(&service, spec),
            self.pending_claims_expire_before(),
        )
        .await?;
        tx.commit().await.map_err(db("creating a service"))?;
        Ok(service)
    }

    /// Replaces a service's spec (takes effect with the next version). The
    /// service keeps its claims on the domains its active version serves,
    /// claims the new ones, and releases the rest.
    pub async fn update_service(
        &self,
        service: &Service,
        spec: &ServiceSpec,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin("updating a service").await?;
        domains::lock_claims(&mut tx).await?;
        domains::claim(
            &mut tx,
            service,
            &self.custom_domains(service, spec),
            self.pending_claims_expire_before(),
        )
        .await?;
        let active = active_spec(&mut tx, &service.id).await?;
        let mut keep: HashSet<&str> = spec.domains.iter().map(String::as_str).collect();
        if let Some(active) = &active {
            keep.extend(active.domains.iter().map(String::as_str));
        }
        domains::release_except(&mut tx, &service.id, &keep).await?;
        write_spec(&mut tx, &service.id, spec).await?;
        tx.commit().await.map_err(db("updating a service"))?;
        Ok(())
    }

    /// Deletes a service with its versions, certificate, usage and logs,
    /// and releases its domains; bumps the snapshot version, so nodes stop
    /// serving it. Returns the new snapshot version.
    pub async fn delete_service(&self, service: &Service) -> Result<u64, StoreError> {
        let mut tx = self.begin("deleting a service").await?;
        for table in [
            "domains",
            "certificates",
            "canaries",
            "activations",
            "version_usage",
            "versions",
            "usage",
            "guest_logs",
        ] {
            sqlx::query(&format!("DELETE FROM {table} WHERE service_id = $1"))
                .bind(&service.id)
                .execute(&mut *tx)
                .await
                .map_err(db("deleting a service"))?;
        }
        sqlx::query("DELETE FROM services WHERE id = $1")
            .bind(&service.id)
            .execute(&mut *tx)
            .await
            .map_err(db("deleting a service"))?;
        commit_new_snapshot(tx, "deleting a service").await
    }

    pub async fn list_services(&self, tenant_id: &str) -> Result<Vec<Service>, StoreError> {
        let rows = sqlx::query(
            "SELECT s.id, s.tenant_id, s.name, s.spec, s.active_version, s.created_at, t.name \
             FROM services s JOIN tenants t ON t.id = s.tenant_id \
             WHERE s.tenant_id = $1 ORDER BY s.name",
        )
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db("listing services"))?;
        rows.iter().map(service_from_row).collect()
    }

    /// A tenant's service by name; another tenant's service is not found.
    pub async fn service(
        &self,
        tenant_id: &str,
        name: &str,
    ) -> Result<Option<Service>, StoreError> {
        let row = sqlx::query(
            "SELECT s.id, s.tenant_id, s.name, s.spec, s.active_version, s.created_at, t.name \
             FROM services s JOIN tenants t ON t.id = s.tenant_id \
             WHERE s.tenant_id = $1 AND s.name = $2",
        )
        .bind(tenant_id)
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("reading a service"))?;
        row.as_ref().map(service_from_row).transpose()
    }

    // ----- modules and versions ---------------------------------------------

    /// Records a stored component (once per hash) as uploaded by `tenant_id`.
    /// Returns whether this tenant had uploaded it before.
    pub async fn record_module(
        &self,
        tenant_id: &str,
        sha256: &str,
        size_bytes: u64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin("recording a module").await?;
        sqlx::query(
            "INSERT INTO modules (sha256, size_bytes, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (sha256) DO NOTHING",
        )
        .bind(sha256)
        .bind(to_i64(size_bytes))
        .bind(now_ms())
        .execute(&mut *tx)
        .await
        .map_err(db("recording a module"))?;
        let added = sqlx::query(
            "INSERT INTO tenant_modules (tenant_id, sha256, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant_id, sha256) DO NOTHING",
        )
        .bind(tenant_id)
        .bind(sha256)
        .bind(now_ms())
        .execute(&mut *tx)
        .await
        .map_err(db("recording a module"))?;
        tx.commit().await.map_err(db("recording a module"))?;
        Ok(added.rows_affected() == 0)
    }

    /// Whether any tenant uploaded the module `sha256` (its files are then
    /// stored, and need no compiling again).
    pub async fn module_exists(&self, sha256: &str) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT sha256 FROM modules WHERE sha256 = $1")
            .bind(sha256)
            .fetch_optional(&self.pool)
            .await
            .map_err(db("reading a module"))?;
        Ok(row.is_some())
    }

    /// Whether `tenant_id` uploaded the module `sha256`. Another tenant's
    /// module is not there, exactly as one that does not exist.
    /// The bytes of the distinct modules `tenant_id` has uploaded.
    pub async fn tenant_module_bytes(&self, tenant_id: &str) -> Result<u64, StoreError> {
        let row = sqlx::query(
            "SELECT CAST(COALESCE(SUM(m.size_bytes), 0) AS BIGINT) FROM tenant_modules t \
             JOIN modules m ON m.sha256 = t.sha256 WHERE t.tenant_id = $1",
        )
        .bind(tenant_id)
        .fetch_one(&self.pool)
        .await
        .map_err(db("summing a tenant's modules"))?;
        let bytes: i64 = row.try_get(0).map_err(db("summing a tenant's modules"))?;
        Ok(u64::try_from(bytes).unwrap_or(0))
    }

    pub async fn tenant_has_module(
        &self,
        tenant_id: &str,
        sha256: &str,
    ) -> Result<bool, StoreError> {
        let row =
            sqlx::query("SELECT sha256 FROM tenant_modules WHERE tenant_id = $1 AND sha256 = $2")
                .bind(tenant_id)
                .bind(sha256)
                .fetch_optional(&self.pool)
                .await
                .map_err(db("reading a module"))?;
        Ok(row.is_some())
    }

    /// Creates the service's next version from its current spec, read in
    /// the same transaction (a concurrent spec change cannot slip between).
    pub async fn create_version(
        &self,
        service: &Service,
        module_sha256: &str,
        author: &str,
    ) -> Result<Version, StoreError> {
        let mut tx = self.begin("creating a version").await?;
        let next: i64 =
            sqlx::query("SELECT COALESCE(MAX(number), 0) + 1 FROM versions WHERE service_id = $1")
                .bind(&service.id)
                .fetch_one(&mut *tx)
                .await
                .map_err(db("numbering a version"))?
                .get(0);
        let version = Version {
            number: next,
            module_sha256: module_sha256.to_string(),
            spec: current_spec(&mut tx, &service.id).await?,
            author: author.to_string(),
            created_at: now_ms(),
            node_failures: Vec::new(),
        };
        sqlx::query(
            "INSERT INTO versions (service_id, number, module_sha256, spec, author, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&service.id)
        .bind(version.number)
        .bind(module_sha256)
        .bind(spec_text(&version.spec))
        .bind(author)
        .bind(version.created_at)
        .execute(&mut *tx)
        .await
        .map_err(db("a version with this number"))?;
        tx.commit().await.map_err(db("creating a version"))?;
        Ok(version)
    }

    pub async fn versions(&self, service: &Service) -> Result<Vec<Version>, StoreError> {
        let rows = sqlx::query(
            "SELECT number, module_sha256, spec, author, created_at FROM versions \
             WHERE service_id = $1 ORDER BY number",
        )
        .bind(&service.id)
        .fetch_all(&self.pool)
        .await
        .map_err(db("listing versions"))?;
        let mut failures = self.node_failures(service).await?;
        rows.iter()
            .map(|row| {
                let mut version = version_from_row(row)?;
                version.node_failures = failures.remove(&version.number).unwrap_or_default();
                Ok(version)
            })
            .collect()
    }

    /// Makes `number` the active version and bumps the snapshot version, in
    /// one transaction. The version's domains are claimed again (a domain
    /// another tenant holds now fails with `DomainConflict`, and nothing
    /// changes), and the claims only the previously active version needed
    /// are released. A canary running is aborted: the version it was
    /// measured against is gone. `actor` (a token's label) is written in
    /// the history. Returns the new snapshot version, or `None` if the
    /// service has no such version.
    pub async fn activate(
        &self,
        service: &Service,
        number: i64,
        actor: &str,
    ) -> Result<Option<u64>, StoreError> {
        let mut tx = self.begin("activating a version").await?;
        if !self.activate_in(&mut tx, service, number, actor).await? {
            return Ok(None);
        }
        if let Some(canary) = running_canary(&mut tx, &service.id).await? {
            end_canary_in(
                &mut tx,
                &service.id,
                canary.version,
                CanaryOutcome::Aborted,
                actor,
                &format!("v{number} activated"),
            )
            .await?;
        }
        commit_new_snapshot(tx, "activating a version")
            .await
            .map(Some)
    }

    /// Claims version `number`'s domains for the service inside `tx` and
    /// releases the claims neither it nor the current spec needs; `false`
    /// when the service has no such version.
    pub(super) async fn claim_version_domains(
        &self,
        tx: &mut super::db::Tx<'_>,
        service: &Service,
        number: i64,
    ) -> Result<bool, StoreError> {
        domains::lock_claims(tx).await?;
        let row = sqlx::query("SELECT spec FROM versions WHERE service_id = $1 AND number = $2")
            .bind(&service.id)
            .bind(number)
            .fetch_optional(&mut **tx)
            .await
            .map_err(db("reading a version"))?;
        let Some(row) = row else {
            return Ok(false);
        };
        let version_spec = spec_from(&row.get::<String, _>(0))?;
        domains::claim(
            tx,
            service,
            &self.custom_domains(service, &version_spec),
            self.pending_claims_expire_before(),
        )
        .await?;
        let current = current_spec(tx, &service.id).await?;
        let keep: HashSet<&str> = current
            .domains
            .iter()
            .chain(&version_spec.domains)
            .map(String::as_str)
            .collect();
        domains::release_except(tx, &service.id, &keep).await?;
        Ok(true)
    }

    // ----- snapshot ---------------------------------------------------------
}
