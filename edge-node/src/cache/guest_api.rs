//! `edge:platform/cache` for guests: lookup, insert with a TTL and surrogate
//! keys, and purge, all in the tenant's namespace of the node's cache.

use std::sync::Arc;
use std::time::Duration;

use edge_config::limits::{
    CACHE_MAX_GUEST_TTL_MS, CACHE_MAX_KEY_BYTES, CACHE_MAX_SURROGATE_KEY_BYTES,
    CACHE_MAX_SURROGATE_KEYS,
};

use super::HttpCache;
use crate::sandbox::GuestState;

pub use edge_platform::guest::cache::{Error, Host};

/// A guest's handle on its tenant's cache.
#[derive(Debug, Clone)]
pub struct GuestCache {
    pub namespace: Arc<str>,
    pub cache: Arc<HttpCache>,
}

impl GuestCache {
    fn lookup(&self, key: &str) -> Option<Vec<u8>> {
        self.cache
            .guest_lookup(&self.namespace, key)
            .map(|value| value.to_vec())
    }

    fn insert(
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
}

impl Host for GuestState {
    fn lookup(&mut self, key: String) -> Option<Vec<u8>> {
        self.cache.as_ref()?.lookup(&key)
    }

    fn insert(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_ms: u64,
        surrogate_keys: Vec<String>,
    ) -> Result<(), Error> {
        match &self.cache {
            Some(cache) => cache.insert(&key, value, ttl_ms, surrogate_keys),
            // A node without a cache (compiling only) stores nothing.
            None => Ok(()),
        }
    }

    fn purge(&mut self, key: String) -> bool {
        self.cache
            .as_ref()
            .is_some_and(|c| c.cache.guest_purge(&c.namespace, &key))
    }

    fn purge_surrogate_key(&mut self, surrogate_key: String) -> u32 {
        self.cache.as_ref().map_or(0, |c| {
            let purged = c.cache.purge_surrogate_key(
                &c.namespace,
                &surrogate_key,
                crate::cache::PurgeMode::Hard,
            );
            u32::try_from(purged).unwrap_or(u32::MAX)
        })
    }
}
