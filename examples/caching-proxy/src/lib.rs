//! A caching reverse proxy: every request goes to the service's `origin`
//! backend, with the client's method, headers and body. Public `/blog/...`
//! paths live under `/posts/...` on the origin.
//!
//! Caching needs no code here: the platform's HTTP cache sits between the
//! guest and the origin and stores what the origin's `Cache-Control` allows
//! (RFC 9111), collapses concurrent misses into one origin request, and
//! tags entries with the origin's `Surrogate-Key` header for purging.

use edge_sdk::backend::{Backend, BackendRequest, FetchError};
use edge_sdk::{Request, Response};

/// Request bodies forwarded to the origin.
const MAX_FORWARDED_BODY_BYTES: usize = 1024 * 1024;

fn proxy(mut request: Request) -> Response {
    let mut outgoing = match BackendRequest::forward(&mut request, MAX_FORWARDED_BODY_BYTES) {
        Ok(outgoing) => outgoing,
        Err(error) => return Response::text(413, format!("{error}\n")),
    };
    outgoing.path_with_query = rewrite(&outgoing.path_with_query);
    match Backend::new("origin").send(outgoing) {
        Ok(response) => response
            .into_response()
            .with_header("x-edge-proxy", "caching-proxy"),
        Err(FetchError::Host(code)) => {
            let status = match format!("{code:?}").as_str() {
                c if c.contains("Timeout") => 504,
                _ => 502,
            };
            Response::text(status, format!("origin unavailable: {code:?}\n"))
        }
        Err(error) => Response::text(502, format!("{error}\n")),
    }
}

/// `/blog/<rest>` is served from `/posts/<rest>` at the origin.
fn rewrite(path: &str) -> String {
    match path.strip_prefix("/blog/") {
        Some(rest) => format!("/posts/{rest}"),
        None => path.to_string(),
    }
}

edge_sdk::handler!(proxy);
