//! Each service's TLS certificate and key. One per service; an upload
//! replaces it and bumps the snapshot version, so a rotation reaches every
//! node without a deploy. The key is only ever read for the snapshot.

use edge_config::CertificatePem;
use edge_config::tls::SecretPem;
use sqlx::Row;

use super::db::{Store, StoreError, Tx, commit_new_snapshot, commit_new_snapshot_if, db, now_ms};
use super::records::Service;
pub use edge_config::api::CertificateInfo;

impl Store {
    /// Stores `pem` as the service's certificate, replacing any other, and
    /// returns the new snapshot version.
    pub async fn put_certificate(
        &self,
        service: &Service,
        pem: &CertificatePem,
        fingerprint_sha256: &str,
    ) -> Result<u64, StoreError> {
        let mut tx = self.begin("storing a certificate").await?;
        remove_certificate(&mut tx, service, "replacing a certificate").await?;
        sqlx::query(
            "INSERT INTO certificates (service_id, cert_pem, key_pem, fingerprint_sha256, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&service.id)
        .bind(&pem.cert_pem)
        .bind(&pem.key_pem.0)
        .bind(fingerprint_sha256)
        .bind(now_ms())
        .execute(&mut *tx)
        .await
        .map_err(db("storing a certificate"))?;
        commit_new_snapshot(tx, "storing a certificate").await
    }

    pub async fn certificate_info(
        &self,
        service: &Service,
    ) -> Result<Option<CertificateInfo>, StoreError> {
        let row = sqlx::query(
            "SELECT fingerprint_sha256, created_at FROM certificates WHERE service_id = $1",
        )
        .bind(&service.id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("reading a certificate"))?;
        Ok(row.map(|row| CertificateInfo {
            fingerprint_sha256: row.get(0),
            created_at: row.get(1),
        }))
    }

    /// Removes the service's certificate; its clients get the node's
    /// default. Returns whether there was one.
    pub async fn delete_certificate(&self, service: &Service) -> Result<bool, StoreError> {
        let mut tx = self.begin("removing a certificate").await?;
        let removed = remove_certificate(&mut tx, service, "removing a certificate").await?;
        let version = commit_new_snapshot_if(tx, removed, "removing a certificate").await?;
        Ok(version.is_some())
    }
}

/// Deletes the service's certificate in `tx`; returns whether it had one.
async fn remove_certificate(
    tx: &mut Tx<'_>,
    service: &Service,
    what: &'static str,
) -> Result<bool, StoreError> {
    let done = sqlx::query("DELETE FROM certificates WHERE service_id = $1")
        .bind(&service.id)
        .execute(&mut **tx)
        .await
        .map_err(db(what))?;
    Ok(done.rows_affected() > 0)
}

/// A certificate from a snapshot query's `cert_pem`, `key_pem` columns.
pub(super) fn from_columns(
    cert_pem: Option<String>,
    key_pem: Option<String>,
) -> Option<CertificatePem> {
    Some(CertificatePem {
        cert_pem: cert_pem?,
        key_pem: SecretPem(key_pem?),
    })
}
