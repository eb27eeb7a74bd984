//! The node's link to the control plane: who it is registered as, its
//! credential, and the calls it makes (register, long-poll the snapshot,
//! fetch modules, post status, usage and logs). The follower's tasks
//! ([`super`]) share one.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use edge_config::node::ControlPlaneSection;
use edge_config::protocol::{
    GuestLogBatch, NodeRegistered, NodeRegistration, NodeStatus, SNAPSHOT_DELTA, SNAPSHOT_FULL,
    SNAPSHOT_KIND_HEADER, Snapshot, SnapshotDelta, SnapshotService, UsageReport,
};
use edge_platform::artifacts::write_atomically;
use edge_platform::{ArtifactStore, ModuleError, ModuleHash};
use reqwest::StatusCode;
use tokio::sync::watch;

use super::deliveries;
use crate::node::Node;

/// Longest wait between retries while the control plane is unreachable.
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// The first retry comes quickly: most failures are a control plane
/// restarting, back within a moment.
pub(super) const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// A long-poll may take this long beyond the control plane's own wait.
pub(super) const POLL_TIMEOUT: Duration = Duration::from_secs(60);
/// A control plane that takes longer to accept a connection is treated as
/// down, so the node backs off instead of waiting on it.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Why one round of syncing failed; the loop logs it and retries.
#[derive(Debug, thiserror::Error)]
pub(super) enum SyncError {
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
pub(super) fn snapshot_path(data_dir: &Path) -> PathBuf {
    data_dir.join("snapshot.json")
}

/// Who the control plane knows this node as.
#[derive(Debug, Clone)]
pub(super) struct Registration {
    pub(super) node_id: String,
    /// The newest purge when the node registered.
    pub(super) purge_seq: u64,
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

pub(super) fn registration_path(data_dir: &Path) -> PathBuf {
    data_dir.join("registration.json")
}

#[derive(Debug)]
pub(super) struct ControlPlaneLink {
    pub(super) node: Node,
    /// The replicas' base URLs, in the order they are tried.
    bases: Vec<String>,
    /// The one in use: every task moves together when it stops answering.
    current: AtomicUsize,
    /// Good only for registering.
    pub(super) cluster_token: String,
    /// The node's own credential, from its registration: every other call
    /// presents it.
    pub(super) credential: std::sync::RwLock<String>,
    pub(super) name: String,
    pub(super) data_dir: PathBuf,
    pub(super) client: reqwest::Client,
    /// The snapshot version being served.
    pub(super) applied: watch::Sender<u64>,
    /// The snapshot being served, that a delta applies to, with the
    /// digest the control plane gave it. Not held after a restart: the
    /// first poll asks for the whole snapshot.
    held: std::sync::Mutex<Option<(Arc<Snapshot>, String)>>,
    pub(super) deliveries: deliveries::Deliveries,
}

impl ControlPlaneLink {
    pub(super) fn new(
        node: &Node,
        config: ControlPlaneSection,
        data_dir: &Path,
        deliveries: deliveries::Deliveries,
    ) -> Result<Self, SyncError> {
        config
            .check_url()
            .map_err(|e| SyncError::Config(format!("url {e}")))?;
        let mut client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(POLL_TIMEOUT)
            .https_only(!config.urls().any(|url| url.starts_with("http://")));
        if let Some(path) = &config.ca_file {
            // Only the operator's CA vouches for the control plane.
            client =
                edge_platform::certificates::trust_only(client, path).map_err(SyncError::Config)?;
        }
        let client = client.build()?;
        Ok(Self {
            node: node.clone(),
            bases: config
                .urls()
                .map(|url| url.trim_end_matches('/').to_string())
                .collect(),
            current: AtomicUsize::new(0),
            cluster_token: config.cluster_token,
            credential: std::sync::RwLock::new(String::new()),
            name: config.node_name,
            data_dir: data_dir.to_path_buf(),
            client,
            applied: watch::Sender::new(0),
            held: std::sync::Mutex::new(None),
            deliveries,
        })
    }

    /// Drops every artifact of `snapshot` that fails its hash check and
    /// tries to fetch it again.
    pub(super) async fn repair_artifacts(&self, snapshot: &Snapshot) {
        let hashes: Vec<ModuleHash> = snapshot
            .services
            .iter()
            .flat_map(SnapshotService::module_hashes)
            .filter_map(|module| module.parse().ok())
            .collect();
        for hash in hashes {
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
    pub(super) fn credential(&self) -> String {
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

    pub(super) async fn post_usage(
        &self,
        pending: &deliveries::PendingReport,
    ) -> Result<(), SyncError> {
        let report = UsageReport {
            snapshot_version: *self.applied.borrow(),
            services: pending.services.clone(),
            report_id: Some(pending.id.clone()),
        };
        self.post("/v1/node/usage", &report).await
    }

    pub(super) async fn post_status(&self, status: &NodeStatus) -> Result<(), SyncError> {
        self.post("/v1/node/status", status).await
    }

    pub(super) async fn post_logs(&self, batch: &GuestLogBatch) -> Result<(), SyncError> {
        self.post("/v1/node/logs", batch).await
    }

    /// Posts `body` as JSON with the node's credential; any answer but a
    /// success is an error.
    pub(super) async fn post(
        &self,
        path: &str,
        body: &impl serde::Serialize,
    ) -> Result<(), SyncError> {
        let response = self
            .send(|base| {
                self.client
                    .post(format!("{base}{path}"))
                    .bearer_auth(self.credential())
                    .timeout(CONNECT_TIMEOUT * 2)
                    .json(body)
            })
            .await?;
        if !response.status().is_success() {
            return Err(SyncError::Status(response.status()));
        }
        Ok(())
    }

    pub(super) async fn register(&self) -> Result<Registration, SyncError> {
        let registration = NodeRegistration {
            name: self.name.clone(),
            engine_fingerprint: self.node.sandbox().fingerprint().to_string(),
        };
        let response = self
            .send(|base| {
                self.client
                    .post(format!("{base}/v1/node/register"))
                    .bearer_auth(&self.cluster_token)
                    .json(&registration)
            })
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

    pub(super) fn set_credential(&self, token: String) {
        *self
            .credential
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = token;
    }

    /// The registration a previous run saved, now presented again.
    pub(super) async fn saved_registration(&self) -> Option<Registration> {
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

    pub(super) async fn forget_registration(&self) {
        self.set_credential(String::new());
        // Perhaps another database: no delta from what it held.
        self.hold(None);
        let _ = tokio::fs::remove_file(registration_path(&self.data_dir)).await;
    }

    /// Holds `snapshot` as the one being served: the next poll asks for a
    /// delta from it.
    pub(super) fn hold(&self, snapshot: Option<(Arc<Snapshot>, String)>) {
        *self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = snapshot;
    }

    /// The snapshot being served and its digest, if it is `version`.
    fn held(&self, version: u64) -> Option<(Arc<Snapshot>, String)> {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .filter(|(held, _)| held.version == version)
    }

    /// The snapshot an answer to a poll from `held` carries, with its
    /// digest: the whole one, or `held` with the delta applied.
    async fn read_snapshot(
        response: reqwest::Response,
        held: Option<&(Arc<Snapshot>, String)>,
    ) -> Result<(Snapshot, String), SyncError> {
        let kind = response
            .headers()
            .get(SNAPSHOT_KIND_HEADER)
            .and_then(|kind| kind.to_str().ok())
            .unwrap_or(SNAPSHOT_FULL)
            .to_string();
        let body = response.bytes().await?;
        let parse_error = |e: serde_json::Error| SyncError::Apply(format!("snapshot: {e}"));
        if kind != SNAPSHOT_DELTA {
            let snapshot = serde_json::from_slice(&body).map_err(parse_error)?;
            return Ok((snapshot, ModuleHash::of(&body).to_hex()));
        }
        let delta: SnapshotDelta = serde_json::from_slice(&body).map_err(parse_error)?;
        let (from, digest) = (delta.from, delta.digest.clone());
        held.filter(|(_, held_digest)| *held_digest == delta.from_digest)
            .and_then(|(held, _)| held.apply(delta))
            .map(|snapshot| (snapshot, digest))
            .ok_or_else(|| {
                SyncError::Apply(format!(
                    "a delta from snapshot {from} as the control plane built it, which is not the one this node holds"
                ))
            })
    }

    /// One long-poll. Returns the version applied, or `None` if nothing
    /// changed.
    pub(super) async fn poll_once(&self, version: u64) -> Result<Option<u64>, SyncError> {
        // A delta is asked for only from the snapshot the node holds.
        let held = self.held(version);
        let path = if held.is_some() {
            "/v1/node/snapshot?delta=true"
        } else {
            "/v1/node/snapshot"
        };
        let response = self.long_poll(path, version).await?;
        match response.status() {
            StatusCode::NOT_MODIFIED => return Ok(None),
            status @ (StatusCode::UNAUTHORIZED | StatusCode::NOT_FOUND) => {
                return Err(SyncError::Unrecognized(status));
            }
            status if !status.is_success() => return Err(SyncError::Status(status)),
            _ => {}
        }
        let (snapshot, digest) = match Self::read_snapshot(response, held.as_ref()).await {
            Ok(read) => read,
            Err(error) => {
                // The next poll asks for the whole snapshot.
                self.hold(None);
                return Err(error);
            }
        };
        // Collected first: an iterator of closures held across the awaits
        // below would keep the future from being `Send`.
        // A canary's module that cannot be fetched leaves the canary out
        // (the install reports it): it must not hold back every other
        // service's snapshot.
        let mut hashes = Vec::new();
        for service in &snapshot.services {
            for (i, module) in service.module_hashes().enumerate() {
                let hash: ModuleHash = module.parse().map_err(|_| {
                    SyncError::Apply(format!("bad module hash for {}", service.name))
                })?;
                hashes.push((hash, i == 0));
            }
        }
        for (hash, required) in hashes {
            // A module already loaded needs nothing from disk or the network.
            if self.node.modules().is_ready(hash) {
                continue;
            }
            match self.fetch_module(hash).await {
                Ok(()) => {}
                Err(error) if !required => {
                    tracing::warn!(%hash, %error, "a canary's module could not be fetched; the canary is left out");
                }
                Err(error) => return Err(error),
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
        let snapshot = Arc::new(snapshot);
        self.hold(Some((Arc::clone(&snapshot), digest)));
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
    pub(super) async fn fetch_module(&self, hash: ModuleHash) -> Result<(), SyncError> {
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
    pub(super) async fn on_store<T: Send + 'static>(
        &self,
        work: impl FnOnce(&ArtifactStore) -> Result<T, ModuleError> + Send + 'static,
    ) -> Result<T, SyncError> {
        let store = Arc::clone(self.node.modules().store());
        tokio::task::spawn_blocking(move || work(&store))
            .await
            .map_err(|e| SyncError::Apply(e.to_string()))?
            .map_err(|e| SyncError::Apply(e.to_string()))
    }

    /// Asks `path` with the node's credential for what came after `after`:
    /// the control plane holds the request until there is something, and
    /// answers 304 Not Modified when there is still nothing. The caller reads
    /// the status.
    pub(super) async fn long_poll(
        &self,
        path: &str,
        after: u64,
    ) -> Result<reqwest::Response, SyncError> {
        self.send(|base| {
            self.client
                .get(format!("{base}{path}"))
                .query(&[("after", after.to_string())])
                .bearer_auth(self.credential())
        })
        .await
    }

    pub(super) async fn get(&self, path: &str) -> Result<bytes::Bytes, SyncError> {
        let response = self
            .send(|base| {
                self.client
                    .get(format!("{base}{path}"))
                    .bearer_auth(self.credential())
            })
            .await?;
        if !response.status().is_success() {
            return Err(SyncError::Status(response.status()));
        }
        Ok(response.bytes().await?)
    }

    /// Sends the request `build` makes for a replica's base URL to the
    /// replica in use. One that cannot be reached, or answers 502-504, is left
    /// for the next: a request that never connected goes to the next
    /// replica at once; one that may have been received is the caller's to
    /// retry (its loop does, on the next replica).
    pub(super) async fn send(
        &self,
        build: impl Fn(&str) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, SyncError> {
        let mut tries = self.bases.len();
        loop {
            let index = self.current.load(Ordering::Relaxed) % self.bases.len();
            match build(&self.bases[index]).send().await {
                Ok(response) => {
                    // A replica that is there but cannot serve (its
                    // database gone, a proxy in front finding it down);
                    // another 5xx would be the same on every replica.
                    if matches!(
                        response.status(),
                        StatusCode::BAD_GATEWAY
                            | StatusCode::SERVICE_UNAVAILABLE
                            | StatusCode::GATEWAY_TIMEOUT
                    ) {
                        self.move_off(index, &response.status().to_string());
                    }
                    return Ok(response);
                }
                Err(error) => {
                    self.move_off(index, &error.to_string());
                    tries -= 1;
                    if !error.is_connect() || tries == 0 {
                        return Err(error.into());
                    }
                }
            }
        }
    }

    /// Moves every task to the replica after `index`, unless another task
    /// already moved them.
    fn move_off(&self, index: usize, why: &str) {
        if self.bases.len() < 2 {
            return;
        }
        let next = (index + 1) % self.bases.len();
        let moved = self
            .current
            .compare_exchange(index, next, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok();
        if moved {
            tracing::warn!(
                from = %self.bases[index],
                to = %self.bases[next],
                why,
                "control-plane replica not answering; moving to the next"
            );
        }
    }
}
