//! Purge propagation: a control plane and 10 edge nodes in this process, on
//! loopback. Each round first stores an entry tagged with the round's
//! surrogate key in every node's cache, then asks the control plane to
//! purge that key, and measures, per node, the time from the purge's
//! answer until the node has applied it (the entry is gone). Prints p50/p99
//! over every node of every round, and of the slowest node per round.
//!
//!   cargo bench -p edge-benches --bench purge
//!   ROUNDS=200 NODES=10 cargo bench -p edge-benches --bench purge

mod cluster;

use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster::{Cluster, TENANT, env_or};
use edgectl::wire::PurgeRequest;

fn main() -> std::process::ExitCode {
    if let Some(code) = cluster::compile_worker() {
        return code;
    }
    cluster::runtime().block_on(bench(env_or("NODES", 10), env_or("ROUNDS", 100)));
    std::process::ExitCode::SUCCESS
}

async fn bench(node_count: usize, rounds: usize) {
    let cluster = Cluster::start(node_count).await;
    // Let every node register and open its purge long-poll.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let namespace: Arc<str> = TENANT.into();
    let mut per_node = Vec::new();
    let mut slowest = Vec::new();
    for round in 0..rounds {
        let key = format!("round-{round}");
        for node in &cluster.nodes {
            node.running
                .node()
                .cache()
                .guest_insert(
                    &namespace,
                    &key,
                    "cached".into(),
                    Duration::from_secs(600),
                    vec![key.clone()],
                )
                .expect("under the tenant's surrogate-key bound");
        }
        let seq = cluster
            .api
            .purge(&PurgeRequest {
                url: None,
                surrogate_key: Some(key.clone()),
                soft: false,
            })
            .await
            .expect("purge accepted")
            .seq;
        let purged = Instant::now();
        let (namespace, key) = (&namespace, &key);
        let waits = cluster.nodes.iter().map(|node| async move {
            let mut applied = node.follower.purges_applied();
            tokio::time::timeout(
                Duration::from_secs(30),
                applied.wait_for(|through| *through >= seq),
            )
            .await
            .expect("a node never applied the purge")
            .expect("follower running");
            let elapsed = purged.elapsed();
            let cache = node.running.node().cache();
            assert!(
                cache.guest_lookup(namespace, key).is_none(),
                "purged entry still served"
            );
            elapsed
        });
        let times = futures::future::join_all(waits).await;
        slowest.push(times.iter().copied().max().unwrap_or_default());
        per_node.extend(times);
    }
    cluster::print_propagation(
        &format!("purge propagation, {node_count} nodes, {rounds} purges by surrogate key"),
        &mut per_node,
        &mut slowest,
        "target: p99 <= 150 ms",
    );
    cluster.shutdown().await;
}
