//! {{name}}: a request handler for the edge platform.
//!
//! `edgectl dev` builds it and serves it on loopback, again on every change;
//! `edgectl deploy {{name}}` builds it and deploys it.

use edge_sdk::{Request, Response};

fn handle(request: Request) -> Response {
    Response::text(200, format!("hello from {{name}}\npath: {}\n", request.path()))
}

edge_sdk::handler!(handle);
