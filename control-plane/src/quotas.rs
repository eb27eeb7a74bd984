//! What one tenant may ask of the control plane, and how fast.
//!
//! Every tenant may be hostile, and the control plane serves them all from
//! one process and one database: one tenant's loop of uploads, activations
//! or purges must not slow the others. Two kinds of bound:
//!
//! - **Quotas** on what a tenant keeps (services, module bytes, spec
//!   size): past one, 400 `quota_exceeded` naming it. Waiting does not help.
//! - **Rates and concurrency** (activations per minute, purges per second,
//!   uploads at once per tenant, compiles at once on the whole control
//!   plane): past one, 429 `rate_limited` with `Retry-After`. Compiles are
//!   the costly part (a child process, seconds of CPU), so they are bounded
//!   for everyone together as well.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;

pub const DEFAULT_MAX_SERVICES_PER_TENANT: u64 = 100;
pub const DEFAULT_MAX_VERSIONS_PER_SERVICE: u64 = 1_000;
pub const DEFAULT_MAX_MODULE_BYTES_PER_TENANT: u64 = 1024 * 1024 * 1024;
pub const DEFAULT_MAX_SPEC_BYTES: usize = 64 * 1024;
pub const DEFAULT_ACTIVATIONS_PER_MINUTE: u32 = 60;
pub const DEFAULT_PURGES_PER_SECOND: u32 = 100;
pub const DEFAULT_MAX_UPLOADS_PER_TENANT: usize = 2;
pub const DEFAULT_MAX_CONCURRENT_COMPILES: usize = 2;
pub const DEFAULT_MAX_KV_STORES_PER_TENANT: u64 = 20;
pub const DEFAULT_MAX_KV_KEYS_PER_STORE: u64 = 100_000;
pub const DEFAULT_MAX_KV_BYTES_PER_TENANT: u64 = 256 * 1024 * 1024;
pub const DEFAULT_KV_WRITES_PER_SECOND: u32 = 500;
pub const DEFAULT_MAX_SECRETS_PER_TENANT: u64 = 100;

/// The operator's settings (`control-plane serve --max-...`).
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct QuotaConfig {
    /// Services one tenant may have.
    #[arg(long, default_value_t = DEFAULT_MAX_SERVICES_PER_TENANT)]
    pub max_services_per_tenant: u64,
    /// Versions one service may have (each is kept, spec and all, for
    /// rollback).
    #[arg(long, default_value_t = DEFAULT_MAX_VERSIONS_PER_SERVICE)]
    pub max_versions_per_service: u64,
    /// Bytes of modules one tenant may have stored (each distinct module
    /// counted once per tenant).
    #[arg(long, default_value_t = DEFAULT_MAX_MODULE_BYTES_PER_TENANT)]
    pub max_module_bytes_per_tenant: u64,
    /// Largest service spec, as JSON.
    #[arg(long, default_value_t = DEFAULT_MAX_SPEC_BYTES)]
    pub max_spec_bytes: usize,
    /// Changes that reach the nodes (activations, deploys, rollbacks,
    /// service deletes, certificate and domain changes, domain checks) per
    /// tenant per minute.
    #[arg(long, default_value_t = DEFAULT_ACTIVATIONS_PER_MINUTE)]
    pub activations_per_minute: u32,
    /// Purges per tenant per second.
    #[arg(long, default_value_t = DEFAULT_PURGES_PER_SECOND)]
    pub purges_per_second: u32,
    /// Uploads one tenant may have in progress at once.
    #[arg(long, default_value_t = DEFAULT_MAX_UPLOADS_PER_TENANT)]
    pub max_uploads_per_tenant: usize,
    /// Compiles the control plane runs at once, all tenants together.
    #[arg(long, default_value_t = DEFAULT_MAX_CONCURRENT_COMPILES)]
    pub max_concurrent_compiles: usize,
    /// KV stores one tenant may have.
    #[arg(long, default_value_t = DEFAULT_MAX_KV_STORES_PER_TENANT)]
    pub max_kv_stores_per_tenant: u64,
    /// Keys one KV store may hold.
    #[arg(long, default_value_t = DEFAULT_MAX_KV_KEYS_PER_STORE)]
    pub max_kv_keys_per_store: u64,
    /// Bytes of keys and values one tenant's KV stores may hold together.
    #[arg(long, default_value_t = DEFAULT_MAX_KV_BYTES_PER_TENANT)]
    pub max_kv_bytes_per_tenant: u64,
    /// KV keys written (set, deleted, incremented) per tenant per second,
    /// by guests and through the API together.
    #[arg(long, default_value_t = DEFAULT_KV_WRITES_PER_SECOND)]
    pub kv_writes_per_second: u32,
    /// Secrets one tenant may have.
    #[arg(long, default_value_t = DEFAULT_MAX_SECRETS_PER_TENANT)]
    pub max_secrets_per_tenant: u64,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        Self {
            max_services_per_tenant: DEFAULT_MAX_SERVICES_PER_TENANT,
            max_versions_per_service: DEFAULT_MAX_VERSIONS_PER_SERVICE,
            max_module_bytes_per_tenant: DEFAULT_MAX_MODULE_BYTES_PER_TENANT,
            max_spec_bytes: DEFAULT_MAX_SPEC_BYTES,
            activations_per_minute: DEFAULT_ACTIVATIONS_PER_MINUTE,
            purges_per_second: DEFAULT_PURGES_PER_SECOND,
            max_uploads_per_tenant: DEFAULT_MAX_UPLOADS_PER_TENANT,
            max_concurrent_compiles: DEFAULT_MAX_CONCURRENT_COMPILES,
            max_kv_stores_per_tenant: DEFAULT_MAX_KV_STORES_PER_TENANT,
            max_kv_keys_per_store: DEFAULT_MAX_KV_KEYS_PER_STORE,
            max_kv_bytes_per_tenant: DEFAULT_MAX_KV_BYTES_PER_TENANT,
            kv_writes_per_second: DEFAULT_KV_WRITES_PER_SECOND,
            max_secrets_per_tenant: DEFAULT_MAX_SECRETS_PER_TENANT,
        }
    }
}

/// A request refused for now: 429 with `Retry-After`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimited {
    pub retry_after: Duration,
    pub message: String,
}

impl From<RateLimited> for ApiError {
    fn from(limited: RateLimited) -> Self {
        ApiError::rate_limited(limited.message, limited.retry_after)
    }
}

/// A quota's refusal: 400 naming it.
pub fn quota_exceeded(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("quota_exceeded", message)
}

/// Counts events per tenant in fixed windows.
#[derive(Debug)]
struct RateWindows {
    per_window: u32,
    window: Duration,
    what: &'static str,
    /// Per tenant: when its window started, and what it has used of it.
    tenants: DashMap<String, (Instant, u32)>,
}

impl RateWindows {
    fn new(per_window: u32, window: Duration, what: &'static str) -> Self {
        Self {
            per_window,
            window,
            what,
            tenants: DashMap::new(),
        }
    }

    fn take(&self, tenant_id: &str) -> Result<(), RateLimited> {
        self.take_n(tenant_id, 1)
    }

    /// Takes `n` events at once: all or none. More than a window holds
    /// takes a whole window, when it has nothing used yet.
    fn take_n(&self, tenant_id: &str, n: u32) -> Result<(), RateLimited> {
        let n = n.min(self.per_window);
        let now = Instant::now();
        let mut entry = self
            .tenants
            .entry(tenant_id.to_string())
            .or_insert((now, 0));
        let (started, used) = &mut *entry;
        if now.duration_since(*started) >= self.window {
            *started = now;
            *used = 0;
        }
        if used.saturating_add(n) > self.per_window {
            return Err(RateLimited {
                retry_after: self.window.saturating_sub(now.duration_since(*started)),
                message: format!(
                    "at most {} {} per {} s per tenant; retry later",
                    self.per_window,
                    self.what,
                    self.window.as_secs()
                ),
            });
        }
        *used += n;
        Ok(())
    }
}

/// One of a tenant's uploads in progress; the count drops with it.
#[derive(Debug)]
pub struct UploadSlot {
    uploads: Arc<DashMap<String, usize>>,
    tenant_id: String,
}

impl Drop for UploadSlot {
    fn drop(&mut self) {
        self.uploads.remove_if_mut(&self.tenant_id, |_, count| {
            *count -= 1;
            *count == 0
        });
    }
}

/// One compile running; another may start when it is dropped.
#[derive(Debug)]
pub struct CompileSlot(#[allow(dead_code)] OwnedSemaphorePermit);

#[derive(Debug)]
pub struct Quotas {
    pub config: QuotaConfig,
    activations: RateWindows,
    purges: RateWindows,
    kv_writes: RateWindows,
    uploads: Arc<DashMap<String, usize>>,
    compiles: Arc<Semaphore>,
}

/// How long a refused upload is asked to wait: about one compile.
const UPLOAD_RETRY_AFTER: Duration = Duration::from_secs(2);

impl Quotas {
    pub fn new(config: QuotaConfig) -> Self {
        Self {
            activations: RateWindows::new(
                config.activations_per_minute,
                Duration::from_secs(60),
                "changes that reach the nodes (deploys, rollbacks, deletes, certificates, domains)",
            ),
            purges: RateWindows::new(config.purges_per_second, Duration::from_secs(1), "purges"),
            kv_writes: RateWindows::new(
                config.kv_writes_per_second,
                Duration::from_secs(1),
                "KV keys written",
            ),
            uploads: Arc::default(),
            compiles: Arc::new(Semaphore::new(config.max_concurrent_compiles.max(1))),
            config,
        }
    }

    pub fn activation(&self, tenant_id: &str) -> Result<(), RateLimited> {
        self.activations.take(tenant_id)
    }

    pub fn purge(&self, tenant_id: &str) -> Result<(), RateLimited> {
        self.purges.take(tenant_id)
    }

    /// `keys` KV keys written at once (one write, or a batch).
    pub fn kv_writes(&self, tenant_id: &str, keys: usize) -> Result<(), RateLimited> {
        self.kv_writes
            .take_n(tenant_id, u32::try_from(keys.max(1)).unwrap_or(u32::MAX))
    }

    /// A slot for one of `tenant_id`'s uploads, under
    /// `max_uploads_per_tenant`.
    pub fn upload(&self, tenant_id: &str) -> Result<UploadSlot, RateLimited> {
        let mut count = self.uploads.entry(tenant_id.to_string()).or_insert(0);
        if *count >= self.config.max_uploads_per_tenant {
            return Err(RateLimited {
                retry_after: UPLOAD_RETRY_AFTER,
                message: format!(
                    "at most {} uploads at once per tenant; retry when one is done",
                    self.config.max_uploads_per_tenant
                ),
            });
        }
        *count += 1;
        drop(count);
        Ok(UploadSlot {
            uploads: Arc::clone(&self.uploads),
            tenant_id: tenant_id.to_string(),
        })
    }

    /// A slot for one compile, under `max_concurrent_compiles` for the
    /// whole control plane; refused at once rather than queued, so that a
    /// burst costs nobody a long wait.
    pub fn compile(&self) -> Result<CompileSlot, RateLimited> {
        Arc::clone(&self.compiles)
            .try_acquire_owned()
            .map(CompileSlot)
            .map_err(|_| RateLimited {
                retry_after: UPLOAD_RETRY_AFTER,
                message: format!(
                    "the control plane is compiling {} uploads already; retry shortly",
                    self.config.max_concurrent_compiles
                ),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_per_tenant_and_say_when_to_retry() {
        let quotas = Quotas::new(QuotaConfig {
            purges_per_second: 3,
            ..QuotaConfig::default()
        });
        for _ in 0..3 {
            quotas.purge("a").expect("within the rate");
        }
        let refused = quotas.purge("a").expect_err("fourth in one second");
        assert!(refused.retry_after <= Duration::from_secs(1));
        assert!(refused.message.contains("at most 3 purges per 1 s"));
        quotas.purge("b").expect("another tenant's own rate");
    }

    #[test]
    fn uploads_and_compiles_at_once_are_bounded_and_freed() {
        let quotas = Quotas::new(QuotaConfig {
            max_uploads_per_tenant: 1,
            max_concurrent_compiles: 2,
            ..QuotaConfig::default()
        });
        let upload = quotas.upload("a").expect("first");
        assert!(quotas.upload("a").is_err());
        assert!(quotas.upload("b").is_ok());
        drop(upload);
        assert!(quotas.upload("a").is_ok());
        assert!(quotas.uploads.is_empty(), "no entry once done");

        let compiles = [quotas.compile().expect("1"), quotas.compile().expect("2")];
        assert!(quotas.compile().is_err());
        drop(compiles);
        assert!(quotas.compile().is_ok());
    }
}
