//! Snapshots as nodes receive them. Each version this replica builds is
//! read once and serialized once, service by service; the whole snapshot
//! and every delta are put together from those pieces. A node that holds a
//! version still in [`SNAPSHOT_HISTORY`] and asks for a delta gets only
//! the services that changed since, so a change costs the same bytes
//! however many tenants the platform has.
//!
//! Versions are the same on every replica (each is read at one moment of
//! the database, in the transaction that reads its number), so a node that
//! moves to another replica gets a delta there too, if that replica built
//! its version. Each delta names the digest of the snapshot it starts
//! from; a node holding anything else refuses it and asks for the whole.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use edge_config::protocol::{SNAPSHOT_DELTA, SNAPSHOT_FULL, Snapshot};
use edge_platform::ModuleHash;

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
    /// its bytes with the version before, so the history holds each
    /// service's bytes once per change, not once per version.
    services: HashMap<String, Bytes>,
    /// The services' names in snapshot order.
    order: Vec<String>,
    kv_stores: Bytes,
    /// The sha256 of the whole snapshot's JSON.
    digest: String,
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
    /// The newest version's whole JSON (only the newest is kept whole).
    newest_full: Bytes,
    /// Deltas to the newest version, by the version they start from: the
    /// nodes woken by one deploy mostly start from the same one. `None`:
    /// the delta was no smaller than the whole snapshot.
    deltas: HashMap<u64, Option<Bytes>>,
}

#[derive(Debug, Default)]
pub struct SnapshotCache {
    history: tokio::sync::Mutex<History>,
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
            let snapshot = store.snapshot().await?;
            let (built, full) = build(&snapshot, history.built.back().map(Arc::as_ref))?;
            builds.inc();
            history.deltas.clear();
            if history.built.len() == SNAPSHOT_HISTORY {
                history.built.pop_front();
            }
            history.built.push_back(Arc::new(built));
            history.newest_full = full;
        }
        let full = SnapshotAnswer {
            kind: SNAPSHOT_FULL,
            json: history.newest_full.clone(),
        };
        let Some(newest) = history.built.back().cloned() else {
            return Ok(full);
        };
        if !delta || after >= newest.version {
            return Ok(full);
        }
        let json = match history.deltas.get(&after) {
            Some(known) => known.clone(),
            None => {
                let Some(from) = history.built.iter().find(|b| b.version == after).cloned() else {
                    return Ok(full);
                };
                let json = delta_json(&from, &newest)?;
                // A delta as large as the whole snapshot saves nothing.
                let json = (json.len() < full.json.len()).then_some(json);
                history.deltas.insert(after, json.clone());
                json
            }
        };
        Ok(match json {
            Some(json) => SnapshotAnswer {
                kind: SNAPSHOT_DELTA,
                json,
            },
            None => full,
        })
    }
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

/// `snapshot` serialized, sharing each unchanged service's bytes with
/// `previous`; and its whole JSON.
fn build(snapshot: &Snapshot, previous: Option<&Built>) -> Result<(Built, Bytes), ApiError> {
    let mut services = HashMap::with_capacity(snapshot.services.len());
    let mut order = Vec::with_capacity(snapshot.services.len());
    for service in &snapshot.services {
        let json = serialize("serializing a snapshot", service)?;
        let json = match previous.and_then(|p| p.services.get(&service.name)) {
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
    let full = full.freeze();
    let built = Built {
        version: snapshot.version,
        services,
        order,
        kv_stores,
        digest: ModuleHash::of(&full).to_hex(),
    };
    Ok((built, full))
}

/// The [`edge_config::protocol::SnapshotDelta`] from `from` to `to`, as
/// JSON.
fn delta_json(from: &Built, to: &Built) -> Result<Bytes, ApiError> {
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
            "{{\"from\":{},\"from_digest\":\"{}\",\"version\":{},\"digest\":\"{}\",\"services\":",
            from.version, from.digest, to.version, to.digest
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

#[cfg(test)]
mod tests {
    use edge_config::protocol::{Snapshot, SnapshotDelta, SnapshotService};
    use edge_config::state::SnapshotKvStore;

    use super::{build, delta_json};

    fn service(name: &str, version: u64, created_at_ms: u64) -> SnapshotService {
        SnapshotService {
            name: name.to_string(),
            tenant: name.split('/').next().unwrap_or_default().to_string(),
            version,
            module_sha256: format!("{version:064x}"),
            spec: edge_config::protocol::ServiceSpec::default(),
            created_at_ms,
            certificate: None,
            secrets: Vec::new(),
            canary: None,
        }
    }

    /// Applying the delta from `a` to `b` to what a node holds of `a`
    /// gives `b` exactly: changed, added and removed services, KV stores.
    #[test]
    fn a_delta_applied_to_the_version_it_starts_from_is_the_next_version() {
        let a = Snapshot {
            version: 7,
            services: vec![
                service("a/one", 1, 10),
                service("b/two", 1, 20),
                service("c/three", 4, 30),
            ],
            kv_stores: Vec::new(),
        };
        let mut b = Snapshot {
            version: 9,
            services: vec![
                service("a/one", 1, 10),
                service("c/three", 5, 30),
                service("d/four", 1, 5),
            ],
            kv_stores: vec![SnapshotKvStore {
                tenant: "a".into(),
                name: "carts".into(),
                id: "kv1".into(),
            }],
        };
        b.sort_services();
        let (built_a, _) = build(&a, None).expect("a");
        let (built_b, full_b) = build(&b, Some(&built_a)).expect("b");
        let json = delta_json(&built_a, &built_b).expect("delta");
        let delta: SnapshotDelta = serde_json::from_slice(&json).expect("delta parses");
        assert_eq!(delta.from_digest, built_a.digest);
        assert_eq!(delta.digest, built_b.digest);
        let names: Vec<&str> = delta.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["d/four", "c/three"], "only what changed is sent");
        assert_eq!(delta.removed, ["b/two"]);
        assert_eq!(a.apply(delta.clone()), Some(b.clone()));
        let whole: Snapshot = serde_json::from_slice(&full_b).expect("whole parses");
        assert_eq!(whole, b, "the whole snapshot is the same as the merged one");
        // A node holding another version refuses it.
        let other = Snapshot {
            version: 8,
            ..a.clone()
        };
        assert_eq!(other.apply(delta), None);

        // Nothing changed but the version: an empty delta, KV stores left out.
        let c = Snapshot {
            version: 10,
            ..b.clone()
        };
        let (built_c, _) = build(&c, Some(&built_b)).expect("c");
        let delta: SnapshotDelta =
            serde_json::from_slice(&delta_json(&built_b, &built_c).expect("delta")).expect("parse");
        assert!(delta.services.is_empty() && delta.removed.is_empty());
        assert_eq!(delta.kv_stores, None);
        assert_eq!(b.apply(delta), Some(c));
    }
}
