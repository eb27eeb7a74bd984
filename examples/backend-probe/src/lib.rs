//! A test guest that tries what a tenant's code might, and reports what the
//! host answered, one line per attempt.
//!
//! - `/fetch?backend=B&path=P&count=N`: N sequential GETs of P from backend
//!   (or any authority) B. Reports `ok <status> <body>` or `err <code>`.
//! - `/header?backend=B&name=H`: a GET carrying header H.
//! - `/cache/insert?key=K&ttl_ms=T&tags=a,b` (value: the request body),
//!   `/cache/lookup?key=K`, `/cache/purge?key=K`, `/cache/purge-tag?tag=T`.

use std::time::Duration;

use edge_sdk::backend::{Backend, BackendRequest, FetchError};
use edge_sdk::{Request, Response, cache};

fn probe(mut request: Request) -> Response {
    let query = request.query().unwrap_or("").to_string();
    let param = |name: &str| query_param(&query, name);
    match request.path() {
        "/fetch" => {
            let backend = Backend::new(param("backend"));
            let count: usize = param("count").parse().unwrap_or(1);
            let path = match param("path") {
                p if p.is_empty() => "/".to_string(),
                p => p,
            };
            let mut report = String::new();
            for _ in 0..count {
                report.push_str(&attempt(backend.get(&path)));
            }
            Response::text(200, report)
        }
        "/parallel" => {
            let count: usize = param("count").parse().unwrap_or(1);
            Response::text(200, parallel(&param("backend"), &param("path"), count))
        }
        "/header" => {
            let outgoing = BackendRequest::get("/").with_header(&param("name"), "x");
            Response::text(200, attempt(Backend::new(param("backend")).send(outgoing)))
        }
        "/cache/insert" => {
            let value = request.body_bytes(1 << 20).unwrap_or_default();
            let ttl = Duration::from_millis(param("ttl_ms").parse().unwrap_or(60_000));
            let tags = param("tags");
            let tags: Vec<&str> = tags.split(',').filter(|t| !t.is_empty()).collect();
            match cache::insert(&param("key"), &value, ttl, &tags) {
                Ok(()) => Response::text(200, "inserted\n"),
                Err(error) => Response::text(400, format!("refused {error:?}\n")),
            }
        }
        "/cache/lookup" => match cache::lookup(&param("key")) {
            Some(value) => Response::bytes(200, value),
            None => Response::text(404, "absent\n"),
        },
        "/cache/purge" => Response::text(200, format!("{}\n", cache::purge(&param("key")))),
        "/cache/purge-tag" => Response::text(
            200,
            format!("{}\n", cache::purge_surrogate_key(&param("tag"))),
        ),
        _ => Response::text(404, "unknown probe\n"),
    }
}

/// Starts `count` GETs at once, then waits for each: the host runs them
/// concurrently up to the service's limit.
fn parallel(backend: &str, path: &str, count: usize) -> String {
    use edge_sdk::__wasi::http::{outgoing_handler, types};
    let pending: Vec<_> = (0..count)
        .map(|_| {
            let request = types::OutgoingRequest::new(types::Fields::new());
            let _ = request.set_authority(Some(backend));
            let _ = request.set_path_with_query(Some(path));
            outgoing_handler::handle(request, None)
        })
        .collect();
    let mut report = String::new();
    for response in pending {
        let line = match response {
            Err(code) => format!("err {code:?}\n"),
            Ok(future) => {
                future.subscribe().block();
                match future.get() {
                    Some(Ok(Ok(response))) => format!("ok {}\n", response.status()),
                    Some(Ok(Err(code))) => format!("err {code:?}\n"),
                    _ => "err none\n".to_string(),
                }
            }
        };
        report.push_str(&line);
    }
    report
}

fn query_param(query: &str, name: &str) -> String {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_string())
        .unwrap_or_default()
}

fn attempt(result: Result<edge_sdk::BackendResponse, FetchError>) -> String {
    match result {
        Ok(mut response) => match response.body_bytes(1 << 20) {
            Ok(body) => format!(
                "ok {} {}\n",
                response.status.as_u16(),
                String::from_utf8_lossy(&body).trim()
            ),
            Err(error) => format!("err {error}\n"),
        },
        Err(FetchError::Host(code)) => format!("err {code:?}\n"),
        Err(error) => format!("err {error}\n"),
    }
}

edge_sdk::handler!(probe);
