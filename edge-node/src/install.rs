//! One install path for both sources of services, the node's config file
//! and the control plane's snapshots. Each source becomes an
//! [`InstallPlan`]: every module stored and loaded, every certificate
//! parsed, a snapshot's limits held to this node's ceilings (a config file
//! was validated, by the same `ServiceSpec` rules the control plane runs,
//! when it was read). `Node::apply` then
//! serves exactly the plan in one swap; `edge-node check-config` builds the
//! plan and stops there.
//!
//! The sources differ only where they must: a config file is all or
//! nothing (the node does not start on a broken file), while a snapshot
//! leaves out the services that do not load and serves the rest.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use edge_config::protocol::{
    ServiceFailure, ServiceSpec, Snapshot, SnapshotCanary, SnapshotService,
};
use edge_config::{ConfigErrors, SandboxLimits, ServiceConfig};
use edge_platform::ServingCertificate;
use edge_platform::certificates::provider;
use edge_platform::secrets::SecretsKey;

use crate::host::config::SecretText;
use crate::modules::{ModuleCache, ModuleHash};

/// What a node will serve once the plan is applied.
#[derive(Debug, Default)]
pub struct InstallPlan {
    pub services: Vec<PlannedService>,
}

/// One service, ready: its module loaded and its certificate parsed.
#[derive(Debug)]
pub struct PlannedService {
    pub name: Arc<str>,
    pub tenant: Arc<str>,
    /// The control plane's version (0 for a service of the config file).
    pub version: u64,
    pub module: ModuleHash,
    /// `domains` holds only the domains it will be served on.
    pub spec: ServiceSpec,
    pub certificate: Option<ServingCertificate>,
    /// The KV stores `spec.kv_stores` names that its tenant has, by name,
    /// with their ids.
    pub kv_stores: std::collections::BTreeMap<String, Arc<str>>,
    /// The secrets `spec.secrets` names that its tenant has set, opened.
    pub secrets: Vec<(String, SecretText)>,
    /// A canary version beside this one, loaded as this one is.
    pub canary: Option<PlannedCanary>,
}

/// A service's canary version, ready: on its stable version's domains.
#[derive(Debug)]
pub struct PlannedCanary {
    pub version: u64,
    pub module: ModuleHash,
    pub spec: ServiceSpec,
    pub kv_stores: std::collections::BTreeMap<String, Arc<str>>,
    pub secrets: Vec<(String, SecretText)>,
    pub percent: u8,
    pub sticky: edge_config::rollout::StickyKey,
}

/// Why a config file's services cannot be served: every failing service,
/// one line each.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct InstallError(pub Vec<String>);

/// What planning a snapshot left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotReport {
    /// Services not served: over this node's limits, or a module that
    /// does not load.
    pub skipped: Vec<ServiceFailure>,
    /// Domains left with an older service that claims them too.
    pub duplicate_domains: u64,
}

/// A snapshot service's limits against this node's ceilings, on one line.
/// Only the limits: the rest of the spec is the control plane's to check
/// (it writes platform names and counts domains by its own rules), and a
/// node that refused what the control plane accepted would serve nothing
/// of the service.
fn check_limits(spec: &ServiceSpec, sandbox: &SandboxLimits) -> Result<(), String> {
    let mut errors = ConfigErrors::default();
    spec.limits.validate("limits", sandbox, &mut errors);
    errors
        .into_result()
        .map_err(|errors| errors.to_string().trim().replace('\n', " "))
}

/// Plans a config file's services, which `NodeConfig` validated when it
/// was read (local mode's catch-all `*` is no domain a file or a tenant
/// may write); relative module and certificate paths are resolved against
/// `base_dir`. Any failure fails the plan, naming every service that
/// failed.
pub async fn plan_config(
    modules: &ModuleCache,
    services: &[ServiceConfig],
    base_dir: &Path,
) -> Result<InstallPlan, InstallError> {
    let mut plan = InstallPlan::default();
    let mut failures = Vec::new();
    for service in services {
        let fail = |failures: &mut Vec<String>, what: String| {
            failures.push(format!("service {:?}: {what}", service.name));
        };
        let certificate = match &service.certificate {
            Some(files) => match files.read(base_dir).and_then(|pem| {
                ServingCertificate::from_pem(&pem, &service.spec.domains, &provider())
                    .map_err(|e| e.to_string())
            }) {
                Ok(certificate) => Some(certificate),
                Err(e) => {
                    fail(&mut failures, format!("certificate: {e}"));
                    None
                }
            },
            None => None,
        };
        match store_and_load(modules, &base_dir.join(&service.module)).await {
            Ok(module) => plan.services.push(PlannedService {
                name: service.name.as_str().into(),
                tenant: service.tenant.as_deref().unwrap_or(&service.name).into(),
                version: 0,
                module,
                spec: service.spec.clone(),
                certificate,
                kv_stores: Default::default(),
                secrets: Vec::new(),
                canary: None,
            }),
            Err(e) => fail(&mut failures, e),
        }
    }
    if failures.is_empty() {
        Ok(plan)
    } else {
        Err(InstallError(failures))
    }
}

/// Stores the component at `path` in the module store, compiled, and loads
/// it.
async fn store_and_load(modules: &ModuleCache, path: &Path) -> Result<ModuleHash, String> {
    let bytes = tokio::fs::read(path)
        .await
        .map_err(|e| format!("reading module {}: {e}", path.display()))?;
    let store = modules.clone();
    let hash = tokio::task::spawn_blocking(move || store.store().insert_component(&bytes))
        .await
        .map_err(|e| format!("storing module {}: {e}", path.display()))?
        .map_err(|e| format!("{e:#}"))?;
    modules.preload(hash).await.map_err(|e| e.to_string())?;
    Ok(hash)
}

/// Plans a snapshot's services, whose components are already in the module
/// store. A module that is not `served` already is loaded first, so that one
/// this node cannot load is never routed to; one that is served loaded
/// before and is not loaded again (with more services than the module cache
/// holds, every snapshot would otherwise reload every evicted module). A
/// service over this node's limits (the control plane checks
/// against its own idea of the nodes' ceilings, and a spec stored before
/// an operator lowered them is not served) or whose module does not load
/// is left out and named in the report. A domain that two services claim
/// (the control plane never sends one; a node does not rely on it) stays
/// with the older claim.
pub async fn plan_snapshot(
    modules: &ModuleCache,
    sandbox: &SandboxLimits,
    snapshot: &Snapshot,
    served: &HashSet<ModuleHash>,
    secrets_key: Option<&SecretsKey>,
) -> (InstallPlan, SnapshotReport) {
    let mut plan = InstallPlan::default();
    let mut report = SnapshotReport::default();
    let mut claimed = HashSet::new();
    // Oldest claim first: it keeps a domain claimed twice.
    let mut services: Vec<&SnapshotService> = snapshot.services.iter().collect();
    services.sort_by(|a, b| (a.created_at_ms, &a.name).cmp(&(b.created_at_ms, &b.name)));
    for service in services {
        let loaded = match open_secrets(&service.tenant, &service.secrets, secrets_key) {
            Ok(secrets) => load_snapshot_module(
                modules,
                sandbox,
                &service.spec,
                &service.module_sha256,
                served,
            )
            .await
            .map(|module| (module, secrets)),
            Err(error) => Err(error),
        };
        let (module, secrets) = match loaded {
            Ok(loaded) => loaded,
            Err(error) => {
                tracing::error!(service = %service.name, version = service.version, %error, "service not served: over this node's limits, its module does not load, or its secrets do not open");
                report.skipped.push(ServiceFailure {
                    service: service.name.clone(),
                    version: service.version,
                    module_sha256: service.module_sha256.clone(),
                    error,
                });
                continue;
            }
        };
        let mut spec = service.spec.clone();
        spec.domains.retain(|domain| {
            let first = claimed.insert(domain.clone());
            if !first {
                tracing::error!(service = %service.name, %domain, "domain claimed by an older service in the snapshot; left with it");
                report.duplicate_domains += 1;
            }
            first
        });
        let certificate = service.certificate.as_ref().and_then(|pem| {
            // The control plane checked it on upload; one that fails here
            // is left out, and the service's clients get the default
            // certificate. So does a domain added since the upload that
            // the certificate does not cover.
            ServingCertificate::from_pem(pem, &[], &provider())
                .map_err(|e| {
                    tracing::error!(service = %service.name, "certificate not served: {e}");
                })
                .ok()
        });
        let kv_stores = tenant_stores(snapshot, &service.tenant, &spec);
        let canary = match &service.canary {
            Some(canary) => {
                match plan_canary(
                    modules,
                    sandbox,
                    snapshot,
                    service,
                    canary,
                    served,
                    secrets_key,
                )
                .await
                {
                    Ok(planned) => Some(planned),
                    Err(error) => {
                        tracing::error!(service = %service.name, version = canary.version, %error, "canary not served: the stable version serves every request");
                        report.skipped.push(ServiceFailure {
                            service: service.name.clone(),
                            version: canary.version,
                            module_sha256: canary.module_sha256.clone(),
                            error,
                        });
                        None
                    }
                }
            }
            None => None,
        };
        plan.services.push(PlannedService {
            name: service.name.as_str().into(),
            tenant: service.tenant.as_str().into(),
            version: service.version,
            module,
            spec,
            certificate,
            kv_stores,
            secrets,
            canary,
        });
    }
    (plan, report)
}

/// The KV stores `spec.kv_stores` names that `tenant` has, with their ids.
fn tenant_stores(
    snapshot: &Snapshot,
    tenant: &str,
    spec: &ServiceSpec,
) -> std::collections::BTreeMap<String, Arc<str>> {
    spec.kv_stores
        .iter()
        .filter_map(|name| {
            let store = snapshot
                .kv_stores
                .iter()
                .find(|store| store.tenant == tenant && store.name == *name)?;
            Some((name.clone(), Arc::from(store.id.as_str())))
        })
        .collect()
}

/// A service's canary, loaded as its stable version is; one that does not
/// load (or whose secrets do not open) is left out, and the stable version
/// serves every request.
async fn plan_canary(
    modules: &ModuleCache,
    sandbox: &SandboxLimits,
    snapshot: &Snapshot,
    service: &SnapshotService,
    canary: &SnapshotCanary,
    served: &HashSet<ModuleHash>,
    secrets_key: Option<&SecretsKey>,
) -> Result<PlannedCanary, String> {
    let secrets = open_secrets(&service.tenant, &canary.secrets, secrets_key)?;
    let module = load_snapshot_module(
        modules,
        sandbox,
        &canary.spec,
        &canary.module_sha256,
        served,
    )
    .await?;
    Ok(PlannedCanary {
        version: canary.version,
        module,
        kv_stores: tenant_stores(snapshot, &service.tenant, &canary.spec),
        spec: canary.spec.clone(),
        secrets,
        percent: canary.percent,
        sticky: canary.sticky.clone(),
    })
}

/// The service's sealed secrets, opened with the node's key: a secret that
/// does not open (no key, or another key than the control plane's) keeps
/// the whole service from being served, with the reason in the report,
/// rather than serve it without a value it relies on.
fn open_secrets(
    tenant: &str,
    sealed: &[edge_config::state::SealedSecret],
    key: Option<&SecretsKey>,
) -> Result<Vec<(String, SecretText)>, String> {
    if sealed.is_empty() {
        return Ok(Vec::new());
    }
    let key = key.ok_or_else(|| {
        "the service lists secrets and this node has no secrets key (node.secrets_key_file)"
            .to_string()
    })?;
    sealed
        .iter()
        .map(|secret| {
            let value = key
                .open(tenant, &secret.name, &secret.sealed)
                .map_err(|e| e.to_string())?;
            let text = String::from_utf8(value)
                .map_err(|_| format!("secret {:?} is not UTF-8", secret.name))?;
            Ok((secret.name.clone(), SecretText(text)))
        })
        .collect()
}

async fn load_snapshot_module(
    modules: &ModuleCache,
    sandbox: &SandboxLimits,
    spec: &ServiceSpec,
    module_sha256: &str,
    served: &HashSet<ModuleHash>,
) -> Result<ModuleHash, String> {
    check_limits(spec, sandbox)?;
    let module: ModuleHash = module_sha256
        .parse()
        .map_err(|_| format!("bad module hash {module_sha256:?}"))?;
    if !served.contains(&module) {
        modules.preload(module).await.map_err(|e| e.to_string())?;
    }
    Ok(module)
}
