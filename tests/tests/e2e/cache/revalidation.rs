//! Stale responses: revalidated with the origin, served while it fails,
//! and never past what the origin's directives allow.

use super::*;

/// A request's headers, and the status, body and `Content-Range` it gets.
type Case = (
    &'static [(&'static str, &'static str)],
    u16,
    &'static str,
    Option<&'static str>,
);

#[tokio::test]
async fn a_stale_response_is_revalidated_with_a_304() {
    let origin = TestOrigin::start(|seen, n| {
        if seen.header("if-none-match") == Some("\"v1\"") {
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

    assert_eq!(proxy_get(&node, "/doc").await.text(), "version 1 (1)");
    let second = proxy_get(&node, "/doc").await;
    assert_eq!(second.status, 200);
    assert_eq!(second.text(), "version 1 (1)", "the stored body is served");
    assert_eq!(
        second.header("x-origin-says"),
        Some("still good"),
        "the 304 updates the stored headers"
    );
    let seen = origin.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].header("if-none-match"), Some("\"v1\""));
    assert_eq!(
        node.metric("edge_http_cache_requests_total{outcome=\"revalidated\"}")
            .await,
        1.0
    );
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
    assert_eq!(proxy_get(&node, "/r").await.text(), "0123456781");
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

    assert_eq!(proxy_get(&node, "/swr").await.text(), "swr 1");
    assert_eq!(proxy_get(&node, "/sie").await.text(), "sie good");
    tokio::time::sleep(Duration::from_millis(2100)).await;

    // Stale within stale-while-revalidate: served at once, refreshed behind.
    assert_eq!(proxy_get(&node, "/swr").await.text(), "swr 1");
    let mut refreshed = false;
    for _ in 0..50 {
        if proxy_get(&node, "/swr").await.text() == "swr 2" {
            refreshed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refreshed, "the background revalidation never landed");
    assert_eq!(origin.count("/swr"), 2);

    // The origin fails: the stale response is served instead of the 503.
    let reply = proxy_get(&node, "/sie").await;
    assert_eq!((reply.status, reply.text().as_str()), (200, "sie good"));
    assert_eq!(origin.count("/sie"), 2);
}

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
    let service =
        || TestService::example("proxy", "caching-proxy").backend("origin", backend.clone());
    let node = TestNode::start(vec![service()]).await;
    let mut no_default = edge_config::NodeConfig::default();
    no_default.cache.default_stale_if_error_secs = 0;
    let strict_node = TestNode::start_with(no_default, vec![service()]).await;

    let forbidden = ["/must", "/proxy", "/shared", "/off"];
    for path in forbidden.iter().chain(&["/default"]) {
        assert_eq!(proxy_get(&node, path).await.status, 200);
    }
    assert_eq!(proxy_get(&strict_node, "/default").await.status, 200);
    tokio::time::sleep(Duration::from_millis(2100)).await;

    // A 503: the stale response, saying so.
    mode.store(FAILING, Ordering::SeqCst);
    let stale = proxy_get(&node, "/default").await;
    assert_eq!((stale.status, stale.text().as_str()), (200, "/default 1"));
    let status = edge_status(&stale);
    assert!(
        status.starts_with("edge; fwd=stale; fwd-status=503; ttl=-"),
        "{status}"
    );
    for path in forbidden {
        let reply = proxy_get(&node, path).await;
        assert_eq!(reply.status, 503, "{path}: no stale use allowed");
    }
    let strict = proxy_get(&strict_node, "/default").await;
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
    let stale = proxy_get(&node, "/default").await;
    assert_eq!((stale.status, stale.text().as_str()), (200, "/default 1"));
    assert_ne!(proxy_get(&node, "/must").await.status, 200);

    // The origin is gone: connections are refused.
    origin.stop().await;
    let stale = proxy_get(&node, "/default").await;
    assert_eq!((stale.status, stale.text().as_str()), (200, "/default 1"));
    assert_eq!(
        edge_status(&stale).split("; ttl").next(),
        Some("edge; fwd=stale")
    );
    assert_ne!(proxy_get(&node, "/must").await.status, 200);
    node.shutdown().await;
    strict_node.shutdown().await;
}
