//! Backend fetch: a guest's outgoing requests to its service's named origins.
//!
//! - [`connect`]: DNS, the private-address check, TCP and TLS to one origin.
//! - [`client`]: a pooled HTTP/1.1 client per origin, with the first-byte and
//!   between-bytes timeouts, and the error codes a guest sees.
//! - [`outbound`]: the `wasi:http/outgoing-handler` hook: which requests a
//!   guest may send, how many, and how many at once.
//!
//! A guest names a backend as the authority of its request
//! (`http://origin/path`). Any other authority is refused before any DNS
//! lookup or connection, so a guest can never reach an address its service
//! did not declare.

pub mod client;
pub mod connect;
pub mod outbound;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use edge_config::BackendSpec;

pub use client::{OriginClient, Timeouts};
pub use outbound::Outbound;

/// A backend as a service's requests use it.
#[derive(Debug)]
pub struct Backend {
    pub name: Arc<str>,
    pub spec: BackendSpec,
    /// The pooled client, or why it could not be built (a bad CA
    /// certificate): requests to this backend then fail with
    /// `configuration-error` while the service's other backends work.
    pub client: Result<Arc<OriginClient>, String>,
}

/// A service's backends by name.
pub type BackendSet = HashMap<String, Arc<Backend>>;

/// Every origin client the node has, shared by the services whose backends
/// are declared identically, so that connection pools survive a new snapshot
/// of unchanged backends.
#[derive(Debug, Default)]
pub struct OriginClients {
    clients: Mutex<HashMap<String, Arc<OriginClient>>>,
}

impl OriginClients {
    /// The backends of one service, reusing the clients of `previous` (the
    /// clients in use before this install) for unchanged specs.
    pub fn backend_set(
        &self,
        specs: &BTreeMap<String, BackendSpec>,
        in_use: &mut HashMap<String, Arc<OriginClient>>,
    ) -> Arc<BackendSet> {
        let previous = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let set = specs
            .iter()
            .map(|(name, spec)| {
                let identity = serde_json::to_string(spec).unwrap_or_default();
                let client = match in_use.get(&identity).or_else(|| previous.get(&identity)) {
                    Some(client) => Ok(Arc::clone(client)),
                    None => OriginClient::new(spec).map(Arc::new),
                };
                if let Ok(client) = &client {
                    in_use.insert(identity, Arc::clone(client));
                } else if let Err(error) = &client {
                    tracing::error!(backend = %name, %error, "backend unusable");
                }
                let backend = Backend {
                    name: name.as_str().into(),
                    spec: spec.clone(),
                    client,
                };
                (name.clone(), Arc::new(backend))
            })
            .collect();
        Arc::new(set)
    }

    /// Keeps exactly the clients of the latest install; the others' pools
    /// close once the requests still using them finish.
    pub fn retain(&self, in_use: HashMap<String, Arc<OriginClient>>) {
        *self.clients.lock().unwrap_or_else(|e| e.into_inner()) = in_use;
    }
}
