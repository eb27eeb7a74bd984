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

pub mod bench;
pub mod client;
pub mod guests;
pub mod h3;
pub mod hostile;
pub mod node;
pub mod origin;
pub mod platform;
pub mod tls;
