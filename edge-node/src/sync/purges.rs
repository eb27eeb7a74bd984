//! Applying the control plane's purges to the node's cache, in order.
//!
//! The node long-polls `GET /v1/node/purges?after=N`. Each answer is applied
//! whole before the next poll, whose `after` acknowledges it. A node that
//! starts (with an empty cache) begins at the newest purge the control plane
//! reported when it registered.

use std::sync::Arc;

use edge_config::protocol::{PurgeBatch, PurgeTarget};
use reqwest::StatusCode;
use tokio::sync::watch;

use crate::cache::PurgeMode;
use crate::lifecycle::Shutdown;

use super::link::{ControlPlaneLink, FIRST_BACKOFF, MAX_BACKOFF, Registration, SyncError};

/// Follows the purge stream until the node stops. `applied` carries
/// the number of the last purge applied.
pub(super) async fn follow(
    sync: Arc<ControlPlaneLink>,
    mut registrations: watch::Receiver<Option<Registration>>,
    applied: watch::Sender<u64>,
    mut shutdown: Shutdown,
) {
    // The purge applied last, and the registration it was counted under.
    let mut position: Option<(String, u64)> = None;
    let mut backoff = FIRST_BACKOFF;
    loop {
        let registration = registrations.borrow_and_update().clone();
        let Some(registration) = registration else {
            tokio::select! {
                _ = registrations.changed() => continue,
                () = shutdown.stopped() => return,
            }
        };
        let from = match &position {
            Some((node_id, seen)) if *node_id == registration.node_id => *seen,
            // Registered again: a control plane whose purges start over (a
            // new database) cannot say what this cache missed: drop it all.
            Some((_, seen)) if *seen > registration.purge_seq => {
                sync.node.cache().purge_all();
                registration.purge_seq
            }
            Some((_, seen)) => *seen,
            None => registration.purge_seq,
        };
        position = Some((registration.node_id.clone(), from));
        applied.send_replace(from);
        let poll = sync.poll_purges(from);
        let outcome = tokio::select! {
            outcome = poll => outcome,
            () = shutdown.stopped() => return,
        };
        match outcome {
            Ok(Some(batch)) => {
                apply(&sync, &batch);
                position = Some((registration.node_id.clone(), batch.through));
                applied.send_replace(batch.through);
                backoff = FIRST_BACKOFF;
            }
            Ok(None) => backoff = FIRST_BACKOFF,
            Err(e) => {
                if !matches!(e, SyncError::Status(StatusCode::NOT_FOUND)) {
                    tracing::warn!(error = %e, retry_in = ?backoff, "purge poll failed");
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = shutdown.stopped() => return,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

fn apply(sync: &ControlPlaneLink, batch: &PurgeBatch) {
    let cache = sync.node.cache();
    if batch.reset {
        tracing::warn!("purges were missed; dropping the whole cache");
        cache.purge_all();
    }
    for purge in &batch.purges {
        let mode = if purge.soft {
            PurgeMode::Soft
        } else {
            PurgeMode::Hard
        };
        let purged = match &purge.target {
            PurgeTarget::Url(url) => cache.purge_url(&purge.tenant, url, mode),
            PurgeTarget::SurrogateKey(key) => cache.purge_surrogate_key(&purge.tenant, key, mode),
        };
        tracing::debug!(seq = purge.seq, tenant = %purge.tenant, purged, soft = purge.soft, "purge applied");
    }
}

impl ControlPlaneLink {
    /// One purge long-poll; `None` when nothing new came.
    async fn poll_purges(&self, after: u64) -> Result<Option<PurgeBatch>, SyncError> {
        let response = self.long_poll("/v1/node/purges", after).await?;
        match response.status() {
            StatusCode::NOT_MODIFIED => Ok(None),
            status if !status.is_success() => Err(SyncError::Status(status)),
            _ => Ok(Some(response.json().await?)),
        }
    }
}
