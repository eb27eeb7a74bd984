//! Deploy-to-served latency: a control plane and 10 edge nodes in this
//! process, on loopback. Each round activates a new version (alternating
//! two guests) and measures, per node, the time from the activation's
//! answer until that node serves the new version's body. Prints p50/p99
//! over every node of every round, and the p99 of the slowest node per
//! round.
//!
//!   cargo bench -p edge-benches --bench deploy
//!   ROUNDS=50 NODES=10 cargo bench -p edge-benches --bench deploy
//!
//! The compile worker is this same executable (`compile-worker` argument).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use control_plane::ApiConfig;
use control_plane::compile::{Compiler, run_worker};
use edge_config::node::ControlPlaneSection;
use edge_config::{NodeConfig, SandboxLimits};
use edge_node::Node;
use edge_node::sync::Follower;
use edge_tests::client::get;
use serde_json::{Value, json};

const ADMIN: &str = "bench-admin-token";
const CLUSTER: &str = "bench-cluster-token";
const DOMAIN: &str = "web.bench.test";

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("compile-worker") {
        let value = |flag: &str| {
            args.iter()
                .position(|a| a == flag)
                .and_then(|i| args.get(i + 1))
                .cloned()
                .unwrap_or_default()
        };
        return run_worker(
            value("--input").as_ref(),
            value("--output").as_ref(),
            value("--memory-bytes").parse().unwrap_or(u64::MAX),
        );
    }
    // `cargo bench` passes `--bench`; anything else is a filter we ignore.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(bench(env_or("NODES", 10), env_or("ROUNDS", 20)));
    std::process::ExitCode::SUCCESS
}

async fn call(http: &reqwest::Client, url: String, token: &str, body: Value) -> Value {
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

async fn upload(http: &reqwest::Client, base: &str, token: &str, guest: &str) -> String {
    let bytes = std::fs::read(edge_tests::guests::rust_guest(guest)).expect("guest");
    let response = http
        .post(format!("{base}/v1/services/web/modules"))
        .bearer_auth(token)
        .body(bytes)
        .send()
        .await
        .expect("upload");
    assert!(response.status().is_success());
    let body: Value = response.json().await.expect("JSON");
    body["module_sha256"].as_str().expect("hash").to_string()
}

async fn bench(node_count: usize, rounds: usize) {
    let data = tempfile::tempdir().expect("data dir");
    let config = ApiConfig {
        data_dir: data.path().join("control-plane"),
        admin_token: ADMIN.into(),
        cluster_token: CLUSTER.into(),
        max_upload_bytes: control_plane::api::DEFAULT_MAX_UPLOAD_BYTES,
        snapshot_wait: Duration::from_secs(30),
        sandbox: SandboxLimits::default(),
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
    let created = call(
        &http,
        format!("{base}/v1/tenants"),
        ADMIN,
        json!({"name": "bench"}),
    )
    .await;
    let token = created["token"].as_str().expect("token").to_string();
    call(
        &http,
        format!("{base}/v1/services"),
        &token,
        json!({"name": "web", "spec": {"domains": [DOMAIN]}}),
    )
    .await;
    let guests = [
        (
            "hello",
            upload(&http, &base, &token, "hello").await,
            "hello from the edge\n",
        ),
        (
            "plain-wasi",
            upload(&http, &base, &token, "plain-wasi").await,
            "plain wasi component at /\n",
        ),
    ];

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
        nodes.push((running, follower));
    }

    let mut per_node = Vec::new();
    let mut slowest = Vec::new();
    for round in 0..rounds {
        let (_, hash, body) = &guests[round % 2];
        call(
            &http,
            format!("{base}/v1/services/web/versions"),
            &token,
            json!({"module_sha256": hash, "activate": true}),
        )
        .await;
        let activated = Instant::now();
        let waits = nodes.iter().map(|(running, _)| async move {
            loop {
                let reply = get(running.addr, DOMAIN, "/").await;
                if reply.status == 200 && reply.text() == *body {
                    return activated.elapsed();
                }
                assert!(
                    activated.elapsed() < Duration::from_secs(30),
                    "a node never converged"
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
        let times = futures::future::join_all(waits).await;
        slowest.push(times.iter().copied().max().unwrap_or_default());
        per_node.extend(times);
    }
    per_node.sort();
    slowest.sort();
    let pct = |v: &[Duration], p: f64| {
        let i = ((v.len() as f64 - 1.0) * p).round() as usize;
        v[i].as_secs_f64() * 1000.0
    };
    println!(
        "\ndeploy-to-served, {node_count} nodes, {rounds} activations (alternating two guests)\n"
    );
    println!("{:<28} {:>9} {:>9}", "", "p50 ms", "p99 ms");
    println!(
        "{:<28} {:>9.1} {:>9.1}",
        "per node",
        pct(&per_node, 0.5),
        pct(&per_node, 0.99)
    );
    println!(
        "{:<28} {:>9.1} {:>9.1}",
        "all nodes serving",
        pct(&slowest, 0.5),
        pct(&slowest, 0.99)
    );
    println!("target: p99 <= 1000 ms");
    for (running, follower) in nodes {
        follower.stop().await;
        running.shutdown().await;
    }
    plane.shutdown().await;
}
