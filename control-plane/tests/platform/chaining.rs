//! Service chaining deployed through the control plane: a Rust auth gate
//! and the Python handler behind it, two services of one tenant, the gate
//! reaching the handler as a service backend.

use bytes::Bytes;
use edge_tests::client::{Protocol, Reply, request, send};
use serde_json::json;

use super::*;

const TOKEN: &str = "tenant-issued-token-7f3a";

async fn get_as(node: &EdgeNode, host: &str, token: Option<&str>) -> Reply {
    let mut get = request("GET", host, "/orders?id=7", Bytes::new());
    if let Some(token) = token {
        let value = format!("Bearer {token}").parse().expect("header value");
        get.headers_mut().insert("authorization", value);
    }
    send(node.addr, Protocol::Http1, get).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rust_gate_deployed_in_front_of_a_python_service_refuses_tokenless_requests() {
    let plane = Plane::start_with("sqlite", |config| {
        config.max_upload_bytes = 64 * 1024 * 1024;
    })
    .await;
    let token = plane.tenant("acme").await;
    // Another tenant's service of the same name, which the gate must never
    // reach.
    let other = plane.tenant("globex").await;
    let (status, body) = plane.create_service(&other, "app", json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    plane.deploy(&other, "app", hello()).await;

    let (status, body) = plane
        .put("/v1/secrets/auth_token", &token, json!({"value": TOKEN}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = plane
        .create_service(&token, "app", json!({"limits": {"cpu_budget_ms": 1000}}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let python = std::fs::read(edge_tests::guests::python_guest()).expect("python guest");
    plane.deploy(&token, "app", python).await;
    let spec = json!({"secrets": ["auth_token"], "backends": {"app": {"service": "app"}}});
    let (status, body) = plane.create_service(&token, "auth", spec).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    plane
        .deploy(
            &token,
            "auth",
            std::fs::read(edge_tests::guests::rust_guest("auth")).expect("auth guest"),
        )
        .await;

    let (_dir, node) = one_node(&plane).await;
    let gate = "auth.acme.test";
    let deadline = Instant::now() + Duration::from_secs(20);
    while get_as(&node, gate, None).await.status != 401 {
        assert!(Instant::now() < deadline, "the gate is not served");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(get_as(&node, gate, Some("not-the-token")).await.status, 401);

    let passed = get_as(&node, gate, Some(TOKEN)).await;
    assert_eq!(passed.status, 200, "{}", passed.text());
    assert_eq!(
        passed.text(),
        "hello from python\nmethod: GET\npath: /orders?id=7\nenv-vars: 0\nauthenticated: bearer\n"
    );
    let request_id = passed
        .header("x-request-id")
        .expect("request id")
        .to_string();

    // The handler's log line is its own service's, under the client
    // request's id.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, logs) = plane.get("/v1/services/app/logs?limit=100", &token).await;
        assert_eq!(status, StatusCode::OK, "{logs}");
        let lines = logs["lines"].as_array().cloned().unwrap_or_default();
        if let Some(line) = lines.iter().find(|line| {
            line["line"]
                .as_str()
                .is_some_and(|t| t.contains("python-hello: GET /orders"))
        }) {
            assert_eq!(line["request_id"], json!(request_id), "{line}");
            break;
        }
        assert!(Instant::now() < deadline, "no handler log line in {logs}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Usage is counted per service: the handler served one request.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, usage) = plane.get("/v1/usage", &token).await;
        let app = usage
            .as_array()
            .and_then(|all| all.iter().find(|u| u["service"] == "app"))
            .cloned()
            .unwrap_or_default();
        if app["status_2xx"] == json!(1) {
            break;
        }
        assert!(Instant::now() < deadline, "app's usage: {usage}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, usage) = plane.get("/v1/usage", &other).await;
    assert_eq!(
        usage[0]["requests"],
        json!(0),
        "the other tenant's app was reached: {usage}"
    );
    plane.stop_with_nodes([node]).await;
}
