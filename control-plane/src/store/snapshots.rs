//! The config snapshot every node follows: its version and what it holds.

use std::collections::HashSet;

use edge_config::protocol::{Snapshot, SnapshotCanary, SnapshotService};
use sqlx::Row;

use super::certificates;
use super::db::{Counter, Store, StoreError, db, read_counter, spec_from};

impl Store {
    pub async fn snapshot_version(&self) -> Result<u64, StoreError> {
        read_counter(
            &self.pool,
            Counter::Snapshot,
            "reading the snapshot version",
        )
        .await
    }

    /// Every active service of a tenant not suspended, with the spec of its
    /// active version, read in one transaction so that the version number
    /// matches the contents. A service's domains are its platform name and
    /// the version's custom domains it holds a verified claim on: a pending
    /// domain reaches no node.
    ///
    /// On PostgreSQL the transaction reads one moment (repeatable read):
    /// under the default isolation each statement would see what had
    /// committed by then, and two replicas could build different contents
    /// for one version, which a delta from one applied to the other's
    /// would make wrong. (SQLite's one connection sees one moment anyway.)
    pub async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let mut tx = self.begin("reading the snapshot").await?;
        if self.postgres_url.is_some() {
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                .execute(&mut *tx)
                .await
                .map_err(db("reading the snapshot"))?;
        }
        let version =
            read_counter(&mut *tx, Counter::Snapshot, "reading the snapshot version").await?;
        let rows = sqlx::query(
            "SELECT t.name, s.name, v.number, v.module_sha256, v.spec, c.cert_pem, c.key_pem, \
             s.created_at, s.id, cn.version, cn.percent, cn.sticky, cv.module_sha256, cv.spec \
             FROM services s \
             JOIN tenants t ON t.id = s.tenant_id \
             JOIN versions v ON v.service_id = s.id AND v.number = s.active_version \
             LEFT JOIN certificates c ON c.service_id = s.id \
             LEFT JOIN canaries cn ON cn.service_id = s.id \
             LEFT JOIN versions cv ON cv.service_id = s.id AND cv.number = cn.version \
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
        let kv_stores = Self::snapshot_kv_stores(&mut tx).await?;
        let secrets = Self::snapshot_secrets(&mut tx).await?;
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
                // The secrets a version lists that the tenant has set.
                let sealed = |spec: &edge_config::protocol::ServiceSpec| {
                    spec.secrets
                        .iter()
                        .filter_map(|name| secrets.get(&(tenant.clone(), name.clone())).cloned())
                        .collect::<Vec<_>>()
                };
                // A canary serves on the stable version's domains.
                let canary = match row.get::<Option<i64>, _>(9) {
                    Some(version) => {
                        let mut canary_spec = spec_from(&row.get::<String, _>(13))?;
                        canary_spec.domains = spec.domains.clone();
                        Some(SnapshotCanary {
                            version: u64::try_from(version).unwrap_or(0),
                            module_sha256: row.get(12),
                            secrets: sealed(&canary_spec),
                            spec: canary_spec,
                            percent: u8::try_from(row.get::<i64, _>(10)).unwrap_or(0),
                            sticky: serde_json::from_str(&row.get::<String, _>(11)).map_err(
                                |e| StoreError::Corrupt(format!("canary sticky key: {e}")),
                            )?,
                        })
                    }
                    None => None,
                };
                Ok(SnapshotService {
                    secrets: sealed(&spec),
                    canary,
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
        let mut snapshot = Snapshot {
            version,
            services,
            kv_stores,
        };
        snapshot.sort_services();
        Ok(snapshot)
    }

    // ----- nodes and usage ----------------------------------------------------
}
