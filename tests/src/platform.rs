//! The platform on loopback, for the control plane's tests and the
//! deploy and purge benchmarks (one harness): a control plane on port 0
//! with a temp data dir, on SQLite or PostgreSQL, its typed API client, and
//! edge nodes that follow it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use control_plane::compile::Compiler;
use control_plane::{ApiConfig, RunningControlPlane};
use edge_config::node::ControlPlaneSection;
use edge_config::protocol::ServiceSpec;
use edge_config::{NodeConfig, SandboxLimits};
use edge_node::sync::Follower;
use edge_node::{Node, RunningNode};
use edgectl::client::ApiClient;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

use crate::client::get;

pub const ADMIN: &str = "admin-token-for-tests";
/// Every service is `<service>.<tenant>.test`: the harness's `DOMAIN`,
/// `web.acme.test`, is tenant acme's service web.
pub const PLATFORM_DOMAIN: &str = "test";
pub const CLUSTER: &str = "cluster-token-for-tests";
/// The operator's secrets key every test control plane and node shares.
pub const SECRETS_KEY_HEX: &str =
    "5f1d3a7c9e2b4f6a8c0d1e3f5a7b9c2d4e6f8a0b1c3d5e7f9a2b4c6d8e0f1a3b";
/// Small enough that a test can exceed it cheaply.
pub const TEST_MAX_UPLOAD_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug)]
pub struct Plane {
    running: Option<RunningControlPlane>,
    pub base: String,
    pub http: Client,
    pub data: tempfile::TempDir,
    /// The control plane's database, for a test that must age its rows.
    pub database_url: String,
}

/// The databases to run on: SQLite always, PostgreSQL when configured.
pub fn databases() -> Vec<&'static str> {
    let mut kinds = vec!["sqlite"];
    if std::env::var("EDGE_TEST_POSTGRES_URL").is_ok() {
        kinds.push("postgres");
    }
    kinds
}

/// Runs `test` once per database (see [`databases`]), each time on a fresh
/// control plane that is stopped after it; `test` gets the database's kind
/// to name it in its messages.
pub async fn on_every_database(test: impl AsyncFn(&'static str, &Plane)) {
    for kind in databases() {
        let plane = Plane::start(kind).await;
        test(kind, &plane).await;
        plane.stop().await;
    }
}

pub async fn database_url(kind: &str, data: &Path) -> String {
    if kind == "sqlite" {
        return format!("sqlite://{}", data.join("cp.db").display());
    }
    // A fresh database per test, so tests do not see each other's rows.
    let server = std::env::var("EDGE_TEST_POSTGRES_URL").expect("postgres url");
    let name = format!("edge_test_{}", control_plane::store::random_hex(6));
    sqlx::any::install_default_drivers();
    let mut admin = <sqlx::AnyConnection as sqlx::Connection>::connect(&server)
        .await
        .expect("connect to the test PostgreSQL server");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .expect("create a test database");
    let base = server
        .rsplit_once('/')
        .map_or(server.as_str(), |(base, _)| base);
    format!("{base}/{name}")
}

/// A development CA and the control plane's certificate it signed (for
/// `localhost` and `127.0.0.1`), as files.
#[derive(Debug)]
pub struct DevCa {
    pub ca_file: PathBuf,
    pub server: control_plane::tls::TlsFiles,
    _dir: tempfile::TempDir,
}

impl Default for DevCa {
    fn default() -> Self {
        Self::new()
    }
}

impl DevCa {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("dir");
        let (ca, server) = edge_platform::certificates::development_ca(&["localhost", "127.0.0.1"])
            .expect("development CA");
        let path = |name: &str| dir.path().join(name);
        std::fs::write(path("ca.pem"), ca).expect("write");
        std::fs::write(path("cert.pem"), &server.cert_pem).expect("write");
        std::fs::write(path("key.pem"), &server.key_pem.0).expect("write");
        Self {
            ca_file: path("ca.pem"),
            server: control_plane::tls::TlsFiles {
                cert: path("cert.pem"),
                key: path("key.pem"),
            },
            _dir: dir,
        }
    }
}

impl Plane {
    /// A control plane serving HTTPS with `ca`'s certificate; its client
    /// trusts `ca` only.
    pub async fn start_https(kind: &str, ca: &DevCa) -> Self {
        let mut plane = Self::start_with(kind, |c| c.tls = Some(ca.server.clone())).await;
        let pem = std::fs::read(&ca.ca_file).expect("CA");
        plane.http = Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("CA PEM"))
            .build()
            .expect("client");
        plane.base = plane.base.replacen("http://", "https://", 1);
        plane
    }

    pub async fn start(kind: &str) -> Self {
        Self::start_with(kind, |_| {}).await
    }

    /// A control plane whose compile worker is the workspace's
    /// `control-plane` binary, built beside the running test.
    pub async fn start_with(kind: &str, change: impl FnOnce(&mut ApiConfig)) -> Self {
        Self::start_with_worker(kind, &workspace_binary("control-plane"), change).await
    }

    /// A control plane whose compile worker is `worker` (a benchmark is its
    /// own worker).
    pub async fn start_with_worker(
        kind: &str,
        worker: &Path,
        change: impl FnOnce(&mut ApiConfig),
    ) -> Self {
        let data = tempfile::tempdir().expect("data dir");
        let url = database_url(kind, data.path()).await;
        let mut config = ApiConfig {
            data_dir: data.path().to_path_buf(),
            admin_token: ADMIN.into(),
            cluster_token: CLUSTER.into(),
            max_upload_bytes: TEST_MAX_UPLOAD_BYTES,
            snapshot_wait: Duration::from_secs(1),
            sandbox: SandboxLimits::default(),
            platform_domain: PLATFORM_DOMAIN.into(),
            dns_resolver: None,
            tls: None,
            pending_claim_ttl: control_plane::store::DEFAULT_PENDING_CLAIM_TTL,
            quotas: control_plane::quotas::QuotaConfig::default(),
            idle_read_timeout: control_plane::idle::DEFAULT_IDLE_READ_TIMEOUT,
            secrets_key: Some(std::sync::Arc::new(
                edge_platform::secrets::SecretsKey::from_hex(SECRETS_KEY_HEX).expect("key"),
            )),
        };
        change(&mut config);
        let compiler = Compiler {
            program: worker.to_path_buf(),
            timeout: Duration::from_secs(60),
            memory_bytes: 2 * 1024 * 1024 * 1024,
        };
        let listen: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let running = control_plane::start(config, &url, compiler, listen)
            .await
            .expect("control plane starts");
        let database_url = url.clone();
        Self {
            base: format!("http://{}", running.addr),
            running: Some(running),
            http: Client::new(),
            data,
            database_url,
        }
    }

    /// The control plane's own `/metrics` page.
    pub async fn metrics_page(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    }

    /// The control plane's database, as its handlers use it.
    pub fn store(&self) -> &control_plane::store::Store {
        &self.running.as_ref().expect("running").store
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The typed API client, calling with `token`.
    pub fn api(&self, token: &str) -> ApiClient {
        ApiClient::with_http(&self.base, token, self.http.clone())
    }

    /// One call as it is answered, refusals included.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        self.api(token)
            .send(method, path, body.as_ref())
            .await
            .expect("the control plane answers")
    }

    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call("GET", path, token, None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call("POST", path, token, Some(body)).await
    }

    pub async fn put(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call("PUT", path, token, Some(body)).await
    }

    pub async fn delete(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call("DELETE", path, token, None).await
    }

    pub async fn upload(&self, token: &str, service: &str, bytes: Vec<u8>) -> (StatusCode, Value) {
        let response = self
            .http
            .post(self.url(&format!("/v1/services/{service}/modules")))
            .bearer_auth(token)
            .body(bytes)
            .send()
            .await
            .expect("upload");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Creates tenant `acme` and its service `web` on `web.acme.test` (the
    /// harness's [`DOMAIN`]); returns acme's token.
    pub async fn acme_web(&self) -> String {
        let token = self.tenant("acme").await;
        self.service(&token, "web", DOMAIN).await;
        token
    }

    /// [`Plane::acme_web`] with [`hello`] deployed as its first version;
    /// returns acme's token.
    pub async fn acme_web_hello(&self) -> String {
        let token = self.acme_web().await;
        self.deploy(&token, "web", hello()).await;
        token
    }

    /// Creates the tenants `names` (for tests of what one tenant may do to
    /// another); returns their tokens, in the same order.
    pub async fn tenants<const N: usize>(&self, names: [&str; N]) -> [String; N] {
        let mut tokens = Vec::with_capacity(N);
        for name in names {
            tokens.push(self.tenant(name).await);
        }
        tokens.try_into().expect("a token per name")
    }

    /// Creates a tenant and returns its token.
    pub async fn tenant(&self, name: &str) -> String {
        self.api(ADMIN)
            .create_tenant(name, false)
            .await
            .expect("tenant created")
            .token
    }

    /// Asks to create service `name` with `spec` (JSON, as a tenant sends
    /// it); the answer as it is, refusals included.
    pub async fn create_service(
        &self,
        token: &str,
        name: &str,
        spec: Value,
    ) -> (StatusCode, Value) {
        self.post("/v1/services", token, json!({"name": name, "spec": spec}))
            .await
    }

    pub async fn service(&self, token: &str, name: &str, domain: &str) {
        let spec = ServiceSpec {
            domains: vec![domain.to_string()],
            ..ServiceSpec::default()
        };
        self.api(token)
            .create_service(name, &spec)
            .await
            .expect("service created");
    }

    /// Uploads, creates a version and activates it; returns the version.
    pub async fn deploy(&self, token: &str, service: &str, bytes: Vec<u8>) -> i64 {
        self.api(token)
            .deploy(service, bytes)
            .await
            .expect("deployed")
            .version
    }

    /// The operator approves a custom domain's claim.
    pub async fn approve(&self, domain: &str) {
        self.api(ADMIN)
            .approve_domain(domain)
            .await
            .expect("approved");
    }

    /// Registers a node with the cluster token; returns its credential.
    pub async fn register_node(&self, name: &str) -> String {
        let (status, body) = self
            .call(
                "POST",
                "/v1/node/register",
                CLUSTER,
                Some(json!({"name": name, "engine_fingerprint": "x"})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["node_token"].as_str().expect("node token").to_string()
    }

    /// The snapshot after `after`, as a newly registered node gets it.
    pub async fn snapshot(&self, after: u64) -> (StatusCode, Value) {
        let node = self.register_node("snapshot-reader").await;
        self.call(
            "GET",
            &format!("/v1/node/snapshot?after={after}"),
            &node,
            None,
        )
        .await
    }

    pub fn stored_components(&self) -> usize {
        std::fs::read_dir(self.data.path().join("modules/components"))
            .map(|dir| dir.count())
            .unwrap_or(0)
    }

    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await;
        }
    }

    /// Stops `nodes` (each with its last report), then the control plane.
    pub async fn stop_with_nodes(self, nodes: impl IntoIterator<Item = EdgeNode>) {
        for node in nodes {
            node.stop().await;
        }
        self.stop().await;
    }
}

pub fn hello() -> Vec<u8> {
    std::fs::read(crate::guests::rust_guest("hello")).expect("hello guest")
}

pub fn plain_wasi() -> Vec<u8> {
    std::fs::read(crate::guests::rust_guest("plain-wasi")).expect("plain-wasi guest")
}

/// `examples/state`: KV, config and secrets through the standard
/// interfaces.
pub fn state_guest() -> Vec<u8> {
    std::fs::read(crate::guests::rust_guest("state")).expect("state guest")
}

pub fn echo() -> Vec<u8> {
    std::fs::read(crate::guests::rust_guest("echo")).expect("echo guest")
}

/// The domain the harness's node tests serve.
pub const DOMAIN: &str = "web.acme.test";

/// An edge node following a control plane, with a TLS listener, all on
/// loopback ports chosen by the OS.
#[derive(Debug)]
pub struct EdgeNode {
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub tls_addr: SocketAddr,
    pub follower: Follower,
    pub running: RunningNode,
}

impl EdgeNode {
    pub async fn start(plane_base: &str, data_dir: &Path, name: &str) -> Self {
        Self::start_trusting(plane_base, data_dir, name, None).await
    }

    /// A node that trusts only `ca_file` for the control plane's
    /// certificate.
    pub async fn start_trusting(
        plane_base: &str,
        data_dir: &Path,
        name: &str,
        ca_file: Option<&Path>,
    ) -> Self {
        Self::start_with(plane_base, data_dir, name, |_, link| {
            link.ca_file = ca_file.map(Path::to_path_buf);
        })
        .await
    }

    /// A node whose config (and link to the control plane) `change`
    /// adjusts first.
    pub async fn start_with(
        plane_base: &str,
        data_dir: &Path,
        name: &str,
        change: impl FnOnce(&mut NodeConfig, &mut ControlPlaneSection),
    ) -> Self {
        let mut config = NodeConfig::default();
        config.node.data_dir = data_dir.to_path_buf();
        // The operator's secrets key, the control plane's own.
        std::fs::create_dir_all(data_dir).expect("data dir");
        let key_file = data_dir.join("secrets.key");
        std::fs::write(&key_file, SECRETS_KEY_HEX).expect("key file");
        config.node.secrets_key_file = Some(key_file);
        config.tls.listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        let mut control_plane = ControlPlaneSection {
            replica_urls: Vec::new(),
            ca_file: None,
            url: plane_base.to_string(),
            cluster_token: CLUSTER.to_string(),
            node_name: name.to_string(),
            usage_report_interval_ms: 200,
        };
        change(&mut config, &mut control_plane);
        let node = Node::new(&config).expect("node builds");
        let follower = Follower::start(&node, control_plane, data_dir)
            .await
            .expect("follower starts");
        let localhost = SocketAddr::from(([127, 0, 0, 1], 0));
        let running = node.start(localhost, localhost).await.expect("node starts");
        Self {
            addr: running.addr,
            admin_addr: running.admin_addr,
            tls_addr: running.tls_addr.expect("TLS listener"),
            follower,
            running,
        }
    }

    pub async fn body(&self) -> (u16, String) {
        let reply = get(self.addr, DOMAIN, "/").await;
        (reply.status, reply.text())
    }

    pub async fn metric(&self, series: &str) -> f64 {
        let page = get(self.admin_addr, "admin", "/metrics").await.text();
        crate::node::metric_value(&page, series)
    }

    pub async fn stop(self) {
        // The drain ends with the follower's last report.
        self.running.shutdown().await;
    }

    /// Stops the node as `kill -9` would: no last report, nothing saved.
    pub async fn kill(self) {
        self.follower.kill();
        self.running.shutdown().await;
    }
}

pub const HELLO: &str = "hello from the edge\n";
/// The body of `examples/plain-wasi` for `/`.
pub const PLAIN: &str = "plain wasi component at /\n";

/// Waits until every node answers `expected`, and returns how long that took.
pub async fn until_all_serve(nodes: &[EdgeNode], expected: &str) -> Duration {
    let started = Instant::now();
    for node in nodes {
        loop {
            let (status, body) = node.body().await;
            if status == 200 && body == expected {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "node {} still answers {status} {body:?}, not {expected:?}",
                node.addr
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    started.elapsed()
}

/// A node following `plane`, named `node-a`, with its data dir.
pub async fn one_node(plane: &Plane) -> (tempfile::TempDir, EdgeNode) {
    let dir = tempfile::tempdir().expect("dir");
    let node = EdgeNode::start(&plane.base, dir.path(), "node-a").await;
    (dir, node)
}

/// Two nodes following `plane`, each with its own data dir.
pub async fn two_nodes(plane: &Plane) -> ([tempfile::TempDir; 2], [EdgeNode; 2]) {
    let dirs = [
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    ];
    let nodes = [
        EdgeNode::start(&plane.base, dirs[0].path(), "node-a").await,
        EdgeNode::start(&plane.base, dirs[1].path(), "node-b").await,
    ];
    (dirs, nodes)
}

/// A binary of this workspace, built by the same cargo run as the test
/// that asks (`target/<profile>/NAME`, beside the test's `deps/`):
/// `cargo test --workspace` builds every crate's binaries.
pub fn workspace_binary(name: &str) -> PathBuf {
    let test = std::env::current_exe().expect("the test's executable");
    let profile_dir = test
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (`cargo build --workspace --tests`)",
        path.display()
    );
    path
}

/// Logs `edgectl` (its config at `config`) in to `plane` as `token`.
pub async fn edgectl_login(config: &Path, plane: &Plane, token: &str) {
    edgectl(config, &["login", "--url", &plane.base, "--token", token]).await;
}

/// Creates tenant `name` with the operator's `edgectl tenant-create` (and
/// `flags`, such as `--allow-private-backends`) and logs edgectl in as it;
/// returns the tenant's token.
pub async fn edgectl_tenant(config: &Path, plane: &Plane, name: &str, flags: &[&str]) -> String {
    let mut args = vec!["tenant-create", name];
    args.extend_from_slice(flags);
    args.extend(["--url", plane.base.as_str(), "--admin-token", ADMIN]);
    let token = edgectl(config, &args).await.trim().to_string();
    edgectl_login(config, plane, &token).await;
    token
}

/// Runs `edgectl` with its config at `config`; returns its stdout.
pub async fn edgectl(config: &Path, args: &[&str]) -> String {
    let output = tokio::process::Command::new(workspace_binary("edgectl"))
        .args(args)
        .env("EDGECTL_CONFIG", config)
        // The test's own cargo settings must not leak into a guest build.
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .await
        .expect("edgectl runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "edgectl {args:?} failed: {stderr}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A control-plane replica in a process of its own (`control-plane
/// serve`), on a database other replicas may share: a test can kill it
/// as an operator's machine would lose it.
#[derive(Debug)]
pub struct ReplicaProcess {
    pub base: String,
    child: tokio::process::Child,
    _data: tempfile::TempDir,
}

impl ReplicaProcess {
    /// Starts a replica on `database_url` and waits until it listens.
    pub async fn start(database_url: &str) -> Self {
        Self::start_binary(&workspace_binary("control-plane"), database_url).await
    }

    /// Starts `binary` (a `control-plane` build, perhaps another
    /// revision's, to compare) as a replica on `database_url`.
    pub async fn start_binary(binary: &Path, database_url: &str) -> Self {
        use tokio::io::AsyncBufReadExt;
        let data = tempfile::tempdir().expect("data dir");
        let key_file = data.path().join("secrets.key");
        std::fs::write(&key_file, SECRETS_KEY_HEX).expect("key file");
        let mut child = tokio::process::Command::new(binary)
            .arg("serve")
            .args(["--listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(data.path())
            .args(["--database-url", database_url])
            .args(["--admin-token", ADMIN, "--cluster-token", CLUSTER])
            .args(["--platform-domain", PLATFORM_DOMAIN])
            .arg("--secrets-key-file")
            .arg(&key_file)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("control-plane starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let listening = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await.expect("stdout line") {
                if let Some(url) = line.strip_prefix("control plane listening on ") {
                    return url.trim().to_string();
                }
            }
            panic!("the control plane exited before listening");
        })
        .await
        .expect("the control plane listens within 60 s");
        // Its later output is not read; keep the pipe drained.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self {
            base: listening,
            child,
            _data: data,
        }
    }

    /// The replica's process id, to read its CPU and memory.
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// A client of this replica's API.
    pub fn api(&self, token: &str) -> ApiClient {
        ApiClient::new(&self.base, token)
    }

    /// The replica's `/metrics` page.
    pub async fn metrics_page(&self) -> String {
        reqwest::get(format!("{}/metrics", self.base))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// SIGKILL: no drain, connections cut where they are.
    pub async fn kill(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}
