//! The service's config (`config` in its spec) and the secrets it lists
//! (`secrets`), by name, through `wasi:config/store`. Changing either needs
//! no new module: the next snapshot brings it.
//!
//! ```ignore
//! let flag = edge_sdk::config::get("feature_x").as_deref() == Some("on");
//! let api_key = edge_sdk::config::get("api_key");
//! ```

use crate::bindings::wasi::config::store;

/// The value of `key`, if the service has one.
pub fn get(key: &str) -> Option<String> {
    store::get(key).ok().flatten()
}

/// Every key and value.
pub fn all() -> Vec<(String, String)> {
    store::get_all().unwrap_or_default()
}
