//! Protocol limits that must hold whatever a client sends: HTTP/2 settings
//! and the rapid-reset flood, request smuggling shapes on HTTP/1.1, and
//! oversized headers on every protocol.

use std::time::{Duration, Instant};

use bytes::Bytes;
use edge_tests::client::{Protocol, get, raw, request, send};
use edge_tests::eventually;
use edge_tests::node::{TestNode, TestService};
use tokio::net::TcpStream;

const HELLO: &str = "hello from the edge\n";

async fn hello_node() -> TestNode {
    TestNode::start_examples(&[("hello", "hello")]).await
}

fn h2_request() -> http::Request<()> {
    http::Request::builder()
        .uri("http://hello.test/")
        .body(())
        .expect("request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_settings_are_the_documented_limits() {
    let node = hello_node().await;
    let tcp = TcpStream::connect(node.addr).await.expect("connect");
    let (client, mut connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let mut client = client.ready().await.expect("ready");
    let (response, _) = client.send_request(h2_request(), true).expect("send");
    let response = tokio::select! {
        response = response => response.expect("response"),
        _ = &mut connection => panic!("connection ended"),
    };
    assert_eq!(response.status(), 200);
    // The server's SETTINGS have arrived with the response.
    assert_eq!(connection.max_concurrent_send_streams(), 100);
    node.shutdown().await;
}

/// One HTTP/2 frame: 9-byte header, then the payload.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(payload.len()).expect("small frame");
    let mut frame = length.to_be_bytes()[1..].to_vec();
    frame.extend_from_slice(&[kind, flags]);
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// `GET http://hello.test/` as HEADERS (END_STREAM | END_HEADERS) on
/// `stream`, then RST_STREAM(CANCEL) on it: one rapid-reset round.
fn request_and_reset(stream: u32) -> Vec<u8> {
    // HPACK: :method GET, :scheme http, :path / (static table), and
    // :authority as a literal without indexing.
    let mut block = vec![0x82, 0x86, 0x84, 0x01, 10];
    block.extend_from_slice(b"hello.test");
    let mut bytes = h2_frame(0x1, 0x5, stream, &block);
    bytes.extend(h2_frame(0x3, 0x0, stream, &8u32.to_be_bytes()));
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_rapid_reset_flood_is_cut_off_and_others_keep_being_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let node = hello_node().await;
    let tcp = TcpStream::connect(node.addr).await.expect("connect");
    let (mut reader, mut writer) = tcp.into_split();
    // The server's frames, until it closes: we look for its GOAWAY.
    let server_frames = tokio::spawn(async move {
        let mut bytes = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(30), reader.read_to_end(&mut bytes)).await;
        bytes
    });
    let flood = tokio::spawn(async move {
        let mut preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        preface.extend(h2_frame(0x4, 0x0, 0, &[]));
        writer.write_all(&preface).await.expect("preface");
        let mut sent = 0u32;
        // Up to 100 000 requests, each reset at once, 500 per write.
        while sent < 100_000 {
            let batch: Vec<u8> = (0..500)
                .flat_map(|i| request_and_reset(2 * (sent + i) + 1))
                .collect();
            if writer.write_all(&batch).await.is_err() {
                break;
            }
            sent += 500;
        }
        sent
    });

    // Meanwhile an ordinary client is answered, every time.
    let started = Instant::now();
    let mut answered = 0;
    while !flood.is_finished() || answered < 20 {
        let reply = get(node.addr, "hello.test", "/").await;
        assert_eq!((reply.status, reply.text().as_str()), (200, HELLO));
        answered += 1;
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "flood never contained"
        );
    }
    let sent = flood.await.expect("flood task");
    assert!(
        sent < 100_000,
        "the node took {sent} reset requests on one connection"
    );
    let frames = server_frames.await.expect("reader");
    // GOAWAY (type 7) with ENHANCE_YOUR_CALM (0xb) as its error code.
    let go_away = frames
        .windows(17)
        .any(|w| w[3] == 0x7 && w[13..17] == 0xbu32.to_be_bytes());
    assert!(
        go_away,
        "no GOAWAY(ENHANCE_YOUR_CALM) in {} bytes",
        frames.len()
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_smuggling_shapes_cannot_smuggle_a_request() {
    let node = TestNode::start_examples(&[("hello", "hello"), ("echo", "echo")]).await;
    // Two different lengths: refused by the node. A chunk size that is not
    // hex: the guest's body read fails, and it answers an error.
    let refused: [(&str, &[u8]); 2] = [
        (
            "two different Content-Lengths",
            b"POST / HTTP/1.1\r\nHost: hello.test\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        ),
        (
            "invalid chunked encoding",
            b"POST / HTTP/1.1\r\nHost: echo.test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        ),
    ];
    for (shape, bytes) in refused {
        let (answer, closed) = raw(node.addr, bytes, Duration::from_secs(5)).await;
        assert!(answer.starts_with("HTTP/1.1 4"), "{shape}: {answer:?}");
        assert_eq!(
            answer.matches("HTTP/1.1 ").count(),
            1,
            "{shape}: {answer:?}"
        );
        assert!(
            closed,
            "{shape}: the connection is closed after the refusal"
        );
    }
    // Content-Length with Transfer-Encoding: read as chunked (RFC 9112
    // 6.3), and the connection closes after the one response, so what a
    // Content-Length reader would take for a second request never runs.
    let smuggle = b"POST / HTTP/1.1\r\nHost: hello.test\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n\
        0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: hello.test\r\n\r\n";
    let (answer, closed) = raw(node.addr, smuggle, Duration::from_secs(5)).await;
    assert!(closed, "the connection is closed after the response");
    assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{answer:?}");
    assert!(answer.contains("connection: close"), "{answer:?}");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_get_431_on_http1_and_http2() {
    let node = hello_node().await;
    let big = "x".repeat(70 * 1024);
    for protocol in [Protocol::Http1, Protocol::Http2] {
        let mut req = request("GET", "hello.test", "/", Bytes::new());
        req.headers_mut()
            .insert("x-big", http::HeaderValue::from_str(&big).expect("value"));
        let reply = send(node.addr, protocol, req).await;
        assert_eq!(reply.status, 431, "{protocol:?}");
    }
    node.shutdown().await;
}

/// Writes a request head one byte every 100 ms, never finishing it; returns
/// how long until the node closed the connection, and what it answered.
async fn trickle<S>(mut stream: S) -> (Duration, String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let started = Instant::now();
    let head = b"GET / HTTP/1.1\r\nHost: hello.test\r\nX-Slow: ";
    let mut answer = Vec::new();
    for byte in head.iter().chain(std::iter::repeat(&b'a')) {
        if stream.write_all(&[*byte]).await.is_err() || stream.flush().await.is_err() {
            break;
        }
        let mut buf = [0u8; 1024];
        match tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
        assert!(started.elapsed() < Duration::from_secs(10), "never cut");
    }
    (
        started.elapsed(),
        String::from_utf8_lossy(&answer).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_trickling_its_header_is_cut_at_the_header_read_timeout_with_and_without_tls() {
    let certificate = edge_tests::tls::TestCertificate::generate(&["hello.test"]);
    let mut config = edge_config::NodeConfig::default();
    config.http.header_read_timeout_ms = 500;
    let node = TestNode::start_tls(
        config,
        vec![TestService::example("hello", "hello").certificate(certificate.files.clone())],
    )
    .await;

    let (took, _) = trickle(TcpStream::connect(node.addr).await.expect("connect")).await;
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(3),
        "cleartext: cut after {took:?}"
    );

    let client =
        edge_tests::tls::TlsClient::with(&certificate.pem, rustls::DEFAULT_VERSIONS, |c| {
            c.alpn_protocols = vec![b"http/1.1".to_vec()]
        });
    let tls = node.tls_addr.expect("TLS listener");
    let (stream, _) = client.connect(tls, "hello.test").await.expect("TLS");
    let (took, _) = trickle(stream).await;
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(3),
        "TLS: cut after {took:?}"
    );

    // A client that sends its head at once is served.
    assert_eq!(get(node.addr, "hello.test", "/").await.text(), HELLO);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_dropped_without_a_drain_closes_its_listeners() {
    let node = TestNode::start_examples(&[("hello", "hello")]).await;
    let (addr, admin) = (node.addr, node.admin_addr);
    assert_eq!(get(addr, "hello.test", "/").await.status, 200);
    drop(node);
    eventually(
        Duration::from_secs(5),
        "still listening after the node was dropped",
        async || {
            TcpStream::connect(addr).await.is_err() && TcpStream::connect(admin).await.is_err()
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_node_sends_http2_goaway_and_finishes_the_streams_in_flight() {
    let node = TestNode::start_examples(&[("stream", "streaming")]).await;
    let tcp = TcpStream::connect(node.addr).await.expect("connect");
    let (client, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let connection = tokio::spawn(connection);
    let mut client = client.ready().await.expect("ready");
    let request = http::Request::builder()
        .uri("http://stream.test/?chunks=20&size=1000&delay_ms=25")
        .body(())
        .expect("request");
    let (response, _) = client.send_request(request, true).expect("send");
    let response = response.await.expect("response head");
    assert_eq!(response.status(), 200);

    // The drain starts while the body is still streaming.
    let drain = tokio::spawn(async move { node.shutdown().await });
    let mut body = response.into_body();
    let mut received = 0;
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("the stream in flight is not cut");
        received += chunk.len();
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    assert_eq!(received, 20 * 1000);
    // The connection ends with the server's GOAWAY, not an error.
    let ended = tokio::time::timeout(Duration::from_secs(5), connection)
        .await
        .expect("the connection closes")
        .expect("task");
    assert!(ended.is_ok(), "{ended:?}");
    let report = drain.await.expect("drain");
    assert_eq!(report.cut_connections, 0);
}
