//! Tenants never see each other's entries, and clients cannot poison them.

use super::*;

#[tokio::test]
async fn tenants_never_see_each_others_entries() {
    let origin = TestOrigin::start(|_, n| {
        Answer::ok(format!("served {n}"))
            .header("cache-control", "max-age=60")
            .header("surrogate-key", "shared-tag")
    })
    .await;
    let service = |name: &str, tenant: &str, guest: &str| {
        TestService::example(name, guest)
            .tenant(tenant)
            .backend("origin", loopback_backend(&origin))
    };
    let node = TestNode::start(vec![
        service("proxy-a", "a", "caching-proxy"),
        service("proxy-b", "b", "caching-proxy"),
        service("probe-a", "a", "backend-probe"),
        service("probe-b", "b", "backend-probe"),
    ])
    .await;

    assert_eq!(
        get(node.addr, "proxy-a.test", "/shared").await.text(),
        "served 1"
    );
    let insert = send(
        node.addr,
        Protocol::Http1,
        request(
            "POST",
            "probe-a.test",
            "/cache/insert?key=secret&tags=shared-tag",
            "a's value",
        ),
    )
    .await;
    assert_eq!(insert.text(), "inserted\n");

    let mut leaked = 0;
    let spellings = [
        "proxy-b.test",
        "PROXY-B.TEST",
        "proxy-b.test.",
        "proxy-b.test:80",
    ];
    for host in spellings {
        for path in ["/shared", "http://proxy-b.test/shared"] {
            let reply = send(
                node.addr,
                Protocol::Http1,
                request("GET", host, path, Bytes::new()),
            )
            .await;
            assert_eq!(reply.status, 200, "{host} {path}");
            leaked += usize::from(reply.text() == "served 1");
        }
        let lookup = get(
            node.addr,
            &host.replace("proxy", "probe").replace("PROXY", "PROBE"),
            "/cache/lookup?key=secret",
        )
        .await;
        assert_eq!(lookup.status, 404, "{host}: {}", lookup.text());
    }
    assert_eq!(leaked, 0, "tenant b was served tenant a's entry");
    assert_eq!(origin.count("/shared"), 2, "b filled its own entry once");

    // b purging the tag it shares with a purges only b's entries.
    let purge = get(node.addr, "probe-b.test", "/cache/purge-tag?tag=shared-tag").await;
    assert_eq!(purge.text(), "1\n");
    assert_eq!(
        get(node.addr, "proxy-a.test", "/shared").await.text(),
        "served 1"
    );
    assert_eq!(
        get(node.addr, "probe-a.test", "/cache/lookup?key=secret")
            .await
            .text(),
        "a's value"
    );
    // a's own purge takes both of its tagged entries.
    let purge = get(node.addr, "probe-a.test", "/cache/purge-tag?tag=shared-tag").await;
    assert_eq!(purge.text(), "2\n");
    assert_eq!(
        get(node.addr, "proxy-a.test", "/shared").await.text(),
        "served 3"
    );
}

/// The authority is parsed before routing: one that is not `host[:port]`
/// is 400, so a client cannot make one URL's response be stored as
/// another's (`Host: edge.test:/page#` once keyed `/evil` as `/page`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_authority_is_refused_and_cannot_poison_the_edge_cache() {
    let origin = TestOrigin::start(|seen, _| {
        Answer::ok(format!("path {}", seen.path)).header("cache-control", "public, max-age=60")
    })
    .await;
    let mut backend = loopback_backend(&origin);
    backend.cache = edge_config::BackendCache::Off;
    let node = TestNode::start(vec![
        TestService::example("edge", "caching-proxy")
            .domain("*.edge.test")
            .backend("origin", backend)
            .cache_responses(),
        TestService::example("echo", "echo"),
    ])
    .await;
    for hostile in [
        "edge.test:/page#",
        "edge.test:/page?",
        "edge.test:abc",
        "edge.test:",
        "edge.test:99999",
        "a b.edge.test",
        "x#.edge.test",
        "www.edge.test/page#.edge.test",
        "user@edge.test",
        "edge.test:80:80",
    ] {
        let reply = get(node.addr, hostile, "/evil").await;
        assert_eq!(reply.status, 400, "Host: {hostile}: {}", reply.text());
        assert_eq!(reply.header("edge-error"), Some("invalid-authority"));
    }
    // Two Host fields are 400 too (RFC 9112 section 3.2).
    let mut twice = request("GET", "edge.test", "/evil", Bytes::new());
    twice
        .headers_mut()
        .append("host", http::HeaderValue::from_static("echo.test"));
    assert_eq!(send(node.addr, Protocol::Http1, twice).await.status, 400);
    assert_eq!(origin.count("/evil"), 0, "no refused request ran the guest");

    let page = get(node.addr, "edge.test", "/page").await;
    assert_eq!((page.status, page.text().as_str()), (200, "path /page"));
    assert_eq!(origin.count("/page"), 1, "the cache held nothing for /page");
    let page = get(node.addr, "EDGE.test.", "/page").await;
    assert_eq!(page.text(), "path /page", "one spelling, one entry");
    assert_eq!(origin.count("/page"), 1);

    // The guest sees the authority in its normal spelling; on HTTP/1.1 an
    // absolute-form target wins over Host (RFC 9112 section 3.2.2).
    let echoed = get(node.addr, "ECHO.Test.:8080", "/").await.text();
    assert!(echoed.contains("authority: echo.test:8080\n"), "{echoed}");
    let absolute = get(node.addr, "edge.test", "http://Echo.Test/")
        .await
        .text();
    assert!(absolute.contains("authority: echo.test\n"), "{absolute}");

    // On HTTP/2 a host header that names another authority than
    // :authority is malformed (RFC 9113 section 8.3.1).
    let mut mismatched = request("GET", "echo.test", "http://edge.test/page", Bytes::new());
    *mismatched.version_mut() = http::Version::HTTP_2;
    let reply = send(node.addr, Protocol::Http2, mismatched).await;
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert_eq!(reply.header("edge-error"), Some("host-mismatch"));
    let mut same = request("GET", "EDGE.test:80", "http://edge.test/page", Bytes::new());
    *same.version_mut() = http::Version::HTTP_2;
    assert_eq!(send(node.addr, Protocol::Http2, same).await.status, 200);
    node.shutdown().await;
}
