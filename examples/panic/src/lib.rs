//! A handler with a bug: it panics on every request, after logging why.
//! The node answers 500 for it and keeps serving everyone else.

use edge_sdk::Request;

fn buggy(req: Request) -> &'static str {
    let id: u32 = req.path().trim_start_matches('/').parse().expect("the path must be a number");
    if id > 0 {
        panic!("no record with id {id}");
    }
    "unreachable in practice\n"
}

edge_sdk::handler!(buggy);
