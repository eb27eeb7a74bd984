//! What the purge long-polls share: the newest batch read, and the nodes'
//! acknowledgements waiting to be written.

use edge_config::protocol::PurgeBatch;

/// How often the purge positions nodes acknowledged are written.
pub const PURGE_ACK_FLUSH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);

/// The purge positions nodes acknowledged with their polls, written
/// together every [`PURGE_ACK_FLUSH_INTERVAL`]: one commit for a whole
/// fleet's acknowledgements, instead of one each in front of the next
/// purge's delivery.
#[derive(Debug, Default)]
pub struct PurgeAcks(std::sync::Mutex<std::collections::HashMap<String, u64>>);

impl PurgeAcks {
    pub fn record(&self, node_id: &str, seq: u64) {
        let mut pending = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = pending.entry(node_id.to_string()).or_default();
        *entry = (*entry).max(seq);
    }

    /// Writes what is pending until the control plane stops; a write that
    /// fails is kept for the next.
    pub async fn flush_every(self: std::sync::Arc<Self>, store: crate::store::Store) {
        loop {
            tokio::time::sleep(PURGE_ACK_FLUSH_INTERVAL).await;
            let pending: Vec<(String, u64)> = std::mem::take(
                &mut *self
                    .0
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            )
            .into_iter()
            .collect();
            if pending.is_empty() {
                continue;
            }
            if let Err(error) = store.nodes_applied_purges(&pending).await {
                tracing::warn!(%error, nodes = pending.len(), "recording nodes' purges failed; trying again");
                for (node_id, seq) in pending {
                    self.record(&node_id, seq);
                }
            }
        }
    }
}

/// The newest purge batch read, by the position it was read after: a
/// purge wakes every node's poll at once, mostly from the same position,
/// and the first to read the batch saves the others the query.
#[derive(Debug, Default)]
pub struct PurgeBatchCache(std::sync::Mutex<Option<(u64, PurgeBatch)>>);

impl PurgeBatchCache {
    /// The batch read after `after`, if it reaches `newest` (the newest
    /// purge this replica knows of).
    pub fn get(&self, after: u64, newest: u64) -> Option<PurgeBatch> {
        let cached = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        cached
            .as_ref()
            .filter(|(read_after, batch)| *read_after == after && batch.through >= newest)
            .map(|(_, batch)| batch.clone())
    }

    pub fn put(&self, after: u64, batch: &PurgeBatch) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((after, batch.clone()));
    }
}
