//! Purges reach every node and remove exactly what they name.

use super::*;

/// GETs `path` from `node` until the caching proxy answers (the node has the
/// service), and returns the body.
async fn proxied(node: &EdgeNode, path: &str) -> String {
    let started = Instant::now();
    loop {
        let reply = get(node.addr, DOMAIN, path).await;
        if reply.status == 200 && reply.header("x-edge-proxy").is_some() {
            return reply.text();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "node {} answers {} {:?}",
            node.addr,
            reply.status,
            reply.text()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until `node` has applied purge `seq`.
async fn until_purged(node: &EdgeNode, seq: u64) {
    let mut applied = node.follower.purges_applied();
    tokio::time::timeout(Duration::from_secs(5), applied.wait_for(|n| *n >= seq))
        .await
        .expect("the purge reached the node in time")
        .expect("follower running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purges_empty_exactly_the_tagged_entries_on_every_node() {
    use edge_tests::origin::{Answer, TestOrigin};
    use std::sync::atomic::{AtomicBool, Ordering};
    let failing = Arc::new(AtomicBool::new(false));
    let origin_failing = Arc::clone(&failing);
    let origin = TestOrigin::start(move |seen, n| {
        if origin_failing.load(Ordering::SeqCst) {
            return Answer::ok("origin down").status(503);
        }
        let tags = match seen.path.as_str() {
            "/a" => "red",
            "/b" => "red blue",
            "/c" => "blue",
            _ => "",
        };
        Answer::ok(format!("{} {n}", seen.path))
            .header("cache-control", "max-age=300")
            .header("surrogate-key", tags)
    })
    .await;
    let plane = Plane::start("sqlite").await;
    let spec = serde_json::json!({
        "domains": [DOMAIN],
        "backends": {"origin": {"origin": origin.url(), "allow_private_addresses": true}},
    });

    // Private origins need the operator's permission.
    let denied = plane.tenant("plain").await;
    let (status, body) = plane.create_service(&denied, "web", spec).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("backends.origin.allow_private_addresses")),
        "{body}"
    );

    let edgectl_dir = tempfile::tempdir().expect("dir");
    let edgectl_config = edgectl_dir.path().join("edgectl.json");
    let token = edgectl_tenant(
        &edgectl_config,
        &plane,
        "acme",
        &["--allow-private-backends"],
    )
    .await;
    let backend = format!("origin={}", origin.url());
    edgectl(
        &edgectl_config,
        &[
            "service",
            "create",
            "web",
            "--domain",
            DOMAIN,
            "--backend",
            &backend,
            "--allow-private-addresses",
        ],
    )
    .await;
    let proxy = std::fs::read(edge_tests::guests::rust_guest("caching-proxy")).expect("guest");
    plane.deploy(&token, "web", proxy).await;
    let (_dirs, nodes) = two_nodes(&plane).await;

    for node in &nodes {
        for path in ["/a", "/b", "/c", "/d"] {
            proxied(node, path).await;
            proxied(node, path).await;
        }
    }
    for path in ["/a", "/b", "/c", "/d"] {
        assert_eq!(origin.count(path), 2, "{path}: one fill per node");
    }

    let (status, body) = plane
        .post(
            "/v1/purge",
            &token,
            serde_json::json!({"surrogate_key": "red"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let seq = body["seq"].as_u64().expect("seq");
    for node in &nodes {
        until_purged(node, seq).await;
    }
    for node in &nodes {
        for path in ["/a", "/b", "/c", "/d"] {
            proxied(node, path).await;
        }
    }
    assert_eq!(origin.count("/a"), 4, "tagged red: refetched on both nodes");
    assert_eq!(origin.count("/b"), 4, "tagged red: refetched on both nodes");
    assert_eq!(origin.count("/c"), 2, "not tagged red: still cached");
    assert_eq!(origin.count("/d"), 2, "not tagged: still cached");

    // By URL, as the origin sees it (any spelling of it), with edgectl,
    // which waits until both nodes acknowledge it.
    let url = format!("HTTP://{}/c", origin.addr);
    let purged = edgectl(&edgectl_config, &["purge", "--url", &url, "--wait", "5"]).await;
    let seq: u64 = purged
        .strip_prefix("purge ")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("edgectl names the purge");
    assert!(purged.contains("applied on 2 of 2 nodes"), "{purged}");
    for node in &nodes {
        until_purged(node, seq).await;
        proxied(node, "/c").await;
    }
    assert_eq!(origin.count("/c"), 4);
    assert_eq!(origin.count("/d"), 2);

    // Soft, while the origin fails: both nodes mark the entries stale, ask
    // the origin again, and serve what they have (the platform's default
    // stale-if-error) rather than the 503.
    failing.store(true, Ordering::SeqCst);
    let purged = edgectl(
        &edgectl_config,
        &["purge", "--soft", "--surrogate-key", "blue", "--wait", "5"],
    )
    .await;
    assert!(purged.contains("applied on 2 of 2 nodes"), "{purged}");
    let mut served = Vec::new();
    for node in &nodes {
        served.push(proxied(node, "/c").await);
    }
    assert_eq!(
        served,
        ["/c 3", "/c 4"],
        "stale, from each node's own entry"
    );
    assert_eq!(origin.count("/c"), 6, "each node asked the origin");
    assert_eq!(origin.count("/d"), 2, "not tagged blue");
    failing.store(false, Ordering::SeqCst);

    // Only the owning tenant can follow a purge.
    let (status, body) = plane.get(&format!("/v1/purge/{seq}"), &token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["acknowledged"], 2, "{body}");
    let (status, _) = plane.get(&format!("/v1/purge/{seq}"), &denied).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    for bad in [
        serde_json::json!({"url": "/relative"}),
        serde_json::json!({"surrogate_key": "two words"}),
        serde_json::json!({"surrogate_key": ""}),
        serde_json::json!({"everything": true}),
    ] {
        let (status, body) = plane.post("/v1/purge", &token, bad).await;
        assert!(status.is_client_error(), "{status} {body}");
    }

    plane.stop_with_nodes(nodes).await;
}
