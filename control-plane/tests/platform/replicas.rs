//! Two control-plane replicas on one PostgreSQL database, each its own
//! process, and two nodes: one knows both replicas, the other only the
//! second. An upload through the first replica is served by the node that
//! never talks to it; the first replica is killed in the middle of a
//! series of deploys and purges, and both nodes end with every
//! acknowledged version and purge while every request they were asked
//! succeeded.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use edge_config::api::PurgeRequest;
use edge_tests::platform::{
    ADMIN, DOMAIN, EdgeNode, HELLO, PLAIN, ReplicaProcess, database_url, hello, plain_wasi,
    until_all_serve,
};
use edgectl::client::ApiClient;

/// The version of `acme/web` in the snapshot a node last applied (its
/// saved `snapshot.json`, written after the routing table was swapped).
fn served_version(data_dir: &std::path::Path) -> Option<u64> {
    let text = std::fs::read(data_dir.join("snapshot.json")).ok()?;
    let snapshot: edge_config::protocol::Snapshot = serde_json::from_slice(&text).ok()?;
    snapshot
        .services
        .iter()
        .find(|service| service.name == "acme/web")
        .map(|service| service.version)
}

/// Runs `call` on the first replica that answers, as a tenant's client
/// with both replicas' URLs does.
async fn on_a_live_replica<T, F>(clients: &[ApiClient], call: impl Fn(ApiClient) -> F) -> T
where
    F: Future<Output = Result<T, edgectl::client::ApiError>>,
{
    let mut errors = Vec::new();
    for client in clients {
        match call(client.clone()).await {
            Ok(value) => return value,
            Err(error) => errors.push(error.to_string()),
        }
    }
    panic!("no replica answered: {errors:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_keep_every_acknowledged_deploy_and_purge_when_a_replica_is_killed() {
    if std::env::var("EDGE_TEST_POSTGRES_URL").is_err() {
        eprintln!("skipped: replicas share a PostgreSQL database (EDGE_TEST_POSTGRES_URL)");
        return;
    }
    let shared = tempfile::tempdir().expect("dir");
    let url = database_url("postgres", shared.path()).await;
    // Started together: the second waits for the first's migrations.
    let (mut first, second) =
        tokio::join!(ReplicaProcess::start(&url), ReplicaProcess::start(&url));

    let token = first
        .api(ADMIN)
        .create_tenant("acme", false)
        .await
        .expect("tenant")
        .token;
    let tenant = [first.api(&token), second.api(&token)];
    let spec = edge_config::protocol::ServiceSpec {
        domains: vec![DOMAIN.to_string()],
        ..Default::default()
    };
    tenant[0]
        .create_service("web", &spec)
        .await
        .expect("service");
    tenant[0].deploy("web", hello()).await.expect("deploy");
    // Services the series leaves alone: what a delta need not carry.
    for name in ["docs", "shop", "blog"] {
        let spec = edge_config::protocol::ServiceSpec {
            domains: vec![format!("{name}.acme.test")],
            ..Default::default()
        };
        tenant[0]
            .create_service(name, &spec)
            .await
            .expect("service");
        tenant[0].deploy(name, hello()).await.expect("deploy");
    }

    // Node B knows only the second replica, which never received the
    // upload: it fetches the module from the blobs the replicas share.
    let dirs = [
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    ];
    let replica_urls = vec![second.base.clone()];
    let node_a = EdgeNode::start_with(&first.base, dirs[0].path(), "node-a", |_, link| {
        link.replica_urls = replica_urls;
    })
    .await;
    let node_b = EdgeNode::start(&second.base, dirs[1].path(), "node-b").await;
    let nodes = Arc::new([node_a, node_b]);
    until_all_serve(&nodes[..], HELLO).await;

    // Clients on both nodes for the whole series.
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let traffic = {
        let (nodes, stop, served) = (Arc::clone(&nodes), Arc::clone(&stop), Arc::clone(&served));
        tokio::spawn(async move {
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                for node in nodes.iter() {
                    let (status, body) = node.body().await;
                    if status != 200 || (body != HELLO && body != PLAIN) {
                        failures.push(format!("{}: {status} {body:?}", node.addr));
                    }
                    served.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            failures
        })
    };

    let mut last_version = 0;
    let mut last_body = HELLO;
    let mut last_purge = 0;
    let clients: Vec<ApiClient> = tenant.to_vec();
    for round in 0..8 {
        let (module, body) = if round % 2 == 0 {
            (plain_wasi(), PLAIN)
        } else {
            (hello(), HELLO)
        };
        if round == 3 {
            // Killed while this round's deploy is on its way to it.
            let kill = first.kill();
            let deploy = on_a_live_replica(&clients, |api| {
                let module = module.clone();
                async move { api.deploy("web", module).await }
            });
            let (_, created) = tokio::join!(kill, deploy);
            last_version = created.version;
        } else {
            last_version = on_a_live_replica(&clients, |api| {
                let module = module.clone();
                async move { api.deploy("web", module).await }
            })
            .await
            .version;
        }
        last_body = body;
        let purge = PurgeRequest {
            url: None,
            surrogate_key: Some(format!("round-{round}")),
            soft: false,
        };
        last_purge = on_a_live_replica(&clients, |api| {
            let purge = purge.clone();
            async move { api.purge(&purge).await }
        })
        .await
        .seq;
    }

    let deadline = Instant::now() + Duration::from_secs(20);
    for (node, dir) in nodes.iter().zip(&dirs) {
        let purges = node.follower.purges_applied();
        loop {
            let version = served_version(dir.path());
            let purged = *purges.borrow();
            if version == u64::try_from(last_version).ok() && purged >= last_purge {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {} serves version {version:?} (acknowledged {last_version}) and applied purges through {purged} (acknowledged {last_purge})",
                node.addr
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    until_all_serve(&nodes[..], last_body).await;
    // The series may pass quicker than the clients make their hundred
    // requests: they go on (serving the last version) until they have.
    while served.load(Ordering::Relaxed) <= 100 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let failures = traffic.await.expect("traffic");
    // Node B followed only the second replica, which built the versions it
    // held: after its first snapshot it was sent only what changed.
    let page = second.metrics_page().await;
    let deltas = edge_tests::node::metric_value(&page, "cp_snapshots_sent_total{kind=\"delta\"}");
    assert!(deltas >= 1.0, "no delta was sent:\n{page}");
    let requests = served.load(Ordering::Relaxed);
    assert!(
        failures.is_empty(),
        "{} of {requests} requests failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(requests > 100, "only {requests} requests were made");
    let Ok(nodes) = Arc::try_unwrap(nodes) else {
        panic!("the traffic task still holds the nodes");
    };
    for node in nodes {
        node.stop().await;
    }
    drop(second);
}
