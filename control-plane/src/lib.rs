//! The control plane: tenants upload components, which are validated,
//! compiled in a child process and stored by hash; versions are immutable
//! and activated or rolled back; nodes long-poll a config snapshot, fetch
//! artifacts, and report usage.
//!
//! - [`api`]: the HTTP API, one router per resource, and its OpenAPI document;
//! - [`auth`]: admin and tenant tokens, the cluster token, node credentials;
//! - [`tls`]: HTTPS for the API; [`idle`]: connections that send nothing
//!   are closed;
//! - [`dns`]: custom domains' TXT challenges;
//! - [`validate`]: what an upload must be before it is compiled;
//! - [`compile`]: the compile worker process, its timeout and memory cap;
//! - [`store`]: SQLite or PostgreSQL behind one set of queries, with
//!   migrations;
//! - [`blobs`]: components and artifacts, on disk or in the database the
//!   replicas share; [`replicas`]: replicas hear each other's changes;
//! - [`snapshots`]: each snapshot version serialized once, and the deltas
//!   between versions; [`purge_polls`]: what purge long-polls share;
//! - [`quotas`]: what each tenant may keep and how fast it may ask, and the
//!   bound on compiles at once;
//! - [`error`]: JSON errors with stable codes;
//! - [`metrics`]: the control plane's own `/metrics`.

pub mod api;
pub mod auth;
pub mod blobs;
pub mod compile;
pub mod dns;
pub mod error;
pub mod idle;
pub mod metrics;
pub mod node_credentials;
pub mod purge_polls;
pub mod quotas;
pub mod replicas;
pub mod sightings;
pub mod snapshots;
pub mod store;
pub mod tls;
pub mod validate;

use std::net::SocketAddr;
use std::sync::Arc;

use edge_platform::ArtifactStore;
use edge_platform::engine::{build_validation_engine, engine_fingerprint};
use tokio::sync::watch;

pub use api::ApiConfig;
use compile::Compiler;
use store::Store;

/// A control plane serving on a listener.
#[derive(Debug)]
pub struct RunningControlPlane {
    pub addr: SocketAddr,
    pub store: Store,
    shutdown: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
    pruning: tokio::task::JoinHandle<()>,
    listening: Option<tokio::task::JoinHandle<()>>,
    stop_sightings: tokio::sync::oneshot::Sender<()>,
    sightings_flushing: tokio::task::JoinHandle<()>,
}

impl RunningControlPlane {
    /// Stops accepting, lets requests in flight finish, and returns.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(());
        let _ = self.task.await;
        self.pruning.abort();
        // What the last polls said is written, not dropped: the loop
        // writes once more and returns.
        let _ = self.stop_sightings.send(());
        let _ = self.sightings_flushing.await;
        if let Some(listening) = self.listening {
            listening.abort();
        }
    }
}

/// Opens the database (applying migrations) and the module store, and serves
/// the API on `listen`.
pub async fn start(
    config: ApiConfig,
    database_url: &str,
    compiler: Compiler,
    listen: SocketAddr,
) -> anyhow::Result<RunningControlPlane> {
    let store = Store::connect(database_url)
        .await?
        .with_platform_domain(&config.platform_domain)
        .with_pending_claim_ttl(config.pending_claim_ttl);
    // The nodes' engine settings, with a pool of one instance: the API
    // server stores and serves artifacts but never runs a guest, so it
    // reserves none of the nodes' instance pool (the fingerprint is the
    // same, `engine::tests`).
    let engine = build_validation_engine(&config.sandbox).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let fingerprint = engine_fingerprint(&engine);
    let modules = ArtifactStore::open(&config.data_dir.join("modules"), engine, &fingerprint)?;
    let blobs = blobs::Blobs::new(modules, &store);
    let version = store.snapshot_version().await?;
    let purge_seq = store.purge_seq().await?;
    let kv_seq = store.kv_seq().await?;
    let config_quotas = config.quotas.clone();
    let state = api::AppState {
        store: store.clone(),
        config: Arc::new(config),
        blobs,
        compiler,
        snapshot_changed: Arc::new(watch::Sender::new(version)),
        purges_changed: Arc::new(watch::Sender::new(purge_seq)),
        kv_changed: Arc::new(watch::Sender::new(kv_seq)),
        metrics: metrics::Metrics::new(),
        quotas: Arc::new(quotas::Quotas::new(config_quotas)),
        snapshots: Arc::default(),
        purge_batches: Arc::default(),
        sightings: Arc::default(),
        node_credentials: Arc::default(),
    };
    let listening = store.postgres_url().map(|url| {
        let signals = replicas::ChangeSignals {
            snapshot: Arc::clone(&state.snapshot_changed),
            purges: Arc::clone(&state.purges_changed),
            kv: Arc::clone(&state.kv_changed),
        };
        tokio::spawn(replicas::follow_other_replicas(
            url.to_string(),
            store.clone(),
            signals,
        ))
    });
    let tls = match &state.config.tls {
        Some(files) => Some(files.server_config()?),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
    let state_idle_read_timeout = state.config.idle_read_timeout;
    let sightings = Arc::clone(&state.sightings);
    let app = api::router(state);
    let stopped = async {
        let _ = stop.await;
    };
    let idle = state_idle_read_timeout;
    let task = match tls {
        Some(config) => tokio::spawn(serve(
            idle::Bounded::new(tls::TlsListener::new(listener, config)?, idle),
            app,
            stopped,
        )),
        None => tokio::spawn(serve(idle::Bounded::new(listener, idle), app, stopped)),
    };
    tracing::info!(%addr, "control plane serving");
    let pruning = tokio::spawn(prune_every(store.clone(), store::PRUNE_INTERVAL));
    let (stop_sightings, sightings_stopped) = tokio::sync::oneshot::channel();
    let sightings_flushing = tokio::spawn(sightings.flush_every(store.clone(), sightings_stopped));
    Ok(RunningControlPlane {
        addr,
        store,
        shutdown,
        task,
        pruning,
        listening,
        stop_sightings,
        sightings_flushing,
    })
}

/// Prunes expired rows every `interval`, off every request's path.
async fn prune_every(store: Store, interval: std::time::Duration) {
    loop {
        if let Err(error) = store.prune().await {
            tracing::warn!(%error, "pruning expired rows failed; trying again later");
        }
        tokio::time::sleep(interval).await;
    }
}

async fn serve<L>(
    listener: L,
    app: axum::Router,
    stopped: impl Future<Output = ()> + Send + 'static,
) where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(stopped)
        .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "control-plane listener failed");
    }
}
