//! `wasi:keyvalue` for guests: the stores their service lists, of their
//! own tenant only. Reads come from the node's replica; writes are decided
//! by the control plane ([`crate::kv`]). Every limit is checked here first,
//! so a write the control plane would refuse costs no round trip.

use std::collections::BTreeMap;
use std::sync::Arc;

use edge_config::state::{
    KV_MAX_BATCH_BYTES, KV_MAX_BATCH_KEYS, KV_MAX_VALUE_BYTES, KvEntry, KvOp, check_key,
};
use edge_platform::guest::keyvalue::store::{Error, KeyResponse};

use crate::kv::{Kv, KvWriteError};

/// A key and its value, as a batch read finds them (`None`: no such key).
pub type Found = Option<(String, Vec<u8>)>;

/// A service's handle on its tenant's stores: the names it lists, each with
/// the id the replica keys it by. Built when the service is installed.
#[derive(Debug, Clone)]
pub struct GuestKv {
    pub tenant: Arc<str>,
    pub stores: Arc<BTreeMap<String, Arc<str>>>,
    pub kv: Arc<Kv>,
}

fn replica_error(error: crate::kv::ReplicaError) -> Error {
    tracing::error!(%error, "KV read failed");
    Error::Other("the node's KV replica failed to read".to_string())
}

fn write_error(error: KvWriteError) -> Error {
    match error {
        KvWriteError::NoSuchStore => Error::NoSuchStore,
        other => Error::Other(other.to_string()),
    }
}

fn key_ok(key: &str) -> Result<(), Error> {
    check_key(key).map_err(Error::Other)
}

fn value_ok(value: &[u8]) -> Result<(), Error> {
    if value.len() > KV_MAX_VALUE_BYTES {
        return Err(Error::Other(format!(
            "a value may be at most {KV_MAX_VALUE_BYTES} bytes"
        )));
    }
    Ok(())
}

fn batch_ok(keys: usize) -> Result<(), Error> {
    if keys > KV_MAX_BATCH_KEYS {
        return Err(Error::Other(format!(
            "a batch may name at most {KV_MAX_BATCH_KEYS} keys"
        )));
    }
    Ok(())
}

impl GuestKv {
    /// The id of the store `name`, if the service lists it and its tenant
    /// has it. Anything else is `no-such-store`, whether another tenant has
    /// one of that name or not.
    pub(crate) fn open(&self, name: &str) -> Result<Arc<str>, Error> {
        self.stores.get(name).cloned().ok_or(Error::NoSuchStore)
    }

    pub(crate) fn get(&self, store: &str, key: &str) -> Result<Option<Vec<u8>>, Error> {
        key_ok(key)?;
        self.kv.count_reads(1);
        self.kv
            .replica()
            .and_then(|replica| replica.get(store, key))
            .map_err(replica_error)
    }

    pub(crate) fn exists(&self, store: &str, key: &str) -> Result<bool, Error> {
        self.get(store, key).map(|value| value.is_some())
    }

    pub(crate) fn list_keys(&self, store: &str, cursor: Option<u64>) -> Result<KeyResponse, Error> {
        let page = self
            .kv
            .replica()
            .and_then(|replica| replica.keys(store, cursor.unwrap_or(0)))
            .map_err(replica_error)?;
        Ok(KeyResponse {
            keys: page.keys,
            cursor: page.next,
        })
    }

    pub(crate) fn get_many(&self, store: &str, keys: Vec<String>) -> Result<Vec<Found>, Error> {
        batch_ok(keys.len())?;
        for key in &keys {
            key_ok(key)?;
        }
        self.kv.count_reads(keys.len());
        let values = self
            .kv
            .replica()
            .and_then(|replica| replica.get_many(store, &keys, KV_MAX_BATCH_BYTES))
            .map_err(replica_error)?
            .ok_or_else(|| {
                Error::Other(format!(
                    "a batch may read at most {KV_MAX_BATCH_BYTES} bytes of values"
                ))
            })?;
        Ok(keys
            .into_iter()
            .zip(values)
            .map(|(key, value)| value.map(|value| (key, value)))
            .collect())
    }

    async fn write(&self, store: &str, op: KvOp) -> Result<Option<u64>, Error> {
        let written = self
            .kv
            .write(&self.tenant, store, op)
            .await
            .map_err(write_error)?;
        Ok(written.incremented)
    }

    pub(crate) async fn set(&self, store: &str, key: String, value: Vec<u8>) -> Result<(), Error> {
        key_ok(&key)?;
        value_ok(&value)?;
        let op = KvOp::Set {
            key,
            value,
            expect: None,
        };
        self.write(store, op).await.map(drop)
    }

    pub(crate) async fn delete(&self, store: &str, key: String) -> Result<(), Error> {
        key_ok(&key)?;
        let op = KvOp::Delete { key, expect: None };
        self.write(store, op).await.map(drop)
    }

    pub(crate) async fn increment(
        &self,
        store: &str,
        key: String,
        delta: u64,
    ) -> Result<u64, Error> {
        key_ok(&key)?;
        self.write(store, KvOp::Increment { key, delta })
            .await?
            .ok_or_else(|| Error::Other("the increment was not applied".to_string()))
    }

    pub(crate) async fn set_many(
        &self,
        store: &str,
        entries: Vec<(String, Vec<u8>)>,
    ) -> Result<(), Error> {
        batch_ok(entries.len())?;
        let mut bytes = 0;
        for (key, value) in &entries {
            key_ok(key)?;
            value_ok(value)?;
            bytes += value.len();
        }
        if bytes > KV_MAX_BATCH_BYTES {
            return Err(Error::Other(format!(
                "a batch may write at most {KV_MAX_BATCH_BYTES} bytes of values"
            )));
        }
        let entries = entries
            .into_iter()
            .map(|(key, value)| KvEntry { key, value })
            .collect();
        self.write(store, KvOp::SetMany { entries }).await.map(drop)
    }

    pub(crate) async fn delete_many(&self, store: &str, keys: Vec<String>) -> Result<(), Error> {
        batch_ok(keys.len())?;
        for key in &keys {
            key_ok(key)?;
        }
        self.write(store, KvOp::DeleteMany { keys }).await.map(drop)
    }
}
