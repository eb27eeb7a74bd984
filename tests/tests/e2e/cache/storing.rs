//! What is stored and served from the edge cache, and what is not.

use super::*;

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
        clients.push(tokio::spawn(
            async move { proxy_get(&node, "/collapse").await },
        ));
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

    let first = proxy_get(&node, "/fresh").await;
    assert_eq!(first.text(), "/fresh 1");
    assert_eq!(first.header("age"), None, "a miss has no Age");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = proxy_get(&node, "/fresh").await;
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
            let reply = proxy_get(&node, path).await;
            assert_eq!(reply.text(), format!("{path} {n}"), "{path} was shared");
        }
        assert_eq!(origin.count(path), 3, "{path}");
    }
    let cookie = proxy_get(&node, "/cookie").await;
    assert_eq!(cookie.header("set-cookie"), Some("session=secret"));
}

#[tokio::test]
async fn vary_keeps_variants_apart() {
    let origin = TestOrigin::start(|seen, _| {
        let language = seen.header("accept-language").unwrap_or("none");
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

    assert_eq!(proxy_get(&node, "/plain").await.text(), "plain 1");
    let authorized = get_with(&node, "/plain", &[("authorization", "Bearer a")]).await;
    assert_eq!(authorized.text(), "plain 2");
    assert_eq!(origin.count("/plain"), 2);

    assert_eq!(proxy_get(&node, "/public").await.text(), "public 1");
    let authorized = get_with(&node, "/public", &[("authorization", "Bearer a")]).await;
    assert_eq!(authorized.text(), "public 1");
    assert_eq!(origin.count("/public"), 1);
}

#[tokio::test]
async fn the_rewrite_and_headers_pass_through() {
    let origin = TestOrigin::start(|seen, _| {
        let custom = seen.header("x-custom").unwrap_or("");
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
        seen.header("host"),
        Some(origin.addr.to_string().as_str()),
        "the origin gets the backend's host, not the guest's authority"
    );
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
            let reply = proxy_get(&node, path).await;
            assert_eq!(reply.status, 200);
            assert_eq!(reply.header("cdn-cache-control"), None, "{path}");
            assert_eq!(reply.header("surrogate-control"), None, "{path}");
        }
        assert_eq!(origin.count(path), origin_requests, "{path}");
    }
    // The client still sees the origin's Cache-Control.
    let reply = proxy_get(&node, "/cdn-longer").await;
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
        assert_eq!(proxy_get(&node, "/expires").await.status, 200);
        assert_eq!(proxy_get(&node, "/age").await.status, 200);
        assert_eq!(proxy_get(&node, "/huge-age").await.status, 200);
    }
    assert_eq!(origin.count("/huge-age"), 2, "an overflowing Age is stale");
    assert_eq!(origin.count("/expires"), 2, "a bad Expires is stale");
    assert_eq!(
        origin.count("/age"),
        1,
        "a bad Age leaves the response fresh"
    );
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
    let miss = proxy_get(&node, "/fresh").await;
    assert_eq!(
        status(&miss),
        ["origin-cache; hit", "edge; fwd=miss; stored; ttl=60"]
    );
    let hit = proxy_get(&node, "/fresh").await;
    let hit_status = status(&hit);
    assert_eq!(hit_status[0], "origin-cache; hit");
    assert!(
        hit_status[1].starts_with("edge; hit; ttl="),
        "{hit_status:?}"
    );
    let uncacheable = proxy_get(&node, "/plain").await;
    assert_eq!(status(&uncacheable), ["edge; fwd=miss"]);
    proxy_get(&node, "/again").await;
    let revalidated = proxy_get(&node, "/again").await;
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
