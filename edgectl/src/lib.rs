//! The control plane's API from the outside: [`client::ApiClient`], a typed
//! client of every tenant and operator endpoint, and the `edgectl` CLI
//! built on it. The platform's tests and benchmarks drive the control plane
//! through the same client.

pub mod client;
pub mod wire;
