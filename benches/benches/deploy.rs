//! Deploy-to-served latency: a control plane and 10 edge nodes in this
//! process, on loopback. Each round activates a new version (alternating
//! two guests) and measures, per node, the time from the activation's
//! answer until that node serves the new version's body. Prints p50/p99
//! over every node of every round, and the p99 of the slowest node per
//! round.
//!
//!   cargo bench -p edge-benches --bench deploy
//!   ROUNDS=50 NODES=10 cargo bench -p edge-benches --bench deploy

mod cluster;

use std::time::{Duration, Instant};

use cluster::{Cluster, DOMAIN, SERVICE, env_or, percentile_ms};
use edge_tests::client::get;

fn main() -> std::process::ExitCode {
    if let Some(code) = cluster::compile_worker() {
        return code;
    }
    // `cargo bench` passes `--bench`; anything else is a filter we ignore.
    cluster::runtime().block_on(bench(env_or("NODES", 10), env_or("ROUNDS", 20)));
    std::process::ExitCode::SUCCESS
}

async fn bench(node_count: usize, rounds: usize) {
    let cluster = Cluster::start(node_count).await;
    let guests = [
        (cluster.upload("hello").await, "hello from the edge\n"),
        (
            cluster.upload("plain-wasi").await,
            "plain wasi component at /\n",
        ),
    ];

    let mut per_node = Vec::new();
    let mut slowest = Vec::new();
    for round in 0..rounds {
        let (hash, body) = &guests[round % 2];
        cluster
            .api
            .create_version(SERVICE, hash, true)
            .await
            .expect("activated");
        let activated = Instant::now();
        let waits = cluster.nodes.iter().map(|node| async move {
            loop {
                let reply = get(node.running.addr, DOMAIN, "/").await;
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
    println!(
        "\ndeploy-to-served, {node_count} nodes, {rounds} activations (alternating two guests)\n"
    );
    println!("{:<28} {:>9} {:>9}", "", "p50 ms", "p99 ms");
    for (label, times) in [("per node", &per_node), ("all nodes serving", &slowest)] {
        println!(
            "{label:<28} {:>9.1} {:>9.1}",
            percentile_ms(times, 0.5),
            percentile_ms(times, 0.99)
        );
    }
    println!("target: p99 <= 1000 ms");
    cluster.shutdown().await;
}
