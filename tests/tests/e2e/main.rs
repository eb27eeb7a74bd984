//! End-to-end tests of the edge node, one module per topic.

mod backends;
mod cache;
mod chaining;
mod dev_loop;
mod hostile;
mod languages;
mod limits;
mod metrics;
mod protocols;
mod serving;
mod tls;
