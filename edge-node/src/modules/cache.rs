//! The LRU of components ready to instantiate, keyed by hash.

use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;

use edge_platform::{ArtifactStore, LoadSource, ModuleError, ModuleHash};

use crate::metrics::Metrics;
use crate::sandbox::{ReadyComponent, Sandbox};

/// How long a module that failed to load is answered with that failure
/// before it is tried again: a component this node cannot load is not
/// recompiled on every snapshot poll or request.
pub const FAILED_LOAD_RETRY_AFTER: Duration = Duration::from_secs(600);
/// Failed loads remembered at most (the oldest are forgotten first).
const FAILED_LOADS_REMEMBERED: u64 = 4096;

/// Ready components, loaded from the [`ArtifactStore`] on a miss. Concurrent
/// misses for one hash share a single load, and a failed load is remembered
/// for [`FAILED_LOAD_RETRY_AFTER`].
#[derive(Clone)]
pub struct ModuleCache {
    store: Arc<ArtifactStore>,
    sandbox: Arc<Sandbox>,
    ready: Cache<ModuleHash, ReadyComponent>,
    failed: moka::sync::Cache<ModuleHash, Arc<ModuleError>>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for ModuleCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModuleCache")
            .field("ready_entries", &self.ready.entry_count())
            .finish_non_exhaustive()
    }
}

impl ModuleCache {
    pub fn new(
        store: Arc<ArtifactStore>,
        sandbox: Arc<Sandbox>,
        max_entries: u64,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            store,
            sandbox,
            ready: Cache::new(max_entries),
            failed: moka::sync::Cache::builder()
                .max_capacity(FAILED_LOADS_REMEMBERED)
                .time_to_live(FAILED_LOAD_RETRY_AFTER)
                .build(),
            metrics,
        }
    }

    pub fn store(&self) -> &Arc<ArtifactStore> {
        &self.store
    }

    /// Whether `hash` is loaded and ready in memory.
    pub fn is_ready(&self, hash: ModuleHash) -> bool {
        self.ready.contains_key(&hash)
    }

    /// The ready component for `hash`, loading it when it is not in memory.
    pub async fn get(&self, hash: ModuleHash) -> Result<ReadyComponent, Arc<ModuleError>> {
        if let Some(ready) = self.ready.get(&hash).await {
            self.metrics.module_cache_hits.inc();
            return Ok(ready);
        }
        self.metrics.module_cache_misses.inc();
        self.load_once(hash).await
    }

    /// Loads `hash` into the cache, or answers the failure remembered for it.
    async fn load_once(&self, hash: ModuleHash) -> Result<ReadyComponent, Arc<ModuleError>> {
        if let Some(failure) = self.failed.get(&hash) {
            return Err(failure);
        }
        let loaded = self.ready.try_get_with(hash, self.load(hash)).await;
        match &loaded {
            // The LRU evicts in its housekeeping, which it runs when it
            // sees fit: run it now, so that `module_cache_entries` bounds
            // what is in memory after every load, not eventually.
            Ok(_) => self.ready.run_pending_tasks().await,
            Err(failure) => self.failed.insert(hash, Arc::clone(failure)),
        }
        loaded
    }

    async fn load(&self, hash: ModuleHash) -> Result<ReadyComponent, ModuleError> {
        let store = Arc::clone(&self.store);
        let sandbox = Arc::clone(&self.sandbox);
        let loaded = tokio::task::spawn_blocking(move || {
            let (component, source) = store.load(&hash)?;
            let ready = sandbox
                .prepare(&component)
                .map_err(|e| ModuleError::Invalid {
                    hash,
                    message: format!("{e:#}"),
                })?;
            Ok::<_, ModuleError>((ready, source))
        })
        .await
        .unwrap_or_else(|join_error| {
            Err(ModuleError::Invalid {
                hash,
                message: format!("loading panicked: {join_error}"),
            })
        });
        let source = match &loaded {
            Ok((_, LoadSource::Artifact)) => "artifact",
            Ok((_, LoadSource::Compiled)) => "compiled",
            Err(_) => "failed",
        };
        self.metrics.module_loads.with_label_values(&[source]).inc();
        loaded.map(|(ready, _)| ready)
    }

    /// Loads `hash` now, so that its first request does not pay for it.
    pub async fn preload(&self, hash: ModuleHash) -> Result<(), Arc<ModuleError>> {
        self.load_once(hash).await.map(drop)
    }

    /// Forgets a failed load of `hash`, so the next use tries again (its
    /// files were just replaced).
    pub fn retry(&self, hash: ModuleHash) {
        self.failed.invalidate(&hash);
    }
}
