//! A control plane and N edge nodes in one process, on loopback: the
//! harness of the deploy and purge benchmarks.
//!
//! The compile worker is the benchmark executable itself (`compile-worker`
//! argument), so `main` must call [`compile_worker`] first.

// Each benchmark uses its own part of the harness.
#![allow(dead_code)]

use std::time::Duration;

use control_plane::api::ApiConfig;
use control_plane::compile::{WorkerTask, run_worker};
use edge_config::SandboxLimits;
use edge_tests::platform::{EdgeNode, Plane};
use edgectl::client::ApiClient;

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

/// A control plane on SQLite, set up for a benchmark (this executable is
/// its compile worker), then adjusted by `change`.
pub async fn bench_plane(change: impl FnOnce(&mut ApiConfig)) -> Plane {
    let worker = std::env::current_exe().expect("this executable");
    Plane::start_with_worker("sqlite", &worker, |config| {
        config.max_upload_bytes = control_plane::api::DEFAULT_MAX_UPLOAD_BYTES;
        config.snapshot_wait = Duration::from_secs(30);
        // A benchmark deploys and purges as fast as it can.
        config.quotas.activations_per_minute = u32::MAX;
        config.quotas.purges_per_second = u32::MAX;
        change(config);
    })
    .await
}

/// A control plane with the bench tenant and its service, and N nodes
/// following it: the platform harness the tests use, set up for speed.
pub struct Cluster {
    /// The bench tenant's client; it owns service [`SERVICE`].
    pub api: ApiClient,
    pub nodes: Vec<EdgeNode>,
    plane: Plane,
    _dirs: Vec<tempfile::TempDir>,
}

impl Cluster {
    /// Starts the control plane, a tenant with one service on [`DOMAIN`],
    /// and `node_count` nodes following it.
    pub async fn start(node_count: usize) -> Self {
        Self::start_with(
            node_count,
            |_| {},
            edge_config::protocol::ServiceSpec::default(),
        )
        .await
    }

    /// [`Cluster::start`] with the control plane adjusted by `change` and
    /// the service's `spec` (its domain is [`DOMAIN`]).
    pub async fn start_with(
        node_count: usize,
        change: impl FnOnce(&mut ApiConfig),
        mut spec: edge_config::protocol::ServiceSpec,
    ) -> Self {
        let plane = bench_plane(change).await;
        let token = plane.tenant(TENANT).await;
        spec.domains = vec![DOMAIN.to_string()];
        plane
            .api(&token)
            .create_service(SERVICE, &spec)
            .await
            .expect("service created");

        let mut nodes = Vec::new();
        let mut dirs = Vec::new();
        for i in 0..node_count {
            let dir = tempfile::tempdir().expect("node dir");
            let node = EdgeNode::start_with(
                &plane.base,
                dir.path(),
                &format!("bench-{i}"),
                |config, link| {
                    // Ten nodes share this machine: small instance pools each.
                    config.sandbox.max_concurrent_instances = 16;
                    // The node's default, or USAGE_REPORT_MS.
                    link.usage_report_interval_ms = env_or("USAGE_REPORT_MS", 5_000) as u64;
                },
            )
            .await;
            nodes.push(node);
            dirs.push(dir);
        }
        Self {
            api: plane.api(&token),
            nodes,
            plane,
            _dirs: dirs,
        }
    }

    /// Uploads a guest from `target/guests`; returns its module hash.
    pub async fn upload(&self, guest: &str) -> String {
        let bytes = std::fs::read(edge_tests::guests::rust_guest(guest)).expect("guest");
        self.api
            .upload_module(SERVICE, bytes)
            .await
            .expect("uploaded")
            .module_sha256
    }

    /// The control plane.
    pub fn plane(&self) -> &Plane {
        &self.plane
    }

    pub async fn shutdown(self) {
        for node in self.nodes {
            node.stop().await;
        }
        self.plane.stop().await;
    }
}

/// Prints p50 and p99 of `per_node` (one sample per node per round) and of
/// `slowest` (the slowest node of each round) under `title`, sorting both,
/// then `footer`: how the propagation benchmarks report.
pub fn print_propagation(
    title: &str,
    per_node: &mut [Duration],
    slowest: &mut [Duration],
    footer: &str,
) {
    per_node.sort();
    slowest.sort();
    println!("\n{title}\n");
    println!("{:<28} {:>9} {:>9}", "", "p50 ms", "p99 ms");
    for (label, times) in [("per node", &*per_node), ("all nodes applied", &*slowest)] {
        println!(
            "{label:<28} {:>9.1} {:>9.1}",
            percentile_ms(times, 0.5),
            percentile_ms(times, 0.99)
        );
    }
    println!("{footer}");
}

/// Milliseconds at quantile `q` of sorted durations.
pub fn percentile_ms(sorted: &[Duration], q: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}
