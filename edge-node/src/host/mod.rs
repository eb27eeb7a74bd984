//! The host side of every interface guests call beyond WASI with nothing
//! granted, one file each:
//!
//! - [`outbound`]: the `wasi:http/outgoing-handler` hook: which requests a
//!   guest may send (its service's named backends only), how many, how many
//!   at once, through the tenant's HTTP cache.
//! - [`cache`]: `edge:platform/cache`: lookup, insert and purge in the
//!   tenant's namespace of the node's cache.
//! - [`logs`]: the guest's stdout and stderr, as bounded log lines for its
//!   tenant.
//! - [`kv`]: `wasi:keyvalue`: the tenant's stores the service lists, read
//!   from the node's replica, written through the control plane.
//! - [`config`]: what `wasi:config/store` reads: the service's config and
//!   the secrets it lists.
//!
//! Each is linked once (`edge_platform::guest::add_to_linker`), configured
//! per service ([`Capabilities`], built when the service is installed) and
//! built per instance (`sandbox::state::GuestState::new`). This layer sits
//! above [`crate::backend`], [`crate::cache`] and [`crate::kv`], which know
//! nothing of guests.

pub mod cache;
pub mod config;
pub mod kv;
pub mod logs;
pub mod outbound;

use std::sync::Arc;

use crate::tenant_logs::TenantLogs;

/// What a service's guests may reach beyond their request: its backends
/// (through the tenant's HTTP cache), the tenant's cache API, and where
/// their log lines go. Built once per service when it is installed.
#[derive(Debug, Clone, Default)]
pub struct Capabilities {
    /// `None`: the service declares no backends, and every outgoing request
    /// is refused with `HTTP-request-denied`.
    pub outbound: Option<outbound::OutboundContext>,
    pub cache: Option<cache::GuestCache>,
    /// Where the guest's log lines go for its tenant.
    pub logs: Option<Arc<TenantLogs>>,
    /// `None`: the service lists no KV store, and every open is
    /// `no-such-store`.
    pub kv: Option<kv::GuestKv>,
    /// What `wasi:config/store` returns.
    pub config: config::GuestConfig,
}
