//! An auth gate in front of another service of the same tenant.
//!
//! Requests without `Authorization: Bearer <token>`, or with another token
//! than the service's `auth_token` (a secret or a config value, read through
//! `wasi:config/store`), get 401. Others are forwarded, without the token,
//! to the backend `app`: in the spec, `app = { service = "app" }`, so the
//! node runs that service (in any language) in process, and its response
//! is streamed back as it comes. The handler behind the gate learns who
//! passed from `x-authenticated`, which the gate sets and a client cannot.
//!
//! `GET /whoami` answers the gate itself, without calling `app`.

use edge_sdk::backend::{Backend, BackendRequest};
use edge_sdk::{Request, Response, config};

/// Request bodies the gate forwards are read up to this size.
const MAX_FORWARDED_BODY_BYTES: usize = 1024 * 1024;

fn gate(mut request: Request) -> Response {
    let Some(expected) = config::get("auth_token").filter(|token| !token.is_empty()) else {
        return Response::text(500, "auth_token is not configured\n");
    };
    let presented = request
        .header("authorization")
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::as_bytes);
    if !presented.is_some_and(|token| same_token(token, expected.as_bytes())) {
        return Response::text(401, "a valid bearer token is required\n")
            .with_header("www-authenticate", "Bearer realm=\"edge\"");
    }
    if request.path() == "/whoami" {
        return Response::text(200, "authenticated\n");
    }
    let mut outgoing = match BackendRequest::forward(&mut request, MAX_FORWARDED_BODY_BYTES) {
        Ok(outgoing) => outgoing,
        Err(error) => return Response::text(413, format!("{error}\n")),
    };
    outgoing.headers.remove("authorization");
    outgoing.headers.remove("x-authenticated");
    let outgoing = outgoing.with_header("x-authenticated", "bearer");
    match Backend::new("app").send(outgoing) {
        Ok(response) => response.into_response().with_header("x-auth", "passed"),
        Err(error) => Response::text(502, format!("app: {error}\n")),
    }
}

/// Compares in time that depends on the length only, so that the response
/// time does not tell a client how much of a guessed token was right.
fn same_token(presented: &[u8], expected: &[u8]) -> bool {
    presented.len() == expected.len()
        && presented
            .iter()
            .zip(expected)
            .fold(0u8, |differ, (a, b)| differ | (a ^ b))
            == 0
}

edge_sdk::handler!(gate);
