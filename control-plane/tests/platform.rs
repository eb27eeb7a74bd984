//! The platform end to end: a control plane and edge nodes that follow it,
//! all on loopback. Deploys reach every node, rollbacks too; nodes keep
//! serving without the control plane, and after a restart serve from disk.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use edge_tests::client::get;
use reqwest::StatusCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploys_and_rollbacks_reach_every_node_within_a_second() {
    let plane = Plane::start_with("sqlite", |c| c.snapshot_wait = Duration::from_secs(20)).await;
    let token = plane.tenant("acme").await;
    plane.service(&token, "web", DOMAIN).await;
    let (_dirs, nodes) = two_nodes(&plane).await;
    // Before any deploy the domain is unknown: 421.
    assert_eq!(nodes[0].body().await.0, 421);

    plane.deploy(&token, "web", hello()).await;
    let took = until_all_serve(&nodes, HELLO).await;
    assert!(took < Duration::from_secs(1), "v1 took {took:?}");

    plane.deploy(&token, "web", plain_wasi()).await;
    let took = until_all_serve(&nodes, PLAIN).await;
    assert!(took < Duration::from_secs(1), "v2 took {took:?}");

    let (status, _) = plane
        .call("POST", "/v1/services/web/rollback", &token, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let took = until_all_serve(&nodes, HELLO).await;
    assert!(took < Duration::from_secs(1), "rollback took {took:?}");

    // Both nodes registered and report the snapshot they serve.
    let (_, listed) = plane.call("GET", "/v1/nodes", ADMIN, None).await;
    assert_eq!(listed.as_array().map(Vec::len), Some(2));
    // The artifacts came from the control plane: nothing compiled on a node.
    for node in &nodes {
        assert_eq!(
            node.metric("edge_module_loads_total{source=\"compiled\"}")
                .await,
            0.0
        );
        assert!(
            node.metric("edge_module_loads_total{source=\"artifact\"}")
                .await
                >= 2.0
        );
    }
    for node in nodes {
        node.stop().await;
    }
    plane.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_serve_without_the_control_plane_and_from_disk_after_a_restart() {
    let plane = Plane::start("sqlite").await;
    let base = plane.base.clone();
    let token = plane.tenant("acme").await;
    plane.service(&token, "web", DOMAIN).await;
    let dir = tempfile::tempdir().expect("dir");
    let node = EdgeNode::start(&base, dir.path(), "node-a").await;
    plane.deploy(&token, "web", hello()).await;
    until_all_serve(std::slice::from_ref(&node), HELLO).await;

    plane.stop().await;
    // Every request is still answered while the control plane is down.
    for _ in 0..100 {
        assert_eq!(node.body().await, (200, HELLO.to_string()));
    }

    // A restart with the control plane still down serves from disk.
    node.stop().await;
    let node = EdgeNode::start(&base, dir.path(), "node-a").await;
    for _ in 0..20 {
        assert_eq!(node.body().await, (200, HELLO.to_string()));
    }
    assert_eq!(
        node.metric("edge_module_loads_total{source=\"artifact\"}")
            .await,
        1.0
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_artifact_on_a_node_is_detected_and_fetched_again() {
    let plane = Plane::start("sqlite").await;
    let token = plane.tenant("acme").await;
    plane.service(&token, "web", DOMAIN).await;
    let dir = tempfile::tempdir().expect("dir");
    let node = EdgeNode::start(&plane.base, dir.path(), "node-a").await;
    plane.deploy(&token, "web", hello()).await;
    until_all_serve(std::slice::from_ref(&node), HELLO).await;
    node.stop().await;

    let artifacts = dir.path().join("artifacts");
    let artifact = std::fs::read_dir(&artifacts)
        .expect("artifacts dir")
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| path.extension().is_some_and(|ext| ext == "cwasm"))
        .expect("an artifact on disk");
    let mut bytes = std::fs::read(&artifact).expect("artifact");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&artifact, &bytes).expect("corrupt it");

    let node = EdgeNode::start(&plane.base, dir.path(), "node-a").await;
    assert_eq!(node.body().await, (200, HELLO.to_string()));
    // Fetched again and loaded as an artifact, not compiled on the node.
    assert_eq!(
        node.metric("edge_module_loads_total{source=\"compiled\"}")
            .await,
        0.0
    );
    assert_eq!(
        node.metric("edge_module_loads_total{source=\"artifact\"}")
            .await,
        1.0
    );
    assert_ne!(
        std::fs::read(&artifact).expect("artifact"),
        bytes,
        "replaced"
    );
    node.stop().await;
    plane.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_reported_by_nodes_adds_up_in_the_usage_api() {
    let plane = Plane::start("sqlite").await;
    let token = plane.tenant("acme").await;
    plane.service(&token, "web", DOMAIN).await;
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
        let (_, usage) = plane.call("GET", "/v1/usage", &token, None).await;
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
    for node in nodes {
        node.stop().await;
    }
    plane.stop().await;
}

/// Runs `edgectl` with its own config file; returns stdout, or panics with
/// stderr.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_deploys_from_source_with_edgectl() {
    let plane = Plane::start_with("sqlite", |c| c.snapshot_wait = Duration::from_secs(20)).await;
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("edgectl.json");
    let token = edgectl(
        &config,
        &[
            "tenant-create",
            "acme",
            "--url",
            &plane.base,
            "--admin-token",
            ADMIN,
        ],
    )
    .await;
    let token = token.trim();
    edgectl(&config, &["login", "--url", &plane.base, "--token", token]).await;
    edgectl(&config, &["service", "create", "web", "--domain", DOMAIN]).await;
    let (_dirs, nodes) = two_nodes(&plane).await;
    let examples = edge_tests::guests::repo_root().join("examples/hello");

    let deployed = edgectl(
        &config,
        &["deploy", "web", "--build", &examples.to_string_lossy()],
    )
    .await;
    assert!(deployed.contains("version 1"), "{deployed}");
    assert!(
        deployed.contains(&format!("http://{DOMAIN}/")),
        "{deployed}"
    );
    let took = until_all_serve(&nodes, HELLO).await;
    assert!(took < Duration::from_secs(1), "served after {took:?}");

    let plain = edge_tests::guests::rust_guest("plain-wasi");
    edgectl(
        &config,
        &["deploy", "web", "--wasm", &plain.to_string_lossy()],
    )
    .await;
    until_all_serve(&nodes, PLAIN).await;
    let versions = edgectl(&config, &["versions", "web"]).await;
    assert_eq!(
        versions.lines().count(),
        3,
        "header + 2 versions: {versions}"
    );
    let rolled = edgectl(&config, &["rollback", "web"]).await;
    assert!(rolled.contains("version 1"), "{rolled}");
    until_all_serve(&nodes, HELLO).await;

    let services = edgectl(&config, &["service", "list"]).await;
    assert!(services.contains("web\t1"), "{services}");
    let listed = edgectl(&config, &["nodes", "--admin-token", ADMIN]).await;
    assert!(
        listed.contains("node-a") && listed.contains("node-b"),
        "{listed}"
    );
    for node in nodes {
        node.stop().await;
    }
    plane.stop().await;
}

/// The `control-plane` binary as a child process on a fixed port.
struct PlaneProcess {
    child: tokio::process::Child,
}

impl PlaneProcess {
    async fn start(data_dir: &Path, addr: SocketAddr) -> Self {
        use tokio::io::AsyncBufReadExt;
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_control-plane"))
            .args(["serve", "--platform-domain", PLATFORM_DOMAIN])
            .args(["--listen", &addr.to_string(), "--data-dir"])
            .arg(data_dir)
            .env("EDGE_ADMIN_TOKEN", ADMIN)
            .env("EDGE_CLUSTER_TOKEN", CLUSTER)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("control plane starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        tokio::io::BufReader::new(stdout)
            .read_line(&mut line)
            .await
            .expect("read its address");
        assert!(line.contains(&addr.to_string()), "unexpected: {line}");
        Self { child }
    }

    /// SIGKILL: no shutdown, no flush.
    async fn kill(mut self) {
        self.child.kill().await.expect("kill");
    }
}

/// Uploads `bytes` to service `web` and activates it; returns the status of
/// the activation.
async fn deploy_over_http(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    bytes: Vec<u8>,
) -> StatusCode {
    let uploaded: serde_json::Value = http
        .post(format!("{base}/v1/services/web/modules"))
        .bearer_auth(token)
        .body(bytes)
        .send()
        .await
        .expect("upload")
        .json()
        .await
        .expect("JSON");
    let version = serde_json::json!({"module_sha256": uploaded["module_sha256"], "activate": true});
    http.post(format!("{base}/v1/services/web/versions"))
        .bearer_auth(token)
        .json(&version)
        .send()
        .await
        .expect("version")
        .status()
}

/// A control-plane process on a free port with tenant `acme` and its
/// service `web` (at [`DOMAIN`]) serving `guest`; returns the process, its
/// address and the tenant's token.
async fn killable_plane_with_web(
    plane_dir: &Path,
    guest: Vec<u8>,
) -> (PlaneProcess, SocketAddr, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let base = format!("http://{port}");
    let process = PlaneProcess::start(plane_dir, port).await;
    let http = reqwest::Client::new();
    let post = |path: &str, token: &str, body: serde_json::Value| {
        http.post(format!("{base}{path}"))
            .bearer_auth(token)
            .json(&body)
            .send()
    };
    let created: serde_json::Value =
        post("/v1/tenants", ADMIN, serde_json::json!({"name": "acme"}))
            .await
            .expect("tenant")
            .json()
            .await
            .expect("JSON");
    let token = created["token"].as_str().expect("token").to_string();
    let service = serde_json::json!({"name": "web", "spec": {"domains": [DOMAIN]}});
    assert!(
        post("/v1/services", &token, service)
            .await
            .expect("service")
            .status()
            .is_success()
    );
    let status = deploy_over_http(&http, &base, &token, guest).await;
    assert_eq!(status, StatusCode::CREATED);
    (process, port, token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_control_plane_loses_nothing_and_nodes_never_stop_serving() {
    let dir = tempfile::tempdir().expect("dir");
    let plane_dir = dir.path().join("control-plane");
    let (process, port, token) = killable_plane_with_web(&plane_dir, hello()).await;
    let base = format!("http://{port}");
    let http = reqwest::Client::new();

    let node = EdgeNode::start(&base, &dir.path().join("node"), "node-a").await;
    until_all_serve(std::slice::from_ref(&node), HELLO).await;

    // Killed right after acknowledging: the node keeps answering.
    process.kill().await;
    for _ in 0..100 {
        assert_eq!(node.body().await, (200, HELLO.to_string()));
    }

    // Back on the same data: the acknowledged version is there, and the node
    // picks up the next deploy.
    let _process = PlaneProcess::start(&plane_dir, port).await;
    let versions: serde_json::Value = http
        .get(format!("{base}/v1/services/web/versions"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("versions")
        .json()
        .await
        .expect("JSON");
    assert_eq!(versions.as_array().map(Vec::len), Some(1), "{versions}");
    let status = deploy_over_http(&http, &base, &token, plain_wasi()).await;
    assert_eq!(status, StatusCode::CREATED);
    until_all_serve(std::slice::from_ref(&node), PLAIN).await;
    node.stop().await;
}

/// GETs `path` from `node` until the caching proxy answers (the node has the
/// service), and returns the body.
async fn proxied(node: &EdgeNode, path: &str) -> String {
    let started = Instant::now();
    loop {
        let reply = get(node.addr, DOMAIN, path).await;
        if reply.status == 200 && reply.header("x-edge-proxy").is_some() {
            return reply.text();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "node {} answers {} {:?}",
            node.addr,
            reply.status,
            reply.text()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until `node` has applied purge `seq`.
async fn until_purged(node: &EdgeNode, seq: u64) {
    let mut applied = node.follower.purges_applied();
    tokio::time::timeout(Duration::from_secs(5), applied.wait_for(|n| *n >= seq))
        .await
        .expect("the purge reached the node in time")
        .expect("follower running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purges_empty_exactly_the_tagged_entries_on_every_node() {
    use edge_tests::origin::{Answer, TestOrigin};
    use std::sync::atomic::{AtomicBool, Ordering};
    let failing = Arc::new(AtomicBool::new(false));
    let origin_failing = Arc::clone(&failing);
    let origin = TestOrigin::start(move |seen, n| {
        if origin_failing.load(Ordering::SeqCst) {
            return Answer::ok("origin down").status(503);
        }
        let tags = match seen.path.as_str() {
            "/a" => "red",
            "/b" => "red blue",
            "/c" => "blue",
            _ => "",
        };
        Answer::ok(format!("{} {n}", seen.path))
            .header("cache-control", "max-age=300")
            .header("surrogate-key", tags)
    })
    .await;
    let plane = Plane::start("sqlite").await;
    let spec = serde_json::json!({
        "domains": [DOMAIN],
        "backends": {"origin": {"origin": origin.url(), "allow_private_addresses": true}},
    });

    // Private origins need the operator's permission.
    let denied = plane.tenant("plain").await;
    let (status, body) = plane
        .call(
            "POST",
            "/v1/services",
            &denied,
            Some(serde_json::json!({"name": "web", "spec": spec})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("backends.origin.allow_private_addresses")),
        "{body}"
    );

    let edgectl_dir = tempfile::tempdir().expect("dir");
    let edgectl_config = edgectl_dir.path().join("edgectl.json");
    let token = edgectl(
        &edgectl_config,
        &[
            "tenant-create",
            "acme",
            "--allow-private-backends",
            "--url",
            &plane.base,
            "--admin-token",
            ADMIN,
        ],
    )
    .await
    .trim()
    .to_string();
    edgectl(
        &edgectl_config,
        &["login", "--url", &plane.base, "--token", &token],
    )
    .await;
    let backend = format!("origin={}", origin.url());
    edgectl(
        &edgectl_config,
        &[
            "service",
            "create",
            "web",
            "--domain",
            DOMAIN,
            "--backend",
            &backend,
            "--allow-private-addresses",
        ],
    )
    .await;
    let proxy = std::fs::read(edge_tests::guests::rust_guest("caching-proxy")).expect("guest");
    plane.deploy(&token, "web", proxy).await;
    let (_dirs, nodes) = two_nodes(&plane).await;

    for node in &nodes {
        for path in ["/a", "/b", "/c", "/d"] {
            proxied(node, path).await;
            proxied(node, path).await;
        }
    }
    for path in ["/a", "/b", "/c", "/d"] {
        assert_eq!(origin.count(path), 2, "{path}: one fill per node");
    }

    let (status, body) = plane
        .call(
            "POST",
            "/v1/purge",
            &token,
            Some(serde_json::json!({"surrogate_key": "red"})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let seq = body["seq"].as_u64().expect("seq");
    for node in &nodes {
        until_purged(node, seq).await;
    }
    for node in &nodes {
        for path in ["/a", "/b", "/c", "/d"] {
            proxied(node, path).await;
        }
    }
    assert_eq!(origin.count("/a"), 4, "tagged red: refetched on both nodes");
    assert_eq!(origin.count("/b"), 4, "tagged red: refetched on both nodes");
    assert_eq!(origin.count("/c"), 2, "not tagged red: still cached");
    assert_eq!(origin.count("/d"), 2, "not tagged: still cached");

    // By URL, as the origin sees it (any spelling of it), with edgectl,
    // which waits until both nodes acknowledge it.
    let url = format!("HTTP://{}/c", origin.addr);
    let purged = edgectl(&edgectl_config, &["purge", "--url", &url, "--wait", "5"]).await;
    let seq: u64 = purged
        .strip_prefix("purge ")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("edgectl names the purge");
    assert!(purged.contains("applied on 2 of 2 nodes"), "{purged}");
    for node in &nodes {
        until_purged(node, seq).await;
        proxied(node, "/c").await;
    }
    assert_eq!(origin.count("/c"), 4);
    assert_eq!(origin.count("/d"), 2);

    // Soft, while the origin fails: both nodes mark the entries stale, ask
    // the origin again, and serve what they have (the platform's default
    // stale-if-error) rather than the 503.
    failing.store(true, Ordering::SeqCst);
    let purged = edgectl(
        &edgectl_config,
        &["purge", "--soft", "--surrogate-key", "blue", "--wait", "5"],
    )
    .await;
    assert!(purged.contains("applied on 2 of 2 nodes"), "{purged}");
    let mut served = Vec::new();
    for node in &nodes {
        served.push(proxied(node, "/c").await);
    }
    assert_eq!(
        served,
        ["/c 3", "/c 4"],
        "stale, from each node's own entry"
    );
    assert_eq!(origin.count("/c"), 6, "each node asked the origin");
    assert_eq!(origin.count("/d"), 2, "not tagged blue");
    failing.store(false, Ordering::SeqCst);

    // Only the owning tenant can follow a purge.
    let (status, body) = plane
        .call("GET", &format!("/v1/purge/{seq}"), &token, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["acknowledged"], 2, "{body}");
    let (status, _) = plane
        .call("GET", &format!("/v1/purge/{seq}"), &denied, None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    for bad in [
        serde_json::json!({"url": "/relative"}),
        serde_json::json!({"surrogate_key": "two words"}),
        serde_json::json!({"surrogate_key": ""}),
        serde_json::json!({"everything": true}),
    ] {
        let (status, body) = plane.call("POST", "/v1/purge", &token, Some(bad)).await;
        assert!(status.is_client_error(), "{status} {body}");
    }

    for node in nodes {
        node.stop().await;
    }
    plane.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_rotated_through_the_control_plane_is_served_without_a_restart() {
    use edge_tests::tls::{TestCertificate, TlsClient};
    let plane = Plane::start("sqlite").await;
    let token = plane.tenant("acme").await;
    plane.service(&token, "web", DOMAIN).await;
    plane.deploy(&token, "web", hello()).await;
    let dir = tempfile::tempdir().expect("dir");
    let node = EdgeNode::start(&plane.base, dir.path(), "node-a").await;
    until_all_serve(std::slice::from_ref(&node), HELLO).await;
    let path = "/v1/services/web/certificate";

    // Refused, each with what is wrong; nothing is stored.
    let first = TestCertificate::generate(&[DOMAIN]);
    let second = TestCertificate::generate(&[DOMAIN, "www.acme.test"]);
    let elsewhere = TestCertificate::generate(&["other.test"]);
    let refusals = [
        (
            elsewhere.pem.cert_pem.clone(),
            elsewhere.pem.key_pem.0.clone(),
            "does not cover \"web.acme.test\"",
        ),
        (
            first.pem.cert_pem.clone(),
            second.pem.key_pem.0.clone(),
            "does not match",
        ),
        (
            "garbage".to_string(),
            first.pem.key_pem.0.clone(),
            "holds no certificate",
        ),
        (
            first.pem.cert_pem.clone(),
            "garbage".to_string(),
            "holds no private key",
        ),
    ];
    for (cert_pem, key_pem, expected) in refusals {
        let body = serde_json::json!({"cert_pem": cert_pem, "key_pem": key_pem});
        let (status, answer) = plane.call("PUT", path, &token, Some(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert_eq!(answer["error"]["code"], "invalid_certificate");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(expected), "{message}");
    }
    let (status, _) = plane.call("GET", path, &token, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Uploaded with edgectl, served by SNI within a second.
    let config = dir.path().join("edgectl.json");
    edgectl(&config, &["login", "--url", &plane.base, "--token", &token]).await;
    let upload = |certificate: &TestCertificate| {
        let cert = certificate.files.cert.to_string_lossy().into_owned();
        let key = certificate.files.key.to_string_lossy().into_owned();
        let config = config.clone();
        async move {
            edgectl(
                &config,
                &[
                    "certificate",
                    "upload",
                    "web",
                    "--cert",
                    &cert,
                    "--key",
                    &key,
                ],
            )
            .await
        }
    };
    let uploaded = upload(&first).await;
    assert!(uploaded.contains("uploaded for web"), "{uploaded}");
    let took = until_trusted(&node, &TlsClient::trusting(&first.pem)).await;
    assert!(took < Duration::from_secs(1), "served after {took:?}");
    let (status, shown) = plane.call("GET", path, &token, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        shown["fingerprint_sha256"]
            .as_str()
            .is_some_and(|f| f.len() == 64)
    );
    assert!(!shown.to_string().contains("PRIVATE KEY"), "{shown}");

    // Rotated: new connections get the second certificate, same process.
    upload(&second).await;
    until_trusted(&node, &TlsClient::trusting(&second.pem)).await;
    let stale = TlsClient::trusting(&first.pem)
        .connect(node.tls_addr, DOMAIN)
        .await;
    assert!(stale.is_err(), "the old certificate is no longer served");

    // Another tenant sees nothing; the node's saved snapshot, which holds
    // the key, is readable by its owner only.
    let other = plane.tenant("other").await;
    let (status, _) = plane.call("GET", path, &other, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let saved = dir.path().join("snapshot.json");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&saved).expect("saved").permissions(),
    );
    assert_eq!(mode & 0o077, 0, "snapshot.json mode {mode:o}");
    node.stop().await;
    plane.stop().await;
}

/// Waits until `client` (trusting one certificate) gets the service's answer
/// over TLS; returns how long that took.
async fn until_trusted(node: &EdgeNode, client: &edge_tests::tls::TlsClient) -> Duration {
    let started = Instant::now();
    loop {
        if client.connect(node.tls_addr, DOMAIN).await.is_ok() {
            let (reply, _) = client.get(node.tls_addr, DOMAIN, "/").await;
            assert_eq!(reply.text(), HELLO);
            return started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(10), "never served");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
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
    edgectl(
        &acme_config,
        &["login", "--url", &plane.base, "--token", &acme],
    )
    .await;
    edgectl(
        &other_config,
        &["login", "--url", &plane.base, "--token", &other],
    )
    .await;

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
