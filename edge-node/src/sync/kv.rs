//! KV stores between the node and the control plane: the change feed into
//! the replica, and guests' writes out to the control plane.
//!
//! The node long-polls `GET /v1/node/kv?after=N`, with N the position its
//! replica holds (kept in the replica, in the same commit as the changes,
//! so a restart resumes where it stopped). Each answer is applied whole,
//! durably, before the next poll. A `reset` answer (the node missed
//! pruned deletes, or the control plane's database is another one) empties
//! the replica and reads it again from the start.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use edge_config::state::{KvFeedBatch, KvWrite, KvWritten};
use reqwest::StatusCode;
use tokio::sync::watch;

use crate::kv::replica::FeedPosition;
use crate::kv::{KvWriteError, KvWriter};
use crate::lifecycle::Shutdown;

use super::link::{
    CONNECT_TIMEOUT, ControlPlaneLink, FIRST_BACKOFF, MAX_BACKOFF, Registration, SyncError,
};

/// Follows the feed until the node stops. `applied` carries the position
/// applied.
pub(super) async fn follow(
    sync: Arc<ControlPlaneLink>,
    mut registrations: watch::Receiver<Option<Registration>>,
    applied: watch::Sender<u64>,
    mut shutdown: Shutdown,
) {
    let kv = Arc::clone(sync.node.kv());
    let mut backoff = FIRST_BACKOFF;
    loop {
        if registrations.borrow_and_update().is_none() {
            tokio::select! {
                _ = registrations.changed() => continue,
                () = shutdown.stopped() => return,
            }
        }
        let position = match kv.replica().and_then(|replica| replica.feed_position()) {
            Ok(position) => position,
            Err(error) => {
                tracing::error!(%error, "KV replica unreadable; the feed waits");
                FeedPosition::default()
            }
        };
        applied.send_replace(position.after);
        sync.node
            .metrics()
            .kv_feed_position
            .set(i64::try_from(position.after).unwrap_or(i64::MAX));
        let outcome = tokio::select! {
            outcome = sync.poll_kv(position) => outcome,
            () = shutdown.stopped() => return,
        };
        let failed = match outcome {
            Ok(Some(batch)) => {
                let kv = Arc::clone(&kv);
                let changes = batch.changes.len();
                let reset = batch.reset;
                let apply = move || kv.replica().and_then(|replica| replica.apply_feed(&batch));
                match tokio::task::spawn_blocking(apply).await {
                    Ok(Ok(through)) => {
                        let metrics = sync.node.metrics();
                        metrics
                            .kv_feed_position
                            .set(i64::try_from(through).unwrap_or(i64::MAX));
                        if reset {
                            metrics.kv_feed_resets.inc();
                            tracing::warn!(
                                "KV feed reset: the replica was read again from the start"
                            );
                        }
                        tracing::debug!(through, changes, "KV changes applied");
                        applied.send_replace(through);
                        None
                    }
                    Ok(Err(error)) => Some(error.to_string()),
                    Err(error) => Some(error.to_string()),
                }
            }
            Ok(None) => None,
            Err(SyncError::Status(StatusCode::NOT_FOUND)) => Some(String::new()),
            Err(error) => Some(error.to_string()),
        };
        match failed {
            None => backoff = FIRST_BACKOFF,
            Some(error) => {
                if !error.is_empty() {
                    tracing::warn!(%error, retry_in = ?backoff, "KV feed poll failed; reads are served from the replica");
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

impl ControlPlaneLink {
    /// One feed long-poll; `None` when nothing new came.
    async fn poll_kv(&self, position: FeedPosition) -> Result<Option<KvFeedBatch>, SyncError> {
        let path = format!("/v1/node/kv?floor={}", position.floor);
        let response = self.long_poll(&path, position.after).await?;
        match response.status() {
            StatusCode::NOT_MODIFIED => Ok(None),
            status if !status.is_success() => Err(SyncError::Status(status)),
            _ => Ok(Some(response.json().await?)),
        }
    }

    /// Sends one guest write and reads what the control plane decided.
    async fn send_kv_write(&self, write: KvWrite) -> Result<KvWritten, KvWriteError> {
        let response = self
            .send(|base| {
                self.client
                    .post(format!("{base}/v1/node/kv/write"))
                    .bearer_auth(self.credential())
                    .timeout(CONNECT_TIMEOUT * 2)
                    .json(&write)
            })
            .await
            .map_err(|e| {
                KvWriteError::Unavailable(match e {
                    SyncError::Unreachable(e) => unreachable(&e),
                    other => other.to_string(),
                })
            })?;
        let status = response.status();
        if status.is_success() {
            return response
                .json()
                .await
                .map_err(|e| KvWriteError::Unavailable(unreachable(&e)));
        }
        if status == StatusCode::NOT_FOUND {
            return Err(KvWriteError::NoSuchStore);
        }
        // The control plane's error message names the limit passed.
        let message = response
            .json::<serde_json::Value>()
            .await
            .ok()
            .and_then(|body| body["error"]["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| format!("the control plane answered {status}"));
        if status.is_client_error() {
            Err(KvWriteError::Refused(message))
        } else {
            Err(KvWriteError::Unavailable(message))
        }
    }
}

/// Why the control plane could not be asked, without its address.
fn unreachable(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        "the control plane did not answer in time".to_string()
    } else {
        "the control plane is unreachable".to_string()
    }
}

/// Guests' writes go out through the follower's link. Held weakly: the
/// link holds the node, and the node holds its writer.
#[derive(Debug)]
pub(super) struct LinkWriter(pub(super) std::sync::Weak<ControlPlaneLink>);

impl KvWriter for LinkWriter {
    fn write(
        &self,
        write: KvWrite,
    ) -> Pin<Box<dyn Future<Output = Result<KvWritten, KvWriteError>> + Send + '_>> {
        Box::pin(async move {
            let link = self.0.upgrade().ok_or_else(|| {
                KvWriteError::Unavailable("the node no longer follows the control plane".into())
            })?;
            link.send_kv_write(write).await
        })
    }
}
