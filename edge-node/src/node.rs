//! The node: builds every stage from its config and starts the listeners.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use edge_config::protocol::Snapshot;
use edge_config::{BackendSpec, NodeConfig, ServiceConfig};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::admission::Admission;
use crate::backend::OriginClients;
use crate::cache::HttpCache;
use crate::host::Capabilities;
use crate::host::cache::GuestCache;
use crate::host::outbound::OutboundContext;
use crate::install::{self, InstallError, InstallPlan, SnapshotReport};
use crate::lifecycle::{Lifecycle, Phase, Shutdown};
use crate::metrics::Metrics;
use crate::modules::{ArtifactStore, ModuleCache};
use crate::node_state::{
    AdminContext, FrontDoor, NodeState, PipelineContext, RequestIds, TlsListener,
};
use crate::routing::{Router, RoutingTable, Service};
use crate::sandbox::Sandbox;
use crate::tenant_logs::TenantLogs;
use crate::tls::SniTable;
use crate::usage::UsageMeter;
use edge_platform::ServingCertificate;

/// Records in the SNI table that each of `domains` routes to `tenant`, with
/// `certificate` for those it covers.
fn add_certificates(
    table: &mut SniTable,
    domains: &[String],
    tenant: &Arc<str>,
    certificate: Option<ServingCertificate>,
) {
    for domain in domains {
        let key = certificate
            .as_ref()
            .filter(|certificate| certificate.covers(domain))
            .map(|certificate| Arc::clone(&certificate.key));
        table.insert(domain, tenant, key);
    }
}

/// An edge node, not yet listening.
#[derive(Debug, Clone)]
pub struct Node {
    inner: Arc<NodeState>,
}

impl Node {
    /// Builds the engine, the artifact store and the module cache.
    pub fn new(config: &NodeConfig) -> anyhow::Result<Self> {
        let metrics = Arc::new(Metrics::new(&config.metrics));
        let sandbox = Arc::new(
            Sandbox::new(&config.sandbox)
                .map(|sandbox| sandbox.with_turns(metrics.guests_waiting_for_cpu.clone()))
                .context("creating the sandbox")?,
        );
        let store = ArtifactStore::open(
            &config.node.data_dir,
            sandbox.engine().clone(),
            sandbox.fingerprint(),
        )
        .context("opening the artifact store")?;
        let modules = ModuleCache::new(
            Arc::new(store),
            Arc::clone(&sandbox),
            config.sandbox.module_cache_entries,
            Arc::clone(&metrics),
        );
        let cache = Arc::new(HttpCache::new(&config.cache, Arc::clone(&metrics)));
        let kv = Arc::new(crate::kv::Kv::new(crate::kv::KvMetrics {
            reads: metrics.kv_reads.clone(),
            writes: metrics.kv_writes.clone(),
        }));
        let secrets_key = config
            .node
            .secrets_key_file
            .as_deref()
            .map(edge_platform::secrets::SecretsKey::from_file)
            .transpose()
            .context("node.secrets_key_file")?
            .map(Arc::new);
        let lifecycle = Lifecycle::new(metrics.node_phase.clone());
        let tls = match config.tls.listen {
            Some(listen) => Some(TlsListener::new(config, listen)?),
            None => None,
        };
        let router = Arc::new(Router::default());
        let admission = Arc::new(Admission::new(
            &config.http,
            metrics.in_flight_requests.clone(),
        ));
        let request_ids = Arc::new(RequestIds::new());
        let usage = Arc::new(UsageMeter::default());
        let lifecycle = Arc::new(lifecycle);
        let pipeline = PipelineContext {
            router: Arc::clone(&router),
            admission: Arc::clone(&admission),
            sandbox: Arc::clone(&sandbox),
            modules: modules.clone(),
            metrics: Arc::clone(&metrics),
            http_limits: config.http.clone(),
            request_ids: Arc::clone(&request_ids),
            usage: Arc::clone(&usage),
            access_log: config.logs.access_log,
            service_calls: Arc::new(crate::service_calls::ServiceCalls {
                router: Arc::clone(&router),
                admission: Arc::clone(&admission),
                modules: modules.clone(),
                sandbox: Arc::clone(&sandbox),
                metrics: Arc::clone(&metrics),
                usage: Arc::clone(&usage),
                http_limits: config.http.clone(),
            }),
        };
        let front_door = Arc::new(FrontDoor {
            pipeline,
            router: Arc::clone(&router),
            admission,
            metrics: Arc::clone(&metrics),
            http_limits: config.http.clone(),
            request_ids,
            tls,
            lifecycle: Arc::clone(&lifecycle),
        });
        let admin = Arc::new(AdminContext {
            metrics: Arc::clone(&metrics),
            lifecycle: Arc::clone(&lifecycle),
            cache: Arc::clone(&cache),
        });
        Ok(Self {
            inner: Arc::new(NodeState {
                front_door,
                admin,
                router,
                modules,
                sandbox,
                metrics: Arc::clone(&metrics),
                usage,
                tenant_logs: Arc::new(TenantLogs::new(&config.logs, Arc::clone(&metrics))),
                cache,
                origin_clients: OriginClients::default(),
                kv,
                secrets_key,
                lifecycle,
                sandbox_limits: config.sandbox.clone(),
                drain_grace: std::time::Duration::from_millis(config.node.drain_grace_ms),
                metrics_rerank: std::time::Duration::from_millis(
                    config.metrics.service_label_rerank_ms,
                ),
            }),
        })
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub fn router(&self) -> &Router {
        &self.inner.router
    }

    /// Usage per service since the last report.
    pub fn usage(&self) -> &UsageMeter {
        &self.inner.usage
    }

    /// Guest log lines waiting to be shipped to the control plane.
    pub fn tenant_logs(&self) -> &Arc<TenantLogs> {
        &self.inner.tenant_logs
    }

    pub fn sandbox(&self) -> &Sandbox {
        &self.inner.sandbox
    }

    pub fn modules(&self) -> &ModuleCache {
        &self.inner.modules
    }

    /// The HTTP cache, every tenant's namespace.
    /// Whether any service served now has a canary (its usage is then
    /// reported more often).
    pub fn serves_canary(&self) -> bool {
        self.inner.router.serves_canary()
    }

    pub fn cache(&self) -> &Arc<HttpCache> {
        &self.inner.cache
    }

    /// Every KV store's replica, and where guests' writes go.
    pub fn kv(&self) -> &Arc<crate::kv::Kv> {
        &self.inner.kv
    }

    /// The node's phase, and the owner of its background tasks.
    pub fn lifecycle(&self) -> &Lifecycle {
        &self.inner.lifecycle
    }

    /// What a service's guests may reach: its backends and its tenant's
    /// cache namespace.
    fn capabilities(
        &self,
        namespace: &str,
        backends: &std::collections::BTreeMap<String, BackendSpec>,
        clients_in_use: &mut std::collections::HashMap<String, Arc<crate::backend::OriginClient>>,
    ) -> Capabilities {
        let namespace: Arc<str> = namespace.into();
        let outbound = (!backends.is_empty()).then(|| OutboundContext {
            namespace: Arc::clone(&namespace),
            backends: self
                .inner
                .origin_clients
                .backend_set(backends, clients_in_use),
            cache: Arc::clone(&self.inner.cache),
            metrics: Arc::clone(&self.inner.metrics),
            calls_services: backends.values().any(|spec| spec.service.is_some()),
        });
        Capabilities {
            logs: Some(Arc::clone(&self.inner.tenant_logs)),
            outbound,
            cache: Some(GuestCache {
                namespace,
                cache: Arc::clone(&self.inner.cache),
            }),
            ..Capabilities::default()
        }
    }

    /// Stores each service's component, compiles and type-checks it, and
    /// then swaps the routing table to serve exactly these services.
    /// Relative module paths are resolved against `base_dir`. Nothing is
    /// swapped if any service fails; the error names every one that did.
    pub async fn install_services(
        &self,
        services: &[ServiceConfig],
        base_dir: &Path,
    ) -> Result<(), InstallError> {
        let plan = self.plan_services(services, base_dir).await?;
        self.apply(plan, 0);
        Ok(())
    }

    /// What [`Self::install_services`] would serve, with every module
    /// loaded and every certificate parsed, without serving it: what
    /// `edge-node check-config` runs.
    pub async fn plan_services(
        &self,
        services: &[ServiceConfig],
        base_dir: &Path,
    ) -> Result<InstallPlan, InstallError> {
        install::plan_config(&self.inner.modules, services, base_dir).await
    }

    /// Serves the services of a control-plane snapshot, whose components
    /// are already in the module store. Every module not served already is
    /// loaded before the routing table is swapped, in one step: requests in
    /// flight finish on the version they started with.
    ///
    /// Service by service: one whose module does not load is left out (its
    /// domains answer 421 until a version that loads is active), counted in
    /// `edge_snapshot_services_skipped_total` and named in the report, and
    /// every other service is served. A domain that two services claim
    /// stays with the older claim, and the newer one is logged and counted
    /// in `edge_snapshot_duplicate_domains_total`.
    pub async fn install_snapshot(&self, snapshot: &Snapshot) -> SnapshotReport {
        let served = self.inner.router.modules();
        let (plan, report) = install::plan_snapshot(
            &self.inner.modules,
            &self.inner.sandbox_limits,
            snapshot,
            &served,
            self.inner.secrets_key.as_deref(),
        )
        .await;
        let metrics = &self.inner.metrics;
        metrics
            .snapshot_services_skipped
            .inc_by(report.skipped.len() as u64);
        metrics
            .snapshot_duplicate_domains
            .inc_by(report.duplicate_domains);
        self.apply(plan, snapshot.version);
        report
    }

    /// Serves exactly `plan` from the next request and handshake on: one
    /// routing table and one SNI table, each swapped whole.
    fn apply(&self, plan: InstallPlan, snapshot_version: u64) {
        let mut table = RoutingTable::default();
        let mut certificates = SniTable::default();
        let mut clients = std::collections::HashMap::new();
        for planned in plan.services {
            add_certificates(
                &mut certificates,
                &planned.spec.domains,
                &planned.tenant,
                planned.certificate,
            );
            // A snapshot names a service `<tenant>/<service>`; the tenant's
            // own specs name it `<service>`.
            let prefix = format!("{}/", planned.tenant);
            let short_name = planned
                .name
                .strip_prefix(prefix.as_str())
                .map_or_else(|| Arc::clone(&planned.name), Arc::from);
            let names = ServiceNames {
                name: planned.name,
                short_name,
                tenant: planned.tenant,
            };
            let canary = planned.canary.map(|canary| {
                let mut canary_service = self.service_version(
                    &names,
                    VersionParts {
                        version: canary.version,
                        module: canary.module,
                        spec: &canary.spec,
                        kv_stores: canary.kv_stores,
                        secrets: &canary.secrets,
                    },
                    &mut clients,
                );
                // The edge cache is keyed by URL, not by version: while two
                // versions serve, neither keeps answers for the other.
                canary_service.cache_responses = false;
                crate::routing::Canary {
                    percent: canary.percent,
                    sticky: canary.sticky,
                    service: Arc::new(canary_service),
                }
            });
            let mut service = self.service_version(
                &names,
                VersionParts {
                    version: planned.version,
                    module: planned.module,
                    spec: &planned.spec,
                    kv_stores: planned.kv_stores,
                    secrets: &planned.secrets,
                },
                &mut clients,
            );
            if canary.is_some() {
                service.cache_responses = false;
            }
            service.canary = canary;
            table.insert_service(service, &planned.spec.domains);
        }
        self.inner.router.replace(table);
        if let Some(tls) = &self.inner.front_door.tls {
            tls.resolver.replace(certificates);
        }
        self.inner.origin_clients.retain(clients);
        self.inner.metrics.snapshot_applied(snapshot_version);
    }

    /// One version of a service as the request path serves it: its
    /// backends, cache namespace, config, secrets and KV stores.
    fn service_version(
        &self,
        names: &ServiceNames,
        parts: VersionParts<'_>,
        clients: &mut std::collections::HashMap<String, Arc<crate::backend::OriginClient>>,
    ) -> Service {
        let spec = parts.spec;
        let mut capabilities = self.capabilities(&names.tenant, &spec.backends, clients);
        capabilities.config = crate::host::config::GuestConfig::new(&spec.config, parts.secrets);
        capabilities.kv = (!parts.kv_stores.is_empty()).then(|| crate::host::kv::GuestKv {
            tenant: Arc::clone(&names.tenant),
            stores: Arc::new(parts.kv_stores),
            kv: Arc::clone(&self.inner.kv),
        });
        Service {
            name: Arc::clone(&names.name),
            short_name: Arc::clone(&names.short_name),
            tenant: Arc::clone(&names.tenant),
            version: parts.version,
            cache_responses: spec.cache_responses,
            module: parts.module,
            limits: spec.limits.clone(),
            capabilities,
            canary: None,
        }
    }

    /// Binds the public and admin listeners and starts serving.
    pub async fn start(
        &self,
        listen: SocketAddr,
        admin_listen: SocketAddr,
    ) -> anyhow::Result<RunningNode> {
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding the listener on {listen}"))?;
        let admin_listener = TcpListener::bind(admin_listen)
            .await
            .with_context(|| format!("binding the admin listener on {admin_listen}"))?;
        let (tls_listener, quic_endpoint) = match &self.inner.front_door.tls {
            Some(tls) => {
                let (listener, endpoint) = bind_tls_and_quic(tls).await?;
                (Some(listener), endpoint)
            }
            None => (None, None),
        };
        let addr = listener.local_addr()?;
        let admin_addr = admin_listener.local_addr()?;
        let tls_addr = tls_listener
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()?;
        let lifecycle = &self.inner.lifecycle;
        let mut tasks = vec![tokio::spawn(crate::http::server::serve(
            listener,
            Arc::clone(&self.inner.front_door),
            lifecycle.shutdown(),
        ))];
        let mut h3_addr = None;
        if let Some(listener) = tls_listener {
            tasks.push(tokio::spawn(crate::http::server::serve_tls(
                listener,
                Arc::clone(&self.inner.front_door),
                lifecycle.shutdown(),
            )));
        }
        if let (Some(tls), Some(endpoint)) = (&self.inner.front_door.tls, quic_endpoint)
            && let Some((section, _)) = &tls.http3
        {
            let addr = endpoint.local_addr()?;
            h3_addr = Some(addr);
            let _ = tls.alt_svc.set(http::HeaderValue::from_str(&format!(
                "h3=\":{}\"; ma=86400",
                addr.port()
            ))?);
            tasks.push(tokio::spawn(crate::http::h3::serve(
                endpoint,
                Arc::clone(&self.inner.front_door),
                section.clone(),
                lifecycle.shutdown(),
            )));
        }
        // Background tasks: they end once the node has stopped, and the
        // stop waits for them. The admin listener outlives the drain, so
        // operators can watch it.
        lifecycle.own(tokio::spawn(rerank_service_labels(
            Arc::clone(&self.inner.metrics),
            self.inner.metrics_rerank,
            lifecycle.shutdown(),
        )));
        lifecycle.own(tokio::spawn(crate::admin::serve(
            admin_listener,
            Arc::clone(&self.inner.admin),
            lifecycle.shutdown(),
        )));
        lifecycle.enter(Phase::Serving);
        tracing::info!(%addr, %admin_addr, ?tls_addr, "edge node serving");
        Ok(RunningNode {
            addr,
            admin_addr,
            tls_addr,
            h3_addr,
            listeners: tasks,
            node: self.clone(),
        })
    }
}

/// What every version of one service is called.
struct ServiceNames {
    name: Arc<str>,
    short_name: Arc<str>,
    tenant: Arc<str>,
}

/// What one version of a service brings: its module and spec, and what the
/// spec's names resolved to.
struct VersionParts<'a> {
    version: u64,
    module: crate::modules::ModuleHash,
    spec: &'a edge_config::protocol::ServiceSpec,
    kv_stores: std::collections::BTreeMap<String, Arc<str>>,
    secrets: &'a [(String, crate::host::config::SecretText)],
}

/// Binds the TLS listener and, when HTTP/3 is on, the QUIC endpoint on the
/// same port. With port 0 the kernel picks a TCP port that may be taken for
/// UDP, so the pair is bound again on a fresh port; a port the operator
/// named is used as it is, or the start fails.
async fn bind_tls_and_quic(
    tls: &TlsListener,
) -> anyhow::Result<(TcpListener, Option<quinn::Endpoint>)> {
    const ATTEMPTS_ON_PORT_ZERO: usize = 20;
    let attempts = if tls.listen.port() == 0 {
        ATTEMPTS_ON_PORT_ZERO
    } else {
        1
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let listener = TcpListener::bind(tls.listen)
            .await
            .with_context(|| format!("binding the TLS listener on {}", tls.listen))?;
        let Some((section, quic)) = &tls.http3 else {
            return Ok((listener, None));
        };
        let tcp_addr = listener.local_addr()?;
        match crate::http::h3::endpoint(tcp_addr, Arc::clone(quic), section) {
            Ok(endpoint) => return Ok((listener, Some(endpoint))),
            Err(error) if attempt < attempts => {
                tracing::debug!(%tcp_addr, %error, "UDP port taken; binding TLS and HTTP/3 again");
            }
            Err(error) => {
                return Err(error.context(format!("binding HTTP/3 (UDP) on {tcp_addr}")));
            }
        }
    }
}

/// A node with its listeners open.
#[derive(Debug)]
pub struct RunningNode {
    /// The public listener (HTTP/1.1 and h2c).
    pub addr: SocketAddr,
    /// The admin listener (`/metrics`, `/healthz`).
    pub admin_addr: SocketAddr,
    /// The HTTPS listener (HTTP/1.1 and HTTP/2 over TLS), when configured.
    pub tls_addr: Option<SocketAddr>,
    /// HTTP/3 (UDP, the TLS listener's port), when enabled.
    pub h3_addr: Option<SocketAddr>,
    /// The accept loops: each ends once its connections have.
    listeners: Vec<JoinHandle<()>>,
    node: Node,
}

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainReport {
    /// Connections still open when the grace period ended or the drain was
    /// cut short, and closed by force.
    pub cut_connections: usize,
}

impl RunningNode {
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Drains with the configured grace period (`node.drain_grace_ms`).
    pub async fn shutdown(self) -> DrainReport {
        let grace = self.node.inner.drain_grace;
        self.drain(grace, std::future::pending()).await
    }

    /// Stops accepting (new connections are refused), sends GOAWAY on
    /// HTTP/2 and closes HTTP/1.1 connections after their response, and
    /// waits for requests in flight to finish, for at most `grace` or until
    /// `cut_now` resolves (a second signal). What is still open then is
    /// cut, and counted in the report.
    pub async fn drain(
        mut self,
        grace: std::time::Duration,
        cut_now: impl Future<Output = ()>,
    ) -> DrainReport {
        let lifecycle = &self.node.inner.lifecycle;
        lifecycle.enter(Phase::Draining);
        let mut tasks = std::mem::take(&mut self.listeners);
        let finished = futures::future::join_all(tasks.iter_mut());
        let mut cut_connections = 0;
        tokio::select! {
            _ = finished => {}
            () = tokio::time::sleep(grace) => {
                cut_connections = lifecycle.cut_connections();
                tracing::warn!(cut_connections, ?grace, "drain grace period over: cutting connections");
            }
            () = cut_now => {
                cut_connections = lifecycle.cut_connections();
                tracing::warn!(cut_connections, "drain cut short: cutting connections");
            }
        }
        for task in tasks {
            if !task.is_finished() {
                let _ = task.await;
            }
        }
        // The follower's last report, the admin listener, the reranker.
        lifecycle.stop().await;
        tracing::info!(cut_connections, "node stopped");
        DrainReport { cut_connections }
    }
}

/// A running node dropped without a drain stops at once, as it did when
/// the value held the stop channels: its listeners close, the connections
/// open finish their requests, and its background tasks (the follower
/// included) end.
impl Drop for RunningNode {
    fn drop(&mut self) {
        let lifecycle = &self.node.inner.lifecycle;
        if lifecycle.phase() < Phase::Stopped {
            lifecycle.enter(Phase::Stopped);
        }
    }
}

/// Chooses the services with their own metrics label every `period`, for
/// as long as the node is up.
async fn rerank_service_labels(
    metrics: Arc<Metrics>,
    period: std::time::Duration,
    mut shutdown: Shutdown,
) {
    let mut ticks = tokio::time::interval(period);
    ticks.tick().await;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = shutdown.stopped() => return,
        }
        metrics.rerank_services();
    }
}
