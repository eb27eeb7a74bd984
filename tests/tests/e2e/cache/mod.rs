//! The HTTP cache between guests and their backends, and the guest cache
//! API: RFC 9111 behaviour seen from the origin's request count.

mod early_hints;
mod guest_entries;
mod invalidation;
mod isolation;
mod revalidation;
mod storing;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use edge_node::cache::PurgeMode;
use edge_tests::client::{Protocol, get, request, send};
use edge_tests::node::{TestNode, TestService};
use edge_tests::origin::{Answer, TestOrigin};

use crate::backends::loopback_backend;

async fn proxy_node(origin: &TestOrigin) -> TestNode {
    TestNode::start(vec![
        TestService::example("proxy", "caching-proxy").backend("origin", loopback_backend(origin)),
    ])
    .await
}

/// `GET path` from the caching proxy on proxy.test: what a client of the
/// cached origin gets.
async fn proxy_get(node: &TestNode, path: &str) -> edge_tests::client::Reply {
    get(node.addr, "proxy.test", path).await
}

/// [`proxy_get`] with extra request headers.
async fn get_with(
    node: &TestNode,
    path: &str,
    headers: &[(&str, &str)],
) -> edge_tests::client::Reply {
    let mut req = request("GET", "proxy.test", path, Bytes::new());
    for (name, value) in headers {
        req.headers_mut().insert(
            http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
            http::HeaderValue::from_str(value).expect("value"),
        );
    }
    send(node.addr, Protocol::Http1, req).await
}

/// The edge's `Cache-Status` entries of a reply, in order: the backend
/// cache's, then the guest-response cache's.
fn edge_statuses(reply: &edge_tests::client::Reply) -> Vec<String> {
    reply
        .headers
        .get_all("cache-status")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter(|entry| entry.starts_with("edge"))
        .map(str::to_string)
        .collect()
}

/// The backend cache's `Cache-Status` entry of a reply.
fn edge_status(reply: &edge_tests::client::Reply) -> String {
    edge_statuses(reply).into_iter().next().unwrap_or_default()
}

/// What the test origin does with the next requests.
const GOOD: usize = 0;

const FAILING: usize = 1;

const HANGING: usize = 2;
