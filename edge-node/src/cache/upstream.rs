//! What the HTTP cache reads through: the origin a backend request goes
//! to. In the node that is a backend's pooled client with the request's
//! timeouts (`host::outbound`); the cache's own tests script one, so the
//! read-through path is tested without a node or a network.

use std::future::Future;
use std::time::Duration;

use http::{Request, Response};
use wasmtime_wasi_http::{Error as WasiHttpError, WasiBody};

/// One origin, as the cache asks it.
pub trait Upstream: Clone + Send + Sync + 'static {
    /// `scheme://host`: how the origin's URLs are written in cache keys.
    fn base_url(&self) -> &str;

    /// How long the origin may take to begin its answer (connecting and
    /// the first byte): the longest a request waits on another's fill.
    fn head_deadline(&self) -> Duration;

    /// Sends one request to the origin.
    fn send(
        &self,
        request: Request<WasiBody>,
    ) -> impl Future<Output = Result<Response<WasiBody>, WasiHttpError>> + Send;
}
