//! The bodies of the control plane's public API (`/v1/...`): the control
//! plane's handlers write them and `edgectl::client` reads them, from these
//! same types, so the two cannot drift apart. Requests refuse unknown
//! fields (a typo is an error, not a silent default). Answers ignore
//! fields they do not know, except where they carry a request's own type
//! (a version's `ServiceSpec`, a purge's target): a client reads those as
//! strictly as the server reads them, so client and server are released
//! together.

use serde::{Deserialize, Serialize};

use crate::protocol::{PurgeTarget, ServiceSpec};
use crate::rollout::{RollbackPolicy, StickyKey};

// Tenants and tokens.

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    pub created_at: i64,
    /// The operator lets this tenant's backends use private and loopback
    /// addresses.
    pub allow_private_backends: bool,
    /// Suspended by the operator: out of every snapshot, tokens refused.
    pub suspended: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTenant {
    pub name: String,
    /// Whether the tenant's backends may be on private, loopback or
    /// link-local addresses: only for origins inside the operator's own
    /// network.
    #[serde(default)]
    pub allow_private_backends: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedTenant {
    pub tenant: Tenant,
    pub token: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suspension {
    pub tenant: String,
    pub suspended: bool,
    pub snapshot_version: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revoked {
    pub revoked: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    pub label: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedToken {
    pub label: String,
    pub token: String,
}

/// What anyone sees of an API token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    pub id: String,
    pub label: String,
    pub created_at: i64,
}

// Services, modules and versions.

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewService {
    pub name: String,
    #[serde(default)]
    pub spec: ServiceSpec,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadedModule {
    pub module_sha256: String,
    pub size_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewVersion {
    pub module_sha256: String,
    /// Activate it at once (what `edgectl deploy` does).
    #[serde(default)]
    pub activate: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionCreated {
    pub version: i64,
    pub module_sha256: String,
    pub active: bool,
    pub snapshot_version: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    pub number: i64,
    pub module_sha256: String,
    pub spec: ServiceSpec,
    pub author: String,
    pub created_at: i64,
    /// Nodes that could not load this version, and why (reported after
    /// each snapshot they apply).
    pub node_failures: Vec<NodeFailure>,
}

/// One node's word on one version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeFailure {
    pub node: String,
    pub error: String,
    pub reported_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Activation {
    pub version: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activated {
    pub active_version: i64,
    pub snapshot_version: u64,
}

// Canary rollouts.

/// Starts a canary: `version` serves `percent` of the requests beside the
/// active version until it is promoted, aborted or rolled back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewCanary {
    pub version: i64,
    /// 1 to 99.
    pub percent: u8,
    #[serde(default)]
    pub sticky: StickyKey,
    #[serde(default)]
    pub rollback: RollbackPolicy,
}

/// A running canary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Canary {
    pub version: i64,
    pub percent: u8,
    pub sticky: StickyKey,
    pub rollback: RollbackPolicy,
    pub started_at: i64,
    /// The label of the token that started it.
    pub started_by: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanaryStarted {
    pub canary: Canary,
    pub snapshot_version: u64,
}

/// How a canary ended, and what is active now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanaryEnded {
    pub version: i64,
    /// `promoted`, `aborted` or `rolled_back`.
    pub outcome: String,
    pub active_version: Option<i64>,
    pub snapshot_version: u64,
}

/// One stretch of a version serving: as the active version, or as a
/// canary beside it. The service's history is these, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivationRecord {
    pub version: i64,
    /// `active` or `canary`.
    pub role: String,
    /// A canary's share of the requests.
    pub percent: Option<i64>,
    /// Who started it: a token's label.
    pub started_by: String,
    pub started_at: i64,
    pub ended_at: Option<i64>,
    /// Who ended it: a token's label, or `control-plane` for an automatic
    /// rollback.
    pub ended_by: Option<String>,
    /// `superseded` (another version became active), `promoted`,
    /// `aborted` or `rolled_back`.
    pub outcome: Option<String>,
    /// Why, in words: which version took over, or the error rates that
    /// rolled a canary back.
    pub reason: Option<String>,
}

/// A service's rollout: what is active, the canary if one runs, and the
/// history of activations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    pub active_version: Option<i64>,
    pub canary: Option<Canary>,
    pub history: Vec<ActivationRecord>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageTotals {
    pub service: String,
    pub requests: i64,
    pub status_2xx: i64,
    pub status_3xx: i64,
    pub status_4xx: i64,
    pub status_5xx: i64,
    pub guest_cpu_micros: i64,
    pub bytes_out: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogPage {
    pub lines: Vec<StoredLogLine>,
    /// Pass as `after` to get the lines that come next.
    pub next_after: Option<i64>,
}

/// One stored line, as a tenant reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredLogLine {
    /// Increases with every line stored: pass the last one seen as `after`.
    pub id: i64,
    pub timestamp_ms: i64,
    pub node: String,
    pub version: i64,
    pub request_id: String,
    pub stream: String,
    pub line: String,
}

// Domains and certificates.

/// A domain as its tenant sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainClaim {
    pub domain: String,
    /// `platform` (the service's own name under the platform domain),
    /// `verified` or `pending`.
    pub status: String,
    /// What proves control of a pending domain: a TXT record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub challenge: Option<Challenge>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    #[serde(rename = "type")]
    pub record_type: String,
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewDomain {
    pub domain: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approved {
    pub domain: String,
    pub snapshot_version: u64,
}

/// What a tenant sees of a certificate: never the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateInfo {
    /// sha256 of the leaf certificate's DER bytes, hex.
    pub fingerprint_sha256: String,
    pub created_at: i64,
}

// The edge cache.

/// `POST /v1/purge`: `{"url": ...}` or `{"surrogate_key": ...}`, with
/// `"soft": true` to mark the entries stale rather than remove them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurgeRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub surrogate_key: Option<String>,
    #[serde(default)]
    pub soft: bool,
}

impl PurgeRequest {
    /// What to purge: exactly one of the URL and the surrogate key.
    pub fn target(self) -> Result<PurgeTarget, &'static str> {
        match (self.url, self.surrogate_key) {
            (Some(url), None) => Ok(PurgeTarget::Url(url)),
            (None, Some(key)) => Ok(PurgeTarget::SurrogateKey(key)),
            _ => Err("give exactly one of url and surrogate_key"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeAccepted {
    pub seq: u64,
}

/// A purge as its tenant sees it, with how far it has got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeStatus {
    pub seq: u64,
    pub target: PurgeTarget,
    pub soft: bool,
    pub created_at: i64,
    /// Healthy nodes.
    pub nodes: u64,
    /// Healthy nodes that have applied it.
    pub acknowledged: u64,
}

// Nodes.

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: String,
    pub name: String,
    pub engine_fingerprint: String,
    pub snapshot_version: i64,
    pub registered_at: i64,
    pub last_seen_at: i64,
    /// The last purge the node applied.
    pub purge_seq: i64,
    /// Heard from within the control plane's health window (a minute).
    pub healthy: bool,
}
