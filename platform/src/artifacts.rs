//! The content-addressed store on disk.
//!
//! ```text
//! <data_dir>/components/<sha256>.wasm                   the component as uploaded
//! <data_dir>/artifacts/<sha256>.<engine>.cwasm          compiled by engine <engine>
//! <data_dir>/artifacts/<sha256>.<engine>.json           its manifest
//! ```
//!
//! Every file is written to a temp file, fsynced and renamed into place, so a
//! crash leaves either the old state or the new one, never half a file. An
//! artifact is loaded only if its manifest names this node's engine and its
//! bytes still hash to what the manifest recorded; anything else is deleted
//! and compiled again from the component.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::engine::WASMTIME_VERSION;
use crate::module::ModuleHash;

#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("component {0} is not in the store")]
    NotFound(ModuleHash),
    #[error("component {0} on disk does not match its hash")]
    Corrupt(ModuleHash),
    #[error("component {hash} is not a valid wasi:http component: {message}")]
    Invalid { hash: ModuleHash, message: String },
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Where a loaded component came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadSource {
    /// A verified artifact, memory-mapped.
    Artifact,
    /// Compiled now (no artifact for this engine, or a bad one).
    Compiled,
}

/// What an artifact's manifest records.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct ArtifactManifest {
    component_sha256: String,
    artifact_sha256: String,
    wasmtime_version: String,
    engine_fingerprint: String,
    compiled_at_unix_seconds: u64,
}

/// Components and their compiled artifacts, by hash.
#[derive(Debug)]
pub struct ArtifactStore {
    components: PathBuf,
    artifacts: PathBuf,
    engine: Engine,
    fingerprint: String,
}

impl ArtifactStore {
    pub fn open(data_dir: &Path, engine: Engine, fingerprint: &str) -> Result<Self, ModuleError> {
        let components = data_dir.join("components");
        let artifacts = data_dir.join("artifacts");
        for dir in [&components, &artifacts] {
            fs::create_dir_all(dir).map_err(io_error("creating", dir))?;
        }
        Ok(Self {
            components,
            artifacts,
            engine,
            fingerprint: fingerprint.to_string(),
        })
    }

    /// Stores a component (once: the same bytes are stored once) and returns
    /// its hash.
    pub fn insert_component(&self, bytes: &[u8]) -> Result<ModuleHash, ModuleError> {
        let hash = ModuleHash::of(bytes);
        let path = self.component_path(&hash);
        let intact = fs::read(&path).is_ok_and(|existing| ModuleHash::of(&existing) == hash);
        if !intact {
            write_atomically(&path, bytes)?;
        }
        Ok(hash)
    }

    /// The engine fingerprint this store's artifacts are made for.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    pub fn component_path(&self, hash: &ModuleHash) -> PathBuf {
        self.components.join(format!("{hash}.wasm"))
    }

    /// Stores an artifact compiled elsewhere by an engine of this store's
    /// fingerprint (the control plane's compile worker), with its manifest.
    pub fn insert_artifact(&self, hash: &ModuleHash, compiled: &[u8]) -> Result<(), ModuleError> {
        let (artifact, manifest) = self.artifact_paths(hash);
        write_atomically(&artifact, compiled)?;
        let recorded = ArtifactManifest {
            component_sha256: hash.to_hex(),
            artifact_sha256: hex::encode(Sha256::digest(compiled)),
            wasmtime_version: WASMTIME_VERSION.to_string(),
            engine_fingerprint: self.fingerprint.clone(),
            compiled_at_unix_seconds: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        };
        let manifest_json = serde_json::to_vec_pretty(&recorded).unwrap_or_default();
        write_atomically(&manifest, &manifest_json)
    }

    /// Stores an artifact fetched from the control plane, if its manifest
    /// names this component and this node's engine and its bytes match the
    /// manifest's hash. Returns whether it was stored; when it was not, the
    /// node compiles the component itself on first load.
    pub fn insert_fetched_artifact(
        &self,
        hash: &ModuleHash,
        artifact: &[u8],
        manifest: &[u8],
    ) -> Result<bool, ModuleError> {
        let Ok(recorded) = serde_json::from_slice::<ArtifactManifest>(manifest) else {
            return Ok(false);
        };
        let acceptable = recorded.component_sha256 == hash.to_hex()
            && recorded.engine_fingerprint == self.fingerprint
            && recorded.wasmtime_version == WASMTIME_VERSION
            && recorded.artifact_sha256 == hex::encode(Sha256::digest(artifact));
        if !acceptable {
            return Ok(false);
        }
        let (artifact_path, manifest_path) = self.artifact_paths(hash);
        write_atomically(&artifact_path, artifact)?;
        write_atomically(&manifest_path, manifest)?;
        Ok(true)
    }

    /// Whether this engine's artifact for `hash` is on disk and matches its
    /// manifest.
    pub fn artifact_is_valid(&self, hash: &ModuleHash) -> bool {
        let (artifact, manifest) = self.artifact_paths(hash);
        self.verify_artifact(hash, &artifact, &manifest).is_ok()
    }

    /// Removes this engine's artifact for `hash` (a bad one, before it is
    /// fetched again).
    pub fn remove_artifact(&self, hash: &ModuleHash) {
        let (artifact, manifest) = self.artifact_paths(hash);
        let _ = fs::remove_file(artifact);
        let _ = fs::remove_file(manifest);
    }

    /// Whether the component is on disk and intact.
    pub fn has_component(&self, hash: &ModuleHash) -> bool {
        fs::read(self.component_path(hash)).is_ok_and(|bytes| ModuleHash::of(&bytes) == *hash)
    }

    /// The artifact and manifest files for `hash` under this store's engine.
    pub fn artifact_paths(&self, hash: &ModuleHash) -> (PathBuf, PathBuf) {
        let stem = format!("{hash}.{}", self.fingerprint);
        (
            self.artifacts.join(format!("{stem}.cwasm")),
            self.artifacts.join(format!("{stem}.json")),
        )
    }

    /// Loads a component for this node's engine: from its verified artifact
    /// when there is one, otherwise by compiling it (and storing the artifact).
    /// Blocking: call it off the async runtime.
    pub fn load(&self, hash: &ModuleHash) -> Result<(Component, LoadSource), ModuleError> {
        let (artifact, manifest) = self.artifact_paths(hash);
        match self.verify_artifact(hash, &artifact, &manifest) {
            Ok(()) => match self.map_artifact(&artifact) {
                Ok(component) => return Ok((component, LoadSource::Artifact)),
                Err(e) => tracing::warn!(%hash, error = %e, "artifact failed to load; recompiling"),
            },
            Err(ArtifactProblem::Missing) => {}
            Err(ArtifactProblem::Rejected(why)) => {
                tracing::warn!(%hash, path = %artifact.display(), "{why}; recompiling");
            }
        }
        let _ = fs::remove_file(&artifact);
        let _ = fs::remove_file(&manifest);
        let component = self.compile(hash, &artifact)?;
        Ok((component, LoadSource::Compiled))
    }

    fn verify_artifact(
        &self,
        hash: &ModuleHash,
        artifact: &Path,
        manifest: &Path,
    ) -> Result<(), ArtifactProblem> {
        let Ok(manifest_text) = fs::read(manifest) else {
            return Err(ArtifactProblem::Missing);
        };
        let recorded: ArtifactManifest = serde_json::from_slice(&manifest_text)
            .map_err(|e| ArtifactProblem::Rejected(format!("unreadable manifest: {e}")))?;
        if recorded.engine_fingerprint != self.fingerprint
            || recorded.wasmtime_version != WASMTIME_VERSION
        {
            return Err(ArtifactProblem::Rejected(format!(
                "artifact made by another engine (wasmtime {}, {})",
                recorded.wasmtime_version, recorded.engine_fingerprint
            )));
        }
        if recorded.component_sha256 != hash.to_hex() {
            return Err(ArtifactProblem::Rejected(
                "manifest names another component".into(),
            ));
        }
        let bytes = fs::read(artifact)
            .map_err(|e| ArtifactProblem::Rejected(format!("unreadable artifact: {e}")))?;
        if hex::encode(Sha256::digest(&bytes)) != recorded.artifact_sha256 {
            return Err(ArtifactProblem::Rejected(
                "artifact does not match its hash".into(),
            ));
        }
        Ok(())
    }

    fn map_artifact(&self, artifact: &Path) -> wasmtime::Result<Component> {
        // SAFETY: wasmtime requires that the file be a trusted artifact that
        // does not change while mapped. This node wrote it with an engine of
        // the same fingerprint, its bytes were just checked against the hash
        // recorded when it was written, and artifacts are only ever replaced
        // by rename, never modified in place.
        #[allow(unsafe_code)]
        unsafe {
            Component::deserialize_file(&self.engine, artifact)
        }
    }

    fn compile(&self, hash: &ModuleHash, artifact: &Path) -> Result<Component, ModuleError> {
        let path = self.component_path(hash);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ModuleError::NotFound(*hash));
            }
            Err(e) => return Err(io_error("reading", &path)(e)),
        };
        if ModuleHash::of(&bytes) != *hash {
            return Err(ModuleError::Corrupt(*hash));
        }
        let invalid = |e: wasmtime::Error| ModuleError::Invalid {
            hash: *hash,
            message: format!("{e:#}"),
        };
        let compiled = self.engine.precompile_component(&bytes).map_err(invalid)?;
        self.insert_artifact(hash, &compiled)?;
        self.map_artifact(artifact).map_err(invalid)
    }
}

enum ArtifactProblem {
    Missing,
    Rejected(String),
}

/// Writes `bytes` to `path` so that readers see the old file or the whole new
/// one: temp file in the same directory, fsync, rename, fsync the directory.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ModuleError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut temp =
        tempfile::NamedTempFile::new_in(dir).map_err(io_error("creating a temp file in", dir))?;
    temp.write_all(bytes)
        .map_err(io_error("writing", temp.path()))?;
    temp.as_file()
        .sync_all()
        .map_err(io_error("syncing", temp.path()))?;
    temp.persist(path)
        .map_err(|e| io_error("renaming into", path)(e.error))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error("syncing", dir))?;
    Ok(())
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ModuleError {
    let path = path.to_path_buf();
    move |source| ModuleError::Io {
        action,
        path,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine() -> Engine {
        Engine::default()
    }

    fn component_bytes() -> Vec<u8> {
        wat::parse_str(r#"(component (core module (func (export "f"))))"#).expect("valid component")
    }

    fn open(dir: &Path) -> ArtifactStore {
        let engine = engine();
        let fingerprint = crate::engine::engine_fingerprint(&engine);
        ArtifactStore::open(dir, engine, &fingerprint).expect("store opens")
    }

    /// A store in a fresh directory with the test component inserted: the
    /// directory (gone when dropped), the store and the component's hash.
    fn store_with_component() -> (tempfile::TempDir, ArtifactStore, ModuleHash) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(dir.path());
        let hash = store.insert_component(&component_bytes()).expect("insert");
        (dir, store, hash)
    }

    #[test]
    fn same_bytes_are_stored_once_under_their_hash() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(dir.path());
        let first = store.insert_component(&component_bytes()).expect("insert");
        let second = store
            .insert_component(&component_bytes())
            .expect("insert again");
        assert_eq!(first, second);
        assert_eq!(first, ModuleHash::of(&component_bytes()));
        let files: Vec<_> = fs::read_dir(dir.path().join("components"))
            .expect("dir")
            .collect();
        assert_eq!(files.len(), 1);
    }

    #[test]
    fn compiles_once_then_maps_the_verified_artifact() {
        let (dir, store, hash) = store_with_component();
        assert_eq!(store.load(&hash).expect("load").1, LoadSource::Compiled);
        assert_eq!(store.load(&hash).expect("load").1, LoadSource::Artifact);
        // A new store over the same directory (a node restart) reuses it.
        assert_eq!(
            open(dir.path()).load(&hash).expect("load").1,
            LoadSource::Artifact
        );
    }

    #[test]
    fn a_corrupted_artifact_is_detected_and_compiled_again() {
        let (_dir, store, hash) = store_with_component();
        store.load(&hash).expect("first load");
        let (artifact, _) = store.artifact_paths(&hash);
        let mut bytes = fs::read(&artifact).expect("artifact");
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        fs::write(&artifact, bytes).expect("corrupt it");
        assert_eq!(store.load(&hash).expect("load").1, LoadSource::Compiled);
        assert_eq!(store.load(&hash).expect("load").1, LoadSource::Artifact);
    }

    #[test]
    fn an_artifact_from_another_engine_is_never_loaded() {
        let (_dir, store, hash) = store_with_component();
        store.load(&hash).expect("first load");
        let (_, manifest) = store.artifact_paths(&hash);
        let text = fs::read_to_string(&manifest).expect("manifest");
        let forged = text.replace(WASMTIME_VERSION, "0.0.1");
        assert_ne!(text, forged);
        fs::write(&manifest, forged).expect("forge manifest");
        assert_eq!(store.load(&hash).expect("load").1, LoadSource::Compiled);
    }

    #[test]
    fn a_corrupted_component_is_refused() {
        let (_dir, store, hash) = store_with_component();
        fs::write(store.component_path(&hash), b"not the same bytes").expect("corrupt");
        assert!(matches!(store.load(&hash), Err(ModuleError::Corrupt(h)) if h == hash));
        let unknown = ModuleHash::of(b"never stored");
        assert!(matches!(store.load(&unknown), Err(ModuleError::NotFound(h)) if h == unknown));
    }

    #[test]
    fn a_module_that_is_not_a_component_is_invalid() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(dir.path());
        let hash = store.insert_component(b"\0asm\x01\0\0\0").expect("insert");
        assert!(matches!(
            store.load(&hash),
            Err(ModuleError::Invalid { .. })
        ));
    }
}
