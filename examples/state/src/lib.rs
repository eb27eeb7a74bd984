//! State at the edge, through the standard interfaces only:
//!
//! - `GET /visits`: counts the visit in the `counters` store
//!   (`wasi:keyvalue/atomics`; every node's increments add up) and answers
//!   with the count.
//! - `GET|PUT|DELETE /kv/<key>`: one key of the `counters` store; a read is
//!   served by this node's replica, a write is durable when answered.
//! - `GET /keys`: every key of the store.
//! - `GET /flag`: the `feature_x` flag from the service's config
//!   (`wasi:config/store`).
//! - `GET /private`: 200 only with `x-api-key` equal to the `api_key`
//!   secret, read through `wasi:config/store` too. The secret never goes
//!   into a response.
//! - `GET /open/<store>`: whether the store `<store>` opens for this service.
//!
//! The service lists the store (`kv_stores = ["counters"]`), the config key
//! and the secret (`secrets = ["api_key"]`) in its spec.

use edge_sdk::kv::{Error, Store};
use edge_sdk::{Method, Request, Response, config};

const STORE: &str = "counters";
/// Request bodies read for `PUT /kv/<key>`: more than the platform's 1 MiB
/// per value, so that the platform's own limit is the one a client meets.
const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

fn kv_error(error: Error) -> Response {
    match error {
        Error::NoSuchStore => Response::text(404, "no-such-store\n"),
        Error::AccessDenied => Response::text(403, "access-denied\n"),
        // A write the platform refused (a limit, or the control plane
        // unreachable): its message says which.
        Error::Other(message) => Response::text(503, format!("{message}\n")),
    }
}

fn handle(mut request: Request) -> Response {
    let path = request.path().to_string();
    let store = || Store::open(STORE);
    match (request.method().clone(), path.as_str()) {
        (Method::GET, "/visits") => match store().and_then(|s| s.increment("visits", 1)) {
            Ok(count) => Response::text(200, format!("visit {count}\n")),
            Err(error) => kv_error(error),
        },
        (Method::GET, "/keys") => match store().and_then(|s| s.keys()) {
            Ok(keys) => Response::text(200, keys.join("\n")),
            Err(error) => kv_error(error),
        },
        (Method::GET, "/flag") => {
            let on = config::get("feature_x").as_deref() == Some("on");
            Response::text(200, format!("feature_x is {}\n", if on { "on" } else { "off" }))
        }
        (Method::GET, "/private") => {
            let expected = config::get("api_key");
            let given = request.header("x-api-key");
            match (expected, given) {
                (None, _) => Response::text(500, "no api_key secret\n"),
                (Some(expected), Some(given)) if expected == given => {
                    Response::text(200, "authorized\n")
                }
                _ => Response::text(401, "unauthorized\n"),
            }
        }
        (method, path) => {
            if let Some(name) = path.strip_prefix("/open/") {
                return match Store::open(name) {
                    Ok(_) => Response::text(200, "opened\n"),
                    Err(error) => kv_error(error),
                };
            }
            let Some(key) = path.strip_prefix("/kv/") else {
                return Response::text(404, "not found\n");
            };
            let key = key.to_string();
            let result = match method {
                Method::GET => match store().and_then(|s| s.get(&key)) {
                    Ok(Some(value)) => return Response::bytes(200, value),
                    Ok(None) => return Response::text(404, "no such key\n"),
                    Err(error) => Err(error),
                },
                Method::PUT => {
                    let body = match request.body_bytes(MAX_BODY_BYTES) {
                        Ok(body) => body,
                        Err(error) => return Response::text(413, format!("{error}\n")),
                    };
                    store().and_then(|s| s.set(&key, &body))
                }
                Method::DELETE => store().and_then(|s| s.delete(&key)),
                _ => return Response::text(405, "method not allowed\n"),
            };
            match result {
                Ok(()) => Response::text(200, "ok\n"),
                Err(error) => kv_error(error),
            }
        }
    }
}

edge_sdk::handler!(handle);
