//! An in-process edge node for tests.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use edge_config::protocol::ServiceSpec;
use edge_config::{BackendSpec, CertificateFiles, NodeConfig, ServiceConfig, ServiceLimits};
use edge_node::{Node, RunningNode};

use crate::guests::rust_guest;

/// A service to install on a [`TestNode`].
#[derive(Debug, Clone)]
pub struct TestService {
    name: String,
    domains: Vec<String>,
    module: Module,
    limits: ServiceLimits,
    tenant: Option<String>,
    backends: BTreeMap<String, BackendSpec>,
    certificate: Option<CertificateFiles>,
    cache_responses: bool,
    config: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
enum Module {
    Path(PathBuf),
    Bytes(Vec<u8>),
}

impl TestService {
    /// A service answering for `domain` with the component at `path`.
    pub fn new(name: &str, domain: &str, path: PathBuf) -> Self {
        Self {
            name: name.into(),
            domains: vec![domain.into()],
            module: Module::Path(path),
            limits: ServiceLimits::default(),
            tenant: None,
            backends: BTreeMap::new(),
            certificate: None,
            cache_responses: false,
            config: BTreeMap::new(),
        }
    }

    /// The service `name` on `<name>.test`, running the example guest
    /// `examples/<guest>`: how most tests name their services.
    pub fn example(name: &str, guest: &str) -> Self {
        Self::new(name, &format!("{name}.test"), rust_guest(guest))
    }

    /// A service whose component is `bytes`.
    pub fn from_bytes(name: &str, domain: &str, bytes: Vec<u8>) -> Self {
        Self {
            module: Module::Bytes(bytes),
            ..Self::new(name, domain, PathBuf::new())
        }
    }

    pub fn domain(mut self, domain: &str) -> Self {
        self.domains.push(domain.into());
        self
    }

    /// The tenant whose cache namespace the service uses.
    pub fn tenant(mut self, tenant: &str) -> Self {
        self.tenant = Some(tenant.into());
        self
    }

    /// Adds a backend the guest reaches as `http://<name>/`.
    pub fn backend(mut self, name: &str, backend: BackendSpec) -> Self {
        self.backends.insert(name.into(), backend);
        self
    }

    /// A backend that is the tenant's service `service`, run in process.
    pub fn service_backend(self, name: &str, service: &str) -> Self {
        self.backend(name, BackendSpec::service(service))
    }

    /// Adds an entry to what `wasi:config/store` returns.
    pub fn config(mut self, key: &str, value: &str) -> Self {
        self.config.insert(key.into(), value.into());
        self
    }

    /// Caches the guest's own cacheable responses at the edge.
    pub fn cache_responses(mut self) -> Self {
        self.cache_responses = true;
        self
    }

    /// Serves this certificate for the service's domains over TLS.
    pub fn certificate(mut self, files: CertificateFiles) -> Self {
        self.certificate = Some(files);
        self
    }

    pub fn limits(mut self, change: impl FnOnce(&mut ServiceLimits)) -> Self {
        change(&mut self.limits);
        self
    }
}

/// A running node on 127.0.0.1 with its own data directory.
#[derive(Debug)]
pub struct TestNode {
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// The HTTPS listener, when the config asked for one.
    pub tls_addr: Option<SocketAddr>,
    /// HTTP/3 (UDP), on the HTTPS listener's port.
    pub h3_addr: Option<SocketAddr>,
    pub data_dir: tempfile::TempDir,
    running: RunningNode,
}

impl TestNode {
    pub async fn start(services: Vec<TestService>) -> Self {
        Self::start_with(NodeConfig::default(), services).await
    }

    /// Starts with a [`TestService::example`] for each `(name, guest)`.
    pub async fn start_examples(examples: &[(&str, &str)]) -> Self {
        let services = examples
            .iter()
            .map(|(name, guest)| TestService::example(name, guest))
            .collect();
        Self::start(services).await
    }

    /// Starts with `config` and an HTTPS listener on loopback too.
    pub async fn start_tls(mut config: NodeConfig, services: Vec<TestService>) -> Self {
        config.tls.listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        Self::start_with(config, services).await
    }

    /// Starts with `config` (its listeners and data dir are replaced).
    pub async fn start_with(mut config: NodeConfig, services: Vec<TestService>) -> Self {
        // `RUST_LOG=debug cargo test ...` shows the node's logs for a test.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let data_dir = tempfile::tempdir().expect("temp dir");
        config.node.data_dir = data_dir.path().join("data");
        // Tests that leave a slow client open should not wait the full
        // production grace period when they stop the node.
        if config.node.drain_grace_ms == edge_config::node::DEFAULT_DRAIN_GRACE_MS {
            config.node.drain_grace_ms = 2_000;
        }
        let mut service_configs = Vec::new();
        for (i, service) in services.into_iter().enumerate() {
            let module = match service.module {
                Module::Path(path) => path,
                Module::Bytes(bytes) => {
                    let path = data_dir.path().join(format!("module-{i}.wasm"));
                    std::fs::write(&path, bytes).expect("writing module");
                    path
                }
            };
            service_configs.push(ServiceConfig {
                name: service.name,
                module,
                tenant: service.tenant,
                certificate: service.certificate,
                spec: ServiceSpec {
                    domains: service.domains,
                    limits: service.limits,
                    backends: service.backends,
                    cache_responses: service.cache_responses,
                    config: service.config,
                    ..ServiceSpec::default()
                },
            });
        }
        config.services = service_configs;
        let node = Node::new(&config).expect("node builds");
        node.install_services(&config.services, data_dir.path())
            .await
            .expect("services install");
        let running = start_on_loopback(&node).await;
        Self {
            addr: running.addr,
            admin_addr: running.admin_addr,
            tls_addr: running.tls_addr,
            h3_addr: running.h3_addr,
            data_dir,
            running,
        }
    }

    pub fn node(&self) -> &Node {
        self.running.node()
    }

    /// The node's `/metrics` page.
    pub async fn metrics(&self) -> String {
        let reply = crate::client::get(self.admin_addr, "admin", "/metrics").await;
        assert_eq!(reply.status, 200);
        reply.text()
    }

    /// The value of one series (`name{labels}` exactly as exposed), or 0.
    pub async fn metric(&self, series: &str) -> f64 {
        metric_value(&self.metrics().await, series)
    }

    /// Drains the node (see `RunningNode::drain`) and reports what it cut.
    pub async fn shutdown(self) -> edge_node::node::DrainReport {
        self.running.shutdown().await
    }
}

/// Starts `node` with its public and admin listeners on 127.0.0.1, each on
/// a port the system picks: how every in-process test node listens.
pub async fn start_on_loopback(node: &Node) -> RunningNode {
    let localhost = SocketAddr::from(([127, 0, 0, 1], 0));
    node.start(localhost, localhost).await.expect("node starts")
}

/// Finds `series` (e.g. `edge_module_loads_total{source="compiled"}`) in a
/// Prometheus text page. Absent series count as 0.
pub fn metric_value(page: &str, series: &str) -> f64 {
    page.lines()
        .find_map(|line| {
            let rest = line.strip_prefix(series)?;
            rest.strip_prefix(' ')?.trim().parse().ok()
        })
        .unwrap_or(0.0)
}

/// Asserts that each `series value` line of `expected` (the exposition
/// format, as `/metrics` shows it; `#` lines are comments) has that value
/// on `page`, where an absent series counts as 0: a test's expected
/// metrics read as one table instead of an assertion a series.
#[track_caller]
pub fn assert_metrics(page: &str, expected: &str) {
    let mut checked = 0;
    for line in expected.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a `series value` line");
        let value: f64 = value.parse().expect("a number after the series");
        assert_eq!(metric_value(page, series), value, "{series}");
        checked += 1;
    }
    assert!(checked > 0, "the expected table names no series");
}
