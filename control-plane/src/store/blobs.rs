//! Components and compiled artifacts in the database, content-addressed:
//! on PostgreSQL every replica reaches them (see [`crate::blobs`]).

use sqlx::Row;

use super::db::{Store, StoreError, db, now_ms};

/// What a blob is: the component a tenant uploaded, or the artifact an
/// engine compiled from it and its manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobKind {
    Component,
    Artifact,
    Manifest,
}

impl BlobKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Component => "component",
            Self::Artifact => "artifact",
            Self::Manifest => "manifest",
        }
    }
}

/// One blob: its component's hash, kind and (for an artifact or manifest)
/// the engine fingerprint it was compiled for.
#[derive(Debug, Clone, Copy)]
pub struct BlobKey<'a> {
    pub sha256: &'a str,
    pub kind: BlobKind,
    pub fingerprint: &'a str,
}

impl BlobKey<'_> {
    fn fingerprint(&self) -> &str {
        match self.kind {
            BlobKind::Component => "",
            BlobKind::Artifact | BlobKind::Manifest => self.fingerprint,
        }
    }
}

impl Store {
    /// Stores every blob in one transaction; one already stored is left as
    /// it is (the same key is the same bytes). Returns once committed.
    pub async fn put_blobs(&self, blobs: &[(BlobKey<'_>, &[u8])]) -> Result<(), StoreError> {
        let mut tx = self.begin("storing a module").await?;
        for (key, bytes) in blobs {
            sqlx::query(
                "INSERT INTO blobs (sha256, kind, fingerprint, bytes, created_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (sha256, kind, fingerprint) DO NOTHING",
            )
            .bind(key.sha256)
            .bind(key.kind.as_str())
            .bind(key.fingerprint())
            .bind(bytes.to_vec())
            .bind(now_ms())
            .execute(&mut *tx)
            .await
            .map_err(db("storing a module"))?;
        }
        tx.commit().await.map_err(db("storing a module"))
    }

    /// `column` of the blob `key`, if it is stored.
    async fn blob_row(
        &self,
        key: BlobKey<'_>,
        column: &str,
    ) -> Result<Option<sqlx::any::AnyRow>, StoreError> {
        sqlx::query(&format!(
            "SELECT {column} FROM blobs WHERE sha256 = $1 AND kind = $2 AND fingerprint = $3"
        ))
        .bind(key.sha256)
        .bind(key.kind.as_str())
        .bind(key.fingerprint())
        .fetch_optional(&self.pool)
        .await
        .map_err(db("reading a stored module"))
    }

    pub async fn blob(&self, key: BlobKey<'_>) -> Result<Option<Vec<u8>>, StoreError> {
        self.blob_row(key, "bytes")
            .await?
            .map(|row| row.try_get::<Vec<u8>, _>(0))
            .transpose()
            .map_err(db("reading a stored module"))
    }

    /// Whether the blob is stored, without reading its bytes.
    pub async fn has_blob(&self, key: BlobKey<'_>) -> Result<bool, StoreError> {
        Ok(self.blob_row(key, "sha256").await?.is_some())
    }
}
