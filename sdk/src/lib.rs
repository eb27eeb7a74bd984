//! The guest SDK: write an edge handler in Rust.
//!
//! A handler is a function from [`Request`] to anything that converts into a
//! [`Response`]. [`handler!`] exports it as the standard
//! `wasi:http/incoming-handler`, so the component built from it runs on this
//! platform and on any other `wasi:http/proxy` host.
//!
//! ```ignore
//! use edge_sdk::{Request, Response};
//!
//! fn hello(req: Request) -> Response {
//!     Response::text(200, format!("hello from {}\n", req.path()))
//! }
//!
//! edge_sdk::handler!(hello);
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2` (crate type
//! `cdylib`): the `.wasm` in `target/wasm32-wasip2/release/` is the component
//! to deploy.
//!
//! # Layout
//!
//! - [`request`]: the incoming request, with its body read whole or streamed.
//! - [`response`]: the response, with a body given whole or written as a stream.
//! - [`backend`]: requests to the service's named backends, through the
//!   platform's HTTP cache.
//! - [`cache`]: the tenant's cache on the node: lookup, insert, purge.
//! - [`kv`]: the tenant's KV stores the service lists (`wasi:keyvalue`).
//! - [`config`]: the service's config and secrets (`wasi:config/store`).
//! - [`handler!`] and the glue that runs a handler for one request.

pub mod backend;
pub mod cache;
pub mod config;
pub mod kv;
pub mod request;
pub mod response;

pub use backend::{Backend, BackendRequest, BackendResponse, FetchError};
pub use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
pub use request::{BodyError, Request};
pub use response::{BodyWriter, IntoResponse, Response};

#[doc(hidden)]
pub use wasip2 as __wasi;

/// Bindings for the platform's imports beyond `wasi:http`: its cache, and
/// the standard `wasi:keyvalue` and `wasi:config` interfaces (`wit/`).
mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "edge:platform/platform-imports",
        // The WASI packages beyond wasi:http have no crate of their own
        // here: their bindings are generated with the platform's.
        generate_all,
    });
}

/// Exports `handler` (a `fn(Request) -> impl IntoResponse`) as this
/// component's `wasi:http/incoming-handler`.
#[macro_export]
macro_rules! handler {
    ($handler:path) => {
        struct __EdgeSdkHandler;

        impl $crate::__wasi::exports::http::incoming_handler::Guest for __EdgeSdkHandler {
            fn handle(
                request: $crate::__wasi::http::types::IncomingRequest,
                response_out: $crate::__wasi::http::types::ResponseOutparam,
            ) {
                $crate::__run(request, response_out, $handler)
            }
        }

        $crate::__wasi::http::proxy::export!(__EdgeSdkHandler with_types_in $crate::__wasi);
    };
}

#[doc(hidden)]
pub fn __run<R: IntoResponse>(
    request: wasip2::http::types::IncomingRequest,
    response_out: wasip2::http::types::ResponseOutparam,
    handler: impl FnOnce(Request) -> R,
) {
    let response = match Request::from_incoming(request) {
        Ok(request) => handler(request).into_response(),
        Err(e) => Response::text(400, format!("bad request: {e}\n")),
    };
    response.send(response_out);
}
