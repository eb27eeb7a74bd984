//! The control plane's database: SQLite in the data directory by default,
//! PostgreSQL for several replicas. Both go through sqlx's `any` driver with
//! one SQL dialect, so every query below is the same code on both; the
//! migrations in [`migrations`] create the same schema on both.
//!
//! Every change that must be seen whole (a new version, an activation and the
//! snapshot version it bumps) is one transaction. SQLite runs in WAL mode with
//! `synchronous=FULL`, so a commit that returned is on disk.

mod blobs;
pub mod certificates;
pub mod changes;
mod db;
pub mod domains;
pub mod guest_logs;
pub mod kv;
pub mod migrations;
pub mod node_failures;
mod nodes;
pub mod purges;
mod records;
pub mod rollouts;
mod secrets;
mod services;
mod snapshots;
mod tenants;
mod usage;

pub use blobs::{BlobKey, BlobKind};
pub use usage::UsageRecorded;

use edge_config::protocol::ServiceSpec;
use sqlx::any::{AnyPoolOptions, install_default_drivers};

use db::db;
pub use db::{
    DEFAULT_PENDING_CLAIM_TTL, DEFAULT_PLATFORM_DOMAIN, Store, StoreError, now_ms, random_hex,
};
pub use records::{
    NODE_HEALTHY_WITHIN_MS, NodeFailure, NodeRecord, NodeSighting, Service, Tenant, TokenInfo,
    UsageTotals, Version,
};

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
            postgres_url: (!sqlite).then(|| db::PostgresUrl(url.clone())),
            platform_domain: DEFAULT_PLATFORM_DOMAIN.to_string(),
            pending_claim_ttl: DEFAULT_PENDING_CLAIM_TTL,
        };
        store.migrate().await?;
        store.install_change_notices().await?;
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

    /// The database's URL when it is PostgreSQL: the database several
    /// replicas may share.
    pub fn postgres_url(&self) -> Option<&str> {
        self.postgres_url.as_ref().map(|url| url.0.as_str())
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

    /// On PostgreSQL, replicas starting together take turns: each step
    /// holds a transaction-scoped advisory lock.
    pub(super) async fn lock_migrations(&self, tx: &mut db::Tx<'_>) -> Result<(), StoreError> {
        if self.postgres_url.is_some() {
            sqlx::query("SELECT pg_advisory_xact_lock(70700001)")
                .execute(&mut **tx)
                .await
                .map_err(db("waiting for another replica's migrations"))?;
        }
        Ok(())
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut tx = self.begin("creating the migrations table").await?;
        self.lock_migrations(&mut tx).await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
        )
        .execute(&mut *tx)
        .await
        .map_err(db("creating the migrations table"))?;
        tx.commit()
            .await
            .map_err(db("creating the migrations table"))?;
        for (version, statements) in migrations::MIGRATIONS {
            let mut tx = self.begin("starting a migration").await?;
            self.lock_migrations(&mut tx).await?;
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
}
