//! What the purge long-polls share: the newest batch read.

use edge_config::protocol::PurgeBatch;

use crate::store::StoreError;

/// The newest purge batch read, by the position it was read after: a
/// purge wakes every node's poll at once, mostly from the same position,
/// and one read serves them all.
#[derive(Debug, Default)]
pub struct PurgeBatchCache {
    newest: std::sync::Mutex<Option<CachedBatch>>,
    /// Held while the batch is read, so that the polls one purge wakes
    /// together wait for the first one's read instead of each running the
    /// same query on the database's few connections.
    reading: tokio::sync::Mutex<()>,
}

impl PurgeBatchCache {
    /// The purges after `after`, read once this replica knew of `newest`
    /// (the newest purge it knows of now): the cached batch, or one
    /// `read`.
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
            *self.lock() = Some(CachedBatch {
                after,
                newest,
                batch: batch.clone(),
            });
        }
        Ok(batch)
    }

    /// The cached batch, if read after `after` once this replica knew of
    /// `newest`: a batch cut short at `MAX_PURGES_PER_BATCH` reaches less
    /// far, and is still the answer.
    fn cached(&self, after: u64, newest: u64) -> Option<PurgeBatch> {
        self.lock()
            .as_ref()
            .filter(|cached| cached.after == after && cached.newest >= newest)
            .map(|cached| cached.batch.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<CachedBatch>> {
        self.newest
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[derive(Debug)]
struct CachedBatch {
    /// The position it was read after.
    after: u64,
    /// The newest purge this replica knew of before it was read.
    newest: u64,
    batch: PurgeBatch,
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Polls woken together read once; a batch cut short of the newest
    /// purge is still reused; a newer purge is read again.
    #[tokio::test]
    async fn one_read_serves_the_polls_until_a_newer_purge() {
        let cache = PurgeBatchCache::default();
        let reads = AtomicUsize::new(0);
        let read = |through: u64| {
            let reads = &reads;
            move || async move {
                reads.fetch_add(1, Ordering::SeqCst);
                // Let the other polls come and wait meanwhile.
                tokio::task::yield_now().await;
                Ok(PurgeBatch {
                    through,
                    reset: false,
                    purges: Vec::new(),
                })
            }
        };
        let polls = tokio::join!(
            cache.batch_after(3, 2_000, read(1_003)),
            cache.batch_after(3, 2_000, read(1_003)),
            cache.batch_after(3, 2_000, read(1_003)),
        );
        for batch in [polls.0, polls.1, polls.2] {
            assert_eq!(batch.expect("batch").through, 1_003);
        }
        assert_eq!(reads.load(Ordering::SeqCst), 1, "one read for three polls");
        let newer = cache.batch_after(3, 2_001, read(1_003)).await;
        assert_eq!(newer.expect("batch").through, 1_003);
        assert_eq!(reads.load(Ordering::SeqCst), 2, "a newer purge is read");
        let other = cache.batch_after(7, 2_001, read(1_007)).await;
        assert_eq!(other.expect("batch").through, 1_007);
        assert_eq!(reads.load(Ordering::SeqCst), 3, "another position is read");
    }
}
