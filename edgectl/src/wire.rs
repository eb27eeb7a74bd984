//! The JSON bodies of the control plane's API. Nearly all are the very
//! types the control plane's handlers write (`edge_config::api`); the two
//! here are the ones a client reads differently: a service as listed (the
//! server's row holds ids it never shows) and the body of a refusal.

pub use edge_config::api::*;
use edge_config::protocol::ServiceSpec;
pub use edge_config::state::{
    KvEntry, KvExpect, KvImport, KvImported, KvKeyPage, KvStoreInfo, NewKvStore, NewSecret,
    SecretInfo,
};
use serde::{Deserialize, Serialize};

/// A service as `GET /v1/services` lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Service {
    pub name: String,
    pub spec: ServiceSpec,
    pub active_version: Option<i64>,
    pub created_at: i64,
}

/// The body of every refusal: `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}
