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
pub struct NodeCredentials(Mutex<HashMap<String, (String, Instant)>>);

impl NodeCredentials {
    /// The node whose credential hashes to `token_sha256`, if found within
    /// [`NODE_CREDENTIAL_TTL`].
    pub fn node(&self, token_sha256: &str) -> Option<String> {
        let found = self.lock();
        found
            .get(token_sha256)
            .filter(|(_, at)| at.elapsed() < NODE_CREDENTIAL_TTL)
            .map(|(node_id, _)| node_id.clone())
    }

    pub fn found(&self, token_sha256: &str, node_id: &str) {
        let mut found = self.lock();
        if found.len() >= SWEEP_ABOVE {
            found.retain(|_, (_, at)| at.elapsed() < NODE_CREDENTIAL_TTL);
        }
        found.insert(
            token_sha256.to_string(),
            (node_id.to_string(), Instant::now()),
        );
    }

    /// `node_id` was removed: its credential is not believed any more.
    pub fn forget(&self, node_id: &str) {
        self.lock().retain(|_, (id, _)| id != node_id);
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, (String, Instant)>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credential_is_believed_until_forgotten_or_expired() {
        let credentials = NodeCredentials::default();
        assert_eq!(credentials.node("sha-a"), None);
        credentials.found("sha-a", "a");
        credentials.found("sha-b", "b");
        assert_eq!(credentials.node("sha-a").as_deref(), Some("a"));
        credentials.forget("a");
        assert_eq!(credentials.node("sha-a"), None);
        assert_eq!(credentials.node("sha-b").as_deref(), Some("b"));
        std::thread::sleep(NODE_CREDENTIAL_TTL + Duration::from_millis(50));
        assert_eq!(credentials.node("sha-b"), None, "expired");
    }
}
