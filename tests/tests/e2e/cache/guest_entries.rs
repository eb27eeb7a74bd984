//! The guest cache API, and guests' own responses cached at the edge.

use super::*;

#[tokio::test]
async fn the_guest_cache_api_stores_expires_and_refuses_bad_input() {
    let node = TestNode::start_examples(&[("probe", "backend-probe")]).await;
    let insert = |path: &str, body: &'static str| {
        send(
            node.addr,
            Protocol::Http1,
            request("POST", "probe.test", path, body),
        )
    };
    let lookup = async || get(node.addr, "probe.test", "/cache/lookup?key=k").await;
    assert_eq!(
        insert("/cache/insert?key=k&ttl_ms=300", "v").await.text(),
        "inserted\n"
    );
    assert_eq!(lookup().await.text(), "v");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(lookup().await.status, 404);

    assert_eq!(
        insert("/cache/insert?key=k", "v2").await.text(),
        "inserted\n"
    );
    let purge = get(node.addr, "probe.test", "/cache/purge?key=k").await;
    assert_eq!(purge.text(), "true\n");
    assert_eq!(lookup().await.status, 404);

    let long_key = "k".repeat(1025);
    let refused = insert(&format!("/cache/insert?key={long_key}"), "v").await;
    assert_eq!(refused.text(), "refused Error::InvalidKey\n");
    let refused = insert("/cache/insert?key=k&ttl_ms=0", "v").await;
    assert_eq!(refused.text(), "refused Error::InvalidTtl\n");
    let refused = insert("/cache/insert?key=k&ttl_ms=86400001", "v").await;
    assert_eq!(refused.text(), "refused Error::InvalidTtl\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_can_have_its_own_cacheable_responses_served_without_running_the_guest() {
    // The origin counts how often the guest ran: the backend cache is off.
    let origin = TestOrigin::start(|seen, n| {
        let answer = Answer::ok(format!("run {n}")).header("surrogate-key", "page");
        match seen.path.as_str() {
            "/private" => answer.header("cache-control", "private, max-age=60"),
            // The edge's own directive wins, and stays at the edge.
            "/cdn" => answer
                .header("cache-control", "no-store")
                .header("cdn-cache-control", "max-age=60"),
            _ => answer.header("cache-control", "public, max-age=60"),
        }
    })
    .await;
    let mut backend = loopback_backend(&origin);
    backend.cache = edge_config::BackendCache::Off;
    let node = TestNode::start(vec![
        TestService::example("edge", "caching-proxy")
            .backend("origin", backend.clone())
            .cache_responses(),
        TestService::example("plain", "caching-proxy").backend("origin", backend),
    ])
    .await;

    let first = get(node.addr, "edge.test", "/page").await;
    let second = get(node.addr, "EDGE.test", "/page").await;
    assert_eq!(
        (first.text(), second.text()),
        ("run 1".into(), "run 1".into())
    );
    assert!(second.header("age").is_some(), "a hit carries Age");
    assert_eq!(origin.count("/page"), 1, "the guest ran once");
    assert_eq!(
        edge_statuses(&first).last().map(String::as_str),
        Some("edge; fwd=miss; stored; ttl=60")
    );
    let hit = edge_statuses(&second);
    assert!(
        hit.last().is_some_and(|s| s.starts_with("edge; hit; ttl=")),
        "{hit:?}"
    );

    let cdn = get(node.addr, "edge.test", "/cdn").await;
    assert_eq!(cdn.header("cdn-cache-control"), None, "not for clients");
    assert_eq!(get(node.addr, "edge.test", "/cdn").await.text(), cdn.text());
    assert_eq!(origin.count("/cdn"), 1, "stored by CDN-Cache-Control");

    // Not shareable: the guest runs every time. Nor without the setting.
    get(node.addr, "edge.test", "/private").await;
    let private = get(node.addr, "edge.test", "/private").await;
    assert_eq!(origin.count("/private"), 2);
    assert_eq!(
        edge_statuses(&private).last().map(String::as_str),
        Some("edge; fwd=miss")
    );
    get(node.addr, "plain.test", "/page").await;
    get(node.addr, "plain.test", "/page").await;
    assert_eq!(origin.count("/page"), 3);

    // A purge by the public URL, or by surrogate key, reaches it.
    let cache = node.node().cache();
    assert_eq!(
        cache.purge_url("edge", "https://edge.test/page", PurgeMode::Hard),
        1
    );
    assert_eq!(get(node.addr, "edge.test", "/page").await.text(), "run 4");
    assert!(cache.purge_surrogate_key("edge", "page", PurgeMode::Hard) >= 1);
    assert_eq!(get(node.addr, "edge.test", "/page").await.text(), "run 5");
    // A successful POST to the URL invalidates it too.
    send(
        node.addr,
        Protocol::Http1,
        request("POST", "edge.test", "/page", "x"),
    )
    .await;
    assert_eq!(get(node.addr, "edge.test", "/page").await.text(), "run 7");
    node.shutdown().await;
}
