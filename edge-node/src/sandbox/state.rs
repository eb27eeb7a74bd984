//! What one request's `Store` holds: WASI contexts with nothing granted, the
//! host interfaces of `crate::host` built for this instance from the
//! service's capabilities, the limiter and the CPU account.

use std::sync::Arc;
use std::time::Duration;

use edge_config::ServiceLimits;
use edge_platform::guest::cache as cache_api;
use edge_platform::guest::keyvalue::{atomics, batch, store as kv_api};
use edge_platform::guest::{ConfigView, KvBucket, WasiConfig};
use wasmtime::component::{Resource, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::cpu::CpuAccount;
use super::limiter::GuestLimiter;
use crate::host::Capabilities;
use crate::host::cache::GuestCache;
use crate::host::config::GuestConfig;
use crate::host::kv::GuestKv;
use crate::host::logs::{GuestLog, GuestLogStream, LogStream};
use crate::host::outbound::Outbound;
use crate::tenant_logs::LineSource;

/// Who a guest runs for: used in its log lines and metrics.
#[derive(Debug, Clone)]
pub struct GuestIdentity {
    pub service: Arc<str>,
    /// Whose service it is: guests take turns on the CPU by tenant.
    pub tenant: Arc<str>,
    /// The service version (0: a service of the node's config file).
    pub version: u64,
    pub request_id: Arc<str>,
    /// The service's label in metrics (see [`crate::metrics::ServiceLabels`]).
    pub metrics_label: Arc<str>,
}

/// The data of one request's `Store`.
pub struct GuestState {
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    pub(crate) outbound: Outbound,
    pub(crate) cache: Option<GuestCache>,
    kv: Option<GuestKv>,
    config: GuestConfig,
    pub(crate) limiter: GuestLimiter,
    pub(crate) cpu: Arc<CpuAccount>,
    pub(crate) cpu_budget: Duration,
    /// This guest's place in the node's turns on the CPU, if it takes turns.
    pub(crate) turn: Option<Arc<super::turns::Turn>>,
}

impl GuestState {
    pub fn new(
        identity: &GuestIdentity,
        capabilities: &Capabilities,
        limits: &ServiceLimits,
        cpu: Arc<CpuAccount>,
    ) -> Self {
        let source = LineSource {
            service: Arc::clone(&identity.service),
            version: identity.version,
            request_id: Arc::clone(&identity.request_id),
        };
        let log = GuestLog::new(
            source,
            capabilities.logs.clone(),
            limits.max_log_bytes_per_request,
        );
        // Nothing is granted: no environment, arguments or preopened
        // directories (the builder's defaults), and no network.
        let wasi = WasiCtx::builder()
            .stdout(GuestLogStream::new(Arc::clone(&log), LogStream::Stdout))
            .stderr(GuestLogStream::new(log, LogStream::Stderr))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let mut table = ResourceTable::new();
        table.set_max_capacity(usize::try_from(limits.max_resource_handles).unwrap_or(usize::MAX));
        Self {
            table,
            wasi,
            http: WasiHttpCtx::new(),
            outbound: Outbound::new(
                capabilities.outbound.clone(),
                Arc::clone(&identity.metrics_label),
                limits,
            ),
            cache: capabilities.cache.clone(),
            kv: capabilities.kv.clone(),
            config: capabilities.config.clone(),
            limiter: GuestLimiter::new(limits),
            cpu,
            cpu_budget: Duration::from_millis(limits.cpu_budget_ms),
            turn: None,
        }
    }
}

debug_fields!(GuestState { limiter, cpu });

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for GuestState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound,
        }
    }
}

/// `edge:platform/cache`, in the tenant's namespace ([`GuestCache`]).
impl cache_api::Host for GuestState {
    fn lookup(&mut self, key: String) -> Option<Vec<u8>> {
        self.cache.as_ref()?.lookup(&key)
    }

    fn insert(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_ms: u64,
        surrogate_keys: Vec<String>,
    ) -> Result<(), cache_api::Error> {
        match &self.cache {
            Some(cache) => cache.insert(&key, value, ttl_ms, surrogate_keys),
            // Capabilities without a cache (a bare sandbox) store nothing.
            None => Ok(()),
        }
    }

    fn purge(&mut self, key: String) -> bool {
        self.cache.as_ref().is_some_and(|cache| cache.purge(&key))
    }

    fn purge_surrogate_key(&mut self, surrogate_key: String) -> u32 {
        self.cache
            .as_ref()
            .map_or(0, |cache| cache.purge_surrogate_key(&surrogate_key))
    }
}

impl ConfigView for GuestState {
    fn config(&mut self) -> WasiConfig<'_> {
        WasiConfig::new(&self.config.variables)
    }
}

impl GuestState {
    /// The service's stores, and the id of the store `bucket` opened.
    fn bucket(&self, bucket: &Resource<KvBucket>) -> Result<(&GuestKv, Arc<str>), kv_api::Error> {
        let kv = self.kv.as_ref().ok_or(kv_api::Error::NoSuchStore)?;
        let bucket = self
            .table
            .get(bucket)
            .map_err(|e| kv_api::Error::Other(e.to_string()))?;
        Ok((kv, Arc::clone(&bucket.store_id)))
    }

    /// The same, for a write, which outlives the borrow of `self`.
    fn bucket_owned(
        &self,
        bucket: &Resource<KvBucket>,
    ) -> Result<(GuestKv, Arc<str>), kv_api::Error> {
        self.bucket(bucket).map(|(kv, store)| (kv.clone(), store))
    }
}

/// `wasi:keyvalue/store`: the service's stores ([`GuestKv`]).
impl kv_api::Host for GuestState {
    fn open(&mut self, identifier: String) -> Result<Resource<KvBucket>, kv_api::Error> {
        let kv = self.kv.as_ref().ok_or(kv_api::Error::NoSuchStore)?;
        let store_id = kv.open(&identifier)?;
        self.table
            .push(KvBucket { store_id })
            .map_err(|e| kv_api::Error::Other(e.to_string()))
    }
}

impl kv_api::HostBucket for GuestState {
    fn get(
        &mut self,
        bucket: Resource<KvBucket>,
        key: String,
    ) -> Result<Option<Vec<u8>>, kv_api::Error> {
        let (kv, store) = self.bucket(&bucket)?;
        kv.get(&store, &key)
    }

    async fn set(
        &mut self,
        bucket: Resource<KvBucket>,
        key: String,
        value: Vec<u8>,
    ) -> Result<(), kv_api::Error> {
        let (kv, store) = self.bucket_owned(&bucket)?;
        kv.set(&store, key, value).await
    }

    async fn delete(
        &mut self,
        bucket: Resource<KvBucket>,
        key: String,
    ) -> Result<(), kv_api::Error> {
        let (kv, store) = self.bucket_owned(&bucket)?;
        kv.delete(&store, key).await
    }

    fn exists(&mut self, bucket: Resource<KvBucket>, key: String) -> Result<bool, kv_api::Error> {
        let (kv, store) = self.bucket(&bucket)?;
        kv.exists(&store, &key)
    }

    fn list_keys(
        &mut self,
        bucket: Resource<KvBucket>,
        cursor: Option<u64>,
    ) -> Result<kv_api::KeyResponse, kv_api::Error> {
        let (kv, store) = self.bucket(&bucket)?;
        kv.list_keys(&store, cursor)
    }

    fn drop(&mut self, bucket: Resource<KvBucket>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl atomics::Host for GuestState {
    async fn increment(
        &mut self,
        bucket: Resource<KvBucket>,
        key: String,
        delta: u64,
    ) -> Result<u64, kv_api::Error> {
        let (kv, store) = self.bucket_owned(&bucket)?;
        kv.increment(&store, key, delta).await
    }
}

impl batch::Host for GuestState {
    fn get_many(
        &mut self,
        bucket: Resource<KvBucket>,
        keys: Vec<String>,
    ) -> Result<Vec<Option<(String, Vec<u8>)>>, kv_api::Error> {
        let (kv, store) = self.bucket(&bucket)?;
        kv.get_many(&store, keys)
    }

    async fn set_many(
        &mut self,
        bucket: Resource<KvBucket>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> Result<(), kv_api::Error> {
        let (kv, store) = self.bucket_owned(&bucket)?;
        kv.set_many(&store, key_values).await
    }

    async fn delete_many(
        &mut self,
        bucket: Resource<KvBucket>,
        keys: Vec<String>,
    ) -> Result<(), kv_api::Error> {
        let (kv, store) = self.bucket_owned(&bucket)?;
        kv.delete_many(&store, keys).await
    }
}
