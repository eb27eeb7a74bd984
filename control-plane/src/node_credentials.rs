//! Node credentials found lately, so that the burst of calls a node makes
//! after each change (its poll, its fetches, its status) reads its row
//! once, not once per call, while a whole fleet makes the same burst.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// How long a credential found in the database is believed without
/// reading it again. A node removed through this replica is refused at
/// once; through another, within this long.
pub const NODE_CREDENTIAL_TTL: Duration = Duration::from_secs(1);

/// Entries kept before the expired ones are swept out. Only credentials
/// the database holds get in, so the count is about the fleet's size.
const SWEEP_ABOVE: usize = 4096;

#[derive(Debug, Default)]
pub struct NodeCredentials(Mutex<Found>);

#[derive(Debug, Default)]
struct Found {
    /// By credential sha256: the node, and when its row was read.
    nodes: HashMap<String, (String, Instant)>,
    /// Counts removals, so that a lookup that started before one does not
    /// put back what it forgot.
    removals: u64,
    /// Entries above which the expired ones are swept out next.
    sweep_above: usize,
}

/// What [`NodeCredentials::lookup`] hands to [`NodeCredentials::found`].
#[derive(Debug, Clone, Copy)]
pub struct Lookup {
    removals: u64,
}

impl NodeCredentials {
    /// The node whose credential hashes to `token_sha256`, if found within
    /// [`NODE_CREDENTIAL_TTL`]; otherwise what to pass to [`Self::found`]
    /// once the database has been read.
    pub fn node(&self, token_sha256: &str) -> Result<String, Lookup> {
        let found = self.lock();
        found
            .nodes
            .get(token_sha256)
            .filter(|(_, at)| at.elapsed() < NODE_CREDENTIAL_TTL)
            .map(|(node_id, _)| node_id.clone())
            .ok_or(Lookup {
                removals: found.removals,
            })
    }

    /// The database says `token_sha256` is `node_id`'s, as read after
    /// `lookup`: believed, unless a node was removed meanwhile.
    pub fn found(&self, lookup: Lookup, token_sha256: &str, node_id: &str) {
        let mut found = self.lock();
        if found.removals != lookup.removals {
            return;
        }
        if found.nodes.len() >= found.sweep_above.max(SWEEP_ABOVE) {
            found
                .nodes
                .retain(|_, (_, at)| at.elapsed() < NODE_CREDENTIAL_TTL);
            // A fleet larger than the threshold is swept again only once
            // it has doubled, not on every new credential.
            found.sweep_above = found.nodes.len() * 2;
        }
        found.nodes.insert(
            token_sha256.to_string(),
            (node_id.to_string(), Instant::now()),
        );
    }

    /// `node_id` is being removed: its credential is not believed any
    /// more, nor put back by a lookup already under way.
    pub fn forget(&self, node_id: &str) {
        let mut found = self.lock();
        found.removals += 1;
        found.nodes.retain(|_, (id, _)| id != node_id);
    }

    fn lock(&self) -> MutexGuard<'_, Found> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credential_is_believed_until_forgotten_or_expired() {
        let credentials = NodeCredentials::default();
        let lookup = credentials.node("sha-a").expect_err("not found yet");
        credentials.found(lookup, "sha-a", "a");
        credentials.found(lookup, "sha-b", "b");
        assert_eq!(credentials.node("sha-a").ok().as_deref(), Some("a"));
        // A lookup under way while a node is removed puts nothing back.
        let under_way = credentials.node("sha-c").expect_err("not found yet");
        credentials.forget("a");
        credentials.found(under_way, "sha-a", "a");
        assert!(credentials.node("sha-a").is_err());
        assert_eq!(credentials.node("sha-b").ok().as_deref(), Some("b"));
        std::thread::sleep(NODE_CREDENTIAL_TTL + Duration::from_millis(50));
        assert!(credentials.node("sha-b").is_err(), "expired");
    }
}
