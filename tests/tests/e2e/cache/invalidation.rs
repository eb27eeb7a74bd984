//! What takes entries out: unsafe requests and purges, hard and soft.

use super::*;

#[tokio::test]
async fn a_successful_unsafe_request_invalidates_the_url() {
    let origin = TestOrigin::start(|seen, n| {
        Answer::ok(format!("{} {n}", seen.method)).header("cache-control", "max-age=60")
    })
    .await;
    let node = proxy_node(&origin).await;

    assert_eq!(proxy_get(&node, "/item").await.text(), "GET 1");
    assert_eq!(proxy_get(&node, "/item").await.text(), "GET 1");
    let post = send(
        node.addr,
        Protocol::Http1,
        request("POST", "proxy.test", "/item", "change"),
    )
    .await;
    assert_eq!(post.text(), "POST 2", "every method reaches the origin");
    assert_eq!(proxy_get(&node, "/item").await.text(), "GET 3");
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
        let current = seen.header("if-none-match") == Some("\"v1\"");
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
    let page = || proxy_get(&node, "/page");

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
        seen.last().and_then(|s| s.header("if-none-match")),
        Some("\"v1\""),
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
        edge_tests::eventually(
            Duration::from_secs(10),
            "the fill never reached the origin",
            async || origin.count(path) > 0,
        )
        .await;
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
            proxy_get(&node, path).await.text(),
            format!("{path} 2"),
            "not stored: fetched again"
        );
        assert_eq!(proxy_get(&node, path).await.text(), format!("{path} 2"));
    }
    node.shutdown().await;
}
