//! The HTTP API, one router per resource:
//!
//! - [`tenants`]: tenants and their tokens (operator);
//! - [`services`]: a tenant's services, module uploads, versions,
//!   activation, rollback and usage;
//! - [`domains`]: a service's custom domains and the operator's approval
//!   of them;
//! - [`nodes`]: the node protocol (register, snapshot long-poll, artifacts,
//!   usage reports; cluster token) and the node list (operator);
//! - [`logs`]: guest log lines, shipped by nodes and read by their tenant;
//! - [`purges`]: cache purges by URL or surrogate key, and the nodes'
//!   long-poll that delivers them in order;
//! - [`kv`]: KV stores and their keys, the nodes' change feed and their
//!   guests' writes;
//! - [`secrets`]: tenants' secrets, write-only;
//! - [`openapi`]: the OpenAPI document of all of it;
//! - `/metrics` and the request counter every route goes through;
//! - [`state`]: what every handler shares.

pub mod certificates;
pub mod domains;
pub mod kv;
pub mod logs;
mod metrics;
pub mod nodes;
pub mod openapi;
pub mod purges;
pub mod secrets;
pub mod services;
pub mod state;
pub mod tenants;

use axum::Router;
use axum::routing::get;

pub use state::{ApiConfig, AppState, DEFAULT_MAX_UPLOAD_BYTES, DEFAULT_SNAPSHOT_WAIT};

pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(tenants::router())
        .merge(services::router())
        .merge(certificates::router())
        .merge(domains::router())
        .merge(logs::router())
        .merge(nodes::router())
        .merge(purges::router())
        .merge(kv::router())
        .merge(secrets::router())
        .route("/openapi.json", get(openapi::document))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics::render))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::count_requests,
        ))
        .with_state(state)
}
