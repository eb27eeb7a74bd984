//! The tenant's cache on this node (`edge:platform/cache`): values by key,
//! each with a TTL and surrogate keys to purge it by. The same store holds
//! the backend responses the platform caches, so purging a surrogate key
//! here also drops the responses tagged with it (`Surrogate-Key`).
//!
//! ```ignore
//! use std::time::Duration;
//! use edge_sdk::cache;
//!
//! if let Some(page) = cache::lookup("home") { /* ... */ }
//! cache::insert("home", b"<html>...", Duration::from_secs(60), &["pages"])?;
//! cache::purge_surrogate_key("pages");
//! ```

use std::time::Duration;

use crate::bindings;

pub use bindings::edge::platform::cache::Error;

/// The value stored under `key`, if any and not expired.
pub fn lookup(key: &str) -> Option<Vec<u8>> {
    bindings::edge::platform::cache::lookup(key)
}

/// Stores `value` under `key` for `ttl`, tagged with `surrogate_keys`.
pub fn insert(
    key: &str,
    value: &[u8],
    ttl: Duration,
    surrogate_keys: &[&str],
) -> Result<(), Error> {
    let tags: Vec<String> = surrogate_keys.iter().map(|k| k.to_string()).collect();
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    bindings::edge::platform::cache::insert(key, value, ttl_ms, &tags)
}

/// Removes the entry under `key`; whether there was one.
pub fn purge(key: &str) -> bool {
    bindings::edge::platform::cache::purge(key)
}

/// Removes every entry and cached response tagged `surrogate_key`; how many.
pub fn purge_surrogate_key(surrogate_key: &str) -> u32 {
    bindings::edge::platform::cache::purge_surrogate_key(surrogate_key)
}
