//! The control plane's database: SQLite in the data directory by default,
//! PostgreSQL for several replicas. Both go through sqlx's `any` driver with
//! one SQL dialect, so every query below is the same code on both; the
//! migrations in [`migrations`] create the same schema on both.
//!
//! Every change that must be seen whole (a new version, an activation and the
//! snapshot version it bumps) is one transaction. SQLite runs in WAL mode with
//! `synchronous=FULL`, so a commit that returned is on disk.

pub mod certificates;
mod db;
pub mod domains;
pub mod guest_logs;
pub mod migrations;
pub mod node_failures;
pub mod purges;
mod records;

use std::collections::HashSet;

use edge_config::protocol::{ServiceSpec, Snapshot, SnapshotService, UsageReport};
use sqlx::Row;
use sqlx::any::{AnyPoolOptions, install_default_drivers};

pub use db::{
    DEFAULT_PENDING_CLAIM_TTL, DEFAULT_PLATFORM_DOMAIN, Store, StoreError, now_ms, random_hex,
};
use db::{
    bump_snapshot, current_spec, db, service_id_by_platform_name, spec_from, spec_text, to_i64,
    write_spec,
};
pub use records::{
    NODE_HEALTHY_WITHIN_MS, NodeFailure, NodeRecord, Service, Tenant, TokenInfo, UsageTotals,
    Version,
};

/// How long a usage report's id is remembered: a node resending a report
/// later than this (it was down for a week with the report on disk) has it
/// counted again.
const USAGE_REPORT_ID_KEEP_MS: i64 = 7 * 24 * 3600 * 1000;
/// Rows one pruning statement deletes at most.
const PRUNE_BATCH: i64 = 10_000;
/// How often the control plane prunes expired rows.
pub const PRUNE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

impl Store {
    /// Connects (`sqlite://path` or `postgres://...`) and applies migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        let url = if sqlite && !url.contains('?') {
            format!("{url}?mode=rwc")
        } else {
            url.to_string()
        };
        let pool = AnyPoolOptions::new()
            // SQLite allows one writer at a time; one connection avoids
            // "database is locked" between the pool's own connections.
            .max_connections(if sqlite { 1 } else { 8 })
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if sqlite {
                        for pragma in [
                            "PRAGMA journal_mode=WAL",
                            "PRAGMA synchronous=FULL",
                            "PRAGMA foreign_keys=ON",
                            "PRAGMA busy_timeout=5000",
                        ] {
                            sqlx::query(pragma).execute(&mut *conn).await?;
                        }
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await
            .map_err(db("connecting to the database"))?;
        let store = Self {
            pool,
            platform_domain: DEFAULT_PLATFORM_DOMAIN.to_string(),
            pending_claim_ttl: DEFAULT_PENDING_CLAIM_TTL,
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Serves services under `domain` instead of [`DEFAULT_PLATFORM_DOMAIN`].
    pub fn with_platform_domain(mut self, domain: &str) -> Self {
        self.platform_domain = domain.to_string();
        self
    }

    pub fn with_pending_claim_ttl(mut self, ttl: std::time::Duration) -> Self {
        self.pending_claim_ttl = ttl;
        self
    }

    /// Pending claims made before this (Unix ms) have expired.
    pub(super) fn pending_claims_expire_before(&self) -> i64 {
        now_ms()
            .saturating_sub(i64::try_from(self.pending_claim_ttl.as_millis()).unwrap_or(i64::MAX))
    }

    pub fn platform_domain(&self) -> &str {
        &self.platform_domain
    }

    /// `<service>.<tenant>.<platform domain>`: the service's own name.
    pub fn platform_name(&self, service: &Service) -> String {
        format!(
            "{}.{}.{}",
            service.name, service.tenant_name, self.platform_domain
        )
    }

    /// The domains of `spec` that need a claim: all but the service's
    /// platform name.
    fn custom_domains(&self, service: &Service, spec: &ServiceSpec) -> Vec<String> {
        let own = self.platform_name(service);
        spec.domains
            .iter()
            .filter(|domain| **domain != own)
            .cloned()
            .collect()
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
        )
        .execute(&self.pool)
        .await
        .map_err(db("creating the migrations table"))?;
        for (version, statements) in migrations::MIGRATIONS {
            let mut tx = self
                .pool
                .begin()
                .await
                .map_err(db("starting a migration"))?;
            let applied = sqlx::query("SELECT version FROM schema_migrations WHERE version = $1")
                .bind(*version)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db("reading applied migrations"))?;
            if applied.is_some() {
                continue;
            }
            for statement in *statements {
                sqlx::query(statement)
                    .execute(&mut *tx)
                    .await
                    .map_err(db("applying a migration"))?;
            }
            sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)")
                .bind(*version)
                .bind(now_ms())
                .execute(&mut *tx)
                .await
                .map_err(db("recording a migration"))?;
            tx.commit().await.map_err(db("committing a migration"))?;
        }
        Ok(())
    }

    // ----- tenants and tokens -------------------------------------------

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
        let mut tx = self.pool.begin().await.map_err(db("creating a tenant"))?;
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
        sqlx::query(
            "INSERT INTO api_tokens (token_sha256, tenant_id, label, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(token_sha256)
        .bind(&tenant.id)
        .bind("initial")
        .bind(tenant.created_at)
        .execute(&mut *tx)
        .await
        .map_err(db("creating a token"))?;
        tx.commit().await.map_err(db("creating a tenant"))?;
        Ok(tenant)
    }

    pub async fn add_token(
        &self,
        tenant_id: &str,
        token_sha256: &str,
        label: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO api_tokens (token_sha256, tenant_id, label, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(token_sha256)
        .bind(tenant_id)
        .bind(label)
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .map_err(db("creating a token"))?;
        Ok(())
    }

    /// Suspends or resumes the tenant named `name` and bumps the snapshot
    /// version, so its services leave (or rejoin) every node. `None` if
    /// there is no such tenant.
    pub async fn set_suspended(
        &self,
        name: &str,
        suspended: bool,
    ) -> Result<Option<u64>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db("suspending a tenant"))?;
        let done = sqlx::query("UPDATE tenants SET suspended = $1 WHERE name = $2")
            .bind(i64::from(suspended))
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(db("suspending a tenant"))?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        let version = bump_snapshot(&mut tx).await?;
        tx.commit().await.map_err(db("suspending a tenant"))?;
        Ok(Some(version))
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
        let mut tx = self.pool.begin().await.map_err(db("creating a service"))?;
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
        let mut tx = self.pool.begin().await.map_err(db("updating a service"))?;
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
        let mut tx = self.pool.begin().await.map_err(db("deleting a service"))?;
        for table in ["domains", "certificates", "versions", "usage", "guest_logs"] {
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
        let version = bump_snapshot(&mut tx).await?;
        tx.commit().await.map_err(db("deleting a service"))?;
        Ok(version)
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
        let mut tx = self.pool.begin().await.map_err(db("recording a module"))?;
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
        let mut tx = self.pool.begin().await.map_err(db("creating a version"))?;
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
    /// are released. Returns the new snapshot version, or `None` if the
    /// service has no such version.
    pub async fn activate(
        &self,
        service: &Service,
        number: i64,
    ) -> Result<Option<u64>, StoreError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(db("activating a version"))?;
        domains::lock_claims(&mut tx).await?;
        let row = sqlx::query("SELECT spec FROM versions WHERE service_id = $1 AND number = $2")
            .bind(&service.id)
            .bind(number)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db("reading a version"))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let version_spec = spec_from(&row.get::<String, _>(0))?;
        domains::claim(
            &mut tx,
            service,
            &self.custom_domains(service, &version_spec),
            self.pending_claims_expire_before(),
        )
        .await?;
        let current = current_spec(&mut tx, &service.id).await?;
        let keep: HashSet<&str> = current
            .domains
            .iter()
            .chain(&version_spec.domains)
            .map(String::as_str)
            .collect();
        domains::release_except(&mut tx, &service.id, &keep).await?;
        sqlx::query("UPDATE services SET active_version = $1 WHERE id = $2")
            .bind(number)
            .bind(&service.id)
            .execute(&mut *tx)
            .await
            .map_err(db("activating a version"))?;
        let version = bump_snapshot(&mut tx).await?;
        tx.commit().await.map_err(db("activating a version"))?;
        Ok(Some(version))
    }

    // ----- snapshot ---------------------------------------------------------

    pub async fn snapshot_version(&self) -> Result<u64, StoreError> {
        let version: i64 = sqlx::query("SELECT version FROM snapshot WHERE id = 1")
            .fetch_one(&self.pool)
            .await
            .map_err(db("reading the snapshot version"))?
            .get(0);
        Ok(u64::try_from(version).unwrap_or(0))
    }

    /// Every active service of a tenant not suspended, with the spec of its
    /// active version, read in one transaction so that the version number
    /// matches the contents. A service's domains are its platform name and
    /// the version's custom domains it holds a verified claim on: a pending
    /// domain reaches no node.
    pub async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(db("reading the snapshot"))?;
        let version: i64 = sqlx::query("SELECT version FROM snapshot WHERE id = 1")
            .fetch_one(&mut *tx)
            .await
            .map_err(db("reading the snapshot version"))?
            .get(0);
        let rows = sqlx::query(
            "SELECT t.name, s.name, v.number, v.module_sha256, v.spec, c.cert_pem, c.key_pem, \
             s.created_at, s.id \
             FROM services s \
             JOIN tenants t ON t.id = s.tenant_id \
             JOIN versions v ON v.service_id = s.id AND v.number = s.active_version \
             LEFT JOIN certificates c ON c.service_id = s.id \
             WHERE t.suspended = 0 \
             ORDER BY s.created_at, t.name, s.name",
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(db("reading the snapshot"))?;
        let verified: HashSet<(String, String)> =
            sqlx::query("SELECT service_id, domain FROM domains WHERE verified = 1")
                .fetch_all(&mut *tx)
                .await
                .map_err(db("reading the snapshot"))?
                .iter()
                .map(|row| (row.get(0), row.get(1)))
                .collect();
        tx.commit().await.map_err(db("reading the snapshot"))?;
        let services = rows
            .iter()
            .map(|row| {
                let tenant: String = row.get(0);
                let service: String = row.get(1);
                let service_id: String = row.get(8);
                let platform_name = format!("{service}.{tenant}.{}", self.platform_domain);
                let mut spec = spec_from(&row.get::<String, _>(4))?;
                let custom = std::mem::take(&mut spec.domains);
                spec.domains = std::iter::once(platform_name.clone())
                    .chain(custom.into_iter().filter(|domain| {
                        *domain != platform_name
                            && verified.contains(&(service_id.clone(), domain.clone()))
                    }))
                    .collect();
                Ok(SnapshotService {
                    name: format!("{tenant}/{service}"),
                    tenant,
                    version: u64::try_from(row.get::<i64, _>(2)).unwrap_or(0),
                    module_sha256: row.get(3),
                    spec,
                    created_at_ms: u64::try_from(row.get::<i64, _>(7)).unwrap_or(0),
                    certificate: certificates::from_columns(row.get(5), row.get(6)),
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(Snapshot {
            version: u64::try_from(version).unwrap_or(0),
            services,
        })
    }

    // ----- nodes and usage ----------------------------------------------------

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
        let mut tx = self.pool.begin().await.map_err(db("removing a node"))?;
        sqlx::query("DELETE FROM node_failures WHERE node_id = $1")
            .bind(node_id)
            .execute(&mut *tx)
            .await
            .map_err(db("removing a node"))?;
        let removed = sqlx::query("DELETE FROM nodes WHERE id = $1")
            .bind(node_id)
            .execute(&mut *tx)
            .await
            .map_err(db("removing a node"))?;
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

    /// Adds a node's usage report to the per-service totals, in one
    /// transaction. Services the report names that no longer exist are
    /// skipped.
    /// Adds a node's report to its services' usage, once: a report whose
    /// id this node sent before (in the last week) is not counted again.
    /// Returns whether it was counted.
    pub async fn add_usage(&self, node_id: &str, report: &UsageReport) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db("recording usage"))?;
        if let Some(report_id) = &report.report_id {
            let now = now_ms();
            let new = sqlx::query(
                "INSERT INTO usage_reports (node_id, report_id, received_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (node_id, report_id) DO NOTHING",
            )
            .bind(node_id)
            .bind(report_id)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db("recording usage"))?
            .rows_affected();
            if new == 0 {
                return Ok(false);
            }
        }
        for usage in &report.services {
            let Some(service_id) = service_id_by_platform_name(&mut tx, &usage.service)
                .await
                .map_err(db("recording usage"))?
            else {
                continue;
            };
            sqlx::query(&format!(
                "INSERT INTO usage (service_id, node_id, {columns}) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                 ON CONFLICT (service_id, node_id) DO UPDATE SET {sums}",
                columns = USAGE_COLUMNS.join(", "),
                sums = saturating_sums(),
            ))
            .bind(service_id)
            .bind(node_id)
            .bind(to_i64(usage.requests))
            .bind(to_i64(usage.status_2xx))
            .bind(to_i64(usage.status_3xx))
            .bind(to_i64(usage.status_4xx))
            .bind(to_i64(usage.status_5xx))
            .bind(to_i64(usage.guest_cpu_micros))
            .bind(to_i64(usage.bytes_out))
            .execute(&mut *tx)
            .await
            .map_err(db("recording usage"))?;
        }
        tx.commit().await.map_err(db("recording usage"))?;
        Ok(true)
    }

    /// Deletes usage report ids older than a week (by the
    /// `usage_reports_by_age` index).
    pub async fn prune_usage_reports(&self) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM usage_reports WHERE received_at < $1")
            .bind(now_ms() - USAGE_REPORT_ID_KEEP_MS)
            .execute(&self.pool)
            .await
            .map_err(db("pruning usage report ids"))?;
        Ok(done.rows_affected())
    }

    /// Prunes what has expired: purges, usage report ids. Run by the
    /// control plane's pruning task, never on a request's path.
    pub async fn prune(&self) -> Result<(), StoreError> {
        // In batches, so that a backlog never holds the database long.
        while self.prune_purges(PRUNE_BATCH).await? == PRUNE_BATCH as u64 {}
        self.prune_usage_reports().await?;
        Ok(())
    }

    /// Every tenant's usage per service, for `/metrics`.
    pub async fn all_usage(&self) -> Result<Vec<(String, UsageTotals)>, StoreError> {
        let mut all = Vec::new();
        for tenant in self.list_tenants().await? {
            for usage in self.usage(&tenant.id).await? {
                all.push((tenant.name.clone(), usage));
            }
        }
        Ok(all)
    }

    /// A tenant's usage per service, summed over nodes. The sums are made
    /// here, saturating, not in SQL: SQLite's `sum()` fails on an integer
    /// overflow, and one bad row would fail the whole answer (and
    /// `/metrics`).
    pub async fn usage(&self, tenant_id: &str) -> Result<Vec<UsageTotals>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT s.name, {columns} FROM services s LEFT JOIN usage u ON u.service_id = s.id \
             WHERE s.tenant_id = $1 ORDER BY s.name",
            columns = USAGE_COLUMNS.map(|c| format!("u.{c}")).join(", "),
        ))
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db("reading usage"))?;
        let mut totals: Vec<UsageTotals> = Vec::new();
        for row in &rows {
            let service: String = row.get(0);
            let mut counts = [0i64; USAGE_COLUMNS.len()];
            for (i, count) in counts.iter_mut().enumerate() {
                // NULL for a service with no usage yet.
                *count = row
                    .try_get::<Option<i64>, _>(i + 1)
                    .ok()
                    .flatten()
                    .unwrap_or(0);
            }
            let total = match totals.last_mut() {
                Some(last) if last.service == service => last,
                _ => {
                    totals.push(UsageTotals {
                        service,
                        ..UsageTotals::default()
                    });
                    totals.last_mut().expect("just pushed")
                }
            };
            let [requests, s2, s3, s4, s5, cpu, bytes] = counts;
            total.requests = total.requests.saturating_add(requests);
            total.status_2xx = total.status_2xx.saturating_add(s2);
            total.status_3xx = total.status_3xx.saturating_add(s3);
            total.status_4xx = total.status_4xx.saturating_add(s4);
            total.status_5xx = total.status_5xx.saturating_add(s5);
            total.guest_cpu_micros = total.guest_cpu_micros.saturating_add(cpu);
            total.bytes_out = total.bytes_out.saturating_add(bytes);
        }
        Ok(totals)
    }
}

/// The counters of a `usage` row, in the order of [`UsageTotals`].
const USAGE_COLUMNS: [&str; 7] = [
    "requests",
    "status_2xx",
    "status_3xx",
    "status_4xx",
    "status_5xx",
    "guest_cpu_micros",
    "bytes_out",
];

/// `col = usage.col + excluded.col` for each counter, stopping at
/// `i64::MAX` instead of failing the report (PostgreSQL raises on an
/// overflow).
fn saturating_sums() -> String {
    USAGE_COLUMNS
        .map(|c| {
            format!(
                "{c} = CASE WHEN usage.{c} > {max} - excluded.{c} THEN {max} \
                 ELSE usage.{c} + excluded.{c} END",
                max = i64::MAX
            )
        })
        .join(", ")
}

/// The spec of the service's active version, if it has one.
async fn active_spec(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    service_id: &str,
) -> Result<Option<ServiceSpec>, StoreError> {
    let row = sqlx::query(
        "SELECT v.spec FROM services s JOIN versions v \
         ON v.service_id = s.id AND v.number = s.active_version WHERE s.id = $1",
    )
    .bind(service_id)
    .fetch_optional(&mut **tx)
    .await
    .map_err(db("reading the active version"))?;
    row.map(|row| spec_from(&row.get::<String, _>(0)))
        .transpose()
}

fn tenant_from_row(row: &sqlx::any::AnyRow) -> Tenant {
    Tenant {
        id: row.get(0),
        name: row.get(1),
        created_at: row.get(2),
        allow_private_backends: row.get::<i64, _>(3) != 0,
        suspended: row.get::<i64, _>(4) != 0,
    }
}

fn service_from_row(row: &sqlx::any::AnyRow) -> Result<Service, StoreError> {
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

fn version_from_row(row: &sqlx::any::AnyRow) -> Result<Version, StoreError> {
    Ok(Version {
        number: row.get(0),
        module_sha256: row.get(1),
        spec: spec_from(&row.get::<String, _>(2))?,
        author: row.get(3),
        created_at: row.get(4),
        node_failures: Vec::new(),
    })
}
