//! Protocol and admission limits: each refused with its documented status
//! before any guest runs.

use std::time::Duration;

use bytes::Bytes;
use edge_tests::client::{self, Protocol, get, h2_connection, request, send};
use edge_tests::eventually;
use edge_tests::node::{TestNode, TestService};
use tokio::net::TcpStream;

/// A whole HTTP/1.1 request for hello.test, for raw connections.
const GET_HELLO: &[u8] = b"GET / HTTP/1.1\r\nHost: hello.test\r\n\r\n";

async fn echo_node() -> TestNode {
    TestNode::start_examples(&[("echo", "echo")]).await
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
        TestService::example("echo", "echo")
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
    let (mut sender, _driver) = h2_connection(node.addr).await;
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
    let post = |size| {
        let body = vec![b'x'; size];
        send(
            node.addr,
            Protocol::Http1,
            request("POST", "echo.test", "/", body),
        )
    };
    post(1025).await.assert_edge_error(413, "body-too-large");
    let reply = post(1024).await;
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
    let in_flight = async || node.metric("edge_in_flight_requests").await >= count;
    let failure = format!("never {count} in flight");
    eventually(Duration::from_secs(10), &failure, in_flight).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenant_at_its_in_flight_bound_gets_503_and_others_are_served() {
    let mut config = edge_config::NodeConfig::default();
    config.http.max_in_flight_requests_per_tenant = 2;
    let node = TestNode::start_with(
        config,
        vec![
            TestService::example("slow", "streaming").tenant("acme"),
            TestService::example("hello", "hello").tenant("acme"),
            TestService::example("other", "hello").tenant("globex"),
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
    reply.assert_edge_error(503, "tenant-overloaded");
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
    let node = hello_node(|http| http.max_connections = 2).await;
    let idle = [
        TcpStream::connect(node.addr).await.expect("first"),
        TcpStream::connect(node.addr).await.expect("second"),
    ];
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (answer, closed) = client::raw(node.addr, GET_HELLO, Duration::from_secs(5)).await;
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
async fn closed_within(stream: &mut TcpStream, within: Duration) -> (bool, Duration) {
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
    let mut silent = TcpStream::connect(node.addr).await.expect("silent");
    let mut preface = TcpStream::connect(node.addr).await.expect("preface");
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
    let node = hello_node(|http| http.keep_alive_idle_ms = 400).await;
    // h2c with prior knowledge: one request, then nothing.
    let (mut sender, driver) = h2_connection(node.addr).await;
    let started = std::time::Instant::now();
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
    let mut h1 = TcpStream::connect(node.addr).await.expect("connect");
    {
        use tokio::io::AsyncWriteExt;
        h1.write_all(GET_HELLO).await.expect("write");
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
    TestNode::start_with(config, vec![TestService::example("hello", "hello")]).await
}

/// Over `http.max_connections`, an HTTP/2 connection gets 503 on its
/// stream and then GOAWAY, rather than 503 on every stream for as long as
/// the client likes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_connection_over_the_node_bound_gets_503_and_goaway() {
    let node = hello_node(|http| http.max_connections = 1).await;
    let held = TcpStream::connect(node.addr).await.expect("first");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (mut sender, driver) = h2_connection(node.addr).await;
    let response = sender
        .send_request(request("GET", "hello.test", "/", ""))
        .await
        .expect("response");
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["edge-error"], "overloaded");
    drop(response);
    let ended = tokio::time::timeout(Duration::from_secs(3), driver).await;
    assert!(ended.is_ok(), "GOAWAY and close after the 503");
    assert!(sender.ready().await.is_err(), "no new stream after GOAWAY");
    drop(held);
    node.shutdown().await;
}

/// A TCP connection from `local` (a loopback address) to `addr`.
async fn connect_from(local: &str, addr: std::net::SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{local}:0").parse().expect("address"))
        .expect("bind");
    socket.connect(addr).await.expect("connect")
}

/// One client address holds at most `http.max_connections_per_client`
/// connections: beyond it a new one is closed at once, before any
/// handshake, while other addresses are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_address_holds_at_most_its_connection_cap() {
    use tokio::io::AsyncWriteExt;
    let node = hello_node(|http| http.max_connections_per_client = 2).await;
    let held = [
        connect_from("127.0.0.1", node.addr).await,
        connect_from("127.0.0.1", node.addr).await,
    ];
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut third = connect_from("127.0.0.1", node.addr).await;
    let _ = third.write_all(GET_HELLO).await;
    let (answer, closed) = client::read_until_closed(&mut third, Duration::from_secs(2)).await;
    assert!(closed, "the third connection is closed");
    assert!(answer.is_empty(), "and gets no answer");
    assert_eq!(
        node.metric("edge_limit_refusals_total{limit=\"client-connections\"}")
            .await,
        1.0
    );
    // Another address is served meanwhile.
    let other = connect_from("127.0.0.2", node.addr).await;
    let reply = client::send_over(
        other,
        Protocol::Http1,
        request("GET", "hello.test", "/", ""),
    )
    .await;
    assert_eq!(reply.status, 200);
    // A slot given back is usable again.
    drop(held);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(get(node.addr, "hello.test", "/").await.status, 200);
    node.shutdown().await;
}

/// A request body that stops arriving while the guest reads it is cut after
/// `http.body_read_timeout_ms`, on HTTP/1.1 and HTTP/2, instead of holding
/// the guest until its wall time: the guest's read fails with
/// `connection-read-timeout` (the echo guest answers with that error; a
/// guest that fails instead gets the client a 408 `body-read-timeout`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_request_body_is_cut_at_the_body_read_timeout() {
    let mut config = edge_config::NodeConfig::default();
    config.http.body_read_timeout_ms = 300;
    let node = TestNode::start_with(config, vec![TestService::example("echo", "echo")]).await;
    // HTTP/1.1: 3 of 100 declared bytes, then nothing.
    let started = std::time::Instant::now();
    let (answer, _) = client::raw(
        node.addr,
        b"POST / HTTP/1.1\r\nHost: echo.test\r\nContent-Length: 100\r\n\r\nabc",
        Duration::from_secs(5),
    )
    .await;
    assert!(answer.contains("connection read timeout"), "{answer}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "{took:?}"
    );

    // HTTP/2: one DATA frame, then a stream that never ends.
    let (mut sender, _driver) = h2_connection(node.addr).await;
    let stalled = http::Request::builder()
        .method("POST")
        .uri("http://echo.test/")
        .body(StalledBody { sent: false })
        .expect("request");
    let response = tokio::time::timeout(Duration::from_secs(5), sender.send_request(stalled))
        .await
        .expect("answered within the bound")
        .expect("response");
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .expect("body")
        .to_bytes();
    assert!(
        String::from_utf8_lossy(&body).contains("connection read timeout"),
        "{body:?}"
    );
    node.shutdown().await;
}

/// A request body that sends three bytes and then never another, nor its end.
struct StalledBody {
    sent: bool,
}

impl hyper::body::Body for StalledBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        if self.sent {
            return std::task::Poll::Pending;
        }
        self.sent = true;
        std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(Bytes::from_static(
            b"abc",
        )))))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_module_cache_holds_no_more_than_its_entries() {
    let data = tempfile::tempdir().expect("dir");
    let mut config = edge_config::NodeConfig::default();
    config.node.data_dir = data.path().to_path_buf();
    config.sandbox.module_cache_entries = 1;
    let node = edge_node::Node::new(&config).expect("node");
    let guests = ["hello", "plain-wasi", "echo"];
    let services: Vec<_> = guests
        .iter()
        .map(|&name| {
            let domain = format!("{name}.test");
            edge_config::ServiceConfig::new(name, &[&domain], edge_tests::guests::rust_guest(name))
        })
        .collect();
    node.install_services(&services, data.path())
        .await
        .expect("installed");
    let ready = guests
        .iter()
        .map(|name| {
            node.router()
                .route(&format!("{name}.test"))
                .expect("routed")
                .module
        })
        .filter(|&module| node.modules().is_ready(module))
        .count();
    assert!(
        ready <= 1,
        "{ready} ready components, over module_cache_entries"
    );
}
