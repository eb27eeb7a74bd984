//! One tenant service as a node serves it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::backend::BackendSpec;
use crate::limits::{SandboxLimits, ServiceLimits};
use crate::protocol::ServiceSpec;
use crate::tls::CertificateFiles;
use crate::validate::{ConfigErrors, validate_service_name};

/// A service in a node's config file: the control plane's [`ServiceSpec`]
/// (domains, backends, limits, config, cache_responses), written inline,
/// plus what only a file can say: the module's path, the tenant whose
/// cache namespace it shares, and certificate files. One model, one
/// validation: [`ServiceSpec::validate_into`] checks the spec part for both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "ServiceFile", into = "ServiceFile")]
pub struct ServiceConfig {
    /// Unique on the node; used in metrics and logs.
    pub name: String,
    /// Path of the component (`.wasm`). Relative paths are resolved against
    /// the config file's directory.
    pub module: PathBuf,
    /// Whose cache namespace the service uses: services of one tenant share
    /// cached entries and purges. The service's own name by default.
    #[serde(default)]
    pub tenant: Option<String>,
    /// The certificate served (by SNI) for this service's domains on the
    /// HTTPS listener.
    #[serde(default)]
    pub certificate: Option<CertificateFiles>,
    /// Domains, backends (the operator writes the file, so
    /// `allow_private_addresses` is honoured), limits, config and
    /// `cache_responses`, as a tenant declares them to the control plane.
    pub spec: ServiceSpec,
}

/// How a service is written in the file: the spec's keys inline beside the
/// file's own, backends as `[service.backend.NAME]` tables, and any other
/// key refused (serde's `flatten` would let a misspelt one pass).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceFile {
    name: String,
    #[serde(default)]
    domains: Vec<String>,
    module: PathBuf,
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    certificate: Option<CertificateFiles>,
    #[serde(default, rename = "backend")]
    backends: BTreeMap<String, BackendSpec>,
    #[serde(default)]
    limits: ServiceLimits,
    #[serde(default)]
    config: BTreeMap<String, String>,
    #[serde(default)]
    cache_responses: bool,
}

impl From<ServiceFile> for ServiceConfig {
    fn from(file: ServiceFile) -> Self {
        Self {
            name: file.name,
            module: file.module,
            tenant: file.tenant,
            certificate: file.certificate,
            spec: ServiceSpec {
                domains: file.domains,
                backends: file.backends,
                limits: file.limits,
                config: file.config,
                cache_responses: file.cache_responses,
                // KV stores and secrets live on the control plane: a
                // service of the node's own file has none.
                ..ServiceSpec::default()
            },
        }
    }
}

impl From<ServiceConfig> for ServiceFile {
    fn from(service: ServiceConfig) -> Self {
        let spec = service.spec;
        Self {
            name: service.name,
            domains: spec.domains,
            module: service.module,
            tenant: service.tenant,
            certificate: service.certificate,
            backends: spec.backends,
            limits: spec.limits,
            config: spec.config,
            cache_responses: spec.cache_responses,
        }
    }
}

impl ServiceConfig {
    /// A service answering `domains` with the component at `module`, with
    /// the spec's defaults for everything else.
    pub fn new(name: &str, domains: &[&str], module: impl Into<PathBuf>) -> Self {
        Self {
            name: name.to_string(),
            module: module.into(),
            tenant: None,
            certificate: None,
            spec: ServiceSpec {
                domains: domains.iter().map(|d| (*d).to_string()).collect(),
                ..ServiceSpec::default()
            },
        }
    }

    pub fn validate(&self, path: &str, sandbox: &SandboxLimits, errors: &mut ConfigErrors) {
        if let Err(message) = validate_service_name(&self.name) {
            errors.push(format!("{path}.name"), message);
        }
        // Without a control plane there is no platform domain to answer on.
        if self.spec.domains.is_empty() {
            errors.push(
                format!("{path}.domains"),
                "a service needs at least one domain",
            );
        }
        if self.module.as_os_str().is_empty() {
            errors.push(format!("{path}.module"), "the module path is empty");
        }
        if let Some(certificate) = &self.certificate {
            certificate.validate(&format!("{path}.certificate"), errors);
        }
        if let Some(tenant) = &self.tenant
            && let Err(message) = validate_service_name(tenant)
        {
            errors.push(format!("{path}.tenant"), message);
        }
        let mut spec = ConfigErrors::default();
        self.spec
            .validate_into(&format!("{path}."), sandbox, &mut spec);
        // Named as the file spells them: `[service.backend.NAME]`.
        let api_key = format!("{path}.backends");
        for error in spec.0 {
            let path = match error.path.strip_prefix(&api_key) {
                Some(rest) => format!("{path}.backend{rest}"),
                None => error.path,
            };
            errors.push(path, error.message);
        }
    }
}
