//! One tenant service as a node serves it.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::backend::BackendSpec;
use crate::limits::{SandboxLimits, ServiceLimits};
use crate::tls::CertificateFiles;
use crate::validate::{ConfigErrors, validate_service_name};

/// A service: the domains it answers for, the component that handles its
/// requests, and the limits that component runs under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Unique on the node; used in metrics and logs.
    pub name: String,
    /// Host names this service answers for: exact (`shop.example.com`) or a
    /// leading wildcard (`*.example.com`, which matches one or more labels).
    pub domains: Vec<String>,
    /// Path of the component (`.wasm`). Relative paths are resolved against
    /// the config file's directory.
    pub module: PathBuf,
    #[serde(default)]
    pub limits: ServiceLimits,
    /// Whose cache namespace the service uses: services of one tenant share
    /// cached entries and purges. The service's own name by default.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Named origins the guest may fetch from (`http://<name>/...`). The
    /// operator writes this file, so `allow_private_addresses` is honoured.
    #[serde(default, rename = "backend")]
    pub backends: BTreeMap<String, BackendSpec>,
    /// The certificate served (by SNI) for this service's domains on the
    /// HTTPS listener.
    #[serde(default)]
    pub certificate: Option<CertificateFiles>,
    /// Cache the guest's own responses at the edge when their headers allow
    /// a shared cache to (see docs/architecture.md, "The edge cache").
    #[serde(default)]
    pub cache_responses: bool,
}

impl ServiceConfig {
    pub fn validate(&self, path: &str, sandbox: &SandboxLimits, errors: &mut ConfigErrors) {
        if let Err(message) = validate_service_name(&self.name) {
            errors.push(format!("{path}.name"), message);
        }
        if self.domains.is_empty() {
            errors.push(
                format!("{path}.domains"),
                "a service needs at least one domain",
            );
        }
        let mut seen = HashSet::new();
        for (i, domain) in self.domains.iter().enumerate() {
            if let Err(message) = validate_domain(domain) {
                errors.push(format!("{path}.domains[{i}]"), message);
            } else if !seen.insert(domain.as_str()) {
                errors.push(
                    format!("{path}.domains[{i}]"),
                    format!("{domain:?} is listed twice"),
                );
            }
        }
        if self.module.as_os_str().is_empty() {
            errors.push(format!("{path}.module"), "the module path is empty");
        }
        self.limits
            .validate(&format!("{path}.limits"), sandbox, errors);
        if let Some(certificate) = &self.certificate {
            certificate.validate(&format!("{path}.certificate"), errors);
        }
        if let Some(tenant) = &self.tenant
            && let Err(message) = validate_service_name(tenant)
        {
            errors.push(format!("{path}.tenant"), message);
        }
        for (name, backend) in &self.backends {
            backend.validate(&format!("{path}.backend.{name}"), name, errors);
        }
    }
}

/// A domain is a lowercase DNS name, optionally with a leading `*.` wildcard.
/// Ports are not part of a domain: the router ignores the port of `Host`.
pub fn validate_domain(domain: &str) -> Result<(), String> {
    let name = domain.strip_prefix("*.").unwrap_or(domain);
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    if !name.is_empty() && name.len() <= 253 && name.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(format!(
            "{domain:?} is not a valid domain: use a lowercase DNS name such as \"shop.example.com\" or \"*.example.com\""
        ))
    }
}
