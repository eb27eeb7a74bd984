//! The HTTP cache between guests and their backends, and the guest cache
//! API: RFC 9111 behaviour seen from the origin's request count.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use edge_node::cache::PurgeMode;
use edge_tests::client::{Protocol, get, request, send};
use edge_tests::guests::rust_guest;
use edge_tests::node::{TestNode, TestService};
use edge_tests::origin::{Answer, TestOrigin};

use crate::backends::loopback_backend;

async fn proxy_node(origin: &TestOrigin) -> TestNode {
    TestNode::start(vec![
        TestService::new("proxy", "proxy.test", rust_guest("caching-proxy"))
            .backend("origin", loopback_backend(origin)),
    ])
    .await
}

async fn get_with(
    node: &TestNode,
    path: &str,
    headers: &[(&str, &str)],
) -> edge_tests::client::Reply {
    let mut req = request("GET", "proxy.test", path, Bytes::new());
    for (name, value) in headers {
        req.headers_mut().insert(
            http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
            http::HeaderValue::from_str(value).expect("value"),
        );
    }
    send(node.addr, Protocol::Http1, req).await
}

#[tokio::test]
async fn concurrent_misses_make_one_origin_request() {
    let origin = TestOrigin::start(|_, n| {
        Answer::ok(format!("body {n}"))
            .header("cache-control", "max-age=60")
            .delay(Duration::from_millis(300))
    })
    .await;
    let node = Arc::new(proxy_node(&origin).await);

    let mut clients = Vec::new();
    for _ in 0..100 {
        let node = Arc::clone(&node);
        clients.push(tokio::spawn(async move {
            get(node.addr, "proxy.test", "/collapse").await
        }));
    }
    for client in clients {
        let reply = client.await.expect("client");
        assert_eq!(reply.status, 200);
        assert_eq!(reply.text(), "body 1");
    }
    assert_eq!(origin.count("/collapse"), 1);
    let collapsed = node
        .metric("edge_http_cache_requests_total{outcome=\"collapsed\"}")
        .await;
    assert!(collapsed >= 90.0, "collapsed {collapsed}");
}

#[tokio::test]
async fn hits_carry_age_and_unshareable_responses_are_not_stored() {
    let origin = TestOrigin::start(|seen, n| {
        let answer = Answer::ok(format!("{} {n}", seen.path));
        match seen.path.as_str() {
            "/fresh" => answer.header("cache-control", "max-age=60"),
            "/no-store" => answer.header("cache-control", "no-store, max-age=60"),
            "/private" => answer.header("cache-control", "private, max-age=60"),
            "/cookie" => answer
                .header("cache-control", "public, max-age=60")
                .header("set-cookie", "session=secret"),
            // No explicit freshness: never reused without asking the origin.
            "/heuristic" => answer.header("last-modified", "Mon, 01 Jan 2024 00:00:00 GMT"),
            _ => answer,
        }
    })
    .await;
    let node = proxy_node(&origin).await;

    let first = get(node.addr, "proxy.test", "/fresh").await;
    assert_eq!(first.text(), "/fresh 1");
    assert_eq!(first.header("age"), None, "a miss has no Age");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = get(node.addr, "proxy.test", "/fresh").await;
    assert_eq!(second.text(), "/fresh 1");
    let age: u64 = second
        .header("age")
        .expect("Age on a hit")
        .parse()
        .expect("age");
    assert!((1..=2).contains(&age), "age {age}");
    assert_eq!(origin.count("/fresh"), 1);

    for path in ["/no-store", "/private", "/cookie", "/heuristic"] {
        for n in 1..=3 {
            let reply = get(node.addr, "proxy.test", path).await;
            assert_eq!(reply.text(), format!("{path} {n}"), "{path} was shared");
        }
        assert_eq!(origin.count(path), 3, "{path}");
    }
    let cookie = get(node.addr, "proxy.test", "/cookie").await;
    assert_eq!(cookie.header("set-cookie"), Some("session=secret"));
}

#[tokio::test]
async fn a_stale_response_is_revalidated_with_a_304() {
    let origin = TestOrigin::start(|seen, n| {
        if seen
            .headers
            .get("if-none-match")
            .is_some_and(|v| v == "\"v1\"")
        {
            return Answer::ok("")
                .status(304)
                .header("etag", "\"v1\"")
                .header("cache-control", "max-age=0")
                .header("x-origin-says", "still good");
        }
        Answer::ok(format!("version 1 ({n})"))
            .header("etag", "\"v1\"")
            .header("x-origin-says", "first")
            .header("cache-control", "max-age=0")
    })
    .await;
    let node = proxy_node(&origin).await;

    assert_eq!(
        get(node.addr, "proxy.test", "/doc").await.text(),
        "version 1 (1)"
    );
    let second = get(node.addr, "proxy.test", "/doc").await;
    assert_eq!(second.status, 200);
    assert_eq!(second.text(), "version 1 (1)", "the stored body is served");
    assert_eq!(
        second.header("x-origin-says"),
        Some("still good"),
        "the 304 updates the stored headers"
    );
    let seen = origin.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        seen[1]
            .headers
            .get("if-none-match")
            .map(|v| v.to_str().unwrap_or("")),
        Some("\"v1\"")
    );
    assert_eq!(
        node.metric("edge_http_cache_requests_total{outcome=\"revalidated\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn vary_keeps_variants_apart() {
    let origin = TestOrigin::start(|seen, _| {
        let language = seen
            .headers
            .get("accept-language")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none")
            .to_string();
        Answer::ok(format!("in {language}"))
            .header("cache-control", "max-age=60")
            .header("vary", "Accept-Language")
    })
    .await;
    let node = proxy_node(&origin).await;

    for _ in 0..3 {
        for language in ["en", "fr"] {
            let reply = get_with(&node, "/page", &[("accept-language", language)]).await;
            assert_eq!(reply.text(), format!("in {language}"));
        }
    }
    assert_eq!(origin.count("/page"), 2);
}

#[tokio::test]
async fn credentials_are_not_served_from_a_shared_entry_unless_allowed() {
    let origin = TestOrigin::start(|seen, n| match seen.path.as_str() {
        "/public" => {
            Answer::ok(format!("public {n}")).header("cache-control", "public, max-age=60")
        }
        _ => Answer::ok(format!("plain {n}")).header("cache-control", "max-age=60"),
    })
    .await;
    let node = proxy_node(&origin).await;

    assert_eq!(
        get(node.addr, "proxy.test", "/plain").await.text(),
        "plain 1"
    );
    let authorized = get_with(&node, "/plain", &[("authorization", "Bearer a")]).await;
    assert_eq!(authorized.text(), "plain 2");
    assert_eq!(origin.count("/plain"), 2);

    assert_eq!(
        get(node.addr, "proxy.test", "/public").await.text(),
        "public 1"
    );
    let authorized = get_with(&node, "/public", &[("authorization", "Bearer a")]).await;
    assert_eq!(authorized.text(), "public 1");
    assert_eq!(origin.count("/public"), 1);
}

#[tokio::test]
async fn stale_responses_are_served_while_revalidating_and_on_error() {
    let origin = TestOrigin::start(|seen, n| match seen.path.as_str() {
        "/swr" => Answer::ok(format!("swr {n}"))
            .header("cache-control", "max-age=1, stale-while-revalidate=30"),
        _ if n == 1 => {
            Answer::ok("sie good").header("cache-control", "max-age=1, stale-if-error=30")
        }
        _ => Answer::ok("broken").status(503),
    })
    .await;
    let node = proxy_node(&origin).await;

    assert_eq!(get(node.addr, "proxy.test", "/swr").await.text(), "swr 1");
    assert_eq!(
        get(node.addr, "proxy.test", "/sie").await.text(),
        "sie good"
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;

    // Stale within stale-while-revalidate: served at once, refreshed behind.
    assert_eq!(get(node.addr, "proxy.test", "/swr").await.text(), "swr 1");
    let mut refreshed = false;
    for _ in 0..50 {
        if get(node.addr, "proxy.test", "/swr").await.text() == "swr 2" {
            refreshed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refreshed, "the background revalidation never landed");
    assert_eq!(origin.count("/swr"), 2);

    // The origin fails: the stale response is served instead of the 503.
    let reply = get(node.addr, "proxy.test", "/sie").await;
    assert_eq!((reply.status, reply.text().as_str()), (200, "sie good"));
    assert_eq!(origin.count("/sie"), 2);
}

#[tokio::test]
async fn a_successful_unsafe_request_invalidates_the_url() {
    let origin = TestOrigin::start(|seen, n| {
        Answer::ok(format!("{} {n}", seen.method)).header("cache-control", "max-age=60")
    })
    .await;
    let node = proxy_node(&origin).await;

    assert_eq!(get(node.addr, "proxy.test", "/item").await.text(), "GET 1");
    assert_eq!(get(node.addr, "proxy.test", "/item").await.text(), "GET 1");
    let post = send(
        node.addr,
        Protocol::Http1,
        request("POST", "proxy.test", "/item", "change"),
    )
    .await;
    assert_eq!(post.text(), "POST 2", "every method reaches the origin");
    assert_eq!(get(node.addr, "proxy.test", "/item").await.text(), "GET 3");
}

#[tokio::test]
async fn the_rewrite_and_headers_pass_through() {
    let origin = TestOrigin::start(|seen, _| {
        let custom = seen
            .headers
            .get("x-custom")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        Answer::ok(format!("{} {custom}", seen.path)).header("x-origin", "yes")
    })
    .await;
    let node = proxy_node(&origin).await;
    let reply = get_with(&node, "/blog/hello?x=1", &[("x-custom", "kept")]).await;
    assert_eq!(reply.text(), "/posts/hello?x=1 kept");
    assert_eq!(reply.header("x-origin"), Some("yes"));
    assert_eq!(reply.header("x-edge-proxy"), Some("caching-proxy"));
    let seen = &origin.seen()[0];
    assert_eq!(
        seen.headers.get("host").map(|v| v.to_str().unwrap_or("")),
        Some(origin.addr.to_string().as_str()),
        "the origin gets the backend's host, not the guest's authority"
    );
}

#[tokio::test]
async fn tenants_never_see_each_others_entries() {
    let origin = TestOrigin::start(|_, n| {
        Answer::ok(format!("served {n}"))
            .header("cache-control", "max-age=60")
            .header("surrogate-key", "shared-tag")
    })
    .await;
    let service = |name: &str, tenant: &str, guest: &str| {
        TestService::new(name, &format!("{name}.test"), rust_guest(guest))
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

#[tokio::test]
async fn the_guest_cache_api_stores_expires_and_refuses_bad_input() {
    let node = TestNode::start(vec![TestService::new(
        "probe",
        "probe.test",
        rust_guest("backend-probe"),
    )])
    .await;
    let insert = |path: &str, body: &'static str| {
        send(
            node.addr,
            Protocol::Http1,
            request("POST", "probe.test", path, body),
        )
    };
    assert_eq!(
        insert("/cache/insert?key=k&ttl_ms=300", "v").await.text(),
        "inserted\n"
    );
    assert_eq!(
        get(node.addr, "probe.test", "/cache/lookup?key=k")
            .await
            .text(),
        "v"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        get(node.addr, "probe.test", "/cache/lookup?key=k")
            .await
            .status,
        404
    );

    assert_eq!(
        insert("/cache/insert?key=k", "v2").await.text(),
        "inserted\n"
    );
    assert_eq!(
        get(node.addr, "probe.test", "/cache/purge?key=k")
            .await
            .text(),
        "true\n"
    );
    assert_eq!(
        get(node.addr, "probe.test", "/cache/lookup?key=k")
            .await
            .status,
        404
    );

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
        TestService::new("edge", "edge.test", rust_guest("caching-proxy"))
            .backend("origin", backend.clone())
            .cache_responses(),
        TestService::new("plain", "plain.test", rust_guest("caching-proxy"))
            .backend("origin", backend),
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
        TestService::new("edge", "edge.test", rust_guest("caching-proxy"))
            .domain("*.edge.test")
            .backend("origin", backend)
            .cache_responses(),
        TestService::new("echo", "echo.test", rust_guest("echo")),
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

/// RFC 9111 4.3.4: when the cache revalidates for a client that sent no
/// condition, the client gets the stored response, updated from the 304's
/// headers, with status 200: never the 304 itself. Here the stored
/// response has `ETag` and `Vary`, and the origin's 304 repeats no
/// validator; and a `no-cache` response is revalidated on every use.
#[tokio::test]
async fn a_client_without_conditions_never_gets_the_origins_304() {
    let origin = TestOrigin::start(|seen, n| {
        let conditional = seen.headers.contains_key("if-none-match");
        match (seen.path.as_str(), conditional) {
            (_, true) => Answer::ok("")
                .status(304)
                .header("cache-control", "max-age=0")
                .header("x-revalidated", &n.to_string()),
            ("/vary", false) => Answer::ok(format!("vary body {n}"))
                .header("etag", "\"v1\"")
                .header("vary", "accept-language")
                .header("cache-control", "max-age=0"),
            (_, false) => Answer::ok(format!("no-cache body {n}"))
                .header("etag", "\"n1\"")
                .header("cache-control", "No-Cache, max-age=3600"),
        }
    })
    .await;
    let node = proxy_node(&origin).await;
    for path in ["/vary", "/no-cache"] {
        let first = get_with(&node, path, &[("accept-language", "en")]).await;
        assert_eq!(first.status, 200, "{path}");
        for _ in 0..2 {
            let again = get_with(&node, path, &[("accept-language", "en")]).await;
            assert_eq!(
                again.status, 200,
                "{path}: the stored response, not the 304"
            );
            assert_eq!(again.text(), first.text(), "{path}");
            assert!(
                again.header("x-revalidated").is_some(),
                "{path}: updated from the 304"
            );
            let date = again.header("date").unwrap_or_default();
            assert!(
                httpdate::parse_http_date(date).is_ok() && date.ends_with("GMT"),
                "{path}: Date {date:?} is not an IMF-fixdate"
            );
        }
    }
    // `No-Cache` is `no-cache` (directive names are case-insensitive):
    // each use was revalidated, despite max-age=3600.
    assert_eq!(origin.count("/no-cache"), 3);
}

/// RFC 9213: `CDN-Cache-Control` (and `Surrogate-Control`) is the edge's
/// own: it replaces `Cache-Control` for this cache, both ways, and is not
/// passed on to clients.
#[tokio::test]
async fn cdn_cache_control_overrides_cache_control_for_the_edge_and_stays_there() {
    let origin = TestOrigin::start(|seen, n| {
        let answer = Answer::ok(format!("{} {n}", seen.path));
        match seen.path.as_str() {
            "/cdn-longer" => answer
                .header("cache-control", "no-store")
                .header("cdn-cache-control", "max-age=60"),
            "/cdn-private" => answer
                .header("cache-control", "public, max-age=60")
                .header("cdn-cache-control", "private"),
            "/cdn-no-store" => answer
                .header("cache-control", "max-age=60")
                .header("cdn-cache-control", "no-store"),
            "/surrogate" => answer
                .header("cache-control", "no-store")
                .header("surrogate-control", "max-age=60"),
            _ => answer,
        }
    })
    .await;
    let node = proxy_node(&origin).await;
    for (path, origin_requests) in [
        ("/cdn-longer", 1),
        ("/cdn-private", 2),
        ("/cdn-no-store", 2),
        ("/surrogate", 1),
    ] {
        for _ in 0..2 {
            let reply = get(node.addr, "proxy.test", path).await;
            assert_eq!(reply.status, 200);
            assert_eq!(reply.header("cdn-cache-control"), None, "{path}");
            assert_eq!(reply.header("surrogate-control"), None, "{path}");
        }
        assert_eq!(origin.count(path), origin_requests, "{path}");
    }
    // The client still sees the origin's Cache-Control.
    let reply = get(node.addr, "proxy.test", "/cdn-longer").await;
    assert_eq!(reply.header("cache-control"), Some("no-store"));
}

/// RFC 9111 5.3 and 5.1: an `Expires` that is not an HTTP date means the
/// response is already stale; an `Age` that is not a number is ignored,
/// and one too large to represent is 2^31 seconds (1.2.2): stale.
#[tokio::test]
async fn a_malformed_expires_is_stale_and_a_malformed_age_is_ignored() {
    let origin = TestOrigin::start(|seen, n| {
        let answer = Answer::ok(format!("{} {n}", seen.path));
        match seen.path.as_str() {
            "/expires" => answer.header("expires", "Thu,  01 Dec 2099 16:00:00 GMT"),
            "/age" => answer
                .header("cache-control", "max-age=60")
                .header("age", "1000, 2"),
            "/huge-age" => answer
                .header("cache-control", "max-age=60")
                .header("age", "99999999999999999999999"),
            _ => answer,
        }
    })
    .await;
    let node = proxy_node(&origin).await;
    for _ in 0..2 {
        assert_eq!(get(node.addr, "proxy.test", "/expires").await.status, 200);
        assert_eq!(get(node.addr, "proxy.test", "/age").await.status, 200);
        assert_eq!(get(node.addr, "proxy.test", "/huge-age").await.status, 200);
    }
    assert_eq!(origin.count("/huge-age"), 2, "an overflowing Age is stale");
    assert_eq!(origin.count("/expires"), 2, "a bad Expires is stale");
    assert_eq!(
        origin.count("/age"),
        1,
        "a bad Age leaves the response fresh"
    );
}

/// A request's headers, and the status, body and `Content-Range` it gets.
type Case = (
    &'static [(&'static str, &'static str)],
    u16,
    &'static str,
    Option<&'static str>,
);

/// RFC 9110 13 and 14: a fresh stored response answers the request's own
/// conditions (304 when the client's copy is current) and a single byte
/// range (206; 416 when unsatisfiable) without asking the origin.
#[tokio::test]
async fn conditional_and_range_requests_are_answered_from_a_fresh_stored_response() {
    let origin = TestOrigin::start(|_, n| {
        Answer::ok(format!("012345678{n}"))
            .header("etag", "\"r1\"")
            .header("last-modified", "Mon, 01 Jan 2024 00:00:00 GMT")
            .header("cache-control", "max-age=60")
    })
    .await;
    let node = proxy_node(&origin).await;
    assert_eq!(
        get(node.addr, "proxy.test", "/r").await.text(),
        "0123456781"
    );
    let cases: [Case; 10] = [
        (&[("if-none-match", "\"r1\"")], 304, "", None),
        (&[("if-none-match", "W/\"r1\"")], 304, "", None),
        (&[("if-none-match", "\"other\", \"r1\"")], 304, "", None),
        (&[("if-none-match", "\"other\"")], 200, "0123456781", None),
        (
            &[("if-modified-since", "Mon, 01 Jan 2024 00:00:00 GMT")],
            304,
            "",
            None,
        ),
        (
            &[("if-modified-since", "Sun, 31 Dec 2023 00:00:00 GMT")],
            200,
            "0123456781",
            None,
        ),
        (&[("range", "bytes=2-4")], 206, "234", Some("bytes 2-4/10")),
        (&[("range", "bytes=-3")], 206, "781", Some("bytes 7-9/10")),
        (&[("range", "bytes=20-")], 416, "", Some("bytes */10")),
        (
            &[("range", "bytes=2-4"), ("if-range", "\"changed\"")],
            200,
            "0123456781",
            None,
        ),
    ];
    for (headers, status, body, content_range) in cases {
        let reply = get_with(&node, "/r", headers).await;
        assert_eq!(reply.status, status, "{headers:?}");
        assert_eq!(reply.text(), body, "{headers:?}");
        assert_eq!(reply.header("content-range"), content_range, "{headers:?}");
        if status == 304 {
            assert_eq!(reply.header("etag"), Some("\"r1\""), "{headers:?}");
        }
    }
    assert_eq!(origin.count("/r"), 1, "all answered from the cache");
}

/// RFC 9211: every response through the edge cache says what the cache did,
/// under the cache's name, after any entry the origin's own caches wrote.
#[tokio::test]
async fn cache_status_says_what_the_edge_cache_did() {
    let origin = TestOrigin::start(|seen, n| {
        let answer = Answer::ok(format!("{} {n}", seen.path));
        match seen.path.as_str() {
            "/fresh" => answer
                .header("cache-control", "max-age=60")
                .header("cache-status", "origin-cache; hit"),
            "/again" if seen.headers.contains_key("if-none-match") => Answer::ok("")
                .status(304)
                .header("etag", "\"a\"")
                .header("cache-control", "max-age=0"),
            "/again" => answer
                .header("etag", "\"a\"")
                .header("cache-control", "max-age=0"),
            _ => answer,
        }
    })
    .await;
    let node = proxy_node(&origin).await;
    let status = |reply: &edge_tests::client::Reply| {
        reply
            .headers
            .get_all("cache-status")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let miss = get(node.addr, "proxy.test", "/fresh").await;
    assert_eq!(
        status(&miss),
        ["origin-cache; hit", "edge; fwd=miss; stored; ttl=60"]
    );
    let hit = get(node.addr, "proxy.test", "/fresh").await;
    let hit_status = status(&hit);
    assert_eq!(hit_status[0], "origin-cache; hit");
    assert!(
        hit_status[1].starts_with("edge; hit; ttl="),
        "{hit_status:?}"
    );
    let uncacheable = get(node.addr, "proxy.test", "/plain").await;
    assert_eq!(status(&uncacheable), ["edge; fwd=miss"]);
    get(node.addr, "proxy.test", "/again").await;
    let revalidated = get(node.addr, "proxy.test", "/again").await;
    assert_eq!(
        status(&revalidated),
        ["edge; fwd=stale; fwd-status=304; ttl=0"]
    );
    let post = send(
        node.addr,
        Protocol::Http1,
        request("POST", "proxy.test", "/fresh", "x"),
    )
    .await;
    assert_eq!(status(&post), ["origin-cache; hit", "edge; fwd=method"]);
}

/// The edge's `Cache-Status` entries of a reply, in order: the backend
/// cache's, then the guest-response cache's.
fn edge_statuses(reply: &edge_tests::client::Reply) -> Vec<String> {
    reply
        .headers
        .get_all("cache-status")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter(|entry| entry.starts_with("edge"))
        .map(str::to_string)
        .collect()
}

/// The backend cache's `Cache-Status` entry of a reply.
fn edge_status(reply: &edge_tests::client::Reply) -> String {
    edge_statuses(reply).into_iter().next().unwrap_or_default()
}

/// What the test origin does with the next requests.
const GOOD: usize = 0;
const FAILING: usize = 1;
const HANGING: usize = 2;

/// RFC 5861 4 and RFC 9111 4.2.4: when the origin fails (a 5xx, a refused
/// connection, no answer in time) a stale response is served instead, for
/// as long as its `stale-if-error` says or, when it says nothing, the
/// platform's default (`cache.default_stale_if_error_secs`); never when its
/// directives forbid stale use (`must-revalidate`, `proxy-revalidate`,
/// `s-maxage`, `stale-if-error=0`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_origin_gets_stale_served_but_never_past_revalidation_directives() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let mode = Arc::new(AtomicUsize::new(GOOD));
    let origin_mode = Arc::clone(&mode);
    let mut origin = TestOrigin::start(move |seen, n| {
        let cache_control = match seen.path.as_str() {
            "/must" => "max-age=1, must-revalidate",
            "/proxy" => "max-age=1, proxy-revalidate",
            "/shared" => "s-maxage=1",
            "/off" => "max-age=1, stale-if-error=0",
            _ => "max-age=1",
        };
        match origin_mode.load(Ordering::SeqCst) {
            FAILING => Answer::ok("origin down").status(503),
            HANGING => Answer::ok("too late").delay(Duration::from_secs(5)),
            _ => Answer::ok(format!("{} {n}", seen.path)).header("cache-control", cache_control),
        }
    })
    .await;
    let mut backend = loopback_backend(&origin);
    backend.first_byte_timeout_ms = 300;
    let service = || {
        TestService::new("proxy", "proxy.test", rust_guest("caching-proxy"))
            .backend("origin", backend.clone())
    };
    let node = TestNode::start(vec![service()]).await;
    let mut no_default = edge_config::NodeConfig::default();
    no_default.cache.default_stale_if_error_secs = 0;
    let strict_node = TestNode::start_with(no_default, vec![service()]).await;

    let forbidden = ["/must", "/proxy", "/shared", "/off"];
    for path in forbidden.iter().chain(&["/default"]) {
        assert_eq!(get(node.addr, "proxy.test", path).await.status, 200);
    }
    assert_eq!(
        get(strict_node.addr, "proxy.test", "/default").await.status,
        200
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;

    // A 503: the stale response, saying so.
    mode.store(FAILING, Ordering::SeqCst);
    let stale = get(node.addr, "proxy.test", "/default").await;
    assert_eq!((stale.status, stale.text().as_str()), (200, "/default 1"));
    let status = edge_status(&stale);
    assert!(
        status.starts_with("edge; fwd=stale; fwd-status=503; ttl=-"),
        "{status}"
    );
    for path in forbidden {
        let reply = get(node.addr, "proxy.test", path).await;
        assert_eq!(reply.status, 503, "{path}: no stale use allowed");
    }
    let strict = get(strict_node.addr, "proxy.test", "/default").await;
    assert_eq!(strict.status, 503, "no platform default");
    // A client that asks for validation, or for an age bound, gets no
    // stale response (RFC 9111 5.2.1), unless it accepts one (max-stale).
    for directive in ["no-cache", "max-age=0", "min-fresh=5"] {
        let reply = get_with(&node, "/default", &[("cache-control", directive)]).await;
        assert_eq!(reply.status, 503, "{directive}");
    }
    let reply = get_with(
        &node,
        "/default",
        &[("cache-control", "max-age=0, max-stale")],
    )
    .await;
    assert_eq!(reply.status, 200);

    // No answer within the backend's first-byte timeout.
    mode.store(HANGING, Ordering::SeqCst);
    let stale = get(node.addr, "proxy.test", "/default").await;
    assert_eq!((stale.status, stale.text().as_str()), (200, "/default 1"));
    assert_ne!(get(node.addr, "proxy.test", "/must").await.status, 200);

    // The origin is gone: connections are refused.
    origin.stop().await;
    let stale = get(node.addr, "proxy.test", "/default").await;
    assert_eq!((stale.status, stale.text().as_str()), (200, "/default 1"));
    assert_eq!(
        edge_status(&stale).split("; ttl").next(),
        Some("edge; fwd=stale")
    );
    assert_ne!(get(node.addr, "proxy.test", "/must").await.status, 200);
    node.shutdown().await;
    strict_node.shutdown().await;
}

/// A soft purge marks entries stale instead of removing them: the next
/// request revalidates with the origin (a 304 keeps the stored body), and
/// while the origin fails the stale entry is served; a hard purge leaves
/// nothing to serve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_soft_purge_revalidates_and_serves_stale_while_the_origin_fails() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let mode = Arc::new(AtomicUsize::new(GOOD));
    let origin_mode = Arc::clone(&mode);
    let origin = TestOrigin::start(move |seen, n| {
        if origin_mode.load(Ordering::SeqCst) == FAILING {
            return Answer::ok("origin down").status(503);
        }
        let current = seen
            .headers
            .get("if-none-match")
            .is_some_and(|etag| etag == "\"v1\"");
        let answer = if current {
            Answer::ok("").status(304)
        } else {
            Answer::ok(format!("{} {n}", seen.path))
        };
        answer
            .header("etag", "\"v1\"")
            .header("cache-control", "max-age=300")
            .header("surrogate-key", "pages")
    })
    .await;
    let node = proxy_node(&origin).await;
    let cache = node.node().cache();
    let url = format!("{}/page", origin.url());
    let page = || get(node.addr, "proxy.test", "/page");

    assert_eq!(page().await.text(), "/page 1");
    assert_eq!(page().await.text(), "/page 1");
    assert_eq!(origin.count("/page"), 1, "a hit");

    assert_eq!(cache.purge_url("proxy", &url, PurgeMode::Soft), 1);
    let revalidated = page().await;
    assert_eq!(
        (revalidated.status, revalidated.text().as_str()),
        (200, "/page 1")
    );
    assert!(
        edge_status(&revalidated).starts_with("edge; fwd=stale; fwd-status=304"),
        "{}",
        edge_status(&revalidated)
    );
    let seen = origin.seen();
    assert_eq!(
        seen.last().and_then(|s| s.headers.get("if-none-match")),
        Some(&http::HeaderValue::from_static("\"v1\"")),
        "the soft-purged entry was revalidated"
    );
    assert_eq!(page().await.text(), "/page 1");
    assert_eq!(origin.count("/page"), 2, "fresh again after the 304");

    // By surrogate key, with the origin failing: served stale.
    mode.store(FAILING, Ordering::SeqCst);
    assert_eq!(
        cache.purge_surrogate_key("proxy", "pages", PurgeMode::Soft),
        1
    );
    let stale = page().await;
    assert_eq!((stale.status, stale.text().as_str()), (200, "/page 1"));
    assert!(edge_status(&stale).starts_with("edge; fwd=stale; fwd-status=503"));
    assert_eq!(origin.count("/page"), 3);

    // A hard purge leaves nothing to serve stale.
    assert_eq!(
        cache.purge_surrogate_key("proxy", "pages", PurgeMode::Hard),
        1
    );
    assert_eq!(page().await.status, 503);
    node.shutdown().await;
}

/// An origin that answers `/hinted*` with `103 Early Hints`, then the page
/// (for `/hinted` itself, once `release` is notified); other paths with the
/// page alone. Written by hand: hyper's server cannot send a 1xx.
async fn hinting_origin(
    release: Arc<tokio::sync::Notify>,
) -> (std::net::SocketAddr, Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let log = Arc::clone(&log);
            let release = Arc::clone(&release);
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
                    buffer.drain(..end + 4);
                    let path = head.split(' ').nth(1).unwrap_or("/").to_string();
                    log.lock().expect("log").push(path.clone());
                    if path.starts_with("/hinted") {
                        let hints = "HTTP/1.1 103 Early Hints\r\n\
                                     link: </style.css>; rel=preload; as=style\r\n\
                                     connection: x-hop\r\nx-hop: 1\r\n\
                                     content-length: 0\r\n\r\n";
                        if stream.write_all(hints.as_bytes()).await.is_err() {
                            return;
                        }
                        if path == "/hinted" {
                            let wait = Duration::from_secs(10);
                            let _ = tokio::time::timeout(wait, release.notified()).await;
                        }
                    }
                    let page = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\ncache-control: max-age=60\r\n\r\n{path}",
                        path.len()
                    );
                    if stream.write_all(page.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// Reads from `stream` onto `text` until `done(text)`.
async fn read_until(
    stream: &mut tokio::net::TcpStream,
    mut text: String,
    done: impl Fn(&str) -> bool,
) -> String {
    use tokio::io::AsyncReadExt;
    let mut chunk = [0u8; 4096];
    while !done(&text) {
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .expect("an answer in time")
            .expect("read");
        assert!(read > 0, "closed early after {text:?}");
        text.push_str(&String::from_utf8_lossy(&chunk[..read]));
    }
    text
}

/// Whether `text` holds a whole final response (a 200 with its
/// Content-Length bytes), after any interim ones.
fn has_whole_response(text: &str) -> bool {
    let Some(start) = text.rfind("HTTP/1.1 200") else {
        return false;
    };
    let Some(head_end) = text[start..].find("\r\n\r\n").map(|i| start + i + 4) else {
        return false;
    };
    let length: usize = text[start..head_end]
        .lines()
        .find_map(|line| {
            let line = line.to_ascii_lowercase();
            line.strip_prefix("content-length: ")?.trim().parse().ok()
        })
        .expect("content-length");
    text.len() >= head_end + length
}

/// RFC 9110 15.2 and RFC 8297: a proxy passes on the 1xx responses it did
/// not ask for. An origin's `103 Early Hints` reaches an HTTP/1.1 client
/// when the origin sends it, before the response (without hop-by-hop
/// fields), on a connection that keeps working; a stored response is
/// served without them; HTTP/1.0 and HTTP/2 clients get the response alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origins_early_hints_reach_an_http11_client_before_the_response() {
    use tokio::io::AsyncWriteExt;
    let release = Arc::new(tokio::sync::Notify::new());
    let (origin, seen) = hinting_origin(Arc::clone(&release)).await;
    let mut backend = edge_config::BackendSpec::new(format!("http://{origin}"));
    backend.allow_private_addresses = true;
    let mut quiet = backend.clone();
    quiet.forward_interim_responses = false;
    let node = TestNode::start(vec![
        TestService::new("proxy", "proxy.test", rust_guest("caching-proxy"))
            .backend("origin", backend),
        TestService::new("quiet", "quiet.test", rust_guest("caching-proxy"))
            .backend("origin", quiet),
    ])
    .await;

    let mut client = tokio::net::TcpStream::connect(node.addr)
        .await
        .expect("connect");
    let ask = |path: &str| format!("GET {path} HTTP/1.1\r\nhost: proxy.test\r\n\r\n");
    client
        .write_all(ask("/hinted").as_bytes())
        .await
        .expect("write");
    // The hints arrive while the origin still holds the page back.
    let hints = read_until(&mut client, String::new(), |t| t.contains("\r\n\r\n")).await;
    assert!(hints.starts_with("HTTP/1.1 103 Early Hints\r\n"), "{hints}");
    assert!(
        hints.contains("\r\nlink: </style.css>; rel=preload; as=style\r\n"),
        "{hints}"
    );
    assert!(!hints.contains("x-hop"), "hop-by-hop fields stay: {hints}");
    assert!(!hints.contains("content-length"), "a 1xx has none: {hints}");
    release.notify_one();
    let text = read_until(&mut client, hints, has_whole_response).await;
    let page = text.find("HTTP/1.1 200 OK\r\n").expect(&text);
    assert_eq!(text.matches(" 103 ").count(), 1, "{text}");
    assert!(!text[page..].contains("link:"), "{text}");
    assert!(text.ends_with("/hinted"), "{text}");

    // The same connection goes on: a page without hints, then the stored
    // hinted one, served without its hints or their fields.
    client
        .write_all(ask("/plain").as_bytes())
        .await
        .expect("write");
    let text = read_until(&mut client, String::new(), has_whole_response).await;
    assert!(
        text.starts_with("HTTP/1.1 200 OK\r\n") && text.ends_with("/plain"),
        "{text}"
    );
    client
        .write_all(ask("/hinted").as_bytes())
        .await
        .expect("write");
    let text = read_until(&mut client, String::new(), has_whole_response).await;
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(
        !text.contains("link:") && text.ends_with("/hinted"),
        "{text}"
    );
    assert_eq!(
        seen.lock()
            .expect("log")
            .iter()
            .filter(|p| *p == "/hinted")
            .count(),
        1,
        "the second was a hit"
    );

    // HTTP/1.0: no 1xx (RFC 9110 15.2).
    let (text, _) = edge_tests::client::raw(
        node.addr,
        b"GET /hinted-1.0 HTTP/1.0\r\nhost: proxy.test\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(text.starts_with("HTTP/1.0 200 OK\r\n"), "{text}");
    assert!(!text.contains(" 103 "), "{text}");
    // A backend whose hints are not for clients.
    let (text, _) = edge_tests::client::raw(
        node.addr,
        b"GET /hinted-quiet HTTP/1.1\r\nhost: quiet.test\r\nconnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    // HTTP/2 cannot carry one: the response alone.
    let reply = send(
        node.addr,
        Protocol::Http2,
        request("GET", "proxy.test", "/hinted-h2", Bytes::new()),
    )
    .await;
    assert_eq!((reply.status, reply.text().as_str()), (200, "/hinted-h2"));
    node.shutdown().await;
}

/// A purge applied while a fill is at the origin keeps what the fill
/// brings back out of the cache (the client still gets it): it may be the
/// very content the purge was for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_during_a_fill_keeps_the_fetched_response_out_of_the_cache() {
    let origin = TestOrigin::start(|seen, n| {
        let answer = Answer::ok(format!("{} {n}", seen.path))
            .header("cache-control", "max-age=300")
            .header("surrogate-key", "slow");
        if n == 1 {
            answer.delay(Duration::from_millis(500))
        } else {
            answer
        }
    })
    .await;
    let node = proxy_node(&origin).await;
    let cache = node.node().cache();
    for path in ["/by-url", "/by-tag"] {
        let addr = node.addr;
        let fill = tokio::spawn(async move { get(addr, "proxy.test", path).await.text() });
        let started = std::time::Instant::now();
        while origin.count(path) == 0 {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the fill never reached the origin"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if path == "/by-url" {
            cache.purge_url("proxy", &format!("{}{path}", origin.url()), PurgeMode::Hard);
        } else {
            cache.purge_surrogate_key("proxy", "slow", PurgeMode::Hard);
        }
        assert_eq!(
            fill.await.expect("fill"),
            format!("{path} 1"),
            "the client gets it"
        );
        assert_eq!(
            get(node.addr, "proxy.test", path).await.text(),
            format!("{path} 2"),
            "not stored: fetched again"
        );
        assert_eq!(
            get(node.addr, "proxy.test", path).await.text(),
            format!("{path} 2")
        );
    }
    node.shutdown().await;
}
