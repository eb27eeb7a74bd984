//! KV stores on the node: the local replica every read is served from
//! ([`replica`]), and the way a guest's write goes to the control plane,
//! which decides it, and comes back into the replica at once.
//!
//! Consistency: a write is acknowledged to the guest once the control plane
//! has committed it, and the writing node's replica has it before the guest
//! reads again (read-your-writes on that node). Other nodes get it through
//! the change feed (`crate::sync`), eventually: in well under a second on
//! loopback (docs/performance.md has the lag measured). Reads never wait for
//! the control plane, and keep working while it is down; writes then fail
//! with an error the guest sees.

pub mod replica;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use edge_config::state::{KvOp, KvWrite, KvWritten};

pub use replica::{KeyPage, Replica, ReplicaError};

/// Why a write did not happen. The message is the guest's to read: it
/// names the limit or the cause, never another tenant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvWriteError {
    #[error("the KV store is not reachable for writes: {0}")]
    Unavailable(String),
    #[error("{0}")]
    Refused(String),
    #[error("no such store")]
    NoSuchStore,
}

/// What sends a write to the control plane: the follower's link, once the
/// node follows one.
pub trait KvWriter: Send + Sync + std::fmt::Debug {
    fn write(
        &self,
        write: KvWrite,
    ) -> Pin<Box<dyn Future<Output = Result<KvWritten, KvWriteError>> + Send + '_>>;
}

/// The node's KV counters (registered with its metrics).
#[derive(Debug, Clone)]
pub struct KvMetrics {
    pub reads: prometheus::IntCounter,
    pub writes: prometheus::IntCounterVec,
}

/// The node's KV stores: its replica, and where writes go. Both come with
/// the control plane: a node that follows none has no store to open.
#[derive(Debug)]
pub struct Kv {
    replica: OnceLock<Replica>,
    writer: OnceLock<Arc<dyn KvWriter>>,
    metrics: KvMetrics,
}

/// How long opening the replica waits for an earlier node of this process
/// on the same data dir to let go of it (a test restarting its node).
const OPEN_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

impl Kv {
    pub fn new(metrics: KvMetrics) -> Self {
        Self {
            replica: OnceLock::new(),
            writer: OnceLock::new(),
            metrics,
        }
    }

    /// Counts `keys` keys read by guests.
    pub fn count_reads(&self, keys: usize) {
        self.metrics.reads.inc_by(keys as u64);
    }

    /// Opens the replica at `path` (once). The file is locked while open.
    pub async fn open_replica(&self, path: &std::path::Path) -> Result<&Replica, ReplicaError> {
        if let Some(replica) = self.replica.get() {
            return Ok(replica);
        }
        let deadline = tokio::time::Instant::now() + OPEN_WAIT;
        let replica = loop {
            let path = path.to_path_buf();
            let opened = tokio::task::spawn_blocking(move || Replica::open(&path))
                .await
                .map_err(|e| ReplicaError::Closed(e.to_string()))?;
            match opened {
                Err(error) if error.already_open() && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                other => break other?,
            }
        };
        Ok(self.replica.get_or_init(|| replica))
    }

    /// The replica, once opened.
    pub fn replica(&self) -> Result<&Replica, ReplicaError> {
        self.replica
            .get()
            .ok_or_else(|| ReplicaError::Closed("this node follows no control plane".into()))
    }

    /// Sends writes through `writer` from now on (set once, by the
    /// follower).
    pub fn set_writer(&self, writer: Arc<dyn KvWriter>) {
        let _ = self.writer.set(writer);
    }

    /// Has the control plane decide `op` on `tenant`'s store `store` (its
    /// id), then applies what it decided to the replica, off the async
    /// workers: the replica's one writer may be waiting on the feed's fsync.
    pub async fn write(
        self: &Arc<Self>,
        tenant: &str,
        store: &str,
        op: KvOp,
    ) -> Result<KvWritten, KvWriteError> {
        let writer = self.writer.get().ok_or_else(|| {
            KvWriteError::Unavailable("this node follows no control plane".to_string())
        })?;
        let written = writer
            .write(KvWrite {
                tenant: tenant.to_string(),
                store: store.to_string(),
                op,
            })
            .await;
        let outcome = match &written {
            Ok(_) => "ok",
            Err(KvWriteError::Refused(_)) => "refused",
            Err(KvWriteError::Unavailable(_)) => "unavailable",
            Err(KvWriteError::NoSuchStore) => "no_such_store",
        };
        self.metrics.writes.with_label_values(&[outcome]).inc();
        let written = written?;
        let (kv, changes) = (Arc::clone(self), written.changes.clone());
        let applied = tokio::task::spawn_blocking(move || {
            kv.replica().and_then(|replica| replica.apply_own(&changes))
        })
        .await
        .unwrap_or_else(|e| Err(ReplicaError::Closed(e.to_string())));
        if let Err(error) = applied {
            // Committed on the control plane: the feed brings it.
            tracing::warn!(%error, "own KV write not applied locally; the feed will bring it");
        }
        Ok(written)
    }
}
