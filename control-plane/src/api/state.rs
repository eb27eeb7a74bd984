//! What every handler shares: the API's configuration, the store, the
//! artifact store, the compiler, the change signals the long-polls wait
//! on, metrics and quotas.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use edge_config::SandboxLimits;
use tokio::sync::watch;

use crate::compile::Compiler;
use crate::store::Store;

/// Uploads larger than this are refused with 413.
pub const DEFAULT_MAX_UPLOAD_BYTES: usize = 50 * 1024 * 1024;
/// How long a snapshot long-poll waits for a newer version before answering
/// 304 Not Modified.
pub const DEFAULT_SNAPSHOT_WAIT: Duration = Duration::from_secs(30);

/// What the API needs to know, from the command line or the embedding test.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub data_dir: PathBuf,
    pub admin_token: String,
    pub cluster_token: String,
    pub max_upload_bytes: usize,
    pub snapshot_wait: Duration,
    /// Sandbox sizing the nodes run with: service limits are checked
    /// against it.
    pub sandbox: SandboxLimits,
    /// Services are served as `<service>.<tenant>.<platform_domain>`.
    pub platform_domain: String,
    /// Where custom domains' TXT challenges are looked up; without one,
    /// only the operator's approval verifies a domain.
    pub dns_resolver: Option<crate::dns::ChallengeResolver>,
    /// How long another tenant's pending domain claim blocks a name.
    pub pending_claim_ttl: Duration,
    /// Serve HTTPS with this certificate; plaintext HTTP without it.
    pub tls: Option<crate::tls::TlsFiles>,
    /// Per-tenant quotas and rates, and the bound on compiles at once.
    pub quotas: crate::quotas::QuotaConfig,
    /// A connection that has waited this long for a byte is closed (see
    /// [`crate::idle`]).
    pub idle_read_timeout: Duration,
    /// Seals tenants' secrets; without it none can be set.
    pub secrets_key: Option<Arc<edge_platform::secrets::SecretsKey>>,
}

/// Shared by every handler.
#[derive(Debug, Clone)]
pub struct AppState {
    pub store: Store,
    pub config: Arc<ApiConfig>,
    /// Components and artifacts: on disk, or in the database the
    /// replicas share.
    pub blobs: crate::blobs::Blobs,
    pub compiler: Compiler,
    /// The newest snapshot version this replica committed; long-polls wait
    /// on it (and re-read the database, for changes made by other replicas).
    pub snapshot_changed: Arc<watch::Sender<u64>>,
    /// The newest purge this replica recorded; purge long-polls wait on it.
    pub purges_changed: Arc<watch::Sender<u64>>,
    /// The newest KV change this replica committed; feed long-polls wait
    /// on it.
    pub kv_changed: Arc<watch::Sender<u64>>,
    pub metrics: crate::metrics::Metrics,
    pub quotas: Arc<crate::quotas::Quotas>,
    /// Snapshots as built, each serialized once, and the deltas between
    /// them.
    pub snapshots: Arc<crate::snapshots::SnapshotCache>,
    /// The newest purge batch, shared by the polls one purge wakes.
    pub purge_batches: Arc<crate::purge_polls::PurgeBatchCache>,
    /// What nodes' polls said of them, written in batches.
    pub sightings: Arc<crate::sightings::NodeSightings>,
    /// Node credentials found lately.
    pub node_credentials: Arc<crate::node_credentials::NodeCredentials>,
}

/// How often a waiting long-poll re-reads the database, for changes
/// committed by another control-plane replica.
const LONG_POLL_RECHECK: Duration = Duration::from_secs(1);

/// A long-poll's query, `?after=N`: the last number (snapshot version,
/// purge) the node has; 0 if it has none.
#[derive(Debug, serde::Deserialize)]
pub struct AfterQuery {
    #[serde(default)]
    pub after: u64,
}

/// Runs `ready` until it yields a value, again on every change `changed`
/// announces and at least every [`LONG_POLL_RECHECK`]; `None` once `wait`
/// is over. Shared by the snapshot and purge long-polls.
pub(crate) async fn long_poll<T, Fut>(
    wait: Duration,
    changed: &watch::Sender<u64>,
    mut ready: impl FnMut() -> Fut,
) -> Result<Option<T>, crate::error::ApiError>
where
    Fut: Future<Output = Result<Option<T>, crate::error::ApiError>>,
{
    let mut changes = changed.subscribe();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if let Some(value) = ready().await? {
            return Ok(Some(value));
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        let pause = LONG_POLL_RECHECK.min(deadline - now);
        let _ = tokio::time::timeout(pause, changes.changed()).await;
    }
}
