//! The node's replica of every KV store, in one redb file
//! (`<data_dir>/kv.redb`).
//!
//! redb: pure Rust, maintained, ACID with copy-on-write pages and a
//! checksummed commit, so a node killed mid-write reopens at its last
//! commit; reads are lock-free snapshots that never wait for the writer.
//! Each entry keeps the number of the change that wrote it, and the feed's
//! position is written in the same transaction as the changes it covers:
//! after a crash the replica and its position agree, and the feed resumes
//! from there.
//!
//! Two writers: the feed (durable commits, in order) and the node's own
//! guests' writes once the control plane has decided them (not fsynced:
//! the control plane has them durably, and the feed brings them again).
//! A change is applied only over an older one, so the two meet in any
//! order. A key the node's own guest deleted stays as a tombstone until the
//! feed passes it, so that an older change still on its way cannot bring
//! the key back.

use std::path::Path;

use edge_config::state::{KV_LIST_PAGE_KEYS, KvChange, KvFeedBatch};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

/// `(store id, key)`.
type EntryKey = (&'static str, &'static str);
/// `(seq, value)`; no value: a tombstone.
type EntryValue = (u64, Option<&'static [u8]>);
const ENTRIES: TableDefinition<EntryKey, EntryValue> = TableDefinition::new("entries");
/// `"position"` → the feed's number applied through.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const POSITION: &str = "position";

#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error("the node's KV replica: {0}")]
    Storage(#[from] redb::Error),
    #[error("the node's KV replica is not open: {0}")]
    Closed(String),
}

impl ReplicaError {
    /// Another open database holds the file.
    pub fn already_open(&self) -> bool {
        matches!(self, Self::Storage(redb::Error::DatabaseAlreadyOpen))
    }
}

fn fail(error: impl Into<redb::Error>) -> ReplicaError {
    ReplicaError::Storage(error.into())
}

/// One page of a store's keys, and where the next starts.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct KeyPage {
    pub keys: Vec<String>,
    pub next: Option<u64>,
}

pub struct Replica {
    db: Database,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Replica(..)")
    }
}

impl Replica {
    /// Opens (or creates) the replica at `path`.
    pub fn open(path: &Path) -> Result<Self, ReplicaError> {
        let db = Database::create(path).map_err(fail)?;
        let txn = db.begin_write().map_err(fail)?;
        txn.open_table(ENTRIES).map_err(fail)?;
        txn.open_table(META).map_err(fail)?;
        txn.commit().map_err(fail)?;
        Ok(Self { db })
    }

    /// The feed's number the replica holds everything through.
    pub fn position(&self) -> Result<u64, ReplicaError> {
        let txn = self.db.begin_read().map_err(fail)?;
        let meta = txn.open_table(META).map_err(fail)?;
        Ok(meta
            .get(POSITION)
            .map_err(fail)?
            .map_or(0, |value| value.value()))
    }

    /// The value of `key` in store `store`.
    pub fn get(&self, store: &str, key: &str) -> Result<Option<Vec<u8>>, ReplicaError> {
        let txn = self.db.begin_read().map_err(fail)?;
        let entries = txn.open_table(ENTRIES).map_err(fail)?;
        Ok(entries
            .get((store, key))
            .map_err(fail)?
            .and_then(|entry| entry.value().1.map(<[u8]>::to_vec)))
    }

    /// The values of `keys` in store `store`, in one read.
    pub fn get_many(
        &self,
        store: &str,
        keys: &[String],
    ) -> Result<Vec<Option<Vec<u8>>>, ReplicaError> {
        let txn = self.db.begin_read().map_err(fail)?;
        let entries = txn.open_table(ENTRIES).map_err(fail)?;
        keys.iter()
            .map(|key| {
                Ok(entries
                    .get((store, key.as_str()))
                    .map_err(fail)?
                    .and_then(|entry| entry.value().1.map(<[u8]>::to_vec)))
            })
            .collect()
    }

    /// The keys of store `store` in order, from the `start`th, at most
    /// [`KV_LIST_PAGE_KEYS`].
    pub fn keys(&self, store: &str, start: u64) -> Result<KeyPage, ReplicaError> {
        let txn = self.db.begin_read().map_err(fail)?;
        let entries = txn.open_table(ENTRIES).map_err(fail)?;
        let mut live = entries
            .range((store, "")..)
            .map_err(fail)?
            .map_while(|entry| {
                let entry = entry.ok()?;
                let (entry_store, key) = entry.0.value();
                (entry_store == store).then(|| (key.to_string(), entry.1.value().1.is_some()))
            })
            .filter(|(_, live)| *live)
            .map(|(key, _)| key)
            .skip(usize::try_from(start).unwrap_or(usize::MAX));
        let keys: Vec<String> = live.by_ref().take(KV_LIST_PAGE_KEYS).collect();
        let next = live.next().map(|_| start + keys.len() as u64);
        Ok(KeyPage { keys, next })
    }

    /// Applies what the control plane decided for one of this node's
    /// guests, at once, so the node reads its own writes.
    pub fn apply_own(&self, changes: &[KvChange]) -> Result<(), ReplicaError> {
        let mut txn = self.db.begin_write().map_err(fail)?;
        txn.set_durability(Durability::None).map_err(fail)?;
        {
            let mut entries = txn.open_table(ENTRIES).map_err(fail)?;
            for change in changes {
                let current = entries
                    .get((change.store.as_str(), change.key.as_str()))
                    .map_err(fail)?
                    .map(|entry| entry.value().0);
                if current.is_some_and(|seq| seq >= change.seq) {
                    continue;
                }
                // A delete stays as a tombstone until the feed passes it.
                entries
                    .insert(
                        (change.store.as_str(), change.key.as_str()),
                        (change.seq, change.value.as_deref()),
                    )
                    .map_err(fail)?;
            }
        }
        txn.commit().map_err(fail)
    }

    /// Applies one answer of the feed, and its position, in one durable
    /// commit. Returns the new position.
    pub fn apply_feed(&self, batch: &KvFeedBatch) -> Result<u64, ReplicaError> {
        let txn = self.db.begin_write().map_err(fail)?;
        {
            if batch.reset {
                txn.delete_table(ENTRIES).map_err(fail)?;
            }
            let mut entries = txn.open_table(ENTRIES).map_err(fail)?;
            for change in &batch.changes {
                let store = change.store.as_str();
                if change.key.is_empty() && change.value.is_none() {
                    // The store was deleted: every entry of it goes.
                    let doomed: Vec<String> = entries
                        .range((store, "")..)
                        .map_err(fail)?
                        .map_while(|entry| {
                            let entry = entry.ok()?;
                            let (entry_store, key) = entry.0.value();
                            (entry_store == store).then(|| key.to_string())
                        })
                        .collect();
                    for key in &doomed {
                        entries.remove((store, key.as_str())).map_err(fail)?;
                    }
                    continue;
                }
                let key = (store, change.key.as_str());
                let current = entries.get(key).map_err(fail)?.map(|entry| entry.value().0);
                if current.is_some_and(|seq| seq > change.seq) {
                    continue;
                }
                match &change.value {
                    Some(value) => {
                        entries
                            .insert(key, (change.seq, Some(value.as_slice())))
                            .map_err(fail)?;
                    }
                    None => {
                        entries.remove(key).map_err(fail)?;
                    }
                }
            }
            let mut meta = txn.open_table(META).map_err(fail)?;
            meta.insert(POSITION, batch.through).map_err(fail)?;
        }
        txn.commit().map_err(fail)?;
        Ok(batch.through)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(seq: u64, key: &str, value: Option<&str>) -> KvChange {
        KvChange {
            seq,
            store: "s1".into(),
            key: key.into(),
            value: value.map(|v| v.as_bytes().to_vec()),
        }
    }

    fn batch(through: u64, changes: Vec<KvChange>) -> KvFeedBatch {
        KvFeedBatch {
            through,
            reset: false,
            changes,
        }
    }

    fn replica() -> (tempfile::TempDir, Replica) {
        let dir = tempfile::tempdir().expect("dir");
        let replica = Replica::open(&dir.path().join("kv.redb")).expect("open");
        (dir, replica)
    }

    #[test]
    fn the_feed_and_its_position_survive_a_reopen() {
        let (dir, replica) = replica();
        replica
            .apply_feed(&batch(
                2,
                vec![change(1, "a", Some("1")), change(2, "b", Some("2"))],
            ))
            .expect("apply");
        drop(replica);
        let replica = Replica::open(&dir.path().join("kv.redb")).expect("reopen");
        assert_eq!(replica.position().expect("position"), 2);
        assert_eq!(replica.get("s1", "a").expect("get"), Some(b"1".to_vec()));
        assert_eq!(replica.get("s2", "a").expect("get"), None, "another store");
    }

    #[test]
    fn an_older_change_never_overwrites_a_newer_one() {
        let (_dir, replica) = replica();
        // The node's own write (seq 5) lands before the feed reaches it.
        replica
            .apply_own(&[change(5, "k", Some("new"))])
            .expect("own");
        replica
            .apply_feed(&batch(4, vec![change(4, "k", Some("old"))]))
            .expect("feed");
        assert_eq!(replica.get("s1", "k").expect("get"), Some(b"new".to_vec()));
        // A delete by the node's own guest hides an older value still in
        // the feed, until the feed passes the delete itself.
        replica
            .apply_own(&[change(7, "k", None)])
            .expect("own delete");
        replica
            .apply_feed(&batch(6, vec![change(6, "k", Some("older"))]))
            .expect("feed");
        assert_eq!(replica.get("s1", "k").expect("get"), None);
        replica
            .apply_feed(&batch(7, vec![change(7, "k", None)]))
            .expect("feed");
        assert_eq!(replica.get("s1", "k").expect("get"), None);
        assert!(replica.keys("s1", 0).expect("keys").keys.is_empty());
    }

    #[test]
    fn a_deleted_store_and_a_reset_drop_their_entries() {
        let (_dir, replica) = replica();
        let other = KvChange {
            store: "s2".into(),
            ..change(2, "x", Some("kept"))
        };
        replica
            .apply_feed(&batch(2, vec![change(1, "a", Some("1")), other]))
            .expect("apply");
        replica
            .apply_feed(&batch(3, vec![change(3, "", None)]))
            .expect("store deleted");
        assert_eq!(replica.get("s1", "a").expect("get"), None);
        assert_eq!(replica.get("s2", "x").expect("get"), Some(b"kept".to_vec()));
        let reset = KvFeedBatch {
            through: 1,
            reset: true,
            changes: vec![change(1, "b", Some("fresh"))],
        };
        replica.apply_feed(&reset).expect("reset");
        assert_eq!(replica.get("s2", "x").expect("get"), None);
        assert_eq!(
            replica.get("s1", "b").expect("get"),
            Some(b"fresh".to_vec())
        );
        assert_eq!(replica.position().expect("position"), 1);
    }

    #[test]
    fn keys_come_in_order_one_page_at_a_time() {
        let (_dir, replica) = replica();
        let changes: Vec<_> = (0..KV_LIST_PAGE_KEYS + 5)
            .map(|i| change(i as u64 + 1, &format!("k{i:05}"), Some("v")))
            .collect();
        replica
            .apply_feed(&batch(changes.len() as u64, changes))
            .expect("apply");
        let first = replica.keys("s1", 0).expect("page");
        assert_eq!(first.keys.len(), KV_LIST_PAGE_KEYS);
        assert_eq!(first.keys[0], "k00000");
        let second = replica.keys("s1", first.next.expect("more")).expect("page");
        assert_eq!(second.keys.len(), 5);
        assert_eq!(second.next, None);
    }
}
