//! Protocol and admission limits: each refused with its documented status
//! before any guest runs.

use std::time::Duration;

use bytes::Bytes;
use edge_tests::client::{self, Protocol, get, request, send};
use edge_tests::guests::rust_guest;
use edge_tests::node::{TestNode, TestService};

async fn echo_node() -> TestNode {
    TestNode::start(vec![TestService::new(
        "echo",
        "echo.test",
        rust_guest("echo"),
    )])
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uri_over_8_kib_gets_414_on_both_protocols() {
    let node = echo_node().await;
    let long_path = format!("/{}", "a".repeat(8 * 1024));
    for protocol in [Protocol::Http1, Protocol::Http2] {
        let reply = send(
            node.addr,
            protocol,
            request("GET", "echo.test", &long_path, Bytes::new()),
        )
        .await;
        assert_eq!(reply.status, 414, "{protocol:?}");
        assert_eq!(reply.header("edge-error"), Some("uri-too-long"));
        let just_fits = format!("/{}", "a".repeat(8 * 1024 - 1 - "echo.test".len()));
        let reply = send(
            node.addr,
            protocol,
            request("GET", "echo.test", &just_fits, Bytes::new()),
        )
        .await;
        assert_eq!(
            reply.status, 200,
            "{protocol:?}: a URI at the limit is served"
        );
    }
}

async fn echo_with_body_limit(max_request_body_bytes: u64) -> TestNode {
    TestNode::start(vec![
        TestService::new("echo", "echo.test", rust_guest("echo"))
            .limits(|l| l.max_request_body_bytes = max_request_body_bytes),
    ])
    .await
}

fn with_headers(count: usize, value_len: usize) -> http::Request<http_body_util::Full<Bytes>> {
    let mut req = request("GET", "echo.test", "/", Bytes::new());
    for i in 0..count {
        req.headers_mut().insert(
            http::HeaderName::try_from(format!("x-h{i}")).expect("name"),
            http::HeaderValue::try_from("v".repeat(value_len)).expect("value"),
        );
    }
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_than_100_header_fields_get_431_on_both_protocols() {
    let node = echo_node().await;
    for protocol in [Protocol::Http1, Protocol::Http2] {
        // With `host` that is 101 fields.
        let reply = send(node.addr, protocol, with_headers(100, 1)).await;
        assert_eq!(reply.status, 431, "{protocol:?}");
        let reply = send(node.addr, protocol, with_headers(99, 1)).await;
        assert_eq!(reply.status, 200, "{protocol:?}: 100 fields are accepted");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_block_over_64_kib_gets_431_on_http1() {
    let node = echo_node().await;
    let reply = send(node.addr, Protocol::Http1, with_headers(20, 4 * 1024)).await;
    assert_eq!(reply.status, 431);
    let reply = send(node.addr, Protocol::Http1, with_headers(10, 4 * 1024)).await;
    assert_eq!(reply.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_block_over_64_kib_is_refused_on_http2() {
    let node = echo_node().await;
    let stream = tokio::net::TcpStream::connect(node.addr)
        .await
        .expect("connect");
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("handshake");
    tokio::spawn(connection);
    // The server advertises its limit in SETTINGS; the request is refused
    // whether the client or the server enforces it.
    let refused = match sender.send_request(with_headers(20, 4 * 1024)).await {
        Ok(response) => response.status() == 431,
        Err(_) => true,
    };
    assert!(refused);
    assert_eq!(get(node.addr, "echo.test", "/").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_body_over_the_limit_gets_413_before_the_guest_runs() {
    let node = echo_with_body_limit(1024).await;
    let reply = send(
        node.addr,
        Protocol::Http1,
        request("POST", "echo.test", "/", vec![b'x'; 1025]),
    )
    .await;
    assert_eq!(reply.status, 413);
    assert_eq!(reply.header("edge-error"), Some("body-too-large"));
    let reply = send(
        node.addr,
        Protocol::Http1,
        request("POST", "echo.test", "/", vec![b'x'; 1024]),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert!(reply.text().contains("body-bytes: 1024\n"));
    assert_eq!(
        node.metric("edge_limit_refusals_total{limit=\"body-too-large\"}")
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_body_over_the_limit_fails_the_guests_read() {
    let node = echo_with_body_limit(1024).await;
    // Chunked (no content-length): the limit is found while streaming, and
    // the guest sees its read fail.
    let raw = "POST / HTTP/1.1\r\nhost: echo.test\r\ntransfer-encoding: chunked\r\n\r\n\
               800\r\n"
        .to_string()
        + &"y".repeat(0x800)
        + "\r\n0\r\n\r\n";
    let (reply, _) = client::raw(node.addr, raw.as_bytes(), Duration::from_secs(5)).await;
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
}

/// A request to the streaming guest that stays in flight for about 3 s,
/// on a connection held open meanwhile.
fn hold_in_flight(addr: std::net::SocketAddr, host: &str) -> tokio::task::JoinHandle<String> {
    let request = format!("GET /?chunks=60&size=10&delay_ms=50 HTTP/1.1\r\nHost: {host}\r\n\r\n");
    tokio::spawn(async move {
        client::raw(addr, request.as_bytes(), Duration::from_secs(4))
            .await
            .0
    })
}

async fn until_in_flight(node: &TestNode, count: f64) {
    let started = std::time::Instant::now();
    while node.metric("edge_in_flight_requests").await < count {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never {count} in flight"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenant_at_its_in_flight_bound_gets_503_and_others_are_served() {
    let mut config = edge_config::NodeConfig::default();
    config.http.max_in_flight_requests_per_tenant = 2;
    let node = TestNode::start_with(
        config,
        vec![
            TestService::new("slow", "slow.test", rust_guest("streaming")).tenant("acme"),
            TestService::new("hello", "hello.test", rust_guest("hello")).tenant("acme"),
            TestService::new("other", "other.test", rust_guest("hello")).tenant("globex"),
        ],
    )
    .await;
    let held = [
        hold_in_flight(node.addr, "slow.test"),
        hold_in_flight(node.addr, "slow.test"),
    ];
    until_in_flight(&node, 2.0).await;

    // The same tenant's other service is over the bound too.
    let reply = get(node.addr, "hello.test", "/").await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.header("edge-error"), Some("tenant-overloaded"));
    assert_eq!(reply.header("retry-after"), Some("1"));
    // Another tenant is not.
    let reply = get(node.addr, "other.test", "/").await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        node.metric("edge_limit_refusals_total{limit=\"tenant-overloaded\"}")
            .await,
        1.0
    );
    for held in held {
        let answer = held.await.expect("held request");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    let reply = get(node.addr, "hello.test", "/").await;
    assert_eq!(reply.status, 200, "the bound frees when requests finish");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_over_the_node_bound_gets_503_and_is_closed() {
    let node = hello_node(|http| {
        http.max_connections = 2;
    })
    .await;
    let idle = [
        tokio::net::TcpStream::connect(node.addr)
            .await
            .expect("first"),
        tokio::net::TcpStream::connect(node.addr)
            .await
            .expect("second"),
    ];
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (answer, closed) = client::raw(
        node.addr,
        b"GET / HTTP/1.1\r\nHost: hello.test\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("retry-after: 1"), "{answer}");
    assert!(answer.contains("edge-error: overloaded"), "{answer}");
    assert!(closed, "the connection is closed after the answer");
    drop(idle);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(get(node.addr, "hello.test", "/").await.status, 200);
    node.shutdown().await;
}

/// Waits until the server closes `stream` (read gives 0 or an error) or
/// `within` passes; returns whether it closed and how long that took.
async fn closed_within(stream: &mut tokio::net::TcpStream, within: Duration) -> (bool, Duration) {
    let started = std::time::Instant::now();
    let (_, closed) = client::read_until_closed(stream, within).await;
    (closed, started.elapsed())
}

/// Connections that send nothing, or only part of an HTTP/2 preface, are
/// closed at the first-request deadline (`http.header_read_timeout_ms`)
/// and give their slots back: with `max_connections = 2`, two silent
/// connections no longer lock every client out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed_at_the_first_request_deadline() {
    use tokio::io::AsyncWriteExt;
    let node = hello_node(|http| {
        http.max_connections = 2;
        http.header_read_timeout_ms = 500;
    })
    .await;
    let mut silent = tokio::net::TcpStream::connect(node.addr)
        .await
        .expect("silent");
    let mut preface = tokio::net::TcpStream::connect(node.addr)
        .await
        .expect("preface");
    preface.write_all(b"PRI * HT").await.expect("write");
    for stream in [&mut silent, &mut preface] {
        let (closed, took) = closed_within(stream, Duration::from_secs(5)).await;
        assert!(closed, "closed");
        assert!(took < Duration::from_secs(2), "closed after {took:?}");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(get(node.addr, "hello.test", "/").await.status, 200);
    assert!(
        node.metric("edge_limit_refusals_total{limit=\"first-request-timeout\"}")
            .await
            >= 2.0
    );
    node.shutdown().await;
}

/// An HTTP/2 connection with no stream open for `http.keep_alive_idle_ms`
/// gets GOAWAY and is closed, though it answers every ping; so does an idle
/// HTTP/1.1 keep-alive connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_after_the_keep_alive_idle_time() {
    let node = hello_node(|http| {
        http.keep_alive_idle_ms = 400;
    })
    .await;
    // h2c with prior knowledge: one request, then nothing.
    let stream = tokio::net::TcpStream::connect(node.addr)
        .await
        .expect("connect");
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("h2 handshake");
    let started = std::time::Instant::now();
    let driver = tokio::spawn(connection);
    let response = sender
        .send_request(request("GET", "hello.test", "/", ""))
        .await
        .expect("response");
    assert_eq!(response.status(), 200);
    drop(response);
    let ended = tokio::time::timeout(Duration::from_secs(5), driver).await;
    assert!(
        ended.is_ok(),
        "the node closed the idle h2 connection (GOAWAY)"
    );
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert!(sender.ready().await.is_err(), "no new stream after GOAWAY");

    // HTTP/1.1 keep-alive: one request, then idle.
    let mut h1 = tokio::net::TcpStream::connect(node.addr)
        .await
        .expect("connect");
    {
        use tokio::io::AsyncWriteExt;
        h1.write_all(b"GET / HTTP/1.1\r\nHost: hello.test\r\n\r\n")
            .await
            .expect("write");
    }
    let (closed, _) = closed_within(&mut h1, Duration::from_secs(5)).await;
    assert!(closed, "the idle HTTP/1.1 connection is closed");
    node.shutdown().await;
}

/// A node serving `hello.test` with the hello guest, its HTTP limits
/// changed by `change`.
async fn hello_node(change: impl FnOnce(&mut edge_config::HttpLimits)) -> TestNode {
    let mut config = edge_config::NodeConfig::default();
    change(&mut config.http);
    TestNode::start_with(
        config,
        vec![TestService::new("hello", "hello.test", rust_guest("hello"))],
    )
    .await
}
