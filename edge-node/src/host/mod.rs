//! The host side of what guests can call, beyond WASI with nothing granted
//! (`sandbox::state`) and the cache API (`cache::guest_api`):
//!
//! - [`outbound`]: the `wasi:http/outgoing-handler` hook: which requests a
//!   guest may send (its service's named backends only), how many, how many
//!   at once, through the tenant's HTTP cache.
//!
//! It sits above [`crate::backend`] and [`crate::cache`], which know
//! nothing of guests.

pub mod outbound;
