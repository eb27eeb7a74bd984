//! KV replication lag: a control plane and 10 edge nodes in this process,
//! on loopback, following one store. Each round writes one key through the
//! tenant's API and measures, per node, the time from the write's answer
//! until the node's replica has applied it (its feed position passed the
//! write's number, and the value reads back). Prints p50/p99 over every node
//! of every round, and of the slowest node per round.
//!
//!   cargo bench -p edge-benches --bench kv
//!   ROUNDS=200 NODES=10 cargo bench -p edge-benches --bench kv

mod cluster;

use std::time::{Duration, Instant};

use cluster::{Cluster, env_or};
use edge_config::protocol::ServiceSpec;

const STORE: &str = "bench";

fn main() -> std::process::ExitCode {
    if let Some(code) = cluster::compile_worker() {
        return code;
    }
    cluster::runtime().block_on(bench(env_or("NODES", 10), env_or("ROUNDS", 100)));
    std::process::ExitCode::SUCCESS
}

async fn bench(node_count: usize, rounds: usize) {
    let spec = ServiceSpec {
        kv_stores: vec![STORE.to_string()],
        ..ServiceSpec::default()
    };
    let cluster = Cluster::start_with(
        node_count,
        |config| config.quotas.kv_writes_per_second = u32::MAX,
        spec,
    )
    .await;
    cluster.api.create_kv_store(STORE).await.expect("store");
    // Let every node register, see the store and open its feed long-poll.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let db = cluster.plane().store();
    let tenant = db
        .tenant_by_name(cluster::TENANT)
        .await
        .expect("database")
        .expect("the bench tenant");
    let store_id = db
        .kv_store_id(&tenant.id, STORE)
        .await
        .expect("database")
        .expect("the store");

    let mut per_node = Vec::new();
    let mut slowest = Vec::new();
    for round in 0..rounds {
        let key = format!("round-{round}");
        let value = format!("value {round}").into_bytes();
        cluster
            .api
            .kv_put(STORE, &key, value.clone())
            .await
            .expect("write");
        let written = Instant::now();
        let seq = cluster.plane().store().kv_seq().await.expect("seq");
        let (key, value, store_id) = (&key, &value, &store_id);
        let waits = cluster.nodes.iter().map(|node| async move {
            let mut position = node.follower.kv_position();
            tokio::time::timeout(Duration::from_secs(30), position.wait_for(|p| *p >= seq))
                .await
                .expect("a node never applied the write")
                .expect("follower running");
            let elapsed = written.elapsed();
            let read = node
                .running
                .node()
                .kv()
                .replica()
                .and_then(|replica| replica.get(store_id, key))
                .expect("replica");
            assert_eq!(read.as_ref(), Some(value), "the write reads back");
            elapsed
        });
        let times = futures::future::join_all(waits).await;
        slowest.push(times.iter().copied().max().unwrap_or_default());
        per_node.extend(times);
    }
    cluster::print_propagation(
        &format!("KV replication, {node_count} nodes, {rounds} writes through the API"),
        &mut per_node,
        &mut slowest,
        "bound in the tests: 1 s",
    );
    cluster.shutdown().await;
}
