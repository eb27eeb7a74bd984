//! What nodes say of themselves with every poll and status (the snapshot
//! version they serve, the services of it they could not load, the purges
//! they applied), kept in memory and written together every
//! [`SIGHTINGS_FLUSH_INTERVAL`]: one commit for a whole fleet's calls
//! after a change, instead of one each in front of the next deploy or
//! purge.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use edge_config::protocol::ServiceFailure;

use crate::store::node_failures::MAX_REPORTED_FAILURES;
use crate::store::{NodeSighting, Store, now_ms};

/// How often the sightings are written.
pub const SIGHTINGS_FLUSH_INTERVAL: Duration = Duration::from_millis(250);

#[derive(Debug, Default)]
pub struct NodeSightings(Mutex<HashMap<String, NodeSighting>>);

impl NodeSightings {
    /// `node_id` polled for the snapshot after `version`: it serves it.
    pub fn serves_snapshot(&self, node_id: &str, version: u64) {
        self.update(node_id, |sighting| {
            sighting.snapshot_version = Some(version)
        });
    }

    /// `node_id` applied the snapshot `version` and could not load
    /// `failures` of it.
    pub fn reported_status(&self, node_id: &str, version: u64, mut failures: Vec<ServiceFailure>) {
        failures.truncate(MAX_REPORTED_FAILURES);
        self.update(node_id, |sighting| {
            sighting.snapshot_version = Some(version);
            sighting.failures = Some(failures);
        });
    }

    /// `node_id` polled for the purges after `seq`: it applied them.
    pub fn applied_purges(&self, node_id: &str, seq: u64) {
        self.update(node_id, |sighting| {
            sighting.purge_seq = Some(sighting.purge_seq.unwrap_or(0).max(seq));
        });
    }

    fn update(&self, node_id: &str, change: impl FnOnce(&mut NodeSighting)) {
        let mut pending = self.lock();
        let sighting = pending.entry(node_id.to_string()).or_default();
        sighting.seen_at_ms = now_ms();
        change(sighting);
    }

    /// Writes what is pending every [`SIGHTINGS_FLUSH_INTERVAL`] until the
    /// control plane stops.
    pub async fn flush_every(self: Arc<Self>, store: Store) {
        loop {
            tokio::time::sleep(SIGHTINGS_FLUSH_INTERVAL).await;
            self.flush(&store).await;
        }
    }

    /// Writes what is pending; a write that fails is kept for the next,
    /// under anything seen since.
    pub async fn flush(&self, store: &Store) {
        let pending: Vec<(String, NodeSighting)> =
            std::mem::take(&mut *self.lock()).into_iter().collect();
        if pending.is_empty() {
            return;
        }
        if let Err(error) = store.record_sightings(&pending).await {
            tracing::warn!(%error, nodes = pending.len(), "recording what nodes polled with failed; trying again");
            let mut newer = self.lock();
            for (node_id, older) in pending {
                let sighting = newer.entry(node_id).or_default();
                if sighting.seen_at_ms == 0 {
                    sighting.seen_at_ms = older.seen_at_ms;
                }
                sighting.snapshot_version = sighting.snapshot_version.or(older.snapshot_version);
                sighting.purge_seq = sighting.purge_seq.max(older.purge_seq);
                if sighting.failures.is_none() {
                    sighting.failures = older.failures;
                }
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, NodeSighting>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nothing is written until a flush; then the fleet's sightings are,
    /// a purge position never goes back within a batch, a status replaces
    /// the version, and a node removed meanwhile is skipped.
    #[tokio::test]
    async fn sightings_are_written_at_the_flush_and_a_removed_node_is_skipped() {
        let dir = tempfile::tempdir().expect("dir");
        let url = format!("sqlite://{}", dir.path().join("cp.db").display());
        let store = Store::connect(&url).await.expect("store");
        let a = store.register_node("a", "f", "sha-a").await.expect("a");
        let b = store.register_node("b", "f", "sha-b").await.expect("b");
        let sightings = NodeSightings::default();
        sightings.serves_snapshot(&a, 3);
        sightings.applied_purges(&a, 9);
        sightings.applied_purges(&a, 7);
        sightings.reported_status(&a, 4, Vec::new());
        sightings.serves_snapshot(&b, 5);
        assert!(store.remove_node(&b).await.expect("remove"));
        let nodes = store.nodes().await.expect("nodes");
        assert_eq!((nodes[0].snapshot_version, nodes[0].purge_seq), (0, 0));

        sightings.flush(&store).await;
        let nodes = store.nodes().await.expect("nodes");
        assert_eq!(nodes.len(), 1);
        assert_eq!((nodes[0].snapshot_version, nodes[0].purge_seq), (4, 9));
        assert!(sightings.lock().is_empty(), "written, not kept");
    }
}
