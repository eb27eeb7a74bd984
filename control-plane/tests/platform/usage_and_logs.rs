//! What nodes report back: usage and guest log lines, once each.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_reported_by_nodes_adds_up_in_the_usage_api() {
    let plane = Plane::start("sqlite").await;
    let token = plane.acme_web().await;
    let (_dirs, nodes) = two_nodes(&plane).await;
    plane.deploy(&token, "web", hello()).await;
    until_all_serve(&nodes, HELLO).await;
    // Known traffic: 30 requests to one node, 25 to the other.
    for _ in 0..30 {
        assert_eq!(nodes[0].body().await.0, 200);
    }
    for _ in 0..25 {
        assert_eq!(nodes[1].body().await.0, 200);
    }
    // The readiness probes of `until_all_serve` count too: one per node.
    let expected_requests = 30 + 25 + 2;
    let deadline = Instant::now() + Duration::from_secs(10);
    let usage = loop {
        let (_, usage) = plane.get("/v1/usage", &token).await;
        if usage[0]["requests"] == expected_requests {
            break usage;
        }
        assert!(
            Instant::now() < deadline,
            "usage never reached {expected_requests}: {usage}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(usage[0]["service"], "web");
    assert_eq!(usage[0]["status_2xx"], expected_requests);
    assert_eq!(usage[0]["status_5xx"], 0);
    assert_eq!(
        usage[0]["bytes_out"],
        expected_requests * HELLO.len() as i64
    );
    // The nodes' own counters agree: the same requests, and the same CPU
    // time within 10 %.
    let mut node_requests = 0.0;
    let mut node_cpu_seconds = 0.0;
    for node in &nodes {
        node_requests += node
            .metric(
                r#"edge_requests_total{protocol="http1",service="acme/web",status_class="2xx"}"#,
            )
            .await;
        node_cpu_seconds += node
            .metric(r#"edge_guest_cpu_seconds_total{service="acme/web"}"#)
            .await;
    }
    assert_eq!(node_requests, expected_requests as f64);
    let usage_cpu_seconds = usage[0]["guest_cpu_micros"].as_i64().unwrap_or(0) as f64 / 1e6;
    assert!(usage_cpu_seconds > 0.0);
    assert!(
        (usage_cpu_seconds - node_cpu_seconds).abs() <= node_cpu_seconds * 0.10,
        "usage API {usage_cpu_seconds} s, nodes {node_cpu_seconds} s"
    );
    // The control plane's own /metrics carries the same totals.
    let page = plane.metrics_page().await;
    let series = |name: &str| edge_tests::node::metric_value(&page, name);
    assert_eq!(
        series("cp_usage_requests_total{service=\"web\",tenant=\"acme\"}"),
        expected_requests as f64
    );
    assert_eq!(series("cp_nodes{health=\"healthy\"}"), 2.0);
    assert_eq!(series("cp_node_snapshot_lag{node=\"node-a\"}"), 0.0);
    assert_eq!(series("cp_uploads_total{outcome=\"stored\"}"), 1.0);
    plane.stop_with_nodes(nodes).await;
}

/// Gets `path` from `host` on `node` until it answers 200 (the node may not
/// have the deploy yet); returns the reply.
async fn until_ok(node: &EdgeNode, host: &str, path: &str) -> edge_tests::client::Reply {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = get(node.addr, host, path).await;
        if reply.status == 200 {
            return reply;
        }
        assert!(Instant::now() < deadline, "{host}{path}: {}", reply.status);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `edgectl logs` until its output contains `wanted`.
async fn logs_until(config: &Path, service: &str, wanted: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = edgectl(config, &["logs", service]).await;
        if out.contains(wanted) {
            return out;
        }
        assert!(Instant::now() < deadline, "no {wanted:?} in: {out}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_reads_its_own_guest_logs_with_edgectl() {
    let plane = Plane::start("sqlite").await;
    let dir = tempfile::tempdir().expect("dir");
    let (acme, other) = (plane.tenant("acme").await, plane.tenant("other").await);
    // Both tenants name their service `web`.
    plane.service(&acme, "web", DOMAIN).await;
    plane.service(&other, "web", "web.other.test").await;
    let node_dir = tempfile::tempdir().expect("dir");
    let node = EdgeNode::start(&plane.base, node_dir.path(), "node-a").await;
    plane.deploy(&acme, "web", echo()).await;
    plane.deploy(&other, "web", echo()).await;
    let acme_reply = until_ok(&node, DOMAIN, "/?log=acme-line").await;
    until_ok(&node, "web.other.test", "/?log=other-line").await;
    let request_id = acme_reply.header("x-request-id").expect("request id");

    let acme_config = dir.path().join("acme.json");
    let other_config = dir.path().join("other.json");
    edgectl_login(&acme_config, &plane, &acme).await;
    edgectl_login(&other_config, &plane, &other).await;

    // The line, with the request id the client got and the version.
    let out = logs_until(&acme_config, "web", "acme-line").await;
    let line = out
        .lines()
        .find(|line| line.ends_with("stdout: acme-line"))
        .unwrap_or_else(|| panic!("no stdout line in: {out}"));
    assert!(line.contains(request_id), "{line}");
    assert!(line.contains(" v1 "), "{line}");
    // Each tenant sees only its own service's lines.
    assert!(!out.contains("other-line"), "{out}");
    // One request's lines, by the id its client got.
    let later = until_ok(&node, DOMAIN, "/?log=later-line").await;
    let later_id = later.header("x-request-id").expect("request id");
    logs_until(&acme_config, "web", "later-line").await;
    let only = edgectl(&acme_config, &["logs", "web", "--request-id", request_id]).await;
    assert_eq!(only.lines().count(), 1, "{only}");
    assert!(only.ends_with("stdout: acme-line\n"), "{only}");
    assert!(!only.contains(later_id), "{only}");
    let out = logs_until(&other_config, "web", "other-line").await;
    assert!(!out.contains("acme-line"), "{out}");

    // --follow prints a line printed after it started.
    let mut follow = tokio::process::Command::new(workspace_binary("edgectl"))
        .args(["logs", "web", "--follow"])
        .env("EDGECTL_CONFIG", &acme_config)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("edgectl logs --follow");
    let stdout = follow.stdout.take().expect("stdout");
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    get(node.addr, DOMAIN, "/?log=followed-line").await;
    let seen = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.ends_with("followed-line") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(seen, Ok(true), "--follow never printed the new line");
    let _ = follow.kill().await;
    node.stop().await;
    plane.stop().await;
}

/// `GET url` with `token`, as JSON.
async fn get_json(http: &reqwest::Client, url: &str, token: &str) -> serde_json::Value {
    http.get(url)
        .bearer_auth(token)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_and_logs_a_node_could_not_deliver_survive_a_kill_and_are_sent_once_after_its_restart()
 {
    let dir = tempfile::tempdir().expect("dir");
    let plane_dir = dir.path().join("control-plane");
    let node_dir = dir.path().join("node");
    let (process, port, token) = killable_plane_with_web(&plane_dir, echo()).await;
    let base = format!("http://{port}");
    let http = reqwest::Client::new();
    let node = EdgeNode::start(&base, &node_dir, "node-a").await;
    until_ok(&node, DOMAIN, "/").await;

    // The control plane goes away; the node serves, and its guest logs.
    process.kill().await;
    for _ in 0..10 {
        assert_eq!(get(node.addr, DOMAIN, "/?log=while-away").await.status, 200);
    }
    let served = node
        .metric(r#"edge_requests_total{protocol="http1",service="acme/web",status_class="2xx"}"#)
        .await;
    node.stop().await;
    assert!(node_dir.join("undelivered.json").exists());

    // Started again while the control plane is still away, then killed:
    // what it could not deliver is still on disk.
    let node = EdgeNode::start(&base, &node_dir, "node-a").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    node.kill().await;
    assert!(
        node_dir.join("undelivered.json").exists(),
        "kept until delivered"
    );

    // Back: a node started on the same data dir delivers it all, once.
    let _process = PlaneProcess::start(&plane_dir, port).await;
    let node = EdgeNode::start(&base, &node_dir, "node-a").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let usage = get_json(&http, &format!("{base}/v1/usage"), &token).await;
        let logs = get_json(
            &http,
            &format!("{base}/v1/services/web/logs?limit=1000"),
            &token,
        )
        .await;
        let away = logs["lines"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|line| line["line"] == "while-away")
            .count();
        if usage[0]["requests"].as_f64() == Some(served) && away == 10 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "usage {usage} (node served {served}), {away} of 10 lines"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!node_dir.join("undelivered.json").exists());
    // And nothing is counted twice later.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let usage = get_json(&http, &format!("{base}/v1/usage"), &token).await;
    assert_eq!(usage[0]["requests"].as_f64(), Some(served), "{usage}");
    node.stop().await;
}
