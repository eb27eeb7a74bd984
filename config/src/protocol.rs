//! The wire types shared by the control plane and the nodes: what a tenant
//! declares for a service, and the config snapshot nodes long-poll.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

pub use crate::backend::BackendSpec;
use crate::domain::validate_domain;
use crate::limits::{SandboxLimits, ServiceLimits};
use crate::state::{
    KV_MAX_STORES_PER_SERVICE, MAX_SECRETS_PER_SERVICE, SealedSecret, SnapshotKvStore, check_name,
};
use crate::tls::CertificatePem;
use crate::validate::ConfigErrors;

/// Config keys and values a service may carry, and how large they may be.
pub const MAX_CONFIG_ENTRIES: usize = 100;
pub const MAX_CONFIG_VALUE_BYTES: usize = 8 * 1024;
pub const MAX_DOMAINS_PER_SERVICE: usize = 100;
pub const MAX_BACKENDS_PER_SERVICE: usize = 32;

/// What a tenant declares for a service. Every version records the spec it
/// was deployed with, so a rollback restores the domains, backends, limits
/// and config along with the module.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceSpec {
    /// Host names the service answers for: exact (`shop.example.com`) or a
    /// leading wildcard (`*.example.com`, one or more labels).
    pub domains: Vec<String>,
    /// Named origins the guest may fetch from (`http://<name>/...`). A
    /// config file writes them as `[service.backend.NAME]` tables.
    pub backends: BTreeMap<String, BackendSpec>,
    pub limits: ServiceLimits,
    /// What `wasi:config/store` returns to the guest, with the secrets.
    pub config: BTreeMap<String, String>,
    /// Cache the guest's own responses at the edge when their headers allow
    /// a shared cache to.
    pub cache_responses: bool,
    /// The tenant's KV stores the guest may open (`wasi:keyvalue/store`);
    /// any other name is `no-such-store`.
    pub kv_stores: Vec<String>,
    /// The tenant's secrets the guest reads through `wasi:config/store`,
    /// each under its own name beside `config`.
    pub secrets: Vec<String>,
}

impl ServiceSpec {
    /// Every problem with the spec, each with its key path.
    pub fn validate(&self, sandbox: &SandboxLimits) -> Result<(), ConfigErrors> {
        let mut errors = ConfigErrors::default();
        self.validate_into("", sandbox, &mut errors);
        errors.into_result()
    }

    /// Records every problem with the spec in `errors`, each key path
    /// after `prefix` (`service[0].` in a config file, nothing in the API).
    /// No domain is fine here: the control plane gives every service a
    /// name under its platform domain (a config file asks for one itself).
    pub fn validate_into(&self, prefix: &str, sandbox: &SandboxLimits, errors: &mut ConfigErrors) {
        if self.domains.len() > MAX_DOMAINS_PER_SERVICE {
            errors.push(
                format!("{prefix}domains"),
                format!("at most {MAX_DOMAINS_PER_SERVICE} domains per service"),
            );
        }
        let mut seen = HashSet::new();
        for (i, domain) in self.domains.iter().enumerate() {
            if let Err(message) = validate_domain(domain) {
                errors.push(format!("{prefix}domains[{i}]"), message);
            } else if !seen.insert(domain.as_str()) {
                errors.push(
                    format!("{prefix}domains[{i}]"),
                    format!("{domain:?} is listed twice"),
                );
            }
        }
        if self.backends.len() > MAX_BACKENDS_PER_SERVICE {
            errors.push(
                format!("{prefix}backends"),
                format!("at most {MAX_BACKENDS_PER_SERVICE} backends per service"),
            );
        }
        for (name, backend) in &self.backends {
            backend.validate(&format!("{prefix}backends.{name}"), name, errors);
        }
        self.limits
            .validate(&format!("{prefix}limits"), sandbox, errors);
        if self.config.len() > MAX_CONFIG_ENTRIES {
            errors.push(
                format!("{prefix}config"),
                format!("at most {MAX_CONFIG_ENTRIES} entries"),
            );
        }
        for (key, value) in &self.config {
            if value.len() > MAX_CONFIG_VALUE_BYTES {
                errors.push(
                    format!("{prefix}config.{key}"),
                    format!("value is over {MAX_CONFIG_VALUE_BYTES} bytes"),
                );
            }
        }
        check_names(
            &format!("{prefix}kv_stores"),
            "store",
            &self.kv_stores,
            KV_MAX_STORES_PER_SERVICE,
            errors,
        );
        check_names(
            &format!("{prefix}secrets"),
            "secret",
            &self.secrets,
            MAX_SECRETS_PER_SERVICE,
            errors,
        );
        for (i, name) in self.secrets.iter().enumerate() {
            if self.config.contains_key(name) {
                errors.push(
                    format!("{prefix}secrets[{i}]"),
                    format!("{name:?} is also a config key: the guest reads both by name"),
                );
            }
        }
    }
}

/// Each of `names` is a valid, distinct name, and there are at most `max`.
fn check_names(path: &str, kind: &str, names: &[String], max: usize, errors: &mut ConfigErrors) {
    if names.len() > max {
        errors.push(path.to_string(), format!("at most {max} per service"));
    }
    let mut seen = HashSet::new();
    for (i, name) in names.iter().enumerate() {
        if let Err(message) = check_name(kind, name) {
            errors.push(format!("{path}[{i}]"), message);
        } else if !seen.insert(name.as_str()) {
            errors.push(format!("{path}[{i}]"), format!("{name:?} is listed twice"));
        }
    }
}

/// Everything a node serves: every active service. Versions only grow; a node
/// asks for `after=<the version it has>` and gets the next one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub version: u64,
    pub services: Vec<SnapshotService>,
    /// Every KV store of every tenant not suspended, by tenant and name
    /// with its id: what a service's `kv_stores` names resolve to. (A
    /// deleted store's entries leave the replicas through the feed.)
    #[serde(default)]
    pub kv_stores: Vec<SnapshotKvStore>,
}

/// The header that tells a snapshot answer's kind: [`SNAPSHOT_FULL`] (a
/// [`Snapshot`]) or [`SNAPSHOT_DELTA`] (a [`SnapshotDelta`]).
pub const SNAPSHOT_KIND_HEADER: &str = "edge-snapshot";
pub const SNAPSHOT_FULL: &str = "full";
pub const SNAPSHOT_DELTA: &str = "delta";

/// What changed from snapshot `from` to `version`: a node that holds
/// `from` and asked with `delta=true` gets this instead of the whole
/// snapshot, so the bytes a change costs do not grow with the number of
/// tenants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotDelta {
    pub from: u64,
    /// The sha256 of the whole snapshot `from` as the control plane
    /// serialized it: a node holding a snapshot of another digest refuses
    /// the delta and asks for the whole.
    pub from_digest: String,
    pub version: u64,
    /// The sha256 of the whole snapshot `version` would serialize to.
    pub digest: String,
    /// Services new or changed since `from`, whole.
    pub services: Vec<SnapshotService>,
    /// Names of the services `from` had and `version` has not.
    pub removed: Vec<String>,
    /// Every KV store, when they changed; `None` when they did not.
    pub kv_stores: Option<Vec<SnapshotKvStore>>,
}

impl Snapshot {
    /// Puts services in the order every snapshot has, full or merged from
    /// a delta: oldest first, then by name.
    pub fn sort_services(&mut self) {
        self.services
            .sort_by(|a, b| (a.created_at_ms, &a.name).cmp(&(b.created_at_ms, &b.name)));
    }

    /// This snapshot with `delta` applied, or `None` if the delta is not
    /// from this snapshot's version.
    pub fn apply(&self, delta: SnapshotDelta) -> Option<Snapshot> {
        if delta.from != self.version {
            return None;
        }
        let removed: HashSet<&str> = delta.removed.iter().map(String::as_str).collect();
        let changed: HashSet<&str> = delta.services.iter().map(|s| s.name.as_str()).collect();
        let mut next = Snapshot {
            version: delta.version,
            services: self
                .services
                .iter()
                .filter(|s| {
                    !removed.contains(s.name.as_str()) && !changed.contains(s.name.as_str())
                })
                .cloned()
                .collect(),
            kv_stores: delta.kv_stores.unwrap_or_else(|| self.kv_stores.clone()),
        };
        next.services.extend(delta.services);
        next.sort_services();
        Some(next)
    }
}

/// One active service in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotService {
    /// `<tenant>/<service>`: unique on the platform, used in metrics and logs.
    pub name: String,
    pub tenant: String,
    pub version: u64,
    pub module_sha256: String,
    /// The version's spec, with `domains` cut to those the service holds
    /// now: its platform domain and its verified custom domains.
    pub spec: ServiceSpec,
    /// When the service was created, Unix milliseconds: of two services
    /// claiming one domain, a node keeps the older.
    #[serde(default)]
    pub created_at_ms: u64,
    /// The service's certificate and key, served by SNI for its domains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<CertificatePem>,
    /// The secrets `spec.secrets` names that exist, sealed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<SealedSecret>,
    /// A canary version serving a share of the service's requests beside
    /// this (stable) one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<SnapshotCanary>,
}

impl SnapshotService {
    /// The modules a node needs to serve this service: its own, and its
    /// canary's.
    pub fn module_hashes(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.module_sha256.as_str()).chain(
            self.canary
                .as_ref()
                .map(|canary| canary.module_sha256.as_str()),
        )
    }
}

/// A service's canary version, as a node serves it: on the stable version's
/// domains and certificate, for `percent` of the requests by `sticky`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotCanary {
    pub version: u64,
    pub module_sha256: String,
    /// The canary version's spec; its domains are the stable version's.
    pub spec: ServiceSpec,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<SealedSecret>,
    /// 1 to 99.
    pub percent: u8,
    pub sticky: crate::rollout::StickyKey,
}

/// A node introducing itself with the cluster token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRegistration {
    pub name: String,
    pub engine_fingerprint: String,
}

/// The id the control plane gave a registered node, and the newest purge:
/// a node starting with an empty cache has nothing older to apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRegistered {
    pub node_id: String,
    /// The node's own credential for every later call: the cluster token
    /// only registers.
    pub node_token: String,
    #[serde(default)]
    pub purge_seq: u64,
}

/// What a purge removes from one tenant's cache namespace:
/// `{"url": "https://host/path"}` (every variant of that URL) or
/// `{"surrogate_key": "key"}` (every response and guest entry tagged with it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum PurgeTarget {
    Url(String),
    SurrogateKey(String),
}

/// One purge, numbered in the order every node applies it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Purge {
    pub seq: u64,
    pub tenant: String,
    pub target: PurgeTarget,
    /// Mark the entries stale rather than remove them: they are revalidated
    /// with the origin, and may be served stale while it fails.
    #[serde(default)]
    pub soft: bool,
}

/// The answer to a node's purge long-poll: the purges after the one it
/// acknowledged, through `through`. `reset` means some were pruned before the
/// node saw them: it must drop its whole cache.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeBatch {
    pub through: u64,
    pub reset: bool,
    pub purges: Vec<Purge>,
}

/// What a node made of the snapshot it applied last: the services it could
/// not load (and so does not serve), sent after every apply.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub snapshot_version: u64,
    pub failures: Vec<ServiceFailure>,
}

/// A service of a snapshot that a node does not serve, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceFailure {
    /// As in [`SnapshotService::name`].
    pub service: String,
    pub version: u64,
    pub module_sha256: String,
    pub error: String,
}

/// Counters a node accumulated since its last report, per service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageReport {
    pub snapshot_version: u64,
    pub services: Vec<ServiceUsage>,
    /// Unique per node: a report sent again with the same id is counted
    /// once. (Absent from nodes older than it: each such report counts.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_id: Option<String>,
}

/// Longest report id a node may send.
pub const MAX_REPORT_ID_BYTES: usize = 64;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceUsage {
    /// As in [`SnapshotService::name`].
    pub service: String,
    /// The version that served these requests (0: a node older than
    /// per-version reports, or a service of its config file).
    #[serde(default)]
    pub version: u64,
    /// Executions that ended in a trap, a limit or no response (before or
    /// after their response head).
    #[serde(default)]
    pub guest_failures: u64,
    /// Responses whose body ended in an error after a head was sent: with
    /// the 5xx responses, what a canary's error rate counts (a failure
    /// before the head is a 5xx already).
    #[serde(default)]
    pub responses_cut: u64,
    pub requests: u64,
    pub status_2xx: u64,
    pub status_3xx: u64,
    pub status_4xx: u64,
    pub status_5xx: u64,
    pub guest_cpu_micros: u64,
    pub bytes_out: u64,
}

/// One line a guest printed, as shipped from a node to the control plane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestLogLine {
    /// As in [`SnapshotService::name`].
    pub service: String,
    /// The service version that printed it (0: a service of the node's
    /// config file).
    pub version: u64,
    pub request_id: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// When the node received it, Unix milliseconds.
    pub timestamp_ms: u64,
    pub line: String,
}

/// Guest log lines a node ships in one request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestLogBatch {
    pub lines: Vec<GuestLogLine>,
}

/// Lines a node ships per request at most.
pub const MAX_GUEST_LOG_LINES_PER_BATCH: usize = 200;
/// A shipped line's text is cut to this many bytes.
pub const MAX_GUEST_LOG_LINE_BYTES: usize = 8 * 1024;
/// `line` cut to [`MAX_GUEST_LOG_LINE_BYTES`], on a character boundary: what
/// a node ships and the control plane stores.
pub fn bounded_log_line(line: &str) -> &str {
    if line.len() <= MAX_GUEST_LOG_LINE_BYTES {
        return line;
    }
    let mut end = MAX_GUEST_LOG_LINE_BYTES;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    &line[..end]
}

/// The largest shipment the control plane reads: 200 lines of 8 KiB even
/// when JSON escapes every byte (`\u0000`, six bytes each), with room for
/// the other fields.
pub const MAX_GUEST_LOG_BATCH_BYTES: usize = 16 * 1024 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_log_lines_are_cut_on_a_character_boundary() {
        let line = "é".repeat(MAX_GUEST_LOG_LINE_BYTES);
        let kept = bounded_log_line(&line);
        assert!(kept.len() <= MAX_GUEST_LOG_LINE_BYTES);
        assert!(kept.len() > MAX_GUEST_LOG_LINE_BYTES - 2);
        assert!(kept.chars().all(|c| c == 'é'));
        assert_eq!(bounded_log_line("short"), "short");
    }
}
