//! Each service's TLS certificate and key. One per service; an upload
//! replaces it and bumps the snapshot version, so a rotation reaches every
//! node without a deploy. The key is only ever read for the snapshot.

use edge_config::CertificatePem;
use edge_config::tls::SecretPem;
use sqlx::Row;

use super::db::{Store, StoreError, bump_snapshot, db, now_ms};
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
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(db("storing a certificate"))?;
        sqlx::query("DELETE FROM certificates WHERE service_id = $1")
            .bind(&service.id)
            .execute(&mut *tx)
            .await
            .map_err(db("replacing a certificate"))?;
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
        let version = bump_snapshot(&mut tx).await?;
        tx.commit().await.map_err(db("storing a certificate"))?;
        Ok(version)
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
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(db("removing a certificate"))?;
        let removed = sqlx::query("DELETE FROM certificates WHERE service_id = $1")
            .bind(&service.id)
            .execute(&mut *tx)
            .await
            .map_err(db("removing a certificate"))?
            .rows_affected();
        if removed > 0 {
            bump_snapshot(&mut tx).await?;
        }
        tx.commit().await.map_err(db("removing a certificate"))?;
        Ok(removed > 0)
    }
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
