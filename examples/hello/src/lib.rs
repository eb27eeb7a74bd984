//! The smallest useful handler: a greeting for every request.

use edge_sdk::{Request, Response};

fn hello(_req: Request) -> Response {
    Response::text(200, "hello from the edge\n")
}

edge_sdk::handler!(hello);
