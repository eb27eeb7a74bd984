//! What the purge long-polls share: the newest batch read.

use edge_config::protocol::PurgeBatch;

use crate::store::StoreError;

/// The newest purge batch read, by the position it was read after: a
/// purge wakes every node's poll at once, mostly from the same position,
/// and one read serves them all.
#[derive(Debug, Default)]
pub struct PurgeBatchCache {
    newest: std::sync::Mutex<Option<(u64, PurgeBatch)>>,
    /// Held while the batch is read, so that the polls one purge wakes
    /// together wait for the first one's read instead of each running the
    /// same query on the database's few connections.
    reading: tokio::sync::Mutex<()>,
}

impl PurgeBatchCache {
    /// The purges after `after` through at least `newest` (the newest
    /// purge this replica knows of): the cached batch, or one `read`.
    pub async fn batch_after<Read>(
        &self,
        after: u64,
        newest: u64,
        read: impl FnOnce() -> Read,
    ) -> Result<PurgeBatch, StoreError>
    where
        Read: Future<Output = Result<PurgeBatch, StoreError>>,
    {
        if let Some(batch) = self.cached(after, newest) {
            return Ok(batch);
        }
        let _reading = self.reading.lock().await;
        if let Some(batch) = self.cached(after, newest) {
            return Ok(batch);
        }
        let batch = read().await?;
        // A batch with nothing new is not kept: the next poll must read
        // again to find a purge committed through another replica before
        // its notice arrives.
        if batch.through > after {
            *self.lock() = Some((after, batch.clone()));
        }
        Ok(batch)
    }

    fn cached(&self, after: u64, newest: u64) -> Option<PurgeBatch> {
        self.lock()
            .as_ref()
            .filter(|(read_after, batch)| *read_after == after && batch.through >= newest)
            .map(|(_, batch)| batch.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(u64, PurgeBatch)>> {
        self.newest
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
