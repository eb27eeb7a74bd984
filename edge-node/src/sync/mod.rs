//! Following the control plane: register, long-poll the config snapshot,
//! fetch the modules it names, swap the routing table, and keep the last
//! good snapshot on disk.
//!
//! The node never depends on the control plane being up to serve: at start
//! it serves the snapshot it last applied (from `<data_dir>/snapshot.json`
//! and the module store), and while the control plane is unreachable it
//! keeps serving and retries with exponential backoff.
//!
//! Beside the long-poll, a second task posts usage reports (see
//! [`crate::usage`]) every few seconds; the last one is sent on shutdown.
//! A third applies cache purges in order ([`purges`]). A fourth ships
//! guests' log lines ([`crate::tenant_logs`]) every second or so; lines that
//! fail to go are kept (within the buffer's bound) for the next try.

mod deliveries;
mod purges;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use edge_config::node::ControlPlaneSection;
use edge_config::protocol::{
    GuestLogBatch, MAX_GUEST_LOG_LINES_PER_BATCH, NodeRegistered, NodeRegistration, NodeStatus,
    Snapshot, UsageReport,
};
use reqwest::StatusCode;
use tokio::sync::watch;

use crate::modules::{ArtifactStore, ModuleHash};
use crate::node::Node;
use edge_platform::ModuleError;
use edge_platform::artifacts::write_atomically;

/// Longest wait between retries while the control plane is unreachable.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// A long-poll may take this long beyond the control plane's own wait.
const POLL_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Why one round of syncing failed; the loop logs it and retries.
#[derive(Debug, thiserror::Error)]
enum SyncError {
    #[error("control plane unreachable: {0}")]
    Unreachable(#[from] reqwest::Error),
    #[error("control plane answered {0}")]
    Status(StatusCode),
    #[error("{0}")]
    Apply(String),
    #[error("control_plane: {0}")]
    Config(String),
    /// The snapshot poll was refused for the node's credential (the
    /// control plane's database was replaced, or the operator removed the
    /// node): it registers again.
    #[error("the control plane does not know this node ({0})")]
    Unrecognized(StatusCode),
}

/// The file the last applied snapshot is kept in.
pub fn snapshot_path(data_dir: &Path) -> PathBuf {
    data_dir.join("snapshot.json")
}

/// Serves the snapshot saved by an earlier run, if there is one. Returns its
/// version (0 if none). An artifact on disk that no longer matches its hash
/// is fetched again when the control plane answers, and compiled locally
/// when it does not.
async fn restore(sync: &Sync) -> u64 {
    let node = &sync.node;
    let path = snapshot_path(&sync.data_dir);
    let Ok(text) = tokio::fs::read(&path).await else {
        return 0;
    };
    let snapshot: Snapshot = match serde_json::from_slice(&text) {
        Ok(snapshot) => snapshot,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "saved snapshot unreadable; ignoring it");
            return 0;
        }
    };
    sync.repair_artifacts(&snapshot).await;
    let report = node.install_snapshot(&snapshot).await;
    tracing::info!(
        version = snapshot.version,
        services = snapshot.services.len() - report.skipped.len(),
        skipped = report.skipped.len(),
        "serving the saved snapshot"
    );
    snapshot.version
}

/// Who the control plane knows this node as.
#[derive(Debug, Clone)]
struct Registration {
    node_id: String,
    /// The newest purge when the node registered.
    purge_seq: u64,
}

/// The node's registration, kept in its data dir (mode 0600, as every temp
/// file is made) so that a restart presents the same credential instead of
/// registering a new node each time.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct SavedRegistration {
    node_id: String,
    node_token: String,
    purge_seq: u64,
}

fn registration_path(data_dir: &Path) -> PathBuf {
    data_dir.join("registration.json")
}

/// Follows the control plane until `shutdown` turns true.
async fn run(
    sync: Arc<Sync>,
    mut version: u64,
    registrations: watch::Sender<Option<Registration>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut registered = match sync.saved_registration().await {
        Some(registration) => {
            registrations.send_replace(Some(registration));
            true
        }
        None => false,
    };
    let mut backoff = FIRST_BACKOFF;
    loop {
        let round = async {
            if !registered {
                let registration = sync.register().await?;
                registered = true;
                registrations.send_replace(Some(registration));
            }
            sync.poll_once(version).await
        };
        let outcome = tokio::select! {
            outcome = round => outcome,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        match outcome {
            Ok(Some(applied)) => {
                version = applied;
                backoff = FIRST_BACKOFF;
            }
            Ok(None) => backoff = FIRST_BACKOFF,
            Err(SyncError::Unrecognized(status)) => {
                tracing::warn!(%status, "the control plane does not know this node; registering again");
                registered = false;
                sync.forget_registration().await;
                // Not at once: a control plane that refuses every
                // credential would otherwise be asked in a tight loop.
                tokio::select! {
                    () = tokio::time::sleep(FIRST_BACKOFF) => {}
                    _ = shutdown.wait_for(|stop| *stop) => return,
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "control-plane sync failed; still serving snapshot {version}");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    _ = shutdown.wait_for(|stop| *stop) => return,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Runs `round` every `interval` once the node is registered, and a last time when `shutdown` turns true, so that what is
/// pending at shutdown still goes out.
async fn every_interval<F, Fut>(
    interval: Duration,
    registrations: watch::Receiver<Option<Registration>>,
    mut shutdown: watch::Receiver<bool>,
    mut round: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! {
            _ = ticks.tick() => false,
            _ = shutdown.wait_for(|stop| *stop) => true,
        };
        let registered = registrations.borrow().is_some();
        if registered {
            round().await;
        }
        if stopping {
            return;
        }
    }
}

/// Posts the node's usage every `interval`. A report that fails is put
/// back and sent with the next one.
async fn report_usage(
    sync: Arc<Sync>,
    interval: Duration,
    registrations: watch::Receiver<Option<Registration>>,
    shutdown: watch::Receiver<bool>,
) {
    every_interval(interval, registrations, shutdown, || {
        let sync = Arc::clone(&sync);
        async move {
            let Some(report) = sync.deliveries.next_report(sync.node.usage()) else {
                return;
            };
            match sync.post_usage(&report).await {
                Ok(()) => sync.deliveries.report_done(&report.id),
                // Refused for its content: sending it again would be
                // refused again, and hold back every later report.
                Err(SyncError::Status(status)) if refused_for_good(status) => {
                    tracing::error!(%status, services = report.services.len(), "usage report refused; dropping it");
                    sync.deliveries.report_done(&report.id);
                }
                // Sent again, with its id, next time.
                Err(e) => tracing::warn!(error = %e, "usage report failed; kept for the next one"),
            }
        }
    })
    .await;
}

/// Whether the control plane refused what was sent for its content:
/// sending it again would be refused again. A credential not (yet)
/// recognized is the node's problem, not the content's: that waits for the
/// node to register.
fn refused_for_good(status: StatusCode) -> bool {
    status.is_client_error() && !matches!(status, StatusCode::UNAUTHORIZED | StatusCode::NOT_FOUND)
}

/// Ships guest log lines every `interval`: as many batches as there are
/// lines, each put back if it fails.
async fn ship_logs(
    sync: Arc<Sync>,
    interval: Duration,
    registrations: watch::Receiver<Option<Registration>>,
    shutdown: watch::Receiver<bool>,
) {
    every_interval(interval, registrations, shutdown, || {
        let sync = Arc::clone(&sync);
        async move {
            let logs = sync.node.tenant_logs();
            // What an earlier run saved goes first, and its file once it
            // has all gone.
            loop {
                let lines = sync.deliveries.take_saved_logs(MAX_GUEST_LOG_LINES_PER_BATCH);
                if lines.is_empty() {
                    sync.deliveries.forget_file_once_delivered();
                    break;
                }
                let batch = GuestLogBatch { lines };
                match sync.post_logs(&batch).await {
                    Ok(()) => logs.shipped(batch.lines.len()),
                    Err(SyncError::Status(status)) if refused_for_good(status) => {
                        logs.rejected(batch.lines.len());
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "saved guest log lines not shipped; kept for the next try");
                        sync.deliveries.put_back_saved_logs(batch.lines);
                        return;
                    }
                }
            }
            loop {
                let lines = logs.take(MAX_GUEST_LOG_LINES_PER_BATCH);
                if lines.is_empty() {
                    return;
                }
                let count = lines.len();
                let batch = GuestLogBatch { lines };
                match sync.post_logs(&batch).await {
                    Ok(()) => logs.shipped(count),
                    // A credential not (yet) recognized is the node's
                    // problem, not the lines': they wait for it to register.
                    Err(SyncError::Status(status)) if refused_for_good(status) => {
                        tracing::error!(%status, lines = count, "guest log shipment refused; dropping it");
                        logs.rejected(count);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, lines = count, "guest log shipment failed; kept for the next one");
                        logs.put_back(batch.lines);
                        return;
                    }
                }
            }
        }
    })
    .await;
}

#[derive(Debug)]
struct Sync {
    node: Node,
    base: String,
    /// Good only for registering.
    cluster_token: String,
    /// The node's own credential, from its registration: every other call
    /// presents it.
    credential: std::sync::RwLock<String>,
    name: String,
    data_dir: PathBuf,
    client: reqwest::Client,
    /// The snapshot version being served.
    applied: watch::Sender<u64>,
    deliveries: deliveries::Deliveries,
}

impl Sync {
    fn new(
        node: &Node,
        config: ControlPlaneSection,
        data_dir: &Path,
        deliveries: deliveries::Deliveries,
    ) -> Result<Self, SyncError> {
        config
            .check_url()
            .map_err(|e| SyncError::Config(format!("url {:?}: {e}", config.url)))?;
        let mut client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(POLL_TIMEOUT)
            .https_only(!config.url.starts_with("http://"));
        if let Some(path) = &config.ca_file {
            // Only the operator's CA vouches for the control plane.
            client =
                edge_platform::certificates::trust_only(client, path).map_err(SyncError::Config)?;
        }
        let client = client.build()?;
        Ok(Self {
            node: node.clone(),
            base: config.url.trim_end_matches('/').to_string(),
            cluster_token: config.cluster_token,
            credential: std::sync::RwLock::new(String::new()),
            name: config.node_name,
            data_dir: data_dir.to_path_buf(),
            client,
            applied: watch::Sender::new(0),
            deliveries,
        })
    }

    /// Drops every artifact of `snapshot` that fails its hash check and
    /// tries to fetch it again.
    async fn repair_artifacts(&self, snapshot: &Snapshot) {
        for service in &snapshot.services {
            let Ok(hash) = service.module_sha256.parse::<ModuleHash>() else {
                continue;
            };
            let removed = self
                .on_store(move |store| {
                    let (artifact, _) = store.artifact_paths(&hash);
                    let bad = artifact.exists() && !store.artifact_is_valid(&hash);
                    if bad {
                        store.remove_artifact(&hash);
                    }
                    Ok(bad)
                })
                .await;
            if !matches!(removed, Ok(true)) {
                continue;
            }
            tracing::warn!(%hash, "artifact on disk does not match its hash; fetching it again");
            if let Err(e) = self.fetch_module(hash).await {
                tracing::warn!(%hash, error = %e, "refetch failed; compiling locally");
            }
        }
    }

    /// The credential to present: the node's own once registered, the
    /// cluster token before (which only registers and fetches modules).
    fn credential(&self) -> String {
        let own = self
            .credential
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if own.is_empty() {
            self.cluster_token.clone()
        } else {
            own
        }
    }

    async fn post_usage(&self, pending: &deliveries::PendingReport) -> Result<(), SyncError> {
        let report = UsageReport {
            snapshot_version: *self.applied.borrow(),
            services: pending.services.clone(),
            report_id: Some(pending.id.clone()),
        };
        self.post("/v1/node/usage", &report).await
    }

    async fn post_status(&self, status: &NodeStatus) -> Result<(), SyncError> {
        self.post("/v1/node/status", status).await
    }

    async fn post_logs(&self, batch: &GuestLogBatch) -> Result<(), SyncError> {
        self.post("/v1/node/logs", batch).await
    }

    /// Posts `body` as JSON with the node's credential; any answer but a
    /// success is an error.
    async fn post(&self, path: &str, body: &impl serde::Serialize) -> Result<(), SyncError> {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(self.credential())
            .timeout(CONNECT_TIMEOUT * 2)
            .json(body)
            .send()
            .await?;
        if !response.status().is_success() {
            return Err(SyncError::Status(response.status()));
        }
        Ok(())
    }

    async fn register(&self) -> Result<Registration, SyncError> {
        let registration = NodeRegistration {
            name: self.name.clone(),
            engine_fingerprint: self.node.sandbox().fingerprint().to_string(),
        };
        let response = self
            .client
            .post(format!("{}/v1/node/register", self.base))
            .bearer_auth(&self.cluster_token)
            .json(&registration)
            .send()
            .await?;
        if !response.status().is_success() {
            return Err(SyncError::Status(response.status()));
        }
        let registered: NodeRegistered = response.json().await?;
        tracing::info!(node_id = %registered.node_id, "registered with the control plane");
        let saved = SavedRegistration {
            node_id: registered.node_id.clone(),
            node_token: registered.node_token.clone(),
            purge_seq: registered.purge_seq,
        };
        let text = serde_json::to_vec(&saved).unwrap_or_default();
        let path = registration_path(&self.data_dir);
        let written = tokio::task::spawn_blocking(move || write_atomically(&path, &text)).await;
        if !matches!(written, Ok(Ok(()))) {
            tracing::warn!("could not save the registration; the next start registers again");
        }
        self.set_credential(registered.node_token);
        Ok(Registration {
            node_id: registered.node_id,
            purge_seq: registered.purge_seq,
        })
    }

    fn set_credential(&self, token: String) {
        *self
            .credential
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = token;
    }

    /// The registration a previous run saved, now presented again.
    async fn saved_registration(&self) -> Option<Registration> {
        let text = tokio::fs::read(registration_path(&self.data_dir))
            .await
            .ok()?;
        let saved: SavedRegistration = serde_json::from_slice(&text).ok()?;
        tracing::info!(node_id = %saved.node_id, "presenting the saved registration");
        self.set_credential(saved.node_token);
        Some(Registration {
            node_id: saved.node_id,
            purge_seq: saved.purge_seq,
        })
    }

    async fn forget_registration(&self) {
        self.set_credential(String::new());
        let _ = tokio::fs::remove_file(registration_path(&self.data_dir)).await;
    }

    /// One long-poll. Returns the version applied, or `None` if nothing
    /// changed.
    async fn poll_once(&self, version: u64) -> Result<Option<u64>, SyncError> {
        let response = self
            .client
            .get(format!("{}/v1/node/snapshot", self.base))
            .query(&[("after", version.to_string())])
            .bearer_auth(self.credential())
            .send()
            .await?;
        match response.status() {
            StatusCode::NOT_MODIFIED => return Ok(None),
            status @ (StatusCode::UNAUTHORIZED | StatusCode::NOT_FOUND) => {
                return Err(SyncError::Unrecognized(status));
            }
            status if !status.is_success() => return Err(SyncError::Status(status)),
            _ => {}
        }
        let snapshot: Snapshot = response.json().await?;
        for service in &snapshot.services {
            let hash: ModuleHash = service
                .module_sha256
                .parse()
                .map_err(|_| SyncError::Apply(format!("bad module hash for {}", service.name)))?;
            // A module already loaded needs nothing from disk or the network.
            if !self.node.modules().is_ready(hash) {
                self.fetch_module(hash).await?;
            }
        }
        let report = self.node.install_snapshot(&snapshot).await;
        let text = serde_json::to_vec(&snapshot).unwrap_or_default();
        let path = snapshot_path(&self.data_dir);
        tokio::task::spawn_blocking(move || write_atomically(&path, &text))
            .await
            .map_err(|e| SyncError::Apply(e.to_string()))?
            .map_err(|e| SyncError::Apply(e.to_string()))?;
        self.applied.send_replace(snapshot.version);
        tracing::info!(
            version = snapshot.version,
            services = snapshot.services.len() - report.skipped.len(),
            skipped = report.skipped.len(),
            "applied snapshot"
        );
        // The tenants whose services were left out see it in their versions;
        // a lost status is sent again with the next snapshot.
        let status = NodeStatus {
            snapshot_version: snapshot.version,
            failures: report.skipped,
        };
        if let Err(e) = self.post_status(&status).await {
            tracing::warn!(error = %e, "could not report the snapshot's failed services");
        }
        Ok(Some(snapshot.version))
    }

    /// Makes sure the component and, when the control plane has one for
    /// this engine, its artifact are on disk. Both are verified by hash.
    async fn fetch_module(&self, hash: ModuleHash) -> Result<(), SyncError> {
        let (has_component, has_artifact) = self
            .on_store(move |store| {
                // An artifact present is verified when loaded; a bad one is
                // compiled again.
                Ok((
                    store.has_component(&hash),
                    store.artifact_paths(&hash).0.exists(),
                ))
            })
            .await?;
        if !has_component {
            let bytes = self.get(&format!("/v1/node/components/{hash}")).await?;
            if ModuleHash::of(&bytes) != hash {
                return Err(SyncError::Apply(format!(
                    "component {hash} does not match its hash"
                )));
            }
            self.on_store(move |store| store.insert_component(&bytes))
                .await?;
            self.node.modules().retry(hash);
        }
        if has_artifact {
            return Ok(());
        }
        let fingerprint = self.node.modules().store().fingerprint().to_string();
        let artifact = self
            .get(&format!("/v1/node/artifacts/{hash}/{fingerprint}"))
            .await;
        let manifest = self
            .get(&format!("/v1/node/artifacts/{hash}/{fingerprint}/manifest"))
            .await;
        match (artifact, manifest) {
            (Ok(artifact), Ok(manifest)) => {
                let stored = self
                    .on_store(move |store| {
                        store.insert_fetched_artifact(&hash, &artifact, &manifest)
                    })
                    .await?;
                if stored {
                    self.node.modules().retry(hash);
                } else {
                    tracing::warn!(%hash, "fetched artifact rejected; compiling locally");
                }
            }
            // No artifact for this engine: the node compiles on load.
            (Err(SyncError::Status(StatusCode::NOT_FOUND)), _)
            | (_, Err(SyncError::Status(StatusCode::NOT_FOUND))) => {}
            (Err(e), _) | (_, Err(e)) => return Err(e),
        }
        Ok(())
    }

    /// Runs blocking module-store work (file reads, hashing, fsync) off the
    /// async workers.
    async fn on_store<T: Send + 'static>(
        &self,
        work: impl FnOnce(&ArtifactStore) -> Result<T, ModuleError> + Send + 'static,
    ) -> Result<T, SyncError> {
        let store = Arc::clone(self.node.modules().store());
        tokio::task::spawn_blocking(move || work(&store))
            .await
            .map_err(|e| SyncError::Apply(e.to_string()))?
            .map_err(|e| SyncError::Apply(e.to_string()))
    }

    async fn get(&self, path: &str) -> Result<bytes::Bytes, SyncError> {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(self.credential())
            .send()
            .await?;
        if !response.status().is_success() {
            return Err(SyncError::Status(response.status()));
        }
        Ok(response.bytes().await?)
    }
}

/// A running follower of the control plane.
#[derive(Debug)]
pub struct Follower {
    sync: Arc<Sync>,
    stop: watch::Sender<bool>,
    purges_applied: watch::Receiver<u64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Follower {
    /// Serves the snapshot saved on disk, if any, then follows the control
    /// plane in a task of its own. The snapshot replaces the services of
    /// the node's config file.
    pub async fn start(
        node: &Node,
        config: ControlPlaneSection,
        data_dir: &Path,
    ) -> anyhow::Result<Self> {
        let config_interval_ms = config.usage_report_interval_ms;
        // What an earlier run could not deliver goes out with the first
        // report and shipment.
        let deliveries = deliveries::Deliveries::load(data_dir).await;
        let sync = Sync::new(node, config, data_dir, deliveries)
            .map_err(|e| anyhow::anyhow!("following the control plane: {e}"))?;
        let interval = Duration::from_millis(config_interval_ms);
        let version = restore(&sync).await;
        sync.applied.send_replace(version);
        let sync = Arc::new(sync);
        let (stop, stopped) = watch::channel(false);
        let (registrations, registered) = watch::channel(None);
        let (applied, purges_applied) = watch::channel(0);
        let poll = tokio::spawn(run(
            Arc::clone(&sync),
            version,
            registrations,
            stopped.clone(),
        ));
        let purge = tokio::spawn(purges::follow(
            Arc::clone(&sync),
            registered.clone(),
            applied,
            stopped.clone(),
        ));
        node.tenant_logs().start_shipping();
        let logs = tokio::spawn(ship_logs(
            Arc::clone(&sync),
            node.tenant_logs().ship_interval(),
            registered.clone(),
            stopped.clone(),
        ));
        let report = tokio::spawn(report_usage(
            Arc::clone(&sync),
            interval,
            registered,
            stopped,
        ));
        Ok(Self {
            sync,
            stop,
            purges_applied,
            tasks: vec![poll, purge, logs, report],
        })
    }

    /// The number of the last control-plane purge applied to the cache.
    pub fn purges_applied(&self) -> watch::Receiver<u64> {
        self.purges_applied.clone()
    }

    /// Stops following after a last usage report and log shipment; what
    /// those could not deliver is saved for the next start.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
        let node = &self.sync.node;
        self.sync
            .deliveries
            .save(node.usage(), node.tenant_logs())
            .await;
    }
}

/// A follower dropped without [`Follower::stop`] stops at once, as a
/// killed node would: no last report, nothing saved (what an earlier run
/// saved stays on disk until delivered).
impl Drop for Follower {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
