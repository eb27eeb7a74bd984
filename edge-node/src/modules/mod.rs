//! Tenant components: stored on disk by the sha256 of their bytes, compiled
//! once per engine into an artifact that is memory-mapped to load, and kept
//! ready to instantiate in an LRU.
//!
//! - the content-addressed store of components and artifacts is the
//!   platform contract's (`edge_platform::artifacts`): the control plane
//!   writes the same layout.
//! - [`cache`]: the in-memory LRU of ready components.

pub mod cache;

pub use cache::ModuleCache;
pub use edge_platform::{ArtifactStore, LoadSource, ModuleError, ModuleHash};
