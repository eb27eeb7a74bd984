//! Domain claims: which service holds a custom domain, and whether its
//! tenant has proved control of it.
//!
//! - A claim conflicts with every claim of another tenant that it equals,
//!   covers or is covered by (`www.alpha.test` under `*.alpha.test`,
//!   `*.x.alpha.test` under `*.alpha.test`, and the other way round), and
//!   with the same name in another service of the same tenant.
//! - A service holds the custom domains of its current spec and of its
//!   active version: a version that is activated (or rolled back to) claims
//!   its domains again in the same transaction, or fails with a conflict.
//! - A claim starts pending; only verified claims reach the snapshot
//!   (see [`Store::snapshot`](super::Store::snapshot)). A pending claim
//!   blocks other tenants for the pending-claim TTL (7 days by default);
//!   after that the next overlapping claim releases it.
//!
//! Every transaction that claims first takes the snapshot row's lock, so
//! two overlapping claims on PostgreSQL cannot both pass the check.

use std::collections::HashSet;

use edge_config::domain::{base_name, challenge_record, covering_wildcards, overlaps};
use edge_config::protocol::MAX_DOMAINS_PER_SERVICE;
use sqlx::Row;

use super::db::{
    Counter, Store, StoreError, Tx, add_to_counter, commit_new_snapshot, commit_new_snapshot_if,
    current_spec, db, now_ms, random_hex, write_spec,
};
use super::records::Service;
pub use edge_config::api::{Challenge, DomainClaim};

/// Serializes claiming transactions: every one of them takes the snapshot
/// row's lock (adding nothing to it).
pub(super) async fn lock_claims(tx: &mut Tx<'_>) -> Result<(), StoreError> {
    add_to_counter(tx, Counter::Snapshot, 0, "locking domain claims").await
}

/// Claims each of `domains` (normalized custom domains) for `service`,
/// unless it already holds it. Other tenants' pending claims made before
/// `expired_before` (Unix ms) no longer block anyone: they are released
/// first, so a claim nobody proves cannot keep a name from its owner.
pub(super) async fn claim(
    tx: &mut Tx<'_>,
    service: &Service,
    domains: &[String],
    expired_before: i64,
) -> Result<(), StoreError> {
    if !domains.is_empty() {
        sqlx::query(
            "DELETE FROM domains WHERE verified = 0 AND created_at <= $1 AND tenant_id <> $2",
        )
        .bind(expired_before)
        .bind(&service.tenant_id)
        .execute(&mut **tx)
        .await
        .map_err(db("releasing expired domain claims"))?;
    }
    for domain in domains {
        claim_one(tx, service, domain).await?;
    }
    Ok(())
}

async fn claim_one(tx: &mut Tx<'_>, service: &Service, domain: &str) -> Result<(), StoreError> {
    let held = sqlx::query("SELECT service_id, tenant_id FROM domains WHERE domain = $1")
        .bind(domain)
        .fetch_optional(&mut **tx)
        .await
        .map_err(db("reading a domain claim"))?;
    if let Some(row) = held {
        let (service_id, tenant_id): (String, String) = (row.get(0), row.get(1));
        if service_id == service.id {
            return Ok(());
        }
        return Err(StoreError::DomainConflict(
            if tenant_id == service.tenant_id {
                format!("domain {domain} is used by another of your services")
            } else {
                format!("domain {domain} is held by another tenant")
            },
        ));
    }
    // Another tenant's claim that covers this one, or that it covers.
    let covering = covering_wildcards(domain);
    let mut sql = String::from("SELECT domain FROM domains WHERE tenant_id <> $1 AND (");
    let mut binds: Vec<String> = Vec::new();
    if domain.starts_with("*.") {
        binds.push(format!("%.{}", base_name(domain)));
        sql.push_str("domain LIKE $2");
    } else {
        sql.push_str("1 = 0");
    }
    for wildcard in covering {
        binds.push(wildcard);
        sql.push_str(&format!(" OR domain = ${}", binds.len() + 1));
    }
    sql.push(')');
    let mut query = sqlx::query(&sql).bind(&service.tenant_id);
    for bind in &binds {
        query = query.bind(bind);
    }
    let others = query
        .fetch_all(&mut **tx)
        .await
        .map_err(db("checking domain claims"))?;
    if others
        .iter()
        .any(|row| overlaps(&row.get::<String, _>(0), domain))
    {
        return Err(StoreError::DomainConflict(format!(
            "domain {domain} overlaps a domain another tenant holds"
        )));
    }
    sqlx::query(
        "INSERT INTO domains (domain, service_id, tenant_id, verified, challenge, created_at) \
         VALUES ($1, $2, $3, 0, $4, $5)",
    )
    .bind(domain)
    .bind(&service.id)
    .bind(&service.tenant_id)
    .bind(random_hex(16))
    .bind(now_ms())
    .execute(&mut **tx)
    .await
    .map_err(db("claiming a domain"))?;
    Ok(())
}

/// Releases the service's claims on every domain not in `keep`.
pub(super) async fn release_except(
    tx: &mut Tx<'_>,
    service_id: &str,
    keep: &HashSet<&str>,
) -> Result<(), StoreError> {
    let rows = sqlx::query("SELECT domain FROM domains WHERE service_id = $1")
        .bind(service_id)
        .fetch_all(&mut **tx)
        .await
        .map_err(db("reading domain claims"))?;
    for row in rows {
        let domain: String = row.get(0);
        if !keep.contains(domain.as_str()) {
            sqlx::query("DELETE FROM domains WHERE domain = $1")
                .bind(&domain)
                .execute(&mut **tx)
                .await
                .map_err(db("releasing a domain"))?;
        }
    }
    Ok(())
}

impl Store {
    /// The service's platform domain and its claims.
    pub async fn domains(&self, service: &Service) -> Result<Vec<DomainClaim>, StoreError> {
        let rows = sqlx::query(
            "SELECT domain, verified, challenge FROM domains WHERE service_id = $1 ORDER BY domain",
        )
        .bind(&service.id)
        .fetch_all(&self.pool)
        .await
        .map_err(db("listing domains"))?;
        let mut claims = vec![DomainClaim {
            domain: self.platform_name(service),
            status: "platform".into(),
            challenge: None,
        }];
        claims.extend(rows.iter().map(|row| {
            let domain: String = row.get(0);
            let verified = row.get::<i64, _>(1) != 0;
            DomainClaim {
                challenge: (!verified).then(|| Challenge {
                    record_type: "TXT".into(),
                    name: challenge_record(&domain),
                    value: row.get(2),
                }),
                status: if verified { "verified" } else { "pending" }.into(),
                domain,
            }
        }));
        Ok(claims)
    }

    /// Marks a claim verified (its tenant proved control, or the operator
    /// approved it) and bumps the snapshot version, so nodes route it.
    /// Returns the new snapshot version, or `None` if no one claims it.
    pub async fn verify_domain(&self, domain: &str) -> Result<Option<u64>, StoreError> {
        self.mark_verified(domain, None).await
    }

    /// Marks the service's claim verified, provided it still holds it with
    /// the same token: a claim released and re-made (by anyone) while its
    /// TXT record was being read gets a new token and stays pending.
    pub async fn verify_claim(
        &self,
        service: &Service,
        domain: &str,
        token: &str,
    ) -> Result<Option<u64>, StoreError> {
        self.mark_verified(domain, Some((&service.id, token))).await
    }

    /// The token a pending claim of the service must publish, `Some(None)`
    /// if the claim is verified already, `None` if the service holds no
    /// claim on `domain`.
    pub async fn claim_token(
        &self,
        service: &Service,
        domain: &str,
    ) -> Result<Option<Option<String>>, StoreError> {
        let row = sqlx::query(
            "SELECT verified, challenge FROM domains WHERE domain = $1 AND service_id = $2",
        )
        .bind(domain)
        .bind(&service.id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("reading a domain claim"))?;
        Ok(row.map(|row| (row.get::<i64, _>(0) == 0).then(|| row.get(1))))
    }

    async fn mark_verified(
        &self,
        domain: &str,
        holder: Option<(&str, &str)>,
    ) -> Result<Option<u64>, StoreError> {
        let mut tx = self.begin("verifying a domain").await?;
        let done = match holder {
            None => sqlx::query("UPDATE domains SET verified = 1 WHERE domain = $1").bind(domain),
            Some((service_id, token)) => sqlx::query(
                "UPDATE domains SET verified = 1 \
                 WHERE domain = $1 AND service_id = $2 AND challenge = $3",
            )
            .bind(domain)
            .bind(service_id)
            .bind(token),
        }
        .execute(&mut *tx)
        .await
        .map_err(db("verifying a domain"))?;
        commit_new_snapshot_if(tx, done.rows_affected() > 0, "verifying a domain").await
    }

    /// Adds `domain` to the service's spec and claims it (pending).
    pub async fn add_domain(&self, service: &Service, domain: &str) -> Result<(), StoreError> {
        let mut tx = self.begin("adding a domain").await?;
        lock_claims(&mut tx).await?;
        let mut spec = current_spec(&mut tx, &service.id).await?;
        if !spec.domains.iter().any(|d| d == domain) {
            // The spec's own bound holds here too: claims one at a time
            // must not add up past what one spec may name.
            if spec.domains.len() >= MAX_DOMAINS_PER_SERVICE {
                return Err(StoreError::InvalidSpec(format!(
                    "domains: at most {MAX_DOMAINS_PER_SERVICE} domains per service"
                )));
            }
            spec.domains.push(domain.to_string());
        }
        claim(
            &mut tx,
            service,
            &[domain.to_string()],
            self.pending_claims_expire_before(),
        )
        .await?;
        write_spec(&mut tx, &service.id, &spec).await?;
        tx.commit().await.map_err(db("adding a domain"))?;
        Ok(())
    }

    /// Removes `domain` from the service's spec and releases the claim at
    /// once: nodes stop routing it, even if the active version names it.
    /// Returns the new snapshot version, or `None` if the service did not
    /// hold it.
    pub async fn remove_domain(
        &self,
        service: &Service,
        domain: &str,
    ) -> Result<Option<u64>, StoreError> {
        let mut tx = self.begin("removing a domain").await?;
        let mut spec = current_spec(&mut tx, &service.id).await?;
        let before = spec.domains.len();
        spec.domains.retain(|d| d != domain);
        let released = sqlx::query("DELETE FROM domains WHERE domain = $1 AND service_id = $2")
            .bind(domain)
            .bind(&service.id)
            .execute(&mut *tx)
            .await
            .map_err(db("releasing a domain"))?;
        if released.rows_affected() == 0 && spec.domains.len() == before {
            return Ok(None);
        }
        write_spec(&mut tx, &service.id, &spec).await?;
        commit_new_snapshot(tx, "removing a domain").await.map(Some)
    }
}
