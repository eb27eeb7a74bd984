//! Deploys and rollbacks reach every node; nodes serve without the
//! control plane, from disk after a restart, and through its crash.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploys_and_rollbacks_reach_every_node_within_a_second() {
    let plane = Plane::start_with("sqlite", |c| c.snapshot_wait = Duration::from_secs(20)).await;
    let token = plane.acme_web().await;
    let (_dirs, nodes) = two_nodes(&plane).await;
    // Before any deploy the domain is unknown: 421.
    assert_eq!(nodes[0].body().await.0, 421);

    plane.deploy(&token, "web", hello()).await;
    let took = until_all_serve(&nodes, HELLO).await;
    assert!(took < Duration::from_secs(1), "v1 took {took:?}");

    plane.deploy(&token, "web", plain_wasi()).await;
    let took = until_all_serve(&nodes, PLAIN).await;
    assert!(took < Duration::from_secs(1), "v2 took {took:?}");

    let (status, _) = plane
        .call("POST", "/v1/services/web/rollback", &token, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let took = until_all_serve(&nodes, HELLO).await;
    assert!(took < Duration::from_secs(1), "rollback took {took:?}");

    // Both nodes registered and report the snapshot they serve.
    let (_, listed) = plane.get("/v1/nodes", ADMIN).await;
    assert_eq!(listed.as_array().map(Vec::len), Some(2));
    // The artifacts came from the control plane: nothing compiled on a node.
    for node in &nodes {
        assert_eq!(
            node.metric("edge_module_loads_total{source=\"compiled\"}")
                .await,
            0.0
        );
        assert!(
            node.metric("edge_module_loads_total{source=\"artifact\"}")
                .await
                >= 2.0
        );
    }
    plane.stop_with_nodes(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_serve_without_the_control_plane_and_from_disk_after_a_restart() {
    let plane = Plane::start("sqlite").await;
    let base = plane.base.clone();
    let token = plane.acme_web().await;
    let (dir, node) = one_node(&plane).await;
    plane.deploy(&token, "web", hello()).await;
    until_all_serve(std::slice::from_ref(&node), HELLO).await;

    plane.stop().await;
    // Every request is still answered while the control plane is down.
    for _ in 0..100 {
        assert_eq!(node.body().await, (200, HELLO.to_string()));
    }

    // A restart with the control plane still down serves from disk.
    node.stop().await;
    let node = EdgeNode::start(&base, dir.path(), "node-a").await;
    for _ in 0..20 {
        assert_eq!(node.body().await, (200, HELLO.to_string()));
    }
    assert_eq!(
        node.metric("edge_module_loads_total{source=\"artifact\"}")
            .await,
        1.0
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_artifact_on_a_node_is_detected_and_fetched_again() {
    let plane = Plane::start("sqlite").await;
    let token = plane.acme_web().await;
    let (dir, node) = one_node(&plane).await;
    plane.deploy(&token, "web", hello()).await;
    until_all_serve(std::slice::from_ref(&node), HELLO).await;
    node.stop().await;

    let artifacts = dir.path().join("artifacts");
    let artifact = std::fs::read_dir(&artifacts)
        .expect("artifacts dir")
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| path.extension().is_some_and(|ext| ext == "cwasm"))
        .expect("an artifact on disk");
    let mut bytes = std::fs::read(&artifact).expect("artifact");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&artifact, &bytes).expect("corrupt it");

    let node = EdgeNode::start(&plane.base, dir.path(), "node-a").await;
    assert_eq!(node.body().await, (200, HELLO.to_string()));
    // Fetched again and loaded as an artifact, not compiled on the node.
    assert_eq!(
        node.metric("edge_module_loads_total{source=\"compiled\"}")
            .await,
        0.0
    );
    assert_eq!(
        node.metric("edge_module_loads_total{source=\"artifact\"}")
            .await,
        1.0
    );
    assert_ne!(
        std::fs::read(&artifact).expect("artifact"),
        bytes,
        "replaced"
    );
    node.stop().await;
    plane.stop().await;
}

/// Runs `edgectl` with its own config file; returns stdout, or panics with
/// stderr.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_deploys_from_source_with_edgectl() {
    let plane = Plane::start_with("sqlite", |c| c.snapshot_wait = Duration::from_secs(20)).await;
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("edgectl.json");
    edgectl_tenant(&config, &plane, "acme", &[]).await;
    edgectl(&config, &["service", "create", "web", "--domain", DOMAIN]).await;
    let (_dirs, nodes) = two_nodes(&plane).await;
    let examples = edge_tests::guests::repo_root().join("examples/hello");

    let deployed = edgectl(
        &config,
        &["deploy", "web", "--build", &examples.to_string_lossy()],
    )
    .await;
    assert!(deployed.contains("version 1"), "{deployed}");
    assert!(
        deployed.contains(&format!("http://{DOMAIN}/")),
        "{deployed}"
    );
    let took = until_all_serve(&nodes, HELLO).await;
    assert!(took < Duration::from_secs(1), "served after {took:?}");

    let plain = edge_tests::guests::rust_guest("plain-wasi");
    edgectl(
        &config,
        &["deploy", "web", "--wasm", &plain.to_string_lossy()],
    )
    .await;
    until_all_serve(&nodes, PLAIN).await;
    let versions = edgectl(&config, &["versions", "web"]).await;
    let (table, history) = versions.split_once("\nhistory:\n").expect("a history");
    assert_eq!(table.lines().count(), 3, "header + 2 versions: {versions}");
    // Who activated what, and how the first one ended.
    let history: Vec<&str> = history.lines().skip(1).collect();
    assert_eq!(history.len(), 2, "{versions}");
    assert!(
        history[0].starts_with("1\tactive\t") && history[0].contains("\tsuperseded\tv2 activated"),
        "{versions}"
    );
    assert!(
        history[1].starts_with("2\tactive\t") && history[1].contains("serving"),
        "{versions}"
    );
    let rolled = edgectl(&config, &["rollback", "web"]).await;
    assert!(rolled.contains("version 1"), "{rolled}");
    until_all_serve(&nodes, HELLO).await;

    let services = edgectl(&config, &["service", "list"]).await;
    assert!(services.contains("web\t1"), "{services}");
    let listed = edgectl(&config, &["nodes", "--admin-token", ADMIN]).await;
    assert!(
        listed.contains("node-a") && listed.contains("node-b"),
        "{listed}"
    );
    plane.stop_with_nodes(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_control_plane_loses_nothing_and_nodes_never_stop_serving() {
    let dir = tempfile::tempdir().expect("dir");
    let plane_dir = dir.path().join("control-plane");
    let (process, port, token) = killable_plane_with_web(&plane_dir, hello()).await;
    let base = format!("http://{port}");
    let http = reqwest::Client::new();

    let node = EdgeNode::start(&base, &dir.path().join("node"), "node-a").await;
    until_all_serve(std::slice::from_ref(&node), HELLO).await;

    // Killed right after acknowledging: the node keeps answering.
    process.kill().await;
    for _ in 0..100 {
        assert_eq!(node.body().await, (200, HELLO.to_string()));
    }

    // Back on the same data: the acknowledged version is there, and the node
    // picks up the next deploy.
    let _process = PlaneProcess::start(&plane_dir, port).await;
    let versions: serde_json::Value = http
        .get(format!("{base}/v1/services/web/versions"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("versions")
        .json()
        .await
        .expect("JSON");
    assert_eq!(versions.as_array().map(Vec::len), Some(1), "{versions}");
    let status = deploy_over_http(&http, &base, &token, plain_wasi()).await;
    assert_eq!(status, StatusCode::CREATED);
    until_all_serve(std::slice::from_ref(&node), PLAIN).await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_snapshot_loads_no_module_the_node_serves_already() {
    // The node's module cache holds one component and it serves three: a
    // snapshot that changes nothing of theirs must not load the three
    // again (with ten thousand services, every snapshot would reload the
    // thousands the cache had let go).
    let plane = Plane::start_with("sqlite", |c| c.snapshot_wait = Duration::from_secs(20)).await;
    let token = plane.tenant("acme").await;
    let dir = tempfile::tempdir().expect("dir");
    let node = EdgeNode::start_with(&plane.base, dir.path(), "node-a", |config, _| {
        config.sandbox.module_cache_entries = 1;
    })
    .await;
    let api = plane.api(&token);
    let mut last_module = String::new();
    for (service, module) in [("a", hello()), ("b", plain_wasi()), ("c", echo())] {
        let domain = format!("{service}.acme.test");
        plane.service(&token, service, &domain).await;
        last_module = api
            .deploy(service, module)
            .await
            .expect("deployed")
            .module_sha256;
        wait_for(|| async { get(node.addr, &domain, "/").await.status == 200 }).await;
    }
    let loads = async || {
        node.metric("edge_module_loads_total{source=\"artifact\"}")
            .await
            + node
                .metric("edge_module_loads_total{source=\"compiled\"}")
                .await
    };
    let before = loads().await;
    let version = node.metric("edge_snapshot_version").await;

    // A new version of c with the module it has: a new snapshot.
    api.create_version("c", &last_module, true)
        .await
        .expect("activated");
    wait_for(|| async { node.metric("edge_snapshot_version").await > version }).await;
    assert_eq!(loads().await, before, "modules loaded again for a snapshot");
    plane.stop_with_nodes([node]).await;
}

/// Polls `done` every 10 ms, for up to 10 s.
async fn wait_for(done: impl AsyncFn() -> bool) {
    let started = Instant::now();
    while !done().await {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never happened"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
