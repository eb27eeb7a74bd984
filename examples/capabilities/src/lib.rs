//! Tries every ambient capability a program might expect and reports what
//! happened, one line each:
//!
//! ```text
//! env-vars: 0
//! args: 0
//! filesystem: denied (...)
//! tcp: denied (...)
//! http: denied (HttpRequestDenied)
//! ```
//!
//! On this platform a service gets none of them unless its config grants it.

use edge_sdk::{Request, Response};
use wasi::http::outgoing_handler;
use wasi::http::types::{Fields, OutgoingRequest, Scheme};

fn probe(_req: Request) -> Response {
    let env_vars = std::env::vars().count();
    let args = std::env::args().count();
    let filesystem = match std::fs::read_dir("/") {
        Ok(_) => "allowed".to_string(),
        Err(e) => format!("denied ({e})"),
    };
    let tcp = match std::net::TcpStream::connect("127.0.0.1:80") {
        Ok(_) => "allowed".to_string(),
        Err(e) => format!("denied ({e})"),
    };
    let http = outgoing_http("example.com");
    Response::text(
        200,
        format!("env-vars: {env_vars}\nargs: {args}\nfilesystem: {filesystem}\ntcp: {tcp}\nhttp: {http}\n"),
    )
}

/// Sends `GET http://<authority>/` and reports how far it got.
fn outgoing_http(authority: &str) -> String {
    let request = OutgoingRequest::new(Fields::new());
    let _ = request.set_scheme(Some(&Scheme::Http));
    let _ = request.set_authority(Some(authority));
    let _ = request.set_path_with_query(Some("/"));
    match outgoing_handler::handle(request, None) {
        Err(code) => format!("denied ({code:?})"),
        Ok(pending) => {
            pending.subscribe().block();
            match pending.get() {
                Some(Ok(Ok(response))) => format!("allowed (status {})", response.status()),
                Some(Ok(Err(code))) => format!("denied ({code:?})"),
                _ => "no answer".to_string(),
            }
        }
    }
}

edge_sdk::handler!(probe);
