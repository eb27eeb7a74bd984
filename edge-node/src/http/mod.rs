//! HTTP serving: the listener and the per-request pipeline.
//!
//! - [`server`]: accepts connections and serves HTTP/1.1 and HTTP/2 (h2c,
//!   prior knowledge) on one listener, with the protocol limits set.
//! - [`pipeline`]: one request from head to response: framing checks,
//!   admission, routing, module, guest.
//! - [`h3`]: HTTP/3 over QUIC on the TLS port; [`h3_frames`] bounds the
//!   frames h3 would otherwise buffer whole.
//! - [`body`]: the request body as the guest reads it, with its size limit
//!   and its between-bytes timeout.

pub mod body;
pub mod h3;
pub mod h3_frames;
pub mod pipeline;
pub mod server;
