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
/// What guests read.
const ENTRIES: TableDefinition<EntryKey, EntryValue> = TableDefinition::new("entries");
/// Where a reset reads every store again, while guests still read
/// [`ENTRIES`]; it replaces them once the feed has caught up.
const STAGING: TableDefinition<EntryKey, EntryValue> = TableDefinition::new("staging");
/// `"position"`: the feed's number applied through; `"floor"`: the
/// control plane's pruned tombstones at the last reset; `"staging"`: 1
/// while a reset is being read.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const POSITION: &str = "position";
const FLOOR: &str = "floor";
const STAGING_ACTIVE: &str = "staging";

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

/// Where the feed stands: what a node sends with its next poll.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FeedPosition {
    pub after: u64,
    pub floor: u64,
}

pub struct Replica {
    db: Database,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Replica(..)")
    }
}

/// Writes `change` into `table` unless it holds a newer change of the key
/// (`keep_equal`: unless it holds the same one either). A tombstone is kept
/// (`keep_tombstone`, the node's own deletes) or the key removed.
fn apply_change(
    table: &mut redb::Table<EntryKey, EntryValue>,
    change: &KvChange,
    keep_tombstone: bool,
) -> Result<(), ReplicaError> {
    let key = (change.store.as_str(), change.key.as_str());
    let current = table.get(key).map_err(fail)?.map(|entry| entry.value().0);
    if current.is_some_and(|seq| seq > change.seq) {
        return Ok(());
    }
    match (&change.value, keep_tombstone) {
        (None, false) => {
            table.remove(key).map_err(fail)?;
        }
        (value, _) => {
            table
                .insert(key, (change.seq, value.as_deref()))
                .map_err(fail)?;
        }
    }
    Ok(())
}

/// The meta value `name` (0 if unset), from a read or a write transaction.
fn meta_value(
    meta: &impl ReadableTable<&'static str, u64>,
    name: &str,
) -> Result<u64, ReplicaError> {
    Ok(meta
        .get(name)
        .map_err(fail)?
        .map_or(0, |value| value.value()))
}

/// Removes every entry of `store` from `table`.
fn drop_store(
    table: &mut redb::Table<EntryKey, EntryValue>,
    store: &str,
) -> Result<(), ReplicaError> {
    let mut doomed = Vec::new();
    for entry in table.range((store, "")..).map_err(fail)? {
        let (key, _) = entry.map_err(fail)?;
        let (entry_store, key) = key.value();
        if entry_store != store {
            break;
        }
        doomed.push(key.to_string());
    }
    for key in &doomed {
        table.remove((store, key.as_str())).map_err(fail)?;
    }
    Ok(())
}

impl Replica {
    /// Opens (or creates) the replica at `path`.
    pub fn open(path: &Path) -> Result<Self, ReplicaError> {
        let db = Database::create(path).map_err(fail)?;
        let txn = db.begin_write().map_err(fail)?;
        txn.open_table(ENTRIES).map_err(fail)?;
        txn.open_table(STAGING).map_err(fail)?;
        txn.open_table(META).map_err(fail)?;
        txn.commit().map_err(fail)?;
        Ok(Self { db })
    }

    /// The feed's number the replica holds everything through.
    pub fn position(&self) -> Result<u64, ReplicaError> {
        self.feed_position().map(|position| position.after)
    }

    /// Where the next poll of the feed starts.
    pub fn feed_position(&self) -> Result<FeedPosition, ReplicaError> {
        let txn = self.db.begin_read().map_err(fail)?;
        let meta = txn.open_table(META).map_err(fail)?;
        Ok(FeedPosition {
            after: meta_value(&meta, POSITION)?,
            floor: meta_value(&meta, FLOOR)?,
        })
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

    /// The values of `keys` in store `store`, in one read; `None` if they
    /// come to more than `max_bytes`.
    pub fn get_many(
        &self,
        store: &str,
        keys: &[String],
        max_bytes: usize,
    ) -> Result<Option<Vec<Option<Vec<u8>>>>, ReplicaError> {
        let txn = self.db.begin_read().map_err(fail)?;
        let entries = txn.open_table(ENTRIES).map_err(fail)?;
        let mut values = Vec::with_capacity(keys.len());
        let mut bytes = 0;
        for key in keys {
            let value = entries
                .get((store, key.as_str()))
                .map_err(fail)?
                .and_then(|entry| {
                    let value = entry.value().1?;
                    bytes += value.len();
                    (bytes <= max_bytes).then(|| value.to_vec())
                });
            if bytes > max_bytes {
                return Ok(None);
            }
            values.push(value);
        }
        Ok(Some(values))
    }

    /// The keys of store `store` in order, from the `start`th, at most
    /// [`KV_LIST_PAGE_KEYS`].
    pub fn keys(&self, store: &str, start: u64) -> Result<KeyPage, ReplicaError> {
        let txn = self.db.begin_read().map_err(fail)?;
        let entries = txn.open_table(ENTRIES).map_err(fail)?;
        let mut keys = Vec::new();
        let mut live = 0u64;
        let mut next = None;
        for entry in entries.range((store, "")..).map_err(fail)? {
            let (key, value) = entry.map_err(fail)?;
            let (entry_store, key) = key.value();
            if entry_store != store {
                break;
            }
            if value.value().1.is_none() {
                continue;
            }
            if live >= start {
                if keys.len() == KV_LIST_PAGE_KEYS {
                    next = Some(live);
                    break;
                }
                keys.push(key.to_string());
            }
            live += 1;
        }
        Ok(KeyPage { keys, next })
    }

    /// Applies what the control plane decided for one of this node's
    /// guests, at once, so the node reads its own writes. A change the feed
    /// has already passed is not applied: the feed brought it, or a newer
    /// one that a stale value must not overwrite.
    pub fn apply_own(&self, changes: &[KvChange]) -> Result<(), ReplicaError> {
        let mut txn = self.db.begin_write().map_err(fail)?;
        txn.set_durability(Durability::None).map_err(fail)?;
        {
            let meta = txn.open_table(META).map_err(fail)?;
            let position = meta_value(&meta, POSITION)?;
            let staging = meta_value(&meta, STAGING_ACTIVE)? == 1;
            drop(meta);
            let mut entries = txn.open_table(ENTRIES).map_err(fail)?;
            let mut staged = txn.open_table(STAGING).map_err(fail)?;
            for change in changes {
                let passed = change.seq <= position;
                if staging {
                    // Guests read the old entries until the reset is read
                    // whole: those get the write whatever the position.
                    apply_change(&mut entries, change, true)?;
                    if !passed {
                        apply_change(&mut staged, change, true)?;
                    }
                } else if !passed {
                    // A delete stays as a tombstone until the feed passes it.
                    apply_change(&mut entries, change, true)?;
                }
            }
        }
        txn.commit().map_err(fail)
    }

    /// Applies one answer of the feed, and its position, in one durable
    /// commit. A reset is read into a table of its own while guests still
    /// read the old entries, which it replaces once the feed has caught up.
    /// Returns the new position.
    pub fn apply_feed(&self, batch: &KvFeedBatch) -> Result<u64, ReplicaError> {
        let txn = self.db.begin_write().map_err(fail)?;
        {
            let mut meta = txn.open_table(META).map_err(fail)?;
            if batch.reset {
                txn.delete_table(STAGING).map_err(fail)?;
                meta.insert(STAGING_ACTIVE, 1).map_err(fail)?;
                meta.insert(FLOOR, batch.pruned_through).map_err(fail)?;
            }
            let staging = meta_value(&meta, STAGING_ACTIVE)? == 1;
            let target = if staging { STAGING } else { ENTRIES };
            let mut table = txn.open_table(target).map_err(fail)?;
            for change in &batch.changes {
                if change.key.is_empty() && change.value.is_none() {
                    // The store was deleted: every entry of it goes.
                    drop_store(&mut table, &change.store)?;
                    continue;
                }
                apply_change(&mut table, change, false)?;
            }
            meta.insert(POSITION, batch.through).map_err(fail)?;
            if staging && !batch.more {
                // Caught up: the stores read again replace the old ones.
                drop(table);
                txn.delete_table(ENTRIES).map_err(fail)?;
                let staged = txn.open_table(STAGING).map_err(fail)?;
                let mut entries = txn.open_table(ENTRIES).map_err(fail)?;
                for entry in staged.iter().map_err(fail)? {
                    let (key, value) = entry.map_err(fail)?;
                    entries.insert(key.value(), value.value()).map_err(fail)?;
                }
                drop(staged);
                txn.delete_table(STAGING).map_err(fail)?;
                txn.open_table(STAGING).map_err(fail)?;
                meta.insert(STAGING_ACTIVE, 0).map_err(fail)?;
            }
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
            changes,
            ..KvFeedBatch::default()
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
        // A reset is read in pages; guests read the old entries until the
        // last page, which replaces them.
        let reset = KvFeedBatch {
            through: 1,
            reset: true,
            more: true,
            pruned_through: 9,
            changes: vec![change(1, "b", Some("fresh"))],
        };
        replica.apply_feed(&reset).expect("reset");
        assert_eq!(replica.get("s2", "x").expect("get"), Some(b"kept".to_vec()));
        assert_eq!(replica.get("s1", "b").expect("get"), None);
        assert_eq!(
            replica.feed_position().expect("position"),
            FeedPosition { after: 1, floor: 9 }
        );
        // The node's own write while the reset is read reaches both.
        replica
            .apply_own(&[change(11, "own", Some("mine"))])
            .expect("own");
        assert_eq!(
            replica.get("s1", "own").expect("get"),
            Some(b"mine".to_vec())
        );
        replica
            .apply_feed(&batch(2, vec![change(2, "c", Some("also"))]))
            .expect("last page");
        assert_eq!(replica.get("s2", "x").expect("get"), None);
        assert_eq!(
            replica.get("s1", "b").expect("get"),
            Some(b"fresh".to_vec())
        );
        assert_eq!(replica.get("s1", "c").expect("get"), Some(b"also".to_vec()));
        assert_eq!(
            replica.get("s1", "own").expect("get"),
            Some(b"mine".to_vec())
        );
        assert_eq!(replica.position().expect("position"), 2);
    }

    #[test]
    fn an_own_write_the_feed_has_passed_does_not_bring_back_a_deleted_key() {
        let (_dir, replica) = replica();
        // The feed delivers another node's delete (9) before this node's
        // own write (7) is applied.
        replica
            .apply_feed(&batch(
                9,
                vec![change(7, "k", Some("mine")), change(9, "k", None)],
            ))
            .expect("feed");
        replica
            .apply_own(&[change(7, "k", Some("mine"))])
            .expect("own");
        assert_eq!(replica.get("s1", "k").expect("get"), None);
    }

    #[test]
    fn a_batch_read_is_bounded_in_bytes() {
        let (_dir, replica) = replica();
        replica
            .apply_feed(&batch(
                2,
                vec![change(1, "a", Some("12345")), change(2, "b", Some("678"))],
            ))
            .expect("feed");
        let keys = ["a".to_string(), "b".to_string(), "none".to_string()];
        let read = replica.get_many("s1", &keys, 8).expect("read");
        assert_eq!(
            read,
            Some(vec![Some(b"12345".to_vec()), Some(b"678".to_vec()), None])
        );
        assert_eq!(replica.get_many("s1", &keys, 7).expect("read"), None);
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
