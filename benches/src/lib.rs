//! Benchmarks of the edge node.
//!
//! - `benches/instantiate.rs` (criterion): the in-process cost of one request
//!   through a fresh instance of the hello guest: instantiate, handle, read
//!   the body, tear down.
//! - `load.sh`: the node serving hello over loopback against `native-hello`
//!   (`src/bin/native-hello.rs`), a plain hyper server giving the same
//!   answer, both driven by wrk in the same run; prints req/s, p99 and the
//!   ratio.
