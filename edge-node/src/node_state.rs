//! The node's parts, and the context each stage is given: the front door
//! ([`FrontDoor`]: connections, their bounds, TLS), the pipeline
//! ([`PipelineContext`]: one request, from its route to the guest) and the
//! admin listener ([`AdminContext`]). Built by [`crate::node`], which also
//! starts the listeners that take them; the stages depend on these, never
//! on the node that wires them.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context as _;
use edge_config::{HttpLimits, NodeConfig};
use edge_platform::ServingCertificate;
use edge_platform::certificates::provider;

use crate::admission::Admission;
use crate::backend::OriginClients;
use crate::cache::HttpCache;
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use crate::modules::ModuleCache;
use crate::routing::Router;
use crate::sandbox::Sandbox;
use crate::tenant_logs::TenantLogs;
use crate::tls::SniResolver;
use crate::usage::UsageMeter;

/// Every part of a node, as the node itself holds them to install services
/// and snapshots, start and stop. The stages get only their context.
#[derive(Debug)]
pub struct NodeState {
    pub(crate) front_door: Arc<FrontDoor>,
    pub(crate) admin: Arc<AdminContext>,
    pub(crate) router: Arc<Router>,
    pub(crate) modules: ModuleCache,
    pub(crate) sandbox: Arc<Sandbox>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) usage: Arc<UsageMeter>,
    pub(crate) tenant_logs: Arc<TenantLogs>,
    pub(crate) cache: Arc<HttpCache>,
    pub(crate) origin_clients: OriginClients,
    /// Every KV store's replica, and where guests' writes go.
    pub(crate) kv: Arc<crate::kv::Kv>,
    /// Opens the secrets snapshots carry sealed.
    pub(crate) secrets_key: Option<Arc<edge_platform::secrets::SecretsKey>>,
    pub(crate) lifecycle: Arc<Lifecycle>,
    /// The operator's ceilings on what services may set (`sandbox.max_*`):
    /// a snapshot service above one is not served.
    pub(crate) sandbox_limits: edge_config::SandboxLimits,
    /// How long a drain lets requests in flight finish.
    pub(crate) drain_grace: std::time::Duration,
    /// How often the services with their own metrics label are chosen.
    pub(crate) metrics_rerank: std::time::Duration,
}

/// What one request needs, from its route to its guest's response
/// (`http::pipeline`). Shared by every connection.
#[derive(Debug)]
pub struct PipelineContext {
    pub(crate) router: Arc<Router>,
    pub(crate) admission: Arc<Admission>,
    pub(crate) sandbox: Arc<Sandbox>,
    pub(crate) modules: ModuleCache,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) http_limits: HttpLimits,
    pub(crate) request_ids: Arc<RequestIds>,
    pub(crate) usage: Arc<UsageMeter>,
    /// One access-log event per request (`logs.access_log`).
    pub(crate) access_log: bool,
    /// Runs the services a service calls (`crate::service_calls`).
    pub(crate) service_calls: Arc<dyn crate::host::outbound::CallService>,
}

/// What accepting and serving connections needs (`http::server`,
/// `http::h3`): their bounds, TLS, the lifecycle they drain with, and the
/// pipeline each request goes to.
#[derive(Debug)]
pub struct FrontDoor {
    pub(crate) pipeline: PipelineContext,
    pub(crate) router: Arc<Router>,
    pub(crate) admission: Arc<Admission>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) http_limits: HttpLimits,
    pub(crate) request_ids: Arc<RequestIds>,
    pub(crate) tls: Option<TlsListener>,
    pub(crate) lifecycle: Arc<Lifecycle>,
}

/// What the admin listener shows: metrics and the phase.
#[derive(Debug)]
pub struct AdminContext {
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) lifecycle: Arc<Lifecycle>,
    pub(crate) cache: Arc<HttpCache>,
}

impl FrontDoor {
    /// Counts a TLS or QUIC connection against the tenant whose service its
    /// SNI names (`Ok(None)`: no SNI, or no such service). `Err` when that
    /// tenant is at `http.max_connections_per_tenant`.
    pub(crate) fn tenant_connection(
        &self,
        server_name: Option<&str>,
    ) -> Result<Option<crate::admission::TenantConnection>, TenantAtLimit> {
        match server_name.and_then(|name| self.router.route_server_name(name)) {
            Some(service) => self
                .admission
                .try_connect(&service.tenant)
                .map(Some)
                .ok_or(TenantAtLimit),
            None => Ok(None),
        }
    }

    /// Counts a connection against its client's address
    /// (`http.max_connections_per_client`). `None` when the address is at
    /// its limit: counted as a `client-connections` refusal, for either
    /// listener to close the connection its own way.
    pub(crate) fn client_connection(
        &self,
        address: std::net::IpAddr,
    ) -> Option<crate::admission::ClientConnection> {
        let connection = self.admission.try_connect_client(address);
        if connection.is_none() {
            self.metrics
                .limit_refusals
                .with_label_values(&["client-connections"])
                .inc();
        }
        connection
    }
}

/// A tenant has as many connections open as it may.
#[derive(Debug)]
pub(crate) struct TenantAtLimit;

/// The HTTPS listener's address and settings, and the certificates it serves.
#[derive(Debug)]
pub(crate) struct TlsListener {
    pub(crate) listen: SocketAddr,
    pub(crate) config: Arc<rustls::ServerConfig>,
    pub(crate) resolver: Arc<SniResolver>,
    pub(crate) handshake_timeout: std::time::Duration,
    /// HTTP/3 on the same port (UDP), when enabled.
    pub(crate) http3: Option<(edge_config::Http3Section, Arc<rustls::ServerConfig>)>,
    /// `Alt-Svc` for responses over TCP, once the HTTP/3 port is known.
    pub(crate) alt_svc: std::sync::OnceLock<http::HeaderValue>,
}

impl TlsListener {
    pub(crate) fn new(config: &NodeConfig, listen: SocketAddr) -> anyhow::Result<Self> {
        let section = &config.tls;
        let default = match &section.default_certificate {
            Some(files) => files
                .read(Path::new("."))
                .map_err(|e| anyhow::anyhow!("tls.default_certificate: {e}"))?,
            None => edge_platform::certificates::self_signed(&["edge-node.invalid"])?,
        };
        let default = ServingCertificate::from_pem(&default, &[], &provider())
            .context("tls.default_certificate")?;
        let resolver = Arc::new(SniResolver::new(default.key));
        let http3 = if config.http3.enabled {
            let quic = crate::tls::quic_server_config(section, Arc::clone(&resolver))?;
            Some((config.http3.clone(), quic))
        } else {
            None
        };
        Ok(Self {
            listen,
            config: crate::tls::server_config(section, Arc::clone(&resolver))?,
            resolver,
            handshake_timeout: std::time::Duration::from_millis(section.handshake_timeout_ms),
            http3,
            alt_svc: std::sync::OnceLock::new(),
        })
    }
}

/// Request ids: unique per node run, cheap to make. A random prefix per
/// process and a counter.
#[derive(Debug)]
pub(crate) struct RequestIds {
    prefix: u32,
    counter: AtomicU64,
}

impl RequestIds {
    pub(crate) fn new() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32))
            .unwrap_or(0)
            ^ std::process::id().rotate_left(16);
        Self {
            prefix: seed,
            counter: AtomicU64::new(0),
        }
    }

    /// 20 hex digits: the prefix, then the counter.
    pub(crate) fn next(&self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let value = (u128::from(self.prefix) << 48) | u128::from(n & 0xffff_ffff_ffff);
        let mut id = String::with_capacity(20);
        for shift in (0..20).rev() {
            id.push(char::from(HEX[((value >> (shift * 4)) & 0xf) as usize]));
        }
        id
    }
}
