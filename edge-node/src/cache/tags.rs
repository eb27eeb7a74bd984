//! The surrogate-key index: for each tenant's tag, the cache keys of the
//! entries it tags, so that a purge by tag finds them.
//!
//! What tenants can make the node hold here is bounded twice. Every entry
//! is charged, in the cache's weight, for the index records its tags take
//! ([`index_weight`]), so the index shrinks as entries are evicted; and
//! every record goes when its entry is replaced, evicted, expires or is
//! purged (the cache's eviction listener calls [`TagIndex::unindex`], and a
//! writer indexes its new entry's tags again after its write). And a tenant may
//! have at most `cache.max_surrogate_keys_per_tenant` distinct tags on the
//! node: an entry that would take it past that is not stored (a response
//! is still served; a guest's insert fails).

use std::collections::HashSet;
use std::sync::Arc;

use dashmap::DashMap;

use super::key::CacheKey;

/// Bytes an index record is charged beyond the tag and the cache key it
/// holds: the set slot, the map entry and their allocations.
const TAG_RECORD_OVERHEAD_BYTES: usize = 96;

/// What an entry's tags cost the index, for the cache's weigher.
pub fn index_weight<'a>(key: &CacheKey, tags: impl Iterator<Item = &'a str>) -> usize {
    tags.map(|tag| tag.len() + key.key.len() + TAG_RECORD_OVERHEAD_BYTES)
        .sum()
}

/// A tenant is at `cache.max_surrogate_keys_per_tenant`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TagsFull;

#[derive(Debug)]
pub struct TagIndex {
    keys: DashMap<(Arc<str>, String), HashSet<CacheKey>>,
    /// Distinct tags per tenant namespace; a namespace with none is absent.
    per_tenant: DashMap<Arc<str>, usize>,
    max_per_tenant: usize,
}

impl TagIndex {
    pub fn new(max_per_tenant: u64) -> Self {
        Self {
            keys: DashMap::new(),
            per_tenant: DashMap::new(),
            max_per_tenant: usize::try_from(max_per_tenant).unwrap_or(usize::MAX),
        }
    }

    /// Records that `key` is tagged with each of `tags`, or nothing if the
    /// tenant would have more distinct tags than it may.
    pub fn index(&self, key: &CacheKey, tags: &[String]) -> Result<(), TagsFull> {
        let namespace = &key.namespace;
        let record = |tag: &String| (Arc::clone(namespace), tag.clone());
        let new = tags
            .iter()
            .filter(|tag| !self.keys.contains_key(&record(tag)))
            .count();
        let current = self.per_tenant.get(namespace).map_or(0, |count| *count);
        // Checked before, counted as records are made: inserts racing
        // each other may pass the bound by their tags, never more.
        if new > 0 && current + new > self.max_per_tenant {
            return Err(TagsFull);
        }
        self.reindex(key, tags.iter().map(String::as_str));
        Ok(())
    }

    /// The keys tagged with `tag` in `namespace`, taken out of the index.
    pub fn take(&self, namespace: &str, tag: &str) -> Option<HashSet<CacheKey>> {
        let (_, keys) = self.keys.remove(&(Arc::from(namespace), tag.to_string()))?;
        self.forget_one(namespace);
        Some(keys)
    }

    /// The keys tagged with `tag` in `namespace`, left in the index.
    pub fn keys(&self, namespace: &str, tag: &str) -> Option<HashSet<CacheKey>> {
        let keys = self.keys.get(&(Arc::from(namespace), tag.to_string()))?;
        Some(keys.clone())
    }

    /// Indexes `key` under `tags` again after a write, whatever the
    /// tenant's bound: they were counted when the write was admitted.
    pub fn reindex<'a>(&self, key: &CacheKey, tags: impl Iterator<Item = &'a str>) {
        for tag in tags {
            match self
                .keys
                .entry((Arc::clone(&key.namespace), tag.to_string()))
            {
                dashmap::Entry::Occupied(mut keys) => {
                    keys.get_mut().insert(key.clone());
                }
                dashmap::Entry::Vacant(vacant) => {
                    vacant.insert(HashSet::from([key.clone()]));
                    *self
                        .per_tenant
                        .entry(Arc::clone(&key.namespace))
                        .or_insert(0) += 1;
                }
            }
        }
    }

    /// Removes `key` from the records of `tags` (a slot's, as it goes).
    pub fn unindex<'a>(&self, key: &CacheKey, tags: impl Iterator<Item = &'a str>) {
        for tag in tags {
            let record = (Arc::clone(&key.namespace), tag.to_string());
            if let Some(mut keys) = self.keys.get_mut(&record) {
                keys.remove(key);
            }
            if self
                .keys
                .remove_if(&record, |_, keys| keys.is_empty())
                .is_some()
            {
                self.forget_one(&key.namespace);
            }
        }
    }

    fn forget_one(&self, namespace: &str) {
        self.per_tenant.remove_if_mut(namespace, |_, count| {
            *count = count.saturating_sub(1);
            *count == 0
        });
    }

    pub fn clear(&self) {
        self.keys.clear();
        self.per_tenant.clear();
    }

    /// Distinct tags indexed, all tenants.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no tag is indexed.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}
