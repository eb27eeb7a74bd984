//! The control-plane harness shared by the test binaries: the platform's
//! one harness (`edge_tests::platform`), and a real DNS server for domain
//! proofs.
#![allow(dead_code, unused_imports)] // each test binary uses its own part

pub mod dns;

pub use edge_tests::platform::*;
