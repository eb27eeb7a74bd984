//! `edge:platform/cache` for guests: lookup, insert with a TTL and surrogate
//! keys, and purge, all in the tenant's namespace of the node's cache.

use std::sync::Arc;
use std::time::Duration;

use edge_config::limits::{
    CACHE_MAX_GUEST_TTL_MS, CACHE_MAX_KEY_BYTES, CACHE_MAX_SURROGATE_KEY_BYTES,
    CACHE_MAX_SURROGATE_KEYS,
};

use crate::cache::{HttpCache, PurgeMode};

pub use edge_platform::guest::cache::Error;

/// A guest's handle on its tenant's cache.
#[derive(Debug, Clone)]
pub struct GuestCache {
    pub namespace: Arc<str>,
    pub cache: Arc<HttpCache>,
}

impl GuestCache {
    pub(crate) fn lookup(&self, key: &str) -> Option<Vec<u8>> {
        self.cache
            .guest_lookup(&self.namespace, key)
            .map(|value| value.to_vec())
    }

    pub(crate) fn insert(
        &self,
        key: &str,
        value: Vec<u8>,
        ttl_ms: u64,
        surrogate_keys: Vec<String>,
    ) -> Result<(), Error> {
        if key.is_empty() || key.len() > CACHE_MAX_KEY_BYTES {
            return Err(Error::InvalidKey);
        }
        let limit = self.cache.max_object_bytes();
        if value.len() > limit {
            return Err(Error::TooLarge(limit as u64));
        }
        if ttl_ms == 0 || ttl_ms > CACHE_MAX_GUEST_TTL_MS {
            return Err(Error::InvalidTtl);
        }
        let valid_tag = |tag: &String| {
            !tag.is_empty()
                && tag.len() <= CACHE_MAX_SURROGATE_KEY_BYTES
                && !tag.contains(char::is_whitespace)
        };
        if surrogate_keys.len() > CACHE_MAX_SURROGATE_KEYS || !surrogate_keys.iter().all(valid_tag)
        {
            return Err(Error::InvalidSurrogateKey);
        }
        // A tenant with all the surrogate keys it may have gets the same
        // error as for a key it may not use.
        self.cache
            .guest_insert(
                &self.namespace,
                key,
                value.into(),
                Duration::from_millis(ttl_ms),
                surrogate_keys,
            )
            .map_err(|_full| Error::InvalidSurrogateKey)
    }

    pub(crate) fn purge(&self, key: &str) -> bool {
        self.cache.guest_purge(&self.namespace, key)
    }

    pub(crate) fn purge_surrogate_key(&self, surrogate_key: &str) -> u32 {
        let purged =
            self.cache
                .purge_surrogate_key(&self.namespace, surrogate_key, PurgeMode::Hard);
        u32::try_from(purged).unwrap_or(u32::MAX)
    }
}
