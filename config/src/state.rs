//! State at the edge: key-value stores and secrets. Their limits, their
//! names, and the wire types between control plane, nodes and `edgectl`.
//!
//! A KV store belongs to one tenant and is opened by guests of the services
//! that list it (`ServiceSpec::kv_stores`) through `wasi:keyvalue`. The
//! control plane holds every store; each node keeps a replica fed by the
//! change feed (`GET /v1/node/kv?after=N`). A secret belongs to one tenant
//! and reaches the guests of the services that list it
//! (`ServiceSpec::secrets`) through `wasi:config/store`, sealed everywhere
//! but in the node's memory.

use serde::{Deserialize, Serialize};

/// Longest key. Keys are strings (UTF-8), as `wasi:keyvalue` has them.
pub const KV_MAX_KEY_BYTES: usize = 512;
/// Largest value. Values travel through the guest's memory and the
/// control plane's API whole: a megabyte bounds both.
pub const KV_MAX_VALUE_BYTES: usize = 1024 * 1024;
/// Keys one `get-many`, `set-many` or `delete-many` may name.
pub const KV_MAX_BATCH_KEYS: usize = 100;
/// Bytes of values one `set-many` may write.
pub const KV_MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Keys one `list-keys` call (or one API page) returns at most.
pub const KV_LIST_PAGE_KEYS: usize = 1_000;
/// Stores one service may open.
pub const KV_MAX_STORES_PER_SERVICE: usize = 16;
/// Secrets one service may read.
pub const MAX_SECRETS_PER_SERVICE: usize = 32;
/// Largest secret value.
pub const MAX_SECRET_VALUE_BYTES: usize = 8 * 1024;
/// Changes handed to a node in one feed answer.
pub const KV_FEED_BATCH: usize = 1_000;
/// Value bytes in one feed answer: a page stops once past them (it always
/// holds one change).
pub const KV_FEED_BATCH_BYTES: usize = 8 * 1024 * 1024;
/// How long a deleted key's tombstone is kept in the feed. A node that was
/// away longer starts its replica over.
pub const KV_TOMBSTONE_RETENTION_MS: i64 = 24 * 3600 * 1000;

/// A store's or a secret's name: 1 to 63 of `a-z 0-9 - _`, starting with a
/// letter or digit. Returns the problem, for an error message.
pub fn check_name(kind: &str, name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric());
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{kind} name {name:?} must be 1 to 63 characters of a-z, 0-9, '-' and '_', starting with a letter or digit"
        ))
    }
}

/// A key a store may hold: 1 to [`KV_MAX_KEY_BYTES`] bytes without control
/// characters.
pub fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > KV_MAX_KEY_BYTES {
        return Err(format!("a key must be 1 to {KV_MAX_KEY_BYTES} bytes"));
    }
    if key.chars().any(char::is_control) {
        return Err("a key may not contain control characters".to_string());
    }
    Ok(())
}

/// Bytes in JSON as standard base64 (with padding).
pub mod base64_bytes {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }

    /// The same for an optional value (`null`: none).
    pub mod option {
        use base64::Engine as _;
        use base64::engine::general_purpose::STANDARD;
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(
            bytes: &Option<Vec<u8>>,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            match bytes {
                Some(bytes) => serializer.serialize_some(&STANDARD.encode(bytes)),
                None => serializer.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Option<Vec<u8>>, D::Error> {
            match Option::<String>::deserialize(deserializer)? {
                Some(text) => STANDARD
                    .decode(text)
                    .map(Some)
                    .map_err(serde::de::Error::custom),
                None => Ok(None),
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Control plane and nodes
// ---------------------------------------------------------------------------

/// A store as a snapshot names it: its id is what the feed and every
/// node's replica key entries by, so two tenants' stores of one name never
/// share a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotKvStore {
    pub id: String,
    pub tenant: String,
    pub name: String,
}

/// One change of the feed: `key` of store `store` (its id) holds `value`
/// from change `seq` on, or is deleted (`value` is `null`). The empty key
/// (never a real one) with no value: the whole store was deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvChange {
    pub seq: u64,
    pub store: String,
    pub key: String,
    #[serde(with = "base64_bytes::option")]
    pub value: Option<Vec<u8>>,
}

/// The answer to a node's feed long-poll: the newest change of every key
/// changed after the node's `after`, in order, through `through`.
///
/// `reset`: tombstones the node never saw were pruned (or the control
/// plane's database is not the one the node followed): it must read every
/// store again from 0, and replace its replica once it has. It sends
/// `pruned_through` back as its `floor` while it reads, so that the tombstones
/// pruned before the reset do not reset it again. `more`: this page stopped
/// short of the newest change (by count or by bytes); poll again at once.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvFeedBatch {
    pub through: u64,
    pub reset: bool,
    pub changes: Vec<KvChange>,
    #[serde(default)]
    pub pruned_through: u64,
    #[serde(default)]
    pub more: bool,
}

/// A write a guest asked its node for, sent on to the control plane
/// (`POST /v1/node/kv/write`), which decides it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvWrite {
    pub tenant: String,
    /// The store's id (from the snapshot).
    pub store: String,
    pub op: KvOp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum KvOp {
    Set {
        key: String,
        #[serde(with = "base64_bytes")]
        value: Vec<u8>,
        /// Only if the key is as expected (compare-and-swap).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expect: Option<KvExpect>,
    },
    SetMany {
        entries: Vec<KvEntry>,
    },
    Delete {
        key: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expect: Option<KvExpect>,
    },
    DeleteMany {
        keys: Vec<String>,
    },
    /// Adds `delta` to the key's value, a decimal `u64` (a missing key
    /// counts as 0).
    Increment {
        key: String,
        delta: u64,
    },
}

/// What a conditional write expects of its key: absent, or at a version
/// (the number of the change that last wrote it, which `GET` returns as
/// the `ETag`). Decided by the control plane, under the write lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KvExpect {
    Absent,
    Version(u64),
}

/// A key and its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvEntry {
    pub key: String,
    #[serde(with = "base64_bytes")]
    pub value: Vec<u8>,
}

/// What a write changed, for the writing node's replica (read-your-writes),
/// and an increment's new value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvWritten {
    pub changes: Vec<KvChange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incremented: Option<u64>,
}

/// A secret in a snapshot: sealed with the operator's key for the tenant
/// and name (see `edge_platform::secrets`); a node with the key opens it in
/// memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedSecret {
    pub name: String,
    pub sealed: String,
}

// ---------------------------------------------------------------------------
// The tenant API (`/v1/kv`, `/v1/secrets`)
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKvStore {
    pub name: String,
}

/// A store as its tenant sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvStoreInfo {
    pub name: String,
    pub created_at: i64,
    pub keys: u64,
    /// Bytes of keys and values.
    pub bytes: u64,
}

/// A page of a store's keys, in order; `cursor` is the last key of the
/// page, to pass as `?after=` for the next one, or absent at the end.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvKeyPage {
    pub keys: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// `POST /v1/kv/{store}/import`: entries set in one transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvImport {
    pub entries: Vec<KvEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvImported {
    pub imported: u64,
    pub seq: u64,
}

/// `PUT /v1/secrets/{name}`: the value is write-only. Its `Debug` shows
/// nothing of it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSecret {
    pub value: String,
}

impl std::fmt::Debug for NewSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NewSecret { value: .. }")
    }
}

/// A secret as the API shows it: never its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretInfo {
    pub name: String,
    pub updated_at: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_short_lowercase_words() {
        assert!(check_name("store", "carts").is_ok());
        assert!(check_name("store", "carts-2_eu").is_ok());
        assert!(check_name("store", "").is_err());
        assert!(check_name("store", "-x").is_err());
        assert!(check_name("store", "Carts").is_err());
        assert!(check_name("store", "a/b").is_err());
        assert!(check_name("store", &"a".repeat(64)).is_err());
    }

    #[test]
    fn keys_are_bounded_and_printable() {
        assert!(check_key("user:1").is_ok());
        assert!(check_key("").is_err());
        assert!(check_key(&"k".repeat(KV_MAX_KEY_BYTES + 1)).is_err());
        assert!(check_key("a\nb").is_err());
    }

    #[test]
    fn values_travel_as_base64() {
        let change = KvChange {
            seq: 3,
            store: "s".into(),
            key: "k".into(),
            value: Some(vec![0, 255, 1]),
        };
        let json = serde_json::to_string(&change).expect("json");
        assert!(json.contains("\"AP8B\""), "{json}");
        assert_eq!(
            serde_json::from_str::<KvChange>(&json).expect("back"),
            change
        );
        let deleted = KvChange {
            value: None,
            ..change
        };
        let json = serde_json::to_string(&deleted).expect("json");
        assert_eq!(
            serde_json::from_str::<KvChange>(&json).expect("back"),
            deleted
        );
    }
}
