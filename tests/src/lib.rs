//! The end-to-end test harness: a real node on loopback port 0, real guests
//! built from source, hostile guests compiled from WAT, and HTTP/1.1 and
//! HTTP/2 clients.
//!
//! - [`guests`]: the example guests (built once per test run) and hostile
//!   components made from small core-wasm WAT.
//! - [`node`]: [`node::TestNode`], an in-process node with a temp data dir.
//! - [`origin`]: a test origin that counts what it receives.
//! - [`client`]: one-shot HTTP/1.1 and HTTP/2 requests, and raw TCP.
//! - [`tls`]: self-signed certificates and an in-process rustls client.
//! - [`h3`]: an in-process HTTP/3 client (quinn + h3).
//! - [`bench`](mod@bench): the hello guests the in-process benchmarks compare.
//! - [`platform`]: a control plane on loopback with its API client, and
//!   edge nodes that follow it.
//!
//! And [`eventually`], for waiting on what the node does in its own time.

pub mod bench;
pub mod client;
pub mod guests;
pub mod h3;
pub mod hostile;
pub mod node;
pub mod origin;
pub mod platform;
pub mod tls;

use std::time::{Duration, Instant};

/// Waits until `check` holds, asking every 10 ms; fails the test with
/// `failure` if it still does not after `within`. For state the node
/// reaches in its own time: a request in flight, a listener closed.
pub async fn eventually(within: Duration, failure: &str, mut check: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < within, "{failure}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
