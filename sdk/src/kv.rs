//! The tenant's KV stores (`wasi:keyvalue`), as the service's `kv_stores`
//! lists them. Reads are served by the node's replica in microseconds;
//! writes are durable on the control plane when they return, and this node
//! reads them back at once. Other nodes see a write within about a second.
//!
//! ```ignore
//! use edge_sdk::kv::Store;
//!
//! let carts = Store::open("carts")?;
//! carts.set("user:1", b"[]")?;
//! let visits = carts.increment("visits", 1)?;
//! let cart = carts.get("user:1")?;
//! ```

use crate::bindings::wasi::keyvalue::{atomics, batch, store};

pub use store::Error;

/// A key and its value, as a batch read finds them (`None`: no such key).
pub type Found = Option<(String, Vec<u8>)>;

/// An open store.
#[derive(Debug)]
pub struct Store(store::Bucket);

impl Store {
    /// Opens the store `name`: `Error::NoSuchStore` unless the service
    /// lists it and its tenant has it.
    pub fn open(name: &str) -> Result<Self, Error> {
        store::open(name).map(Self)
    }

    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        self.0.get(key)
    }

    pub fn set(&self, key: &str, value: &[u8]) -> Result<(), Error> {
        self.0.set(key, value)
    }

    pub fn delete(&self, key: &str) -> Result<(), Error> {
        self.0.delete(key)
    }

    pub fn exists(&self, key: &str) -> Result<bool, Error> {
        self.0.exists(key)
    }

    /// Adds `delta` to the key's decimal value (0 if it has none), decided
    /// on the control plane: concurrent increments from every node add up.
    pub fn increment(&self, key: &str, delta: u64) -> Result<u64, Error> {
        atomics::increment(&self.0, key, delta)
    }

    /// Every key, in order, page by page.
    pub fn keys(&self) -> Result<Vec<String>, Error> {
        let mut keys = Vec::new();
        let mut cursor = None;
        loop {
            let page = self.0.list_keys(cursor)?;
            keys.extend(page.keys);
            match page.cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(keys),
            }
        }
    }

    /// The values of `keys`, in one call.
    pub fn get_many(&self, keys: &[String]) -> Result<Vec<Found>, Error> {
        batch::get_many(&self.0, keys)
    }

    pub fn set_many(&self, entries: &[(String, Vec<u8>)]) -> Result<(), Error> {
        batch::set_many(&self.0, entries)
    }

    pub fn delete_many(&self, keys: &[String]) -> Result<(), Error> {
        batch::delete_many(&self.0, keys)
    }
}
