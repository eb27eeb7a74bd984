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
//! A third applies cache purges in order (`purges`). A fourth ships
//! guests' log lines ([`crate::tenant_logs`]) every second or so; lines that
//! fail to go are kept (within the buffer's bound) for the next try. A
//! fifth follows the KV change feed into the node's replica (`kv`), through
//! which guests' writes also go out.

mod deliveries;
mod kv;
mod link;
mod purges;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use edge_config::node::{CANARY_USAGE_REPORT_INTERVAL_MS, ControlPlaneSection};
use edge_config::protocol::{GuestLogBatch, MAX_GUEST_LOG_LINES_PER_BATCH, Snapshot};
use reqwest::StatusCode;
use tokio::sync::watch;

use crate::lifecycle::Shutdown;
use crate::node::Node;
use link::{ControlPlaneLink, FIRST_BACKOFF, MAX_BACKOFF, Registration, SyncError, snapshot_path};

/// Serves the snapshot saved by an earlier run, if there is one. Returns its
/// version (0 if none). An artifact on disk that no longer matches its hash
/// is fetched again when the control plane answers, and compiled locally
/// when it does not.
async fn restore(sync: &ControlPlaneLink) -> u64 {
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

/// Follows the control plane until the node stops.
async fn run(
    sync: Arc<ControlPlaneLink>,
    mut version: u64,
    registrations: watch::Sender<Option<Registration>>,
    mut shutdown: Shutdown,
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
            () = shutdown.stopped() => return,
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
                    () = shutdown.stopped() => return,
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "control-plane sync failed; still serving snapshot {version}");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = shutdown.stopped() => return,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Runs `round` every `interval` once the node is registered, and a last
/// time when the node stops, so that what is pending then still goes out.
async fn every_interval<Fut>(
    sync: Arc<ControlPlaneLink>,
    interval: Duration,
    registrations: watch::Receiver<Option<Registration>>,
    mut shutdown: Shutdown,
    round: fn(Arc<ControlPlaneLink>) -> Fut,
) where
    Fut: Future<Output = ()>,
{
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! {
            _ = ticks.tick() => false,
            () = shutdown.stopped() => true,
        };
        let registered = registrations.borrow().is_some();
        if registered {
            round(Arc::clone(&sync)).await;
        }
        if stopping {
            return;
        }
    }
}

/// Reports usage every `interval`, and every
/// [`CANARY_USAGE_REPORT_INTERVAL_MS`] while the node serves a canary (the
/// control plane judges a canary on each report); a last time when the
/// node stops.
async fn report_usage_every(
    sync: Arc<ControlPlaneLink>,
    interval: Duration,
    registrations: watch::Receiver<Option<Registration>>,
    mut shutdown: Shutdown,
) {
    let tick = interval.min(Duration::from_millis(CANARY_USAGE_REPORT_INTERVAL_MS));
    let mut ticks = tokio::time::interval(tick);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_report: Option<tokio::time::Instant> = None;
    loop {
        let stopping = tokio::select! {
            _ = ticks.tick() => false,
            () = shutdown.stopped() => true,
        };
        // Half a tick early counts as due: ticks drift by microseconds.
        let due = stopping
            || last_report.is_none_or(|at| at.elapsed() + tick / 2 >= interval)
            || sync.node.serves_canary();
        if due && registrations.borrow().is_some() {
            report_usage(Arc::clone(&sync)).await;
            last_report = Some(tokio::time::Instant::now());
        }
        if stopping {
            return;
        }
    }
}

/// Posts the node's usage, a round of [`report_usage_every`]. A report that
/// fails is put back and sent with the next one.
async fn report_usage(sync: Arc<ControlPlaneLink>) {
    let Some(report) = sync.deliveries.next_report(sync.node.usage()) else {
        return;
    };
    match sync.post_usage(&report).await {
        Ok(()) => sync.deliveries.report_done(&report.id),
        // Refused for its content: sending it again would be refused
        // again, and hold back every later report.
        Err(SyncError::Status(status)) if refused_for_good(status) => {
            tracing::error!(%status, services = report.services.len(), "usage report refused; dropping it");
            sync.deliveries.report_done(&report.id);
        }
        // Sent again, with its id, next time.
        Err(e) => tracing::warn!(error = %e, "usage report failed; kept for the next one"),
    }
}

/// Whether the control plane refused what was sent for its content:
/// sending it again would be refused again. A credential not (yet)
/// recognized is the node's problem, not the content's: that waits for the
/// node to register.
fn refused_for_good(status: StatusCode) -> bool {
    status.is_client_error() && !matches!(status, StatusCode::UNAUTHORIZED | StatusCode::NOT_FOUND)
}

/// Ships guest log lines, a round of [`every_interval`]: as many batches as
/// there are lines, each put back if it fails.
async fn ship_logs(sync: Arc<ControlPlaneLink>) {
    let logs = sync.node.tenant_logs();
    // What an earlier run saved goes first, and its file once it has all
    // gone.
    loop {
        let lines = sync
            .deliveries
            .take_saved_logs(MAX_GUEST_LOG_LINES_PER_BATCH);
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
            // A credential not (yet) recognized is the node's problem, not
            // the lines': they wait for it to register.
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

/// A running follower of the control plane. Its tasks belong to the
/// node's lifecycle: they run until the node stops, then send a last usage
/// report and log shipment and save what those could not deliver for the
/// next start. The stop waits for that.
#[derive(Debug)]
pub struct Follower {
    purges_applied: watch::Receiver<u64>,
    kv_position: watch::Receiver<u64>,
    tasks: Vec<tokio::task::AbortHandle>,
}

impl Follower {
    /// Serves the snapshot saved on disk, if any, then follows the control
    /// plane in tasks the node's lifecycle owns. The snapshot replaces the
    /// services of the node's config file.
    pub async fn start(
        node: &Node,
        config: ControlPlaneSection,
        data_dir: &Path,
    ) -> anyhow::Result<Self> {
        let config_interval_ms = config.usage_report_interval_ms;
        // What an earlier run could not deliver goes out with the first
        // report and shipment.
        let deliveries = deliveries::Deliveries::load(data_dir).await;
        let sync = ControlPlaneLink::new(node, config, data_dir, deliveries)
            .map_err(|e| anyhow::anyhow!("following the control plane: {e}"))?;
        // Before the saved snapshot is served: its services read it.
        node.kv()
            .open_replica(&data_dir.join("kv.redb"))
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let interval = Duration::from_millis(config_interval_ms);
        let version = restore(&sync).await;
        sync.applied.send_replace(version);
        let sync = Arc::new(sync);
        let shutdown = node.lifecycle().shutdown();
        let (registrations, registered) = watch::channel(None);
        let (applied, purges_applied) = watch::channel(0);
        let (kv_applied, kv_position) = watch::channel(0);
        node.kv()
            .set_writer(Arc::new(kv::LinkWriter(Arc::downgrade(&sync))));
        let poll = tokio::spawn(run(
            Arc::clone(&sync),
            version,
            registrations,
            shutdown.clone(),
        ));
        let purge = tokio::spawn(purges::follow(
            Arc::clone(&sync),
            registered.clone(),
            applied,
            shutdown.clone(),
        ));
        let kv_feed = tokio::spawn(kv::follow(
            Arc::clone(&sync),
            registered.clone(),
            kv_applied,
            shutdown.clone(),
        ));
        node.tenant_logs().start_shipping();
        let logs = tokio::spawn(every_interval(
            Arc::clone(&sync),
            node.tenant_logs().ship_interval(),
            registered.clone(),
            shutdown.clone(),
            ship_logs,
        ));
        let report = tokio::spawn(report_usage_every(
            Arc::clone(&sync),
            interval,
            registered,
            shutdown,
        ));
        let tasks = [poll, purge, kv_feed, logs, report];
        let abort: Vec<_> = tasks.iter().map(|task| task.abort_handle()).collect();
        let last_words = tokio::spawn(async move {
            for task in tasks {
                let _ = task.await;
            }
            let node = &sync.node;
            sync.deliveries.save(node.usage(), node.tenant_logs()).await;
        });
        let mut follower = Self {
            purges_applied,
            kv_position,
            tasks: abort,
        };
        follower.tasks.push(last_words.abort_handle());
        node.lifecycle().own(last_words);
        Ok(follower)
    }

    /// The number of the last control-plane purge applied to the cache.
    pub fn purges_applied(&self) -> watch::Receiver<u64> {
        self.purges_applied.clone()
    }

    /// The KV feed's position the replica holds everything through.
    pub fn kv_position(&self) -> watch::Receiver<u64> {
        self.kv_position.clone()
    }

    /// Stops following at once, as a killed node would: no last report,
    /// nothing saved (what an earlier run saved stays on disk until
    /// delivered).
    pub fn kill(self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
