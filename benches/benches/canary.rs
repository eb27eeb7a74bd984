//! Canary rollback: a control plane and NODES edge nodes in this process,
//! on loopback. Each round starts a canary (50 % of clients, sticky by a
//! header) whose guest panics on every request, and loads every node with
//! clients; nobody calls the API. Measured per node: the time from the
//! first failed request anywhere to the moment that node serves the
//! snapshot without the canary. Nodes report usage every USAGE_REPORT_MS
//! (the node's default, 5 s, unless set), and every second while they
//! serve a canary.
//!
//!   cargo bench -p edge-benches --bench canary
//!   ROUNDS=5 NODES=5 USAGE_REPORT_MS=1000 cargo bench -p edge-benches --bench canary

mod cluster;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cluster::{Cluster, DOMAIN, SERVICE, env_or};
use edge_tests::client::{Protocol, request, send};
use edgectl::wire::NewCanary;

fn main() -> std::process::ExitCode {
    if let Some(code) = cluster::compile_worker() {
        return code;
    }
    cluster::runtime().block_on(bench(env_or("NODES", 5), env_or("ROUNDS", 5)));
    std::process::ExitCode::SUCCESS
}

async fn bench(node_count: usize, rounds: usize) {
    let cluster = Cluster::start(node_count).await;
    let hello = cluster.upload("hello").await;
    let stable = cluster
        .api
        .create_version(SERVICE, &hello, true)
        .await
        .expect("stable version");
    let panics = cluster.upload("panic").await;
    let mut per_node = Vec::new();
    let mut slowest = Vec::new();
    for round in 0..rounds {
        let version = cluster
            .api
            .create_version(SERVICE, &panics, false)
            .await
            .expect("canary version");
        let started = cluster
            .api
            .start_canary(
                SERVICE,
                &NewCanary {
                    version: version.version,
                    percent: 50,
                    sticky: edge_config::rollout::StickyKey::Header("x-user".into()),
                    rollback: edge_config::rollout::RollbackPolicy::default(),
                },
            )
            .await
            .expect("canary started");
        for node in &cluster.nodes {
            until_snapshot(node, started.snapshot_version).await;
        }
        // Failures start at a random moment of the nodes' report cycle, as
        // they would in production: not just after the round's last report.
        let phase = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos()) as u64
            % (env_or("USAGE_REPORT_MS", 5_000) as u64).min(1_000);
        tokio::time::sleep(Duration::from_millis(phase)).await;

        // Clients on every node until the round ends.
        let first_failure = Arc::new(std::sync::OnceLock::<Instant>::new());
        let stop = Arc::new(AtomicBool::new(false));
        let load: Vec<_> = cluster
            .nodes
            .iter()
            .enumerate()
            .map(|(n, node)| {
                let (addr, stop, first_failure) =
                    (node.addr, Arc::clone(&stop), Arc::clone(&first_failure));
                tokio::spawn(async move {
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let mut get = request("GET", DOMAIN, "/", Bytes::new());
                        let user = format!("round-{round}-node-{n}-user-{i}");
                        get.headers_mut()
                            .insert("x-user", user.parse().expect("header"));
                        if send(addr, Protocol::Http1, get).await.status == 500 {
                            let _ = first_failure.set(Instant::now());
                        }
                        i += 1;
                    }
                })
            })
            .collect();

        let rolled_back = loop {
            let rollout = cluster.api.rollout(SERVICE).await.expect("rollout");
            if rollout.canary.is_none() {
                break cluster
                    .plane()
                    .store()
                    .snapshot_version()
                    .await
                    .expect("version");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let waits = cluster.nodes.iter().map(|node| async move {
            until_snapshot(node, rolled_back).await;
            Instant::now()
        });
        let applied = futures::future::join_all(waits).await;
        stop.store(true, Ordering::Relaxed);
        for task in load {
            let _ = task.await;
        }
        let first = *first_failure.get().expect("the canary failed");
        let times: Vec<Duration> = applied.iter().map(|at| at.duration_since(first)).collect();
        slowest.push(times.iter().copied().max().unwrap_or_default());
        per_node.extend(times);
        let active = cluster
            .api
            .rollout(SERVICE)
            .await
            .expect("rollout")
            .active_version;
        assert_eq!(active, Some(stable.version), "the stable version serves on");
    }
    let interval = std::env::var("USAGE_REPORT_MS").unwrap_or_else(|_| "5000".into());
    cluster::print_propagation(
        &format!(
            "canary rollback, {node_count} nodes, {rounds} trapping canaries at 50 %, usage reports every {interval} ms: from the first failed request to the node serving without the canary"
        ),
        &mut per_node,
        &mut slowest,
        "bound: a second (a node serving a canary reports every second), then snapshot propagation",
    );
    cluster.shutdown().await;
}

async fn until_snapshot(node: &edge_tests::platform::EdgeNode, version: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while node.metric("edge_snapshot_version").await < version as f64 {
        assert!(
            Instant::now() < deadline,
            "a node never applied snapshot {version}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
