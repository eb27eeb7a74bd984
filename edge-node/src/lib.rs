//! The edge node: matches each request by Host to a tenant's service and runs
//! the service's Wasm component in a fresh sandbox.
//!
//! # The request path
//!
//! ```text
//! accept (http::server) -> HTTP/1.1 | HTTP/2 (hyper)
//!   -> framing checks: URI length, header count, body size (http::pipeline)
//!   -> route: Host -> service (routing)
//!   -> admission: the tenant's and the node's in-flight limits (admission)
//!   -> module: ready ProxyPre by sha256 (modules::cache, from edge_platform::artifacts)
//!   -> sandbox: fresh Store, CPU budget, wall deadline, memory/table/handle
//!      limits; the guest runs wasi:http/incoming-handler (sandbox)
//!        outgoing requests -> named backends only, limits per execution
//!          (host::outbound) -> tenant's HTTP cache, RFC 9111, collapsing
//!          (cache) -> pooled origin connection, timeouts (backend::client)
//!        edge:platform/cache -> the same cache, tenant's namespace
//!        wasi:keyvalue -> the node's replica (kv); writes via the control plane
//!        outgoing requests to a service backend -> that service of the same
//!          tenant, in a fresh instance of its own (service_calls)
//!        wasi:config/store -> the service's config and its secrets
//!   -> respond, streaming; metrics per service (metrics), one access-log
//!      event (http::pipeline), guest log lines to the tenant (tenant_logs)
//! ```
//!
//! # Layout
//!
//! - [`node`]: wires the stages together and starts the listeners;
//!   [`node_state`]: what the stages share, which they depend on instead.
//! - [`http`]: the listener, connection handling and the per-request pipeline.
//! - [`admission`], [`routing`]: the stages before the guest.
//! - [`modules`]: the content-addressed artifact store and the module cache.
//! - [`host`]: the host side of what guests call: their outgoing requests.
//! - [`backend`]: requests to services' named origins, pooled and timed.
//! - [`service_calls`]: a service's requests to another of its tenant's
//!   services, run in process.
//! - [`cache`]: the HTTP cache (RFC 9111) and the guest cache API.
//! - [`kv`]: the node's replica of every KV store, and guests' writes
//!   through the control plane.
//! - [`interim`]: origins' 1xx responses (103 Early Hints) passed on to
//!   HTTP/1.1 clients.
//! - [`sandbox`]: the engine, the epoch ticker, per-request guest state.
//! - [`metrics`], [`admin`]: Prometheus metrics (with their cardinality
//!   guard) and the admin listener.
//! - [`tenant_logs`]: guests' log lines, rate-limited and buffered for the
//!   control plane.
//! - [`watch`]: `serve --watch`, the dev loop's node: a rebuilt module is
//!   served from the next request on.
//! - [`error`]: every outcome a client can see, with its status.
//! - [`sync`]: following the control plane: snapshot long-poll, module
//!   fetch, the last good snapshot kept on disk; [`usage`]: what the node
//!   reports back per service.

/// `Debug` for a type whose fields are not all `Debug` (wasmtime, hyper
/// and h3 types) or not worth showing: its name and the fields named, then
/// `..`. One line in place of a hand-written impl for each such type.
///
/// ```ignore
/// debug_fields!(OriginClient { origin, host });
/// debug_fields!(TakesTurns<F> { turn });
/// debug_fields!(GuardedBidiStream<B: Buf> {});
/// ```
macro_rules! debug_fields {
    ($ty:ident $(<$($param:ident $(: $bound:path)?),+>)? { $($field:ident),* $(,)? }) => {
        impl$(<$($param $(: $bound)?),+>)? std::fmt::Debug for $ty$(<$($param),+>)? {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($ty))
                    $(.field(stringify!($field), &self.$field))*
                    .finish_non_exhaustive()
            }
        }
    };
}

pub mod admin;
pub mod admission;
pub mod backend;
pub mod cache;
pub mod error;
pub mod host;
pub mod http;
pub mod install;
pub mod interim;
pub mod kv;
pub mod lifecycle;
pub mod metrics;
pub mod modules;
pub mod node;
pub mod node_state;
pub mod routing;
pub mod sandbox;
pub mod service_calls;
pub mod sync;
pub mod tenant_logs;
pub mod tls;
pub mod usage;
pub mod watch;

pub use error::EdgeError;
pub use node::{Node, RunningNode};
