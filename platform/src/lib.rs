//! The contract the edge node and the control plane both obey, and nothing
//! else: neither side depends on the other, both depend on this.
//!
//! - [`engine`]: the one wasmtime configuration and its fingerprint. An
//!   artifact compiled by the control plane runs on a node only if both
//!   built the same engine.
//! - [`artifacts`]: the content-addressed store of components and compiled
//!   artifacts, the same layout on both sides.
//! - [`guest`]: what the platform provides to guests, linked by the node to
//!   run them and by the control plane to check uploads.
//! - [`module`]: [`ModuleHash`], a component's identity everywhere.
//! - [`certificates`]: a tenant's PEM checked (key matches, domains
//!   covered) the same way when uploaded and when served; the crypto
//!   provider; trusting an operator's CA.
//! - [`urls`]: the one spelling of a URL that cache keys and purges use.
//! - [`secrets`]: tenants' secrets sealed with the operator's key, opened
//!   only in a node's memory.
//!
//! The wire types (snapshots, purges, reports) and the config schema live
//! in `edge-config`.

pub mod artifacts;
pub mod certificates;
pub mod engine;
pub mod guest;
pub mod module;
pub mod secrets;
pub mod urls;

pub use artifacts::{ArtifactStore, LoadSource, ModuleError};
pub use certificates::{CertificateError, ServingCertificate};
pub use module::ModuleHash;
