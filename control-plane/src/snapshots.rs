//! Snapshots as nodes receive them. Each version this replica builds is
//! read once and serialized once, service by service; the whole snapshot
//! and every delta are put together from those pieces. A node that holds a
//! version still in [`SNAPSHOT_HISTORY`] and asks for a delta gets only
//! the services that changed since, so a change costs the same bytes
//! however many tenants the platform has.
//!
//! Versions are the same on every replica (each is read in the one
//! transaction that reads its number), so a node that moves to another
//! replica gets a delta there too, if that replica built its version.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use edge_config::protocol::{SNAPSHOT_DELTA, SNAPSHOT_FULL};

use crate::error::ApiError;
use crate::store::Store;

/// How many built versions a replica keeps to make deltas from. A node
/// further behind gets the whole snapshot.
pub const SNAPSHOT_HISTORY: usize = 64;

/// One version, serialized.
#[derive(Debug)]
struct Built {
    version: u64,
    /// Each service's JSON by name. A service that did not change shares
    /// its bytes with the version before.
    services: HashMap<String, Bytes>,
    /// The services' names in snapshot order.
    order: Vec<String>,
    kv_stores: Bytes,
    full: Bytes,
}

/// An answer to a node's snapshot poll.
#[derive(Debug, Clone)]
pub struct SnapshotAnswer {
    /// [`SNAPSHOT_FULL`] or [`SNAPSHOT_DELTA`].
    pub kind: &'static str,
    pub json: Bytes,
}

#[derive(Debug, Default)]
struct History {
    /// Oldest first; the newest is the one served.
    built: VecDeque<Arc<Built>>,
    /// Deltas to the newest version, by the version they start from: the
    /// nodes woken by one deploy mostly start from the same one.
    deltas: HashMap<u64, Bytes>,
}

#[derive(Debug, Default)]
pub struct SnapshotCache {
    history: tokio::sync::Mutex<History>,
}

fn serialize(what: &str, value: &impl serde::Serialize) -> Result<Bytes, ApiError> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|e| ApiError::internal(what, &e))
}

/// `[a,b,c]` from JSON pieces.
fn json_array<'a>(out: &mut BytesMut, pieces: impl Iterator<Item = &'a [u8]>) {
    out.put_u8(b'[');
    for (i, piece) in pieces.enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        out.put_slice(piece);
    }
    out.put_u8(b']');
}

impl SnapshotCache {
    /// The answer to a node at `after` once the snapshot is at `version`
    /// (or newer): a delta when `delta` was asked for and `after` is in
    /// the history, the whole snapshot otherwise. The first poll of a new
    /// version reads and serializes it; the others wait for that and share
    /// it.
    pub async fn answer(
        &self,
        store: &Store,
        version: u64,
        after: u64,
        delta: bool,
        builds: &prometheus::IntCounter,
    ) -> Result<SnapshotAnswer, ApiError> {
        let mut history = self.history.lock().await;
        if history
            .built
            .back()
            .is_none_or(|newest| newest.version < version)
        {
            let built = Self::build(store, history.built.back().cloned()).await?;
            builds.inc();
            history.deltas.clear();
            if history.built.len() == SNAPSHOT_HISTORY {
                history.built.pop_front();
            }
            history.built.push_back(Arc::new(built));
        }
        let Some(newest) = history.built.back().cloned() else {
            return Err(ApiError::internal(
                "answering a snapshot poll",
                &"no snapshot was built",
            ));
        };
        let full = SnapshotAnswer {
            kind: SNAPSHOT_FULL,
            json: newest.full.clone(),
        };
        if !delta || after >= newest.version {
            return Ok(full);
        }
        if let Some(json) = history.deltas.get(&after) {
            return Ok(SnapshotAnswer {
                kind: SNAPSHOT_DELTA,
                json: json.clone(),
            });
        }
        let Some(from) = history.built.iter().find(|b| b.version == after).cloned() else {
            return Ok(full);
        };
        let json = Self::delta(&from, &newest)?;
        // A delta as large as the whole snapshot saves nothing.
        if json.len() >= newest.full.len() {
            return Ok(full);
        }
        history.deltas.insert(after, json.clone());
        Ok(SnapshotAnswer {
            kind: SNAPSHOT_DELTA,
            json,
        })
    }

    async fn build(store: &Store, previous: Option<Arc<Built>>) -> Result<Built, ApiError> {
        let snapshot = store.snapshot().await?;
        let mut services = HashMap::with_capacity(snapshot.services.len());
        let mut order = Vec::with_capacity(snapshot.services.len());
        for service in &snapshot.services {
            let json = serialize("serializing a snapshot", service)?;
            // Shared with the version before when unchanged: the history
            // holds each service's bytes once per change, not per version.
            let json = match previous
                .as_ref()
                .and_then(|p| p.services.get(&service.name))
            {
                Some(before) if *before == json => before.clone(),
                _ => json,
            };
            order.push(service.name.clone());
            services.insert(service.name.clone(), json);
        }
        let kv_stores = serialize("serializing a snapshot", &snapshot.kv_stores)?;
        let mut full = BytesMut::new();
        full.put_slice(format!("{{\"version\":{},\"services\":", snapshot.version).as_bytes());
        json_array(&mut full, order.iter().map(|name| &services[name][..]));
        full.put_slice(b",\"kv_stores\":");
        full.put_slice(&kv_stores);
        full.put_u8(b'}');
        Ok(Built {
            version: snapshot.version,
            services,
            order,
            kv_stores,
            full: full.freeze(),
        })
    }

    /// The [`edge_config::protocol::SnapshotDelta`] from `from` to `to`, as
    /// JSON.
    fn delta(from: &Built, to: &Built) -> Result<Bytes, ApiError> {
        let changed = to
            .order
            .iter()
            .map(|name| &to.services[name])
            .zip(to.order.iter())
            .filter(|(json, name)| from.services.get(*name) != Some(json))
            .map(|(json, _)| &json[..]);
        let removed: Vec<&String> = from
            .order
            .iter()
            .filter(|name| !to.services.contains_key(*name))
            .collect();
        let mut out = BytesMut::new();
        out.put_slice(
            format!(
                "{{\"from\":{},\"version\":{},\"services\":",
                from.version, to.version
            )
            .as_bytes(),
        );
        json_array(&mut out, changed);
        out.put_slice(b",\"removed\":");
        out.put_slice(&serialize("serializing a snapshot delta", &removed)?);
        out.put_slice(b",\"kv_stores\":");
        if from.kv_stores == to.kv_stores {
            out.put_slice(b"null");
        } else {
            out.put_slice(&to.kv_stores);
        }
        out.put_u8(b'}');
        Ok(out.freeze())
    }
}
