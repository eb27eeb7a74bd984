//! Echoes what it received, for clients and tests to inspect:
//!
//! ```text
//! method: POST
//! path: /some/path?x=1
//! authority: echo.localhost:8080
//! header: accept: */*
//! ...
//! body-bytes: 5
//!
//! <body>
//! ```
//!
//! `?log=<text>` also prints `<text>` to stdout, which the node turns into a
//! log line for the tenant.

use std::fmt::Write as _;

use edge_sdk::{Request, Response};

/// The most this handler reads; larger bodies get a 413 from the handler.
const MAX_ECHO_BODY_BYTES: usize = 16 * 1024 * 1024;

fn echo(mut req: Request) -> Response {
    if let Some(text) = req.query_param("log") {
        println!("{text}");
    }
    let mut head = String::new();
    let _ = writeln!(head, "method: {}", req.method());
    let _ = writeln!(head, "path: {}", req.path_with_query());
    let _ = writeln!(head, "authority: {}", req.authority().unwrap_or("-"));
    for (name, value) in req.headers() {
        let _ = writeln!(head, "header: {}: {}", name, String::from_utf8_lossy(value.as_bytes()));
    }
    let body = match req.body_bytes(MAX_ECHO_BODY_BYTES) {
        Ok(body) => body,
        Err(e) => return Response::text(413, format!("{e}\n")),
    };
    let _ = writeln!(head, "body-bytes: {}\n", body.len());
    let mut out = head.into_bytes();
    out.extend_from_slice(&body);
    Response::bytes(200, out).with_header("content-type", "text/plain; charset=utf-8")
}

edge_sdk::handler!(echo);
