//! Where components and compiled artifacts are kept. With SQLite (one
//! replica) they are files in the data directory. With PostgreSQL every
//! replica must be able to hand any module to any node, so they are kept,
//! content-addressed, in the database itself: an upload is committed there
//! before its module row, and each replica's directory is only a cache it
//! fills on first request.

use std::sync::Arc;

use edge_platform::{ArtifactStore, ModuleHash};

use crate::store::{BlobKey, BlobKind, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{what}: {source}")]
    Disk {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("the stored {0} does not match its hash")]
    Corrupt(&'static str),
}

/// One of the files an artifact has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArtifactFile {
    Artifact,
    Manifest,
}

#[derive(Debug, Clone)]
pub struct Blobs {
    /// The files on this replica's disk: the store itself on SQLite, a
    /// cache of `shared` on PostgreSQL.
    local: Arc<ArtifactStore>,
    shared: Option<Store>,
    /// One cache fill at a time: when a deploy sends every node for the
    /// same new module, one request reads it from the database and the
    /// others then find it on disk.
    filling: Arc<tokio::sync::Mutex<()>>,
}

fn disk(what: &'static str) -> impl FnOnce(std::io::Error) -> BlobError {
    move |source| BlobError::Disk { what, source }
}

fn module_error(what: &'static str) -> impl FnOnce(edge_platform::ModuleError) -> BlobError {
    move |e| BlobError::Disk {
        what,
        source: std::io::Error::other(e.to_string()),
    }
}

/// Runs blocking disk work off the runtime.
async fn blocking<T: Send + 'static>(
    what: &'static str,
    work: impl FnOnce() -> Result<T, BlobError> + Send + 'static,
) -> Result<T, BlobError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| BlobError::Disk {
            what,
            source: std::io::Error::other(e.to_string()),
        })?
}

impl Blobs {
    /// Blobs on `local` only, or, when `store` is on PostgreSQL, in the
    /// database with `local` as this replica's cache.
    pub fn new(local: ArtifactStore, store: &Store) -> Self {
        Self {
            local: Arc::new(local),
            shared: store.postgres_url().is_some().then(|| store.clone()),
            filling: Arc::default(),
        }
    }

    /// Whether the blobs live in the database the replicas share.
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// The engine fingerprint artifacts are compiled for.
    pub fn fingerprint(&self) -> &str {
        self.local.fingerprint()
    }

    /// The key of `sha256`'s blob of `kind` for this replica's engine.
    fn key<'a>(&'a self, sha256: &'a str, kind: BlobKind) -> BlobKey<'a> {
        BlobKey {
            sha256,
            kind,
            fingerprint: self.local.fingerprint(),
        }
    }

    /// Whether the component and this engine's artifact are stored: an
    /// upload of the same bytes needs no compiling.
    pub async fn has_compiled(&self, hash: &ModuleHash) -> Result<bool, BlobError> {
        match &self.shared {
            Some(store) => {
                let sha256 = hash.to_hex();
                Ok(store
                    .has_blob(self.key(&sha256, BlobKind::Artifact))
                    .await?
                    && store
                        .has_blob(self.key(&sha256, BlobKind::Component))
                        .await?)
            }
            None => Ok(self.local.artifact_paths(hash).0.exists()),
        }
    }

    /// Stores an upload's component and the artifact compiled from it.
    /// Returns once they are durable where every replica reads them.
    pub async fn put(&self, component: Vec<u8>, compiled: Vec<u8>) -> Result<(), BlobError> {
        let hash = ModuleHash::of(&component);
        let local = Arc::clone(&self.local);
        let (component, compiled, manifest) = blocking("storing a module", move || {
            local
                .insert_component(&component)
                .map_err(module_error("storing a module"))?;
            local
                .insert_artifact(&hash, &compiled)
                .map_err(module_error("storing a module"))?;
            let manifest = std::fs::read(local.artifact_paths(&hash).1)
                .map_err(disk("reading an artifact's manifest"))?;
            Ok((component, compiled, manifest))
        })
        .await?;
        if let Some(store) = &self.shared {
            let sha256 = hash.to_hex();
            let key = |kind| self.key(&sha256, kind);
            store
                .put_blobs(&[
                    (key(BlobKind::Component), &component),
                    (key(BlobKind::Artifact), &compiled),
                    (key(BlobKind::Manifest), &manifest),
                ])
                .await?;
        }
        Ok(())
    }

    /// The component's bytes, or `None` if it was never uploaded.
    pub async fn component(&self, hash: &ModuleHash) -> Result<Option<Vec<u8>>, BlobError> {
        let path = self.local.component_path(hash);
        // A cached file that no longer matches its hash is read again from
        // the database (and replaced).
        let intact = |bytes: &Vec<u8>| self.shared.is_none() || ModuleHash::of(bytes) == *hash;
        if let Some(bytes) = read_if_present(path.clone()).await?.filter(intact) {
            return Ok(Some(bytes));
        }
        let Some(store) = &self.shared else {
            return Ok(None);
        };
        let _filling = self.filling.lock().await;
        if let Some(bytes) = read_if_present(path).await?.filter(intact) {
            return Ok(Some(bytes));
        }
        let sha256 = hash.to_hex();
        let Some(bytes) = store.blob(self.key(&sha256, BlobKind::Component)).await? else {
            return Ok(None);
        };
        if ModuleHash::of(&bytes) != *hash {
            return Err(BlobError::Corrupt("component"));
        }
        let local = Arc::clone(&self.local);
        let cached = bytes.clone();
        blocking("caching a component", move || {
            local
                .insert_component(&cached)
                .map_err(module_error("caching a component"))
        })
        .await?;
        Ok(Some(bytes))
    }

    /// One file of this engine's artifact, or `None` if there is none.
    pub async fn artifact(
        &self,
        hash: &ModuleHash,
        file: ArtifactFile,
    ) -> Result<Option<Vec<u8>>, BlobError> {
        let (artifact_path, manifest_path) = self.local.artifact_paths(hash);
        let path = match file {
            ArtifactFile::Artifact => artifact_path,
            ArtifactFile::Manifest => manifest_path,
        };
        if let Some(bytes) = read_if_present(path.clone()).await? {
            return Ok(Some(bytes));
        }
        let Some(store) = &self.shared else {
            return Ok(None);
        };
        let _filling = self.filling.lock().await;
        if let Some(bytes) = read_if_present(path).await? {
            return Ok(Some(bytes));
        }
        let sha256 = hash.to_hex();
        let read = |kind| store.blob(self.key(&sha256, kind));
        let (Some(artifact), Some(manifest)) = (
            read(BlobKind::Artifact).await?,
            read(BlobKind::Manifest).await?,
        ) else {
            return Ok(None);
        };
        let local = Arc::clone(&self.local);
        let hash = *hash;
        blocking("caching an artifact", move || {
            let stored = local
                .insert_fetched_artifact(&hash, &artifact, &manifest)
                .map_err(module_error("caching an artifact"))?;
            if !stored {
                return Err(BlobError::Corrupt("artifact"));
            }
            Ok(match file {
                ArtifactFile::Artifact => artifact,
                ArtifactFile::Manifest => manifest,
            })
        })
        .await
        .map(Some)
    }
}

async fn read_if_present(path: std::path::PathBuf) -> Result<Option<Vec<u8>>, BlobError> {
    match tokio::fs::read(&path).await {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(BlobError::Disk {
            what: "reading a stored module",
            source: e,
        }),
    }
}
