//! Canary rollouts end to end: a canary serves its share of clients, each
//! client sticks to one version, a promotion makes it the active version,
//! and a canary that fails is rolled back by the control plane itself.

use bytes::Bytes;
use edge_tests::client::{Protocol, request, send};
use serde_json::json;

use super::*;

/// `GET /` on [`DOMAIN`] as `user` (the `x-user` header): whether the
/// canary (echo) or the stable version (hello) answered, and the status.
async fn as_user(node: &EdgeNode, user: &str) -> (u16, bool) {
    let mut get = request("GET", DOMAIN, "/", Bytes::new());
    get.headers_mut()
        .insert("x-user", user.parse().expect("header value"));
    let reply = send(node.addr, Protocol::Http1, get).await;
    (reply.status, reply.text().starts_with("method: GET"))
}

/// Waits until `node` serves the control plane's current snapshot.
async fn until_current(plane: &Plane, node: &EdgeNode) {
    let current = plane.store().snapshot_version().await.expect("version") as f64;
    let deadline = Instant::now() + Duration::from_secs(10);
    while node.metric("edge_snapshot_version").await < current {
        assert!(
            Instant::now() < deadline,
            "the node is behind snapshot {current}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_percent_canary_serves_a_tenth_of_clients_each_always_on_one_version() {
    let plane = Plane::start("sqlite").await;
    let token = plane.tenant("acme").await;
    plane.service(&token, "web", DOMAIN).await;
    plane.deploy(&token, "web", hello()).await;
    let (dir, node) = one_node(&plane).await;
    until_all_serve(std::slice::from_ref(&node), HELLO).await;

    let config = dir.path().join("edgectl.json");
    edgectl_login(&config, &plane, &token).await;
    let wasm = edge_tests::guests::rust_guest("echo");
    let out = edgectl(
        &config,
        &[
            "deploy",
            "web",
            "--wasm",
            wasm.to_str().expect("path"),
            "--canary",
            "10",
            "--sticky",
            "header:x-user",
        ],
    )
    .await;
    assert!(out.contains("version 2 is a canary for 10 %"), "{out}");
    until_current(&plane, &node).await;

    let mut on_canary = Vec::new();
    for i in 0..2_000 {
        let (status, canary) = as_user(&node, &format!("user-{i}")).await;
        assert_eq!(status, 200);
        on_canary.push(canary);
    }
    let share = on_canary.iter().filter(|&&c| c).count();
    assert!(
        (100..=300).contains(&share),
        "{share} of 2000 requests on a 10 % canary"
    );
    for i in (0..2_000).step_by(7) {
        let (_, canary) = as_user(&node, &format!("user-{i}")).await;
        assert_eq!(canary, on_canary[i], "user-{i} changed versions");
    }

    let out = edgectl(&config, &["promote", "web"]).await;
    assert!(
        out.contains("canary version 2 promoted; web serves version 2"),
        "{out}"
    );
    until_current(&plane, &node).await;
    for i in 0..50 {
        assert_eq!(as_user(&node, &format!("user-{i}")).await, (200, true));
    }
    let out = edgectl(&config, &["versions", "web"]).await;
    let canary_line = out
        .lines()
        .find(|line| line.starts_with("2\tcanary 10%"))
        .unwrap_or_else(|| panic!("no canary in the history: {out}"));
    assert!(canary_line.contains("\tpromoted\t"), "{canary_line}");
    assert!(
        out.lines()
            .any(|line| line.starts_with("2\tactive\t") && line.contains("serving")),
        "{out}"
    );
    plane.stop_with_nodes([node]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_that_fails_is_rolled_back_by_the_control_plane_and_then_serves_no_one() {
    for kind in databases() {
        let plane = Plane::start(kind).await;
        let token = plane.tenant("acme").await;
        plane.service(&token, "web", DOMAIN).await;
        plane.deploy(&token, "web", hello()).await;
        // Usage every minute: only the node's canary cadence (a report a
        // second while it serves one) brings the rollback within the
        // deadline below.
        let dir = tempfile::tempdir().expect("dir");
        let node = EdgeNode::start_with(&plane.base, dir.path(), "node-a", |_, link| {
            link.usage_report_interval_ms = 60_000;
        })
        .await;
        until_all_serve(std::slice::from_ref(&node), HELLO).await;

        // Version 2 panics on every request.
        let api = plane.api(&token);
        let uploaded = api
            .upload_module(
                "web",
                std::fs::read(edge_tests::guests::rust_guest("panic")).expect("guest"),
            )
            .await
            .expect("upload");
        let version = api
            .create_version("web", &uploaded.module_sha256, false)
            .await
            .expect("version");
        let (status, body) = plane
            .post(
                "/v1/services/web/canary",
                &token,
                json!({
                    "version": version.version,
                    "percent": 50,
                    "sticky": {"header": "x-user"},
                    "rollback": {"threshold_pct": 5, "window_secs": 30, "min_requests": 10},
                }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{kind}: {body}");
        until_current(&plane, &node).await;

        // Clients keep coming; nobody calls the API.
        let started = Instant::now();
        let mut failures = 0;
        let mut i = 0;
        let rolled_back = loop {
            let (status, _) = as_user(&node, &format!("user-{i}")).await;
            i += 1;
            if status == 500 {
                failures += 1;
            }
            let (_, rollout) = plane.get("/v1/services/web/rollout", &token).await;
            if rollout["canary"].is_null() {
                break rollout;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{kind}: the canary is still running after {failures} failures: {rollout}"
            );
        };
        assert!(
            failures >= 5,
            "{kind}: rolled back after {failures} failures"
        );
        let last = rolled_back["history"]
            .as_array()
            .and_then(|history| history.iter().rev().find(|r| r["role"] == "canary"))
            .cloned()
            .unwrap_or_default();
        assert_eq!(last["outcome"], "rolled_back", "{kind}: {rolled_back}");
        assert_eq!(last["ended_by"], "control-plane", "{kind}: {last}");
        assert!(
            last["reason"]
                .as_str()
                .is_some_and(|r| r.contains("error rate 100.0 %")),
            "{kind}: {last}"
        );
        assert_eq!(rolled_back["active_version"], json!(1), "{kind}");
        let page = plane.metrics_page().await;
        assert_eq!(
            edge_tests::node::metric_value(&page, r#"cp_canary_ends_total{outcome="rolled_back"}"#),
            1.0,
            "{kind}"
        );

        // Once the node has the rollback, no request reaches the canary.
        until_current(&plane, &node).await;
        let traps = r#"edge_guest_terminations_total{reason="trap",service="acme/web"}"#;
        let before = node.metric(traps).await;
        for i in 0..200 {
            assert_eq!(
                as_user(&node, &format!("user-{i}")).await,
                (200, false),
                "{kind}"
            );
        }
        assert_eq!(
            node.metric(traps).await,
            before,
            "{kind}: the canary ran again"
        );
        plane.stop_with_nodes([node]).await;
    }
}
