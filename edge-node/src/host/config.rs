//! `wasi:config/store` for guests: the service's `config`, and the secrets
//! it lists, opened in memory when it is installed. Bound by wasmtime's own
//! `wasmtime-wasi-config`; this is only what it reads from.

use std::collections::BTreeMap;
use std::sync::Arc;

use edge_platform::guest::WasiConfigVariables;

/// A service's config variables. Its `Debug` names no value: secrets are
/// among them.
#[derive(Clone, Default)]
pub struct GuestConfig {
    pub variables: Arc<WasiConfigVariables>,
    entries: usize,
}

impl std::fmt::Debug for GuestConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GuestConfig({} entries)", self.entries)
    }
}

impl GuestConfig {
    /// `config` and then `secrets` (name, value): the spec's validation
    /// keeps their names apart.
    pub fn new(config: &BTreeMap<String, String>, secrets: &[(String, SecretText)]) -> Self {
        let mut variables = WasiConfigVariables::new();
        for (key, value) in config {
            variables.insert(key, value);
        }
        for (name, value) in secrets {
            variables.insert(name, value.0.as_str());
        }
        Self {
            variables: Arc::new(variables),
            entries: config.len() + secrets.len(),
        }
    }
}

/// A secret's value, opened. Its `Debug` shows nothing of it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretText(pub String);

impl std::fmt::Debug for SecretText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretText(..)")
    }
}
