//! A control plane and N edge nodes in one process, on loopback: the
//! harness of the deploy and purge benchmarks.
//!
//! The compile worker is the benchmark executable itself (`compile-worker`
//! argument), so `main` must call [`compile_worker`] first.

// Each benchmark uses its own part of the harness.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use control_plane::ApiConfig;
use control_plane::compile::{Compiler, WorkerTask, run_worker};
use edge_config::node::ControlPlaneSection;
use edge_config::{NodeConfig, SandboxLimits};
use edge_node::Node;
use edge_node::RunningNode;
use edge_node::sync::Follower;
use serde_json::{Value, json};

const ADMIN: &str = "bench-admin-token";
const CLUSTER: &str = "bench-cluster-token";
/// The bench tenant; its name is its cache namespace on the nodes.
pub const TENANT: &str = "bench";
pub const SERVICE: &str = "web";
pub const DOMAIN: &str = "web.bench.test";

pub fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs the compile worker if this process was started as one.
pub fn compile_worker() -> Option<std::process::ExitCode> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) != Some("compile-worker") {
        return None;
    }
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
            .unwrap_or_default()
    };
    let number = |flag: &str, default: u64| value(flag).parse().unwrap_or(default);
    let (input, output) = (value("--input"), value("--output"));
    let defaults = SandboxLimits::default();
    Some(run_worker(&WorkerTask {
        input: input.as_ref(),
        output: output.as_ref(),
        memory_bytes: number("--memory-bytes", u64::MAX),
        nodes: SandboxLimits {
            max_memory_bytes: number("--max-memory-bytes", defaults.max_memory_bytes),
            max_table_elements: number("--max-table-elements", defaults.max_table_elements),
            ..defaults
        },
    }))
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

pub struct EdgeNode {
    pub running: RunningNode,
    pub follower: Follower,
}

pub struct Cluster {
    pub base: String,
    pub http: reqwest::Client,
    /// The bench tenant's API token; it owns service [`SERVICE`].
    pub token: String,
    pub nodes: Vec<EdgeNode>,
    plane: control_plane::RunningControlPlane,
    _data: tempfile::TempDir,
}

impl Cluster {
    /// Starts the control plane, a tenant with one service on [`DOMAIN`],
    /// and `node_count` nodes following it.
    pub async fn start(node_count: usize) -> Self {
        let data = tempfile::tempdir().expect("data dir");
        let config = ApiConfig {
            data_dir: data.path().join("control-plane"),
            admin_token: ADMIN.into(),
            cluster_token: CLUSTER.into(),
            max_upload_bytes: control_plane::api::DEFAULT_MAX_UPLOAD_BYTES,
            snapshot_wait: Duration::from_secs(30),
            sandbox: SandboxLimits::default(),
            // DOMAIN is the service's own name under it.
            platform_domain: "test".into(),
            dns_resolver: None,
            tls: None,
            pending_claim_ttl: control_plane::store::DEFAULT_PENDING_CLAIM_TTL,
            // A benchmark deploys and purges as fast as it can.
            quotas: control_plane::quotas::QuotaConfig {
                activations_per_minute: u32::MAX,
                purges_per_second: u32::MAX,
                ..Default::default()
            },
            idle_read_timeout: control_plane::idle::DEFAULT_IDLE_READ_TIMEOUT,
        };
        std::fs::create_dir_all(&config.data_dir).expect("dir");
        let url = format!("sqlite://{}", data.path().join("cp.db").display());
        let compiler = Compiler {
            program: std::env::current_exe().expect("this executable"),
            timeout: Duration::from_secs(60),
            memory_bytes: 2 * 1024 * 1024 * 1024,
        };
        let localhost = SocketAddr::from(([127, 0, 0, 1], 0));
        let plane = control_plane::start(config, &url, compiler, localhost)
            .await
            .expect("control plane");
        let base = format!("http://{}", plane.addr);
        let http = reqwest::Client::new();
        let created = post(
            &http,
            format!("{base}/v1/tenants"),
            ADMIN,
            json!({"name": TENANT}),
        )
        .await;
        let token = created["token"].as_str().expect("token").to_string();
        post(
            &http,
            format!("{base}/v1/services"),
            &token,
            json!({"name": SERVICE, "spec": {"domains": [DOMAIN]}}),
        )
        .await;

        let mut nodes = Vec::new();
        for i in 0..node_count {
            let dir = data.path().join(format!("node-{i}"));
            let mut config = NodeConfig::default();
            config.node.data_dir = dir.clone();
            // Ten nodes share this machine: small instance pools each.
            config.sandbox.max_concurrent_instances = 16;
            let node = Node::new(&config).expect("node");
            let follower = Follower::start(
                &node,
                ControlPlaneSection {
                    ca_file: None,
                    url: base.clone(),
                    cluster_token: CLUSTER.into(),
                    node_name: format!("bench-{i}"),
                    usage_report_interval_ms: 5_000,
                },
                &dir,
            )
            .await
            .expect("follower");
            let running = node.start(localhost, localhost).await.expect("node starts");
            nodes.push(EdgeNode { running, follower });
        }
        Self {
            base,
            http,
            token,
            nodes,
            plane,
            _data: data,
        }
    }

    /// A tenant API call that must succeed; returns its JSON answer.
    pub async fn call(&self, path: &str, body: Value) -> Value {
        post(
            &self.http,
            format!("{}{path}", self.base),
            &self.token,
            body,
        )
        .await
    }

    /// Uploads a guest from `target/guests`; returns its module hash.
    pub async fn upload(&self, guest: &str) -> String {
        let bytes = std::fs::read(edge_tests::guests::rust_guest(guest)).expect("guest");
        let response = self
            .http
            .post(format!("{}/v1/services/{SERVICE}/modules", self.base))
            .bearer_auth(&self.token)
            .body(bytes)
            .send()
            .await
            .expect("upload");
        assert!(response.status().is_success());
        let body: Value = response.json().await.expect("JSON");
        body["module_sha256"].as_str().expect("hash").to_string()
    }

    pub async fn shutdown(self) {
        for node in self.nodes {
            node.follower.stop().await;
            node.running.shutdown().await;
        }
        self.plane.shutdown().await;
    }
}

async fn post(http: &reqwest::Client, url: String, token: &str, body: Value) -> Value {
    let response = http
        .post(url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("control plane answers");
    assert!(response.status().is_success(), "{}", response.status());
    response.json().await.expect("JSON")
}

/// Milliseconds at quantile `q` of sorted durations.
pub fn percentile_ms(sorted: &[Duration], q: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}
