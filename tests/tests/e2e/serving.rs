//! Requests reach the right tenant's guest and come back intact.

use bytes::Bytes;
use edge_tests::client::{self, Protocol, Reply, get, request, send};
use edge_tests::guests::rust_guest;
use edge_tests::node::{TestNode, TestService};

async fn two_tenants() -> TestNode {
    TestNode::start(vec![
        TestService::example("hello", "hello"),
        TestService::example("echo", "echo").domain("*.echo.test"),
    ])
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_answers_on_its_domain_with_a_request_id() {
    let node = two_tenants().await;
    let reply = get(node.addr, "hello.test", "/").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "hello from the edge\n");
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    let id = reply.header("x-request-id").expect("request id");
    assert_eq!(id.len(), 20);
    let second = get(node.addr, "hello.test", "/").await;
    assert_ne!(second.header("x-request-id"), Some(id), "ids are unique");
}

/// Asserts that `reply` is the echo guest's account of `method path` for
/// echo.test with `body`.
#[track_caller]
fn assert_echoed(reply: &Reply, method: &str, path: &str, body: &str) {
    assert_eq!(reply.status, 200);
    let text = reply.text();
    let head = format!("method: {method}\npath: {path}\nauthority: echo.test\n");
    assert!(text.starts_with(&head), "{text}");
    let tail = format!("body-bytes: {}\n\n{body}", body.len());
    assert!(text.ends_with(&tail), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_sees_method_path_headers_and_body() {
    let node = two_tenants().await;
    let req = http::Request::builder()
        .method("PUT")
        .uri("/items/42?color=blue")
        .header("host", "echo.test")
        .header("x-tenant-header", "kept")
        .body(http_body_util::Full::new(Bytes::from_static(
            b"payload bytes",
        )))
        .expect("request");
    let reply = send(node.addr, Protocol::Http1, req).await;
    assert_echoed(&reply, "PUT", "/items/42?color=blue", "payload bytes");
    let text = reply.text();
    assert!(text.contains("header: x-tenant-header: kept\n"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_spellings_and_wildcards_reach_the_same_service() {
    let node = two_tenants().await;
    for host in [
        "echo.test",
        "ECHO.Test",
        "echo.test.",
        "echo.test:8080",
        "api.echo.test",
        "a.b.echo.test",
    ] {
        let reply = get(node.addr, host, "/spelling").await;
        assert_eq!(reply.status, 200, "{host}");
        assert!(
            reply.text().starts_with("method: GET\npath: /spelling\n"),
            "{host}: {}",
            reply.text()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_host_gets_421_and_names_no_internals() {
    let node = two_tenants().await;
    for host in ["nobody.test", "echo.test.evil", "hello.test.echo"] {
        let reply = get(node.addr, host, "/").await;
        assert_eq!(reply.status, 421, "{host}");
        assert_eq!(reply.header("edge-error"), Some("unknown-host"));
        let request_id = reply
            .header("x-request-id")
            .expect("request id")
            .to_string();
        assert_eq!(
            reply.text(),
            format!(
                "421 Misdirected Request: no service is configured for this host\nrequest-id: {request_id}\n"
            )
        );
    }
    assert_eq!(get(node.addr, "hello.test", "/").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_without_host_gets_400() {
    let node = two_tenants().await;
    let (reply, _) = client::raw(
        node.addr,
        b"GET / HTTP/1.0\r\n\r\n",
        std::time::Duration::from_secs(5),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.0 400"), "{reply}");
    assert!(reply.contains("edge-error: missing-host"), "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_body_arrives_whole_and_in_order() {
    let node = TestNode::start_examples(&[("stream", "streaming")]).await;
    for protocol in [Protocol::Http1, Protocol::Http2] {
        let reply = send(
            node.addr,
            protocol,
            request("GET", "stream.test", "/?chunks=64&size=4096", Bytes::new()),
        )
        .await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body_error, None);
        assert_eq!(reply.body.len(), 64 * 4096);
        for (i, chunk) in reply.body.chunks(4096).enumerate() {
            let letter = b'a' + (i % 26) as u8;
            assert!(
                chunk.iter().all(|&b| b == letter),
                "chunk {i} over {protocol:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_prior_knowledge_reaches_the_same_guests() {
    let node = two_tenants().await;
    let reply = send(
        node.addr,
        Protocol::Http2,
        request("POST", "echo.test", "/h2", "over h2"),
    )
    .await;
    assert_echoed(&reply, "POST", "/h2", "over h2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standard_component_without_the_sdk_runs_unchanged() {
    let node = TestNode::start_examples(&[("plain", "plain-wasi")]).await;
    let reply = get(node.addr, "plain.test", "/std?x=1").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "plain wasi component at /std?x=1\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_guest_gets_500_and_everyone_else_is_served() {
    let node = TestNode::start_examples(&[("buggy", "panic"), ("hello", "hello")]).await;
    for _ in 0..3 {
        let reply = get(node.addr, "buggy.test", "/7").await;
        reply.assert_edge_error(500, "guest-trap");
        assert!(
            !reply.text().contains("panicked"),
            "no internals leak: {}",
            reply.text()
        );
        assert_eq!(get(node.addr, "hello.test", "/").await.status, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_grants_no_environment_files_sockets_or_network() {
    let node = TestNode::start_examples(&[("caps", "capabilities")]).await;
    let reply = get(node.addr, "caps.test", "/").await;
    assert_eq!(reply.status, 200);
    let text = reply.text();
    assert!(text.contains("env-vars: 0\n"), "{text}");
    assert!(text.contains("args: 0\n"), "{text}");
    assert!(text.contains("filesystem: denied"), "{text}");
    assert!(text.contains("tcp: denied"), "{text}");
    assert!(
        text.contains("http: denied (ErrorCode::HttpRequestDenied)"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_mode_catch_all_answers_any_host() {
    let node = TestNode::start(vec![TestService::new("local", "*", rust_guest("hello"))]).await;
    for host in ["localhost", "anything.example", "127.0.0.1:9"] {
        assert_eq!(
            get(node.addr, host, "/").await.text(),
            "hello from the edge\n",
            "{host}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_round_trips_a_1_mib_body_on_both_protocols() {
    // The point is the round trip, not the budget: copying 2 MiB through a
    // debug-built node on a loaded test machine can take more than 50 ms.
    let node = TestNode::start(vec![
        TestService::example("echo", "echo").limits(|l| l.cpu_budget_ms = 2_000),
    ])
    .await;
    let body: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    for protocol in [Protocol::Http1, Protocol::Http2] {
        let reply = send(
            node.addr,
            protocol,
            request("POST", "echo.test", "/big", body.clone()),
        )
        .await;
        assert_eq!(reply.status, 200, "{protocol:?}");
        assert_eq!(reply.body_error, None);
        let marker = b"body-bytes: 1048576\n\n";
        let start = reply
            .body
            .windows(marker.len())
            .position(|w| w == marker)
            .expect("echo header")
            + marker.len();
        assert!(
            reply.body[start..] == body[..],
            "{protocol:?}: the body came back intact"
        );
    }
}
