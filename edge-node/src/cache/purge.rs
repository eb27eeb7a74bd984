//! Purges on the node: by URL (the origin's responses for it and the
//! guest's own) or by surrogate key, hard (removed) or soft (marked stale),
//! or everything at once. Each is recorded in the purge log before it is
//! applied, so that a fill already on its way does not store what it
//! brings back.

use std::sync::Arc;
use std::time::SystemTime;

use moka::ops::compute::Op;

use super::key::KeyKind;
use super::{CacheKey, HttpCache, PurgeMode, Slot};

/// What a purge picks at one key.
#[derive(Debug, Clone, Copy)]
enum Purged<'a> {
    /// Everything (a purge by URL).
    All,
    /// What carries this surrogate key.
    Tagged(&'a str),
}

impl Purged<'_> {
    fn picks(self, surrogate_keys: &[String]) -> bool {
        match self {
            Self::All => true,
            Self::Tagged(wanted) => surrogate_keys.iter().any(|key| key == wanted),
        }
    }
}

impl HttpCache {
    /// Purges every stored variant of `url` in `namespace`: the origin's
    /// responses for it and the guest's own. Returns how many entries were
    /// purged.
    pub fn purge_url(&self, namespace: &str, url: &str, mode: PurgeMode) -> usize {
        let origin = CacheKey::http_normalizing(&Arc::from(namespace), url);
        let front = CacheKey {
            kind: KeyKind::Front,
            ..origin.clone()
        };
        // Recorded first: a fill that stores between this and the purge
        // below sees it.
        self.purges.record_url(&origin, mode);
        // A guest's stored response is only ever served fresh (else the
        // guest runs): soft-purged, it would only take space.
        self.purge_variants(&origin, mode, Purged::All)
            + self.purge_variants(&front, PurgeMode::Hard, Purged::All)
    }

    /// Purges every response and guest entry of `namespace` tagged with
    /// `surrogate_key`, and nothing else: a URL's other variants stay.
    pub fn purge_surrogate_key(
        &self,
        namespace: &str,
        surrogate_key: &str,
        mode: PurgeMode,
    ) -> usize {
        self.purges.record_tag(namespace, surrogate_key, mode);
        let keys = match mode {
            PurgeMode::Hard => self.tags.take(namespace, surrogate_key),
            // The entries keep their tags, and so stay in the index.
            PurgeMode::Soft => self.tags.keys(namespace, surrogate_key),
        };
        let Some(keys) = keys else {
            return 0;
        };
        keys.iter()
            .map(|key| {
                let mode = if key.kind == KeyKind::Http {
                    mode
                } else {
                    PurgeMode::Hard
                };
                self.purge_variants(key, mode, Purged::Tagged(surrogate_key))
            })
            .sum()
    }

    /// Purges what `purged` picks at `key`: removed, or marked stale.
    /// Returns how many variants (or guest entries) that was.
    fn purge_variants(&self, key: &CacheKey, mode: PurgeMode, purged_ones: Purged<'_>) -> usize {
        let now = SystemTime::now();
        let mut purged = 0;
        let mut written = None;
        self.entries.entry(key.clone()).and_compute_with(|current| {
            let Some(current) = current else {
                return Op::Nop;
            };
            match current.value().as_ref() {
                Slot::Http(variants) => {
                    let mut kept = Vec::with_capacity(variants.len());
                    for variant in variants {
                        if !purged_ones.picks(&variant.surrogate_keys) {
                            kept.push(Arc::clone(variant));
                            continue;
                        }
                        purged += 1;
                        if mode == PurgeMode::Soft {
                            kept.push(Arc::new(variant.soft_purged(now)));
                        }
                    }
                    if purged == 0 {
                        Op::Nop
                    } else if kept.is_empty() {
                        Op::Remove
                    } else {
                        let slot = Arc::new(Slot::Http(kept));
                        written = Some(Arc::clone(&slot));
                        Op::Put(slot)
                    }
                }
                // A guest's entry has no origin to revalidate with: any
                // purge removes it.
                Slot::Guest(entry) => {
                    if purged_ones.picks(&entry.surrogate_keys) {
                        purged = 1;
                        Op::Remove
                    } else {
                        Op::Nop
                    }
                }
            }
        });
        // The slot's tags went with the old one (see `new`); the kept and
        // soft-purged variants' come back.
        self.index_written(key, written.as_deref());
        purged
    }

    /// Drops everything: for a node that missed purges it can no longer
    /// replay.
    pub fn purge_all(&self) {
        self.purges.record_everything();
        self.entries.invalidate_all();
        self.tags.clear();
    }
}
