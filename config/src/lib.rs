//! Configuration shared by the edge node and the control plane.
//!
//! # Layout
//!
//! - [`authority`]: a request's `Host` / `:authority`, parsed into the one
//!   spelling routing, cache keys and guests see.
//! - [`backend`]: a named origin: address, timeouts, TLS, cache policy.
//! - [`domain`]: domains as tenants claim them: one spelling, the
//!   public-suffix rule, and when two claims overlap.
//! - [`limits`]: every per-service and per-node limit, each a `DEFAULT_*`
//!   constant with its unit in the name and its reason beside it.
//! - [`node`]: the node's config file (`edge-node --config node.toml`):
//!   listeners, protocol limits, sandbox sizing and, until the control plane
//!   feeds it, the services it serves.
//! - [`observability`]: metrics (and their cardinality guard), the access
//!   log and the shipping of tenants' guest logs.
//! - [`protocol`]: the wire types between control plane and nodes: a
//!   service's spec, the config snapshot, registration and usage reports.
//! - [`rollout`]: canary rollouts: the sticky key that splits requests
//!   between two versions, and the policy that rolls a canary back.
//! - [`service`]: one tenant service: its domains, module and limits.
//! - [`state`]: key-value stores and secrets: their limits and the wire
//!   types of the change feed, guest writes and the tenant API.
//! - [`tls`]: the HTTPS listener and certificates (files or PEM text).
//! - [`validate`]: the error list that `validate()` returns; every problem in
//!   a file is reported at once, each with the path of the offending key.
//!
//! Every struct rejects unknown keys (`deny_unknown_fields`), so a typo in a
//! config file is an error instead of a silently ignored setting.

pub mod api;
pub mod authority;
pub mod backend;
pub mod domain;
pub mod limits;
pub mod node;
pub mod observability;
pub mod protocol;
pub mod rollout;
pub mod service;
pub mod state;
pub mod tls;
pub mod validate;

pub use backend::{BackendCache, BackendSpec};
pub use limits::{CacheLimits, HttpLimits, SandboxLimits, ServiceLimits};
pub use node::{NodeConfig, NodeSection};
pub use observability::{LogsSection, MetricsSection};
pub use service::ServiceConfig;
pub use tls::{CertificateFiles, CertificatePem, Http3Section, TlsSection};
pub use validate::{ConfigError, ConfigErrors};
