//! TLS termination: the certificate picked by SNI, both protocols by ALPN,
//! the default certificate, resumption, and the handshake timeout. `curl`
//! is the independent client; the in-process client is rustls + hyper.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use edge_config::NodeConfig;
use edge_tests::client::{Protocol, Reply, request, send_over};
use edge_tests::guests::rust_guest;
use edge_tests::h3::H3Request;
use edge_tests::node::{TestNode, TestService};
use edge_tests::tls::{TestCertificate, TlsClient};

const HELLO: &str = "hello from the edge\n";

struct TwoServices {
    node: TestNode,
    shop: TestCertificate,
    blog: TestCertificate,
}

/// `hello` on shop.tls.test and `echo` on blog.tls.test (and any name under
/// it), each with its own certificate, on a node whose default config
/// `change` adjusts.
async fn two_services(change: impl FnOnce(&mut NodeConfig)) -> TwoServices {
    let shop = TestCertificate::generate(&["shop.tls.test"]);
    let blog = TestCertificate::generate(&["blog.tls.test", "*.blog.tls.test"]);
    let mut config = NodeConfig::default();
    change(&mut config);
    let node = TestNode::start_tls(
        config,
        vec![
            TestService::new("hello", "shop.tls.test", rust_guest("hello"))
                .certificate(shop.files.clone()),
            TestService::new("echo", "blog.tls.test", rust_guest("echo"))
                .domain("*.blog.tls.test")
                .certificate(blog.files.clone()),
        ],
    )
    .await;
    TwoServices { node, shop, blog }
}

impl TwoServices {
    /// `GET /` for shop.tls.test over HTTP/3, trusting shop's certificate.
    fn shop_over_h3(&self) -> H3Request<'_> {
        let h3 = self.node.h3_addr.expect("HTTP/3");
        H3Request::get(h3, "shop.tls.test", &self.shop.pem)
    }
}

/// Asserts that `reply` is the hello guest's whole answer.
#[track_caller]
fn assert_hello(reply: &Reply) {
    assert_eq!((reply.status, reply.text().as_str()), (200, HELLO));
}

/// Runs curl against the node's TLS port with `name` resolved to loopback;
/// returns (exit code, stdout).
async fn curl(tls: SocketAddr, name: &str, ca: &TestCertificate, args: &[&str]) -> (i32, String) {
    let ca_file = ca.files.cert.to_string_lossy().into_owned();
    let port = tls.port();
    let output = tokio::process::Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "10"])
        .args(["--cacert", &ca_file])
        .args(["--resolve", &format!("{name}:{port}:127.0.0.1")])
        .args(args)
        .arg(format!("https://{name}:{port}/"))
        .output()
        .await
        .expect("curl runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_gets_each_services_certificate_by_sni_on_http1_and_http2() {
    let services = two_services(|_| {}).await;
    let tls = services.node.tls_addr.expect("TLS listener");
    let version = ["--write-out", "\n%{http_version}"];

    // Verification against each service's own certificate only succeeds if
    // SNI picked that certificate.
    let cases = [
        ("shop.tls.test", &services.shop, "--http1.1", HELLO, "1.1"),
        ("shop.tls.test", &services.shop, "--http2", HELLO, "2"),
        (
            "api.blog.tls.test",
            &services.blog,
            "--http2",
            "authority: api.blog.tls.test",
            "2",
        ),
    ];
    for (host, certificate, protocol, says, version_seen) in cases {
        let (code, out) = curl(
            tls,
            host,
            certificate,
            &[&[protocol][..], &version].concat(),
        )
        .await;
        assert_eq!(code, 0, "{host} {protocol}: {out}");
        assert!(out.contains(says), "{host} {protocol}: {out}");
        assert!(
            out.ends_with(&format!("\n{version_seen}")),
            "{host} {protocol}: {out}"
        );
    }

    // The other service's certificate does not verify: curl refuses (60).
    let (code, _) = curl(tls, "shop.tls.test", &services.blog, &[]).await;
    assert_eq!(code, 60, "shop must not be served blog's certificate");
    services.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_clients_negotiate_h2_and_http1_and_resume_sessions() {
    let services = two_services(|_| {}).await;
    let tls = services.node.tls_addr.expect("TLS listener");

    let client = TlsClient::trusting(&services.shop.pem);
    let (reply, first) = client.get(tls, "shop.tls.test", "/").await;
    assert_hello(&reply);
    assert_eq!(first.alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(first.version, Some(rustls::ProtocolVersion::TLSv1_3));
    assert!(!first.resumed);
    let (reply, second) = client.get(tls, "shop.tls.test", "/").await;
    assert_eq!(reply.status, 200);
    assert!(second.resumed, "the second connection resumes the session");

    // HTTP/1.1 only, and TLS 1.2 only: both still served.
    let http1 = TlsClient::only(&services.shop.pem, Protocol::Http1);
    let (reply, handshake) = http1.get(tls, "shop.tls.test", "/").await;
    assert_hello(&reply);
    assert_eq!(handshake.alpn.as_deref(), Some(&b"http/1.1"[..]));
    let tls12 = TlsClient::with(&services.shop.pem, &[&rustls::version::TLS12], |_| {});
    let (reply, first) = tls12.get(tls, "shop.tls.test", "/").await;
    assert_eq!(reply.status, 200);
    assert_eq!(first.version, Some(rustls::ProtocolVersion::TLSv1_2));
    let (_, second) = tls12.get(tls, "shop.tls.test", "/").await;
    assert!(second.resumed, "TLS 1.2 resumes from the session cache");
    services.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_sni_gets_the_default_certificate_and_is_still_routed_by_host() {
    let services = two_services(|_| {}).await;
    let tls = services.node.tls_addr.expect("TLS listener");
    // An IP address in the URL: curl sends no SNI. The default certificate
    // is not the service's, so skip verification and check the routing.
    let output = tokio::process::Command::new("curl")
        .args(["--silent", "--show-error", "--insecure", "--max-time", "10"])
        .args(["--header", "Host: shop.tls.test"])
        .arg(format!("https://{tls}/"))
        .output()
        .await
        .expect("curl runs");
    assert!(output.status.success(), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), HELLO);

    // Verified against the service's certificate, it fails: the default
    // certificate was served.
    let output = tokio::process::Command::new("curl")
        .args(["--silent", "--max-time", "10", "--cacert"])
        .arg(&services.shop.files.cert)
        .args(["--header", "Host: shop.tls.test"])
        .arg(format!("https://{tls}/"))
        .output()
        .await
        .expect("curl runs");
    assert_eq!(output.status.code(), Some(60));
    services.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_the_handshake_is_cut_at_the_timeout() {
    let services = two_services(|c| c.tls.handshake_timeout_ms = 300).await;
    let tls = services.node.tls_addr.expect("TLS listener");
    let started = Instant::now();
    // A TCP connection that sends half a ClientHello and then nothing.
    let (_, closed) =
        edge_tests::client::raw(tls, &[0x16, 0x03, 0x01], Duration::from_secs(5)).await;
    let took = started.elapsed();
    assert!(closed, "the node closes the connection");
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(2),
        "closed after {took:?}"
    );
    // Everyone else is still served.
    let (reply, _) = TlsClient::trusting(&services.shop.pem)
        .get(tls, "shop.tls.test", "/")
        .await;
    assert_eq!(reply.status, 200);
    services.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_that_does_not_match_its_service_stops_the_start() {
    let wrong = TestCertificate::generate(&["other.tls.test"]);
    let mut config = NodeConfig::default();
    config.tls.listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    let data = tempfile::tempdir().expect("dir");
    config.node.data_dir = data.path().to_path_buf();
    let node = edge_node::Node::new(&config).expect("node");
    let mut service =
        edge_config::ServiceConfig::new("hello", &["shop.tls.test"], rust_guest("hello"));
    service.certificate = Some(wrong.files.clone());
    let error = node
        .install_services(&[service], std::path::Path::new("."))
        .await
        .expect_err("refused");
    let message = format!("{error:#}");
    assert!(
        message.contains("the certificate does not cover \"shop.tls.test\""),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http3_serves_the_same_guests_with_the_same_certificates() {
    let services = two_services(|_| {}).await;
    let tls = services.node.tls_addr.expect("TLS listener");
    let h3 = services.node.h3_addr.expect("HTTP/3");
    assert_eq!(h3.port(), tls.port(), "HTTP/3 shares the TLS port");

    // TCP responses advertise it.
    let (reply, _) = TlsClient::trusting(&services.shop.pem)
        .get(tls, "shop.tls.test", "/")
        .await;
    assert_eq!(
        reply.header("alt-svc"),
        Some(format!("h3=\":{}\"; ma=86400", h3.port()).as_str())
    );

    let reply = services.shop_over_h3().send().await.expect("HTTP/3 GET");
    assert_hello(&reply);
    assert!(reply.header("x-request-id").is_some());

    // SNI picks blog's certificate; a request body streams to the guest.
    let body = Bytes::from(vec![b'x'; 300_000]);
    let reply = H3Request::get(h3, "api.blog.tls.test", &services.blog.pem)
        .post("/upload", body)
        .send()
        .await
        .expect("HTTP/3 POST");
    assert_eq!(reply.status, 200);
    let text = reply.text();
    assert!(text.contains("authority: api.blog.tls.test"), "{text}");
    assert!(text.contains("body-bytes: 300000"), "{text}");

    // Blog's certificate is not shop's: the handshake fails.
    let refused = H3Request::get(h3, "shop.tls.test", &services.blog.pem)
        .send()
        .await;
    assert!(refused.is_err(), "{refused:?}");
    services.node.shutdown().await;
}

/// A client whose request stream ends a moment after its head (a GET's FIN
/// a packet behind its HEADERS) gets the whole response, and its stream is
/// at most stopped with H3_NO_ERROR once the response is complete, never
/// reset with a code HTTP/3 does not define.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http3_a_request_that_ends_late_still_gets_its_whole_response() {
    let services = two_services(|_| {}).await;
    for _ in 0..3 {
        let (reply, finish) = services
            .shop_over_h3()
            .exchange(Duration::from_millis(150))
            .await
            .expect("HTTP/3 GET");
        assert_hello(&reply);
        assert_eq!(reply.body_error, None);
        assert!(
            matches!(finish, None | Some(Some(h3::error::Code::H3_NO_ERROR))),
            "the request stream was reset: {finish:?}"
        );
    }
    services.node.shutdown().await;
}

/// aioquic, from target/py-venv (scripts/install-toolchain.sh).
fn aioquic_python() -> std::path::PathBuf {
    edge_tests::guests::repo_root().join("target/py-venv/bin/python")
}

/// Runs the aioquic client against `h3`; returns its JSON answer.
async fn aioquic_get(
    h3: SocketAddr,
    name: &str,
    ca: &TestCertificate,
    extra_fields: usize,
) -> serde_json::Value {
    let script = edge_tests::guests::repo_root().join("tests/clients/h3_get.py");
    let output = tokio::process::Command::new(aioquic_python())
        .arg(&script)
        .args(["127.0.0.1", &h3.port().to_string(), name, "/"])
        .arg(&ca.files.cert)
        .arg(extra_fields.to_string())
        .output()
        .await
        .expect("python runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_independent_http3_client_fetches_from_the_node() {
    // Every new client must validate its address first (Retry): clients
    // still get through.
    let services = two_services(|c| c.http3.retry_above_connections = 0).await;
    let h3 = services.node.h3_addr.expect("HTTP/3");
    let answer = aioquic_get(h3, "shop.tls.test", &services.shop, 0).await;
    assert_eq!(answer["status"], 200, "{answer}");
    assert_eq!(answer["body"], HELLO);
    assert!(answer["headers"]["x-request-id"].is_string(), "{answer}");

    // More than 100 header fields get 431 here too. (A block over 64 KiB
    // cannot even be sent: aioquic honours the node's advertised
    // SETTINGS_MAX_FIELD_SECTION_SIZE.)
    let answer = aioquic_get(h3, "shop.tls.test", &services.shop, 120).await;
    assert_eq!(answer["status"], 431, "{answer}");
    assert_eq!(
        answer["headers"]["edge-error"], "too-many-headers",
        "{answer}"
    );
    services.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenant_at_its_connection_bound_gets_503_and_others_connect() {
    let services = two_services(|c| c.http.max_connections_per_tenant = 2).await;
    let tls = services.node.tls_addr.expect("TLS listener");
    let shop = TlsClient::only(&services.shop.pem, Protocol::Http1);
    let held = [
        shop.connect(tls, "shop.tls.test").await.expect("first"),
        shop.connect(tls, "shop.tls.test").await.expect("second"),
    ];
    // The third connection naming shop (a tenant of its own) is answered
    // 503 and closed; blog's are not affected.
    let (reply, _) = shop.get(tls, "shop.tls.test", "/").await;
    reply.assert_edge_error(503, "overloaded");
    assert_eq!(reply.header("retry-after"), Some("1"));
    let (reply, _) = TlsClient::trusting(&services.blog.pem)
        .get(tls, "blog.tls.test", "/")
        .await;
    assert_eq!(reply.status, 200);
    drop(held);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (reply, _) = shop.get(tls, "shop.tls.test", "/").await;
    assert_eq!(reply.status, 200, "the bound frees when connections close");
    services.node.shutdown().await;
}

/// A connection opened with one tenant's name, and so served that tenant's
/// certificate, never carries a request to another tenant's guest (421),
/// and a name routed to one tenant is never answered with another tenant's
/// certificate, even one whose wildcard covers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_for_one_tenant_never_reaches_another_tenants_guest() {
    let alpha = TestCertificate::generate(&["*.alpha.tls.test"]);
    let node = TestNode::start_tls(
        NodeConfig::default(),
        vec![
            TestService::new("alpha", "*.alpha.tls.test", rust_guest("hello"))
                .certificate(alpha.files.clone()),
            // Another tenant's route under alpha's wildcard, as a node
            // config or a bad snapshot could hold.
            TestService::new("beta", "www.alpha.tls.test", rust_guest("echo"))
                .domain("beta.tls.test"),
        ],
    )
    .await;
    let tls = node.tls_addr.expect("TLS listener");
    let alpha_client = TlsClient::trusting(&alpha.pem);

    // Alpha's own name: alpha's certificate and guest.
    let (reply, _) = alpha_client.get(tls, "shop.alpha.tls.test", "/").await;
    assert_hello(&reply);
    // Beta's route under alpha's wildcard does not get alpha's certificate:
    // a client trusting alpha refuses the handshake.
    assert!(
        alpha_client
            .connect(tls, "www.alpha.tls.test")
            .await
            .is_err(),
        "beta's name was served alpha's certificate"
    );
    // On a connection made for alpha, a request for beta's host is 421.
    for protocol in [Protocol::Http1, Protocol::Http2] {
        let (stream, _) = TlsClient::only(&alpha.pem, protocol)
            .connect(tls, "shop.alpha.tls.test")
            .await
            .expect("TLS connect");
        let for_beta = request(
            "GET",
            "beta.tls.test",
            "https://beta.tls.test/",
            Bytes::new(),
        );
        let reply = send_over(stream, protocol, for_beta).await;
        assert_eq!(reply.status, 421, "{protocol:?}: {}", reply.text());
        assert_eq!(reply.header("edge-error"), Some("misdirected-request"));
    }
    node.shutdown().await;
}

/// An HTTP/3 request stream that declares a 1 GiB HEADERS frame is stopped
/// with H3_EXCESSIVE_LOAD at the frame's header: the client cannot make
/// the node take even 4 MiB of it (h3 alone would buffer the whole frame
/// before its field-section limit applies). The node serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http3_a_headers_frame_declaring_a_gibibyte_is_stopped_at_its_header() {
    let services = two_services(|_| {}).await;
    let h3 = services.node.h3_addr.expect("HTTP/3");
    let (endpoint, connection) = edge_tests::h3::connect(h3, "shop.tls.test", &services.shop.pem)
        .await
        .expect("QUIC connection");
    let (mut send, _recv) = connection.open_bi().await.expect("request stream");
    // HEADERS (type 0x01), length 2^30 as an 8-byte varint.
    let mut frame = vec![0x01];
    frame.extend_from_slice(&((1u64 << 30) | (0b11 << 62)).to_be_bytes());
    send.write_all(&frame).await.expect("frame header");
    let chunk = vec![0u8; 64 * 1024];
    let mut sent = 0usize;
    let stopped = tokio::time::timeout(Duration::from_secs(10), async {
        while sent < 4 * 1024 * 1024 {
            if let Err(e) = send.write_all(&chunk).await {
                return Some(e);
            }
            sent += chunk.len();
        }
        None
    })
    .await
    .expect("the node stops the stream or takes the bytes within 10 s");
    match stopped {
        Some(quinn::WriteError::Stopped(code)) => {
            assert_eq!(code.into_inner(), 0x0107, "H3_EXCESSIVE_LOAD");
        }
        other => panic!("not stopped after {sent} bytes: {other:?}"),
    }
    assert!(sent < 4 * 1024 * 1024, "stopped after {sent} bytes");
    endpoint.close(quinn::VarInt::from_u32(0), b"done");
    let reply = services.shop_over_h3().send().await.expect("HTTP/3 GET");
    assert_hello(&reply);
    services.node.shutdown().await;
}

/// HTTP/3 request bodies have the same between-bytes bound as HTTP/1.1 and
/// HTTP/2: a stream that stops sending in the middle of its body is cut at
/// `http.body_read_timeout_ms`, and the guest's read fails with
/// `connection-read-timeout` (the echo guest answers with it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http3_a_stalled_request_body_is_cut_at_the_body_read_timeout() {
    let services = two_services(|c| c.http.body_read_timeout_ms = 300).await;
    let h3 = services.node.h3_addr.expect("HTTP/3");
    let upload = H3Request::get(h3, "api.blog.tls.test", &services.blog.pem)
        .post("/upload", Bytes::from_static(b"the first bytes"));
    let started = Instant::now();
    let reply = tokio::time::timeout(Duration::from_secs(5), upload.send_stalled())
        .await
        .expect("answered within the bound")
        .expect("HTTP/3 exchange");
    let took = started.elapsed();
    assert!(
        reply.text().contains("connection read timeout"),
        "{}: {}",
        reply.status,
        reply.text()
    );
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "{took:?}"
    );
    services.node.shutdown().await;
}
