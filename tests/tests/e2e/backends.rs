//! Backend fetch: only named backends, only public addresses unless
//! allowed, limits per execution, timeouts with the matching error code.

use std::time::{Duration, Instant};

use edge_config::BackendSpec;
use edge_tests::client::{Reply, get};
use edge_tests::node::{TestNode, TestService};
use edge_tests::origin::{Answer, TestOrigin};

/// A backend for a loopback test origin, which the operator allows.
pub fn loopback_backend(origin: &TestOrigin) -> BackendSpec {
    let mut backend = BackendSpec::new(origin.url());
    backend.allow_private_addresses = true;
    backend
}

async fn probe_node(backend: BackendSpec) -> TestNode {
    TestNode::start(vec![
        TestService::example("probe", "backend-probe").backend("origin", backend),
    ])
    .await
}

/// What the probe guest on probe.test answers to `GET path`: its report of
/// the backend requests `path` asks it to make.
async fn probe(node: &TestNode, path: &str) -> Reply {
    get(node.addr, "probe.test", path).await
}

fn lines(body: &str) -> Vec<&str> {
    body.lines().collect()
}

#[tokio::test]
async fn a_fetch_storm_stops_at_the_per_execution_limit() {
    let origin =
        TestOrigin::start(|_, _| Answer::ok("x").header("cache-control", "no-store")).await;
    let node = probe_node(loopback_backend(&origin)).await;

    let reply = probe(&node, "/fetch?backend=origin&path=/storm&count=100").await;
    assert_eq!(reply.status, 200);
    let body = reply.text();
    let ok = lines(&body)
        .iter()
        .filter(|l| l.starts_with("ok 200"))
        .count();
    let refused: Vec<_> = lines(&body)
        .into_iter()
        .filter(|l| l.starts_with("err"))
        .collect();
    assert_eq!(ok, 32, "{body}");
    assert_eq!(refused.len(), 68, "{body}");
    assert!(
        refused[0].contains("backend request limit reached: 32 per execution"),
        "{}",
        refused[0]
    );
    assert_eq!(origin.count("/storm"), 32);

    // The limit is per execution: the next request gets its own 32.
    let reply = probe(&node, "/fetch?backend=origin&path=/storm&count=1").await;
    assert!(reply.text().starts_with("ok 200"), "{}", reply.text());
    assert_eq!(origin.count("/storm"), 33);
}

#[tokio::test]
async fn at_most_six_backend_requests_run_at_once() {
    let origin = TestOrigin::start(|_, _| {
        Answer::ok("slow")
            .header("cache-control", "no-store")
            .delay(Duration::from_millis(150))
    })
    .await;
    let node = probe_node(loopback_backend(&origin)).await;

    let reply = probe(&node, "/parallel?backend=origin&path=/p&count=18").await;
    let body = reply.text();
    assert_eq!(
        lines(&body).iter().filter(|l| **l == "ok 200").count(),
        18,
        "{body}"
    );
    assert_eq!(origin.count("/p"), 18);
    assert_eq!(
        origin.max_concurrent(),
        6,
        "the origin saw more than 6 at once"
    );
}

#[tokio::test]
async fn forbidden_destinations_never_reach_the_origin() {
    let origin = TestOrigin::start(|_, _| Answer::ok("reached")).await;
    let port = origin.addr.port();
    // A backend whose origin is on loopback, not allowed by the operator;
    // and one whose name resolves to loopback (checked after DNS).
    let mut by_name = loopback_backend(&origin);
    by_name.origin = format!("http://localhost:{port}");
    by_name.allow_private_addresses = false;
    let node = TestNode::start(vec![
        TestService::example("probe", "backend-probe")
            .backend("origin", loopback_backend(&origin))
            .backend("private", BackendSpec::new(origin.url()))
            .backend("private-by-name", by_name),
        TestService::example("none", "backend-probe"),
    ])
    .await;

    // Anything but a declared backend's name is denied; the declared
    // backends on loopback, without the operator's leave, are prohibited.
    let (denied, prohibited) = ("HttpRequestDenied", "DestinationIpProhibited");
    for (backend, error) in [
        (format!("127.0.0.1:{port}"), denied),
        (format!("localhost:{port}"), denied),
        ("origin:80".to_string(), denied),
        ("undeclared".to_string(), denied),
        ("example.com".to_string(), denied),
        ("private".to_string(), prohibited),
        ("private-by-name".to_string(), prohibited),
    ] {
        let reply = probe(&node, &format!("/fetch?backend={backend}&path=/x")).await;
        let expected = format!("err ErrorCode::{error}");
        assert_eq!(reply.text().trim(), expected, "{backend}");
    }
    // A service with no backends reaches nothing, not even the same name.
    let reply = get(node.addr, "none.test", "/fetch?backend=origin&path=/x").await;
    assert_eq!(reply.text().trim(), "err ErrorCode::HttpRequestDenied");

    // Forbidden request headers are refused before anything is sent.
    for name in ["connection", "host", "transfer-encoding", "upgrade"] {
        let reply = probe(&node, &format!("/header?backend=origin&name={name}")).await;
        assert!(
            reply.text().contains("header refused"),
            "{name}: {}",
            reply.text()
        );
    }
    assert_eq!(origin.total(), 0, "a forbidden request reached the origin");

    // The allowed backend does reach it.
    let reply = probe(&node, "/fetch?backend=origin&path=/x").await;
    assert_eq!(reply.text().trim(), "ok 200 reached");
}

#[tokio::test]
async fn a_hanging_origin_is_cut_at_its_timeouts() {
    let origin = TestOrigin::start(|seen, _| match seen.path.as_str() {
        "/hang" => Answer::ok("late").delay(Duration::from_secs(10)),
        _ => Answer::ok("end").body_stall(Duration::from_secs(10)),
    })
    .await;
    let mut backend = loopback_backend(&origin);
    backend.first_byte_timeout_ms = 300;
    backend.between_bytes_timeout_ms = 300;
    backend.cache = edge_config::BackendCache::Off;
    let node = probe_node(backend).await;

    let started = Instant::now();
    let reply = probe(&node, "/fetch?backend=origin&path=/hang").await;
    let elapsed = started.elapsed();
    assert_eq!(reply.text().trim(), "err ErrorCode::HttpResponseTimeout");
    assert!(
        elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(2),
        "first-byte timeout took {elapsed:?}"
    );

    let started = Instant::now();
    let reply = probe(&node, "/fetch?backend=origin&path=/stall").await;
    let elapsed = started.elapsed();
    assert!(
        reply.text().trim() == "err backend body: connection read timeout",
        "{}",
        reply.text()
    );
    assert!(
        elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(2),
        "between-bytes timeout took {elapsed:?}"
    );
}

#[tokio::test]
async fn a_refused_connection_is_reported_to_the_guest() {
    // A port nothing listens on.
    let unused = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = unused.local_addr().expect("addr").port();
    drop(unused);
    let mut backend = BackendSpec::new(format!("http://127.0.0.1:{port}"));
    backend.allow_private_addresses = true;
    let node = probe_node(backend).await;
    let reply = probe(&node, "/fetch?backend=origin&path=/").await;
    assert_eq!(reply.text().trim(), "err ErrorCode::ConnectionRefused");
}
