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

use crate::store::node_failures::kept_failures;
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
    pub fn reported_status(&self, node_id: &str, version: u64, failures: Vec<ServiceFailure>) {
        let failures = kept_failures(failures);
        self.update(node_id, |sighting| {
            sighting.snapshot_version = Some(version);
            sighting.failures = Some(failures);
        });
    }

    /// `node_id` polled for the purges after `seq`: it applied them.
    pub fn applied_purges(&self, node_id: &str, seq: u64) {
        self.update(node_id, |sighting| {
            sighting.purge_seq = sighting.purge_seq.max(Some(seq));
        });
    }

    fn update(&self, node_id: &str, change: impl FnOnce(&mut NodeSighting)) {
        let mut pending = self.lock();
        let sighting = pending.entry(node_id.to_string()).or_default();
        sighting.seen_at_ms = now_ms();
        change(sighting);
    }

    /// Writes what is pending every [`SIGHTINGS_FLUSH_INTERVAL`], and once
    /// more when `stop` fires (or its sender is dropped).
    pub async fn flush_every(
        self: Arc<Self>,
        store: Store,
        mut stop: tokio::sync::oneshot::Receiver<()>,
    ) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(SIGHTINGS_FLUSH_INTERVAL) => self.flush(&store).await,
                _ = &mut stop => {
                    self.flush(&store).await;
                    return;
                }
            }
        }
    }

    /// Writes what is pending, in node-id order (so that replicas writing
    /// the same rows lock them in one order). When the batch fails, each
    /// node is written alone: one that fails by itself is dropped, so a
    /// bad entry cannot hold up the fleet's. When every one fails (the
    /// database is away), all are kept for the next, under anything seen
    /// since.
    pub async fn flush(&self, store: &Store) {
        let mut pending: Vec<(String, NodeSighting)> =
            std::mem::take(&mut *self.lock()).into_iter().collect();
        if pending.is_empty() {
            return;
        }
        pending.sort_by(|a, b| a.0.cmp(&b.0));
        let Err(error) = store.record_sightings(&pending).await else {
            return;
        };
        let total = pending.len();
        let mut failed = Vec::new();
        for entry in pending {
            if store
                .record_sightings(std::slice::from_ref(&entry))
                .await
                .is_err()
            {
                failed.push(entry);
            }
        }
        if failed.is_empty() {
            return;
        }
        if failed.len() < total {
            tracing::warn!(%error, nodes = failed.len(), "what these nodes said could not be recorded; dropped");
            return;
        }
        tracing::warn!(%error, nodes = total, "recording what nodes polled with failed; trying again");
        let mut newer = self.lock();
        for (node_id, older) in failed {
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

    fn lock(&self) -> MutexGuard<'_, HashMap<String, NodeSighting>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::node_failures::{MAX_FAILURE_ERROR_CHARS, MAX_REPORTED_FAILURES};

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

    /// What a status holds is cut to what is kept, and a string PostgreSQL
    /// would refuse cannot reach the fleet's batch.
    #[test]
    fn a_status_is_cut_to_what_is_kept_before_it_is_held() {
        let failure = |service: &str, error: String| ServiceFailure {
            service: service.to_string(),
            version: 1,
            module_sha256: String::new(),
            error,
        };
        let sightings = NodeSightings::default();
        let mut failures = vec![
            failure("acme/web\0", "e".to_string()),
            failure(
                "acme/web",
                format!("a\0{}", "e".repeat(MAX_FAILURE_ERROR_CHARS)),
            ),
        ];
        failures.extend((0..MAX_REPORTED_FAILURES).map(|_| failure("acme/web", "e".into())));
        sightings.reported_status("a", 2, failures);
        let held = sightings.lock();
        let held = held["a"].failures.as_ref().expect("held");
        assert_eq!(held.len(), MAX_REPORTED_FAILURES - 1);
        assert_eq!(held[0].service, "acme/web");
        assert_eq!(held[0].error.chars().count(), MAX_FAILURE_ERROR_CHARS);
        assert!(!held[0].error.contains('\0'));
    }
}
