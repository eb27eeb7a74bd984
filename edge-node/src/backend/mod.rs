//! Backend fetch: a guest's outgoing requests to its service's named origins.
//!
//! - [`connect`]: DNS, the private-address check, TCP and TLS to one origin.
//! - [`client`]: a pooled HTTP/1.1 client per origin, with the first-byte and
//!   between-bytes timeouts, and the error codes a guest sees.
//!
//! Which requests a guest may send is decided above, in
//! [`crate::host::outbound`].
//!
//! A guest names a backend as the authority of its request
//! (`http://origin/path`). Any other authority is refused before any DNS
//! lookup or connection, so a guest can never reach an address its service
//! did not declare.

pub mod client;
pub mod connect;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use edge_config::BackendSpec;
use http::{Request, Response};
use wasmtime_wasi_http::{Error as WasiHttpError, WasiBody};

use crate::metrics::Metrics;

pub use client::{OriginClient, Timeouts};

/// A backend as a service's requests use it.
#[derive(Debug)]
pub struct Backend {
    pub name: Arc<str>,
    pub spec: BackendSpec,
    pub target: BackendTarget,
}

/// Where a backend's requests go.
#[derive(Debug)]
pub enum BackendTarget {
    /// An origin server, through its pooled client, or why the client could
    /// not be built (a bad CA certificate): requests to this backend then
    /// fail with `configuration-error` while the service's other backends
    /// work.
    Origin(Result<Arc<OriginClient>, String>),
    /// Another service of the same tenant, by name, run in process
    /// (`crate::host::outbound::ServiceCalls`).
    Service(Arc<str>),
}

/// A backend request's way out: the origin's pooled client, and the series
/// of `edge_backend_*` its requests are counted in.
#[derive(Debug, Clone)]
pub struct Origin {
    pub client: Arc<OriginClient>,
    /// The requesting service's metrics label.
    pub service: Arc<str>,
    pub backend: Arc<str>,
    pub metrics: Arc<Metrics>,
}

impl Origin {
    pub fn base_url(&self) -> &str {
        self.client.base_url()
    }

    /// Sends one request to the origin (see [`OriginClient::send`]) and
    /// counts it, with the time to its response head.
    pub async fn send(
        &self,
        request: Request<WasiBody>,
        timeouts: Timeouts,
    ) -> Result<Response<WasiBody>, WasiHttpError> {
        let started = Instant::now();
        let result = self.client.send(request, timeouts).await;
        let outcome = match &result {
            Ok(response) => crate::metrics::status_class(response.status().as_u16()).to_string(),
            Err(error) => error_label(error),
        };
        self.metrics
            .record_backend(&self.service, &self.backend, &outcome, started.elapsed());
        result
    }
}

/// The `outcome` label of a failed backend request: the error code's name in
/// snake case (`connection_refused`, `connection_timeout`, ...). The codes
/// are a closed set, so the label values are too.
pub(crate) fn error_label(error: &WasiHttpError) -> String {
    let debug = format!("{error:?}");
    let name: String = debug
        .chars()
        .take_while(char::is_ascii_alphanumeric)
        .collect();
    let mut label = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                label.push('_');
            }
            label.push(c.to_ascii_lowercase());
        } else {
            label.push(c);
        }
    }
    label
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
                if let Some(service) = &spec.service {
                    let backend = Backend {
                        name: name.as_str().into(),
                        spec: spec.clone(),
                        target: BackendTarget::Service(service.as_str().into()),
                    };
                    return (name.clone(), Arc::new(backend));
                }
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
                    target: BackendTarget::Origin(client),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_errors_become_snake_case_labels_without_their_details() {
        assert_eq!(
            error_label(&WasiHttpError::ConnectionRefused),
            "connection_refused"
        );
        assert_eq!(
            error_label(&WasiHttpError::InternalError(Some(
                "a guest-chosen detail".into()
            ))),
            "internal_error"
        );
    }
}
