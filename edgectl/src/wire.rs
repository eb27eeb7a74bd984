//! The JSON bodies of the control plane's API as a client reads them. The
//! control plane's handlers write them (`control-plane/src/api`); the
//! platform's tests run this client against the real server, so a field
//! that drifts fails there. Unknown fields are ignored, so an older client
//! keeps working against a newer control plane.

use edge_config::protocol::ServiceSpec;
use serde::{Deserialize, Serialize};

/// `POST /v1/tenants`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreatedTenant {
    pub tenant: Tenant,
    /// The tenant's first API token, shown once.
    pub token: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    pub created_at: i64,
    pub allow_private_backends: bool,
    pub suspended: bool,
}

/// A service as `GET /v1/services` lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Service {
    pub name: String,
    pub spec: ServiceSpec,
    pub active_version: Option<i64>,
    pub created_at: i64,
}

/// `POST /v1/services/{service}/modules`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadedModule {
    pub module_sha256: String,
    pub size_bytes: u64,
}

/// `POST /v1/services/{service}/versions`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VersionCreated {
    pub version: i64,
    pub module_sha256: String,
    pub active: bool,
    pub snapshot_version: Option<u64>,
}

/// One of `GET /v1/services/{service}/versions`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Version {
    pub number: i64,
    pub module_sha256: String,
    pub spec: ServiceSpec,
    pub author: String,
    pub created_at: i64,
    /// What nodes said when they could not load this version.
    pub node_failures: Vec<NodeFailure>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeFailure {
    pub node: String,
    pub error: String,
    pub reported_at: i64,
}

/// `POST /v1/services/{service}/activate` and `.../rollback`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Activated {
    pub active_version: i64,
    pub snapshot_version: u64,
}

/// A custom domain and where its proof stands.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DomainClaim {
    pub domain: String,
    /// `pending`, `verified` or `approved`.
    pub status: String,
    /// While pending: the TXT record that proves control of the domain.
    pub challenge: Option<Challenge>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Challenge {
    #[serde(rename = "type")]
    pub record_type: String,
    pub name: String,
    pub value: String,
}

/// `POST /v1/domains/{domain}/approve`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Approved {
    pub domain: String,
    pub snapshot_version: u64,
}

/// `POST /v1/tokens`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreatedToken {
    pub label: String,
    pub token: String,
}

/// One of `GET /v1/tokens`: never the secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenInfo {
    pub id: String,
    pub label: String,
    pub created_at: i64,
}

/// `POST /v1/tenants/{name}/suspend` and `.../resume`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Suspension {
    pub tenant: String,
    pub suspended: bool,
    pub snapshot_version: u64,
}

/// `DELETE /v1/tenants/{name}/tokens`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Revoked {
    pub revoked: u64,
}

/// What `POST /v1/purge` removes (or, soft, marks stale).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PurgeRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub surrogate_key: Option<String>,
    pub soft: bool,
}

/// `POST /v1/purge`: the purge's number, in the order nodes apply it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PurgeAccepted {
    pub seq: u64,
}

/// `GET /v1/purge/{seq}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PurgeStatus {
    pub seq: u64,
    pub soft: bool,
    pub created_at: i64,
    /// Healthy nodes when it was asked.
    pub nodes: u64,
    /// How many of them have applied it.
    pub acknowledged: u64,
}

/// `GET /v1/services/{service}/certificate` and `PUT`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CertificateInfo {
    pub fingerprint_sha256: String,
    pub created_at: i64,
}

/// `GET /v1/services/{service}/logs`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogPage {
    pub lines: Vec<LogLine>,
    /// Pass as `after` to get the lines that come next.
    pub next_after: Option<i64>,
}

/// One line a guest printed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogLine {
    pub id: i64,
    pub timestamp_ms: i64,
    pub node: String,
    pub version: i64,
    pub request_id: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    pub line: String,
}

/// One of `GET /v1/usage`: a service's totals as nodes reported them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Usage {
    pub service: String,
    pub requests: i64,
    pub status_2xx: i64,
    pub status_3xx: i64,
    pub status_4xx: i64,
    pub status_5xx: i64,
    pub guest_cpu_micros: i64,
    pub bytes_out: i64,
}

/// One of `GET /v1/nodes`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Node {
    pub id: String,
    pub name: String,
    pub engine_fingerprint: String,
    pub snapshot_version: i64,
    pub registered_at: i64,
    pub last_seen_at: i64,
    pub purge_seq: i64,
    pub healthy: bool,
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
