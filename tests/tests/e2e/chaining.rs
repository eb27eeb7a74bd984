//! Services that call services: a guest's request to a service backend
//! runs that service of the same tenant in process, in an instance of its
//! own.

use bytes::Bytes;
use edge_tests::client::{Protocol, Reply, request, send};
use edge_tests::guests::{python_guest, rust_guest};
use edge_tests::node::{TestNode, TestService};

const TOKEN: &str = "s3cret-token";

/// The auth gate of tenant `acme` on `<name>.test`, calling `app` as the
/// service `callee`.
fn gate(name: &str, callee: &str) -> TestService {
    TestService::example(name, "auth")
        .tenant("acme")
        .config("auth_token", TOKEN)
        .service_backend("app", callee)
}

/// The node's metrics once `series` has reached `at_least`: a guest's
/// figures are recorded when its execution ends, which may come after its
/// client has read the whole body.
async fn metrics_once(node: &TestNode, series: &str, at_least: f64) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let page = node.metrics().await;
        if edge_tests::node::metric_value(&page, series) >= at_least {
            return page;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{series} never reached {at_least}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

async fn get_with_token(node: &TestNode, host: &str, path: &str, token: Option<&str>) -> Reply {
    let mut get = request("GET", host, path, Bytes::new());
    if let Some(token) = token {
        let value = format!("Bearer {token}").parse().expect("header value");
        get.headers_mut().insert("authorization", value);
    }
    get.headers_mut().insert(
        "x-authenticated",
        "forged-by-the-client".parse().expect("value"),
    );
    send(node.addr, Protocol::Http1, get).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rust_auth_gate_refuses_a_request_without_its_token_and_passes_one_with_it_to_python() {
    let node = TestNode::start(vec![
        gate("auth", "app"),
        TestService::new("app", "app.internal.test", python_guest())
            .tenant("acme")
            .limits(|l| l.cpu_budget_ms = 1_000),
    ])
    .await;

    for token in [None, Some("wrong-token"), Some("s3cret-token-but-longer")] {
        let refused = get_with_token(&node, "auth.test", "/orders/7", token).await;
        assert_eq!(refused.status, 401, "token {token:?}: {}", refused.text());
        assert_eq!(
            refused.header("www-authenticate"),
            Some("Bearer realm=\"edge\"")
        );
    }
    let page = node.metrics().await;
    assert_eq!(
        edge_tests::node::metric_value(
            &page,
            r#"edge_requests_total{protocol="service",service="app",status_class="2xx"}"#
        ),
        0.0,
        "a refused request never reaches the handler"
    );

    let passed = get_with_token(&node, "auth.test", "/orders/7?x=1", Some(TOKEN)).await;
    assert_eq!(passed.status, 200, "{}", passed.text());
    assert_eq!(
        passed.text(),
        "hello from python\nmethod: GET\npath: /orders/7?x=1\nenv-vars: 0\nauthenticated: bearer\n",
        "the handler sees the gate's header, not the client's forged one"
    );
    assert_eq!(passed.header("x-auth"), Some("passed"));

    // The callee is counted under its own name, as a request that came from
    // a service, with its own guest CPU.
    let page = metrics_once(
        &node,
        r#"edge_guest_cpu_seconds_total{service="app"}"#,
        1e-9,
    )
    .await;
    let value = |series: &str| edge_tests::node::metric_value(&page, series);
    assert_eq!(
        value(r#"edge_requests_total{protocol="service",service="app",status_class="2xx"}"#),
        1.0
    );
    assert_eq!(
        value(r#"edge_requests_total{protocol="http1",service="auth",status_class="2xx"}"#),
        1.0
    );
    assert_eq!(
        value(r#"edge_backend_requests_total{backend="app",outcome="2xx",service="auth"}"#),
        1.0
    );
    assert!(value(r#"edge_guest_cpu_seconds_total{service="app"}"#) > 0.0);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_back_into_a_service_on_the_chain_is_refused_as_a_loop() {
    // `self-loop` calls itself; `ping` (a gate) calls `pong` (a relay),
    // which calls `ping` again.
    let node = TestNode::start(vec![
        gate("self-loop", "self-loop"),
        gate("ping", "pong"),
        TestService::example("pong", "backend-probe")
            .tenant("acme")
            .service_backend("app", "ping"),
    ])
    .await;
    let looped = get_with_token(&node, "self-loop.test", "/", Some(TOKEN)).await;
    assert_eq!(looped.status, 502, "{}", looped.text());
    assert_eq!(
        looped.text(),
        "app: backend request failed: ErrorCode::LoopDetected\n"
    );

    let looped = get_with_token(&node, "ping.test", "/fetch?backend=app&path=/", Some(TOKEN)).await;
    assert_eq!(looped.status, 200, "{}", looped.text());
    assert_eq!(
        looped.text(),
        "err ErrorCode::LoopDetected\n",
        "pong's call back to ping"
    );
    let page = node.metrics().await;
    let value = |series: &str| edge_tests::node::metric_value(&page, series);
    assert_eq!(
        value(r#"edge_requests_total{protocol="service",service="pong",status_class="2xx"}"#),
        1.0,
        "pong ran once, as ping's callee"
    );
    assert_eq!(
        value(r#"edge_requests_total{protocol="service",service="ping",status_class="4xx"}"#),
        0.0,
        "ping never ran as pong's callee (it would have refused the tokenless call)"
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_of_another_tenant_cannot_be_named() {
    let node = TestNode::start(vec![
        gate("auth", "billing"),
        TestService::example("billing", "hello").tenant("globex"),
    ])
    .await;
    let refused = get_with_token(&node, "auth.test", "/", Some(TOKEN)).await;
    assert_eq!(refused.status, 502, "{}", refused.text());
    assert!(
        refused.text().contains("DestinationNotFound"),
        "{}",
        refused.text()
    );
    let page = node.metrics().await;
    assert_eq!(
        edge_tests::node::metric_value(&page, r#"edge_guest_cpu_seconds_total{service="billing"}"#),
        0.0,
        "the other tenant's service never ran"
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callee_runs_on_its_own_cpu_budget() {
    // The gate's budget is 50 ms; its callee computes for 200 ms of a
    // 400 ms budget. The caller is charged none of it and the chain
    // answers whole.
    let node = TestNode::start(vec![
        gate("auth", "work").limits(|l| l.cpu_budget_ms = 50),
        TestService::new("work", "work.internal.test", rust_guest("streaming"))
            .tenant("acme")
            .limits(|l| l.cpu_budget_ms = 400),
    ])
    .await;
    let whole = get_with_token(
        &node,
        "auth.test",
        "/?chunks=3&size=100&busy_ms=100",
        Some(TOKEN),
    )
    .await;
    assert_eq!(whole.status, 200, "{}", whole.text());
    assert_eq!(whole.body_error, None);
    assert_eq!(whole.body.len(), 300);

    // 4.9 s of work (by the guest's clock: even a guest given a seventh of
    // a core by a busy machine passes its 400 ms of CPU) against the
    // callee's budget: the callee is stopped at its budget, the caller is
    // not, and the client's body is cut.
    let cut = get_with_token(
        &node,
        "auth.test",
        "/?chunks=50&size=100&busy_ms=100",
        Some(TOKEN),
    )
    .await;
    assert!(
        cut.body_error.is_some() || cut.status != 200,
        "a body the callee never finished arrived whole: {} bytes",
        cut.body.len()
    );
    assert!(cut.body.len() < 5_000, "{} bytes", cut.body.len());
    let page = metrics_once(
        &node,
        r#"edge_guest_terminations_total{reason="cpu",service="work"}"#,
        1.0,
    )
    .await;
    let value = |series: &str| edge_tests::node::metric_value(&page, series);
    assert_eq!(
        value(r#"edge_guest_terminations_total{reason="cpu",service="work"}"#),
        1.0
    );
    assert_eq!(
        value(r#"edge_guest_terminations_total{reason="cpu",service="auth"}"#),
        0.0
    );
    let auth_cpu = value(r#"edge_guest_cpu_seconds_total{service="auth"}"#);
    assert!(auth_cpu < 0.1, "the caller was charged {auth_cpu} s");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callee_takes_a_slot_of_its_tenants_in_flight_bound() {
    // One request in flight per tenant: the gate holds it, so its callee
    // finds none free and answers 503 rather than take an instance past
    // the tenant's bound.
    let mut config = edge_config::NodeConfig::default();
    config.http.max_in_flight_requests_per_tenant = 1;
    let node = TestNode::start_with(
        config,
        vec![
            gate("auth", "app"),
            TestService::example("app", "hello").tenant("acme"),
        ],
    )
    .await;
    let refused = get_with_token(&node, "auth.test", "/", Some(TOKEN)).await;
    refused.assert_edge_error(503, "tenant-overloaded");
    let page = node.metrics().await;
    assert_eq!(
        edge_tests::node::metric_value(&page, r#"edge_guest_cpu_seconds_total{service="app"}"#),
        0.0,
        "the callee ran past its tenant's bound"
    );
    node.shutdown().await;
}
