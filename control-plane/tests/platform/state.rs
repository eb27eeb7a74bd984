//! State at the edge, end to end: KV stores written through guests on one
//! node and read on another, kept through a control-plane outage and a
//! node restart, isolated per tenant, incremented exactly; config and
//! secrets through `wasi:config/store`; every limit refused as documented.
//! On SQLite and on PostgreSQL.

use std::time::{Duration, Instant};

use bytes::Bytes;
use edge_tests::client::{Protocol, get, request, send};
use serde_json::json;

use super::*;

/// How long a write on one node may take to be read on another.
const REPLICATION_BOUND: Duration = Duration::from_secs(1);

/// Tenant `tenant`'s service `web` at `domain`, with `spec` beside its
/// domain, serving the state example; its `counters` store created first.
async fn state_service(plane: &Plane, token: &str, domain: &str, spec: serde_json::Value) {
    let (status, body) = plane
        .post("/v1/kv", token, json!({"name": "counters"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let mut spec = spec;
    spec["domains"] = json!([domain]);
    let (status, body) = plane.create_service(token, "web", spec).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    plane.deploy(token, "web", state_guest()).await;
}

async fn call(node: &EdgeNode, method: &str, host: &str, path: &str, body: &str) -> (u16, String) {
    let reply = send(
        node.addr,
        Protocol::Http1,
        request(method, host, path, Bytes::from(body.to_string())),
    )
    .await;
    (reply.status, reply.text())
}

/// Waits until `node` answers `path` on `host` with `status` and `body`;
/// returns how long that took.
async fn until_answers(
    node: &EdgeNode,
    host: &str,
    path: &str,
    status: u16,
    body: &str,
) -> Duration {
    let started = Instant::now();
    loop {
        let reply = get(node.addr, host, path).await;
        if reply.status == status && reply.text() == body {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{host}{path} still answers {} {:?}, not {status} {body:?}",
            reply.status,
            reply.text()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_write_on_one_node_is_read_on_the_other_and_outlives_the_control_plane() {
    for kind in databases() {
        let plane = Plane::start(kind).await;
        let token = plane.tenant("acme").await;
        state_service(&plane, &token, DOMAIN, json!({"kv_stores": ["counters"]})).await;
        let (dirs, [a, b]) = two_nodes(&plane).await;
        until_answers(&a, DOMAIN, "/kv/greeting", 404, "no such key\n").await;
        until_answers(&b, DOMAIN, "/kv/greeting", 404, "no such key\n").await;

        let written = Instant::now();
        assert_eq!(
            call(&a, "PUT", DOMAIN, "/kv/greeting", "hello").await,
            (200, "ok\n".to_string()),
            "{kind}"
        );
        // Read-your-writes on the node that wrote, at once.
        assert_eq!(
            call(&a, "GET", DOMAIN, "/kv/greeting", "").await,
            (200, "hello".to_string()),
            "{kind}"
        );
        until_answers(&b, DOMAIN, "/kv/greeting", 200, "hello").await;
        let lag = written.elapsed();
        assert!(
            lag < REPLICATION_BOUND,
            "{kind}: node B read the write after {lag:?}"
        );
        // The tenant reads it through the API too.
        let value = plane.api(&token).kv_get("counters", "greeting").await;
        assert_eq!(value.expect("read"), Some(b"hello".to_vec()), "{kind}");

        // Operators see it: node B's feed position is the control plane's
        // newest change, and A counted its write.
        let newest = plane.store().kv_seq().await.expect("seq");
        let started = Instant::now();
        while b.metric("edge_kv_feed_position").await != newest as f64 {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{kind}: feed position"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(a.metric("edge_kv_writes_total{outcome=\"ok\"}").await, 1.0);
        assert!(b.metric("edge_kv_reads_total").await >= 2.0);

        // The control plane goes away: both nodes keep serving reads, and a
        // write is refused with a reason.
        plane.stop().await;
        for node in [&a, &b] {
            assert_eq!(
                call(node, "GET", DOMAIN, "/kv/greeting", "").await,
                (200, "hello".to_string()),
                "{kind}"
            );
        }
        let (status, body) = call(&a, "PUT", DOMAIN, "/kv/greeting", "lost").await;
        assert_eq!(status, 503, "{kind}: {body}");
        assert!(
            body.contains("control plane is unreachable"),
            "{kind}: {body}"
        );
        assert_eq!(
            a.metric("edge_kv_writes_total{outcome=\"unavailable\"}")
                .await,
            1.0
        );

        // A node restarted while the control plane is still down serves the
        // last replicated value from its own disk.
        a.stop().await;
        let restarted = EdgeNode::start(NO_CONTROL_PLANE, dirs[0].path(), "node-a").await;
        until_answers(&restarted, DOMAIN, "/kv/greeting", 200, "hello").await;
        restarted.stop().await;
        b.stop().await;
    }
}

/// Where no control plane answers (the discard port): a node started to
/// follow it serves only what it has on disk.
const NO_CONTROL_PLANE: &str = "http://127.0.0.1:9";

#[tokio::test]
async fn concurrent_increments_through_guests_on_two_nodes_add_up_exactly() {
    for kind in databases() {
        let plane = Plane::start(kind).await;
        let token = plane.tenant("acme").await;
        state_service(&plane, &token, DOMAIN, json!({"kv_stores": ["counters"]})).await;
        let (_dirs, nodes) = two_nodes(&plane).await;
        for node in &nodes {
            until_answers(node, DOMAIN, "/kv/none", 404, "no such key\n").await;
        }
        let visits: Vec<_> = (0..100)
            .map(|i| {
                let addr = nodes[i % 2].addr;
                tokio::spawn(async move { get(addr, DOMAIN, "/visits").await })
            })
            .collect();
        let mut counts = Vec::new();
        for visit in visits {
            let reply = visit.await.expect("task");
            assert_eq!(reply.status, 200, "{kind}: {}", reply.text());
            let count: u64 = reply
                .text()
                .trim()
                .strip_prefix("visit ")
                .and_then(|n| n.parse().ok())
                .expect("a count");
            counts.push(count);
        }
        counts.sort_unstable();
        assert_eq!(
            counts,
            (1..=100).collect::<Vec<_>>(),
            "{kind}: each increment saw its own count"
        );
        let total = plane.api(&token).kv_get("counters", "visits").await;
        assert_eq!(total.expect("read"), Some(b"100".to_vec()), "{kind}");
        plane.stop_with_nodes(nodes).await;
    }
}

#[tokio::test]
async fn two_tenants_with_a_store_of_one_name_never_see_each_others_keys() {
    for kind in databases() {
        let plane = Plane::start(kind).await;
        let [acme, globex] = plane.tenants(["acme", "globex"]).await;
        state_service(&plane, &acme, DOMAIN, json!({"kv_stores": ["counters"]})).await;
        let globex_domain = "web.globex.test";
        state_service(
            &plane,
            &globex,
            globex_domain,
            json!({"kv_stores": ["counters"]}),
        )
        .await;
        let (_dir, node) = one_node(&plane).await;
        until_answers(
            &node,
            globex_domain,
            "/kv/secret-plan",
            404,
            "no such key\n",
        )
        .await;
        until_answers(&node, DOMAIN, "/kv/secret-plan", 404, "no such key\n").await;

        let written = call(&node, "PUT", DOMAIN, "/kv/secret-plan", "acme's").await;
        assert_eq!(written, (200, "ok\n".to_string()), "{kind}");
        // Written through the API as well.
        plane
            .api(&acme)
            .kv_put("counters", "from-api", b"acme api".to_vec())
            .await
            .expect("put");
        until_answers(&node, DOMAIN, "/kv/from-api", 200, "acme api").await;
        for key in ["secret-plan", "from-api"] {
            let path = format!("/kv/{key}");
            assert_eq!(
                call(&node, "GET", globex_domain, &path, "").await,
                (404, "no such key\n".to_string()),
                "{kind}: globex sees acme's {key}"
            );
            let read = plane.api(&globex).kv_get("counters", key).await;
            assert_eq!(read.expect("globex's own store"), None, "{kind}");
        }
        let (status, body) = plane.get("/v1/kv/counters/keys?prefix=from", &acme).await;
        assert_eq!(
            (status, &body["keys"]),
            (StatusCode::OK, &json!(["from-api"])),
            "{kind}"
        );
        let (status, body) = plane.get("/v1/kv/counters/keys", &globex).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["keys"], json!([]), "{kind}");
        assert_eq!(
            call(&node, "GET", globex_domain, "/keys", "").await,
            (200, String::new()),
            "{kind}"
        );
        // A store the service does not list does not open, whoever has one.
        assert_eq!(
            call(&node, "GET", DOMAIN, "/open/carts", "").await,
            (404, "no-such-store\n".to_string()),
            "{kind}"
        );
        plane.stop_with_nodes([node]).await;
    }
}

#[tokio::test]
async fn config_and_secrets_reach_the_guest_and_a_secret_is_never_shown() {
    const SECRET: &str = "sk-live-4e1f9c0a7d2b";
    for kind in databases() {
        let plane = Plane::start(kind).await;
        let token = plane.tenant("acme").await;
        let (status, body) = plane
            .put("/v1/secrets/api_key", &token, json!({"value": SECRET}))
            .await;
        assert_eq!(status, StatusCode::OK, "{kind}: {body}");
        assert!(!body.to_string().contains(SECRET), "{kind}: {body}");
        let spec = json!({
            "kv_stores": ["counters"],
            "config": {"feature_x": "on"},
            "secrets": ["api_key"],
        });
        state_service(&plane, &token, DOMAIN, spec).await;
        let (dir, node) = one_node(&plane).await;
        until_answers(&node, DOMAIN, "/flag", 200, "feature_x is on\n").await;
        let private = |key: &'static str| {
            let addr = node.addr;
            async move {
                let mut request = request("GET", DOMAIN, "/private", Bytes::new());
                request
                    .headers_mut()
                    .insert("x-api-key", key.parse().expect("header"));
                send(addr, Protocol::Http1, request).await.status
            }
        };
        assert_eq!(private(SECRET).await, 200, "{kind}");
        assert_eq!(private("wrong").await, 401, "{kind}");

        // A new value reaches the guest without a new module.
        let (status, _) = plane
            .put(
                "/v1/secrets/api_key",
                &token,
                json!({"value": "rotated-key"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        let started = Instant::now();
        while private("rotated-key").await != 200 {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{kind}: rotation not served"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (status, _) = plane
            .put("/v1/secrets/api_key", &token, json!({"value": SECRET}))
            .await;
        assert_eq!(status, StatusCode::OK);
        while private(SECRET).await != 200 {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{kind}: not served again"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        // Never in an API answer, a snapshot, a metric, or a file at rest.
        let (_, listed) = plane.get("/v1/secrets", &token).await;
        assert_eq!(listed[0]["name"], "api_key", "{kind}: {listed}");
        let (_, services) = plane.get("/v1/services", &token).await;
        let (_, versions) = plane.get("/v1/services/web/versions", &token).await;
        let (_, snapshot) = plane.snapshot(0).await;
        assert!(
            snapshot.to_string().contains("api_key"),
            "{kind}: the snapshot carries it sealed"
        );
        let node_metrics = get(node.admin_addr, "admin", "/metrics").await.text();
        for (what, text) in [
            ("the secret list", listed.to_string()),
            ("the service list", services.to_string()),
            ("the versions", versions.to_string()),
            ("the snapshot", snapshot.to_string()),
            ("the control plane's metrics", plane.metrics_page().await),
            ("the node's metrics", node_metrics),
        ] {
            assert!(!text.contains(SECRET), "{kind}: the secret is in {what}");
        }
        for file in files_under(plane.data.path())
            .into_iter()
            .chain(files_under(dir.path()))
        {
            let bytes = std::fs::read(&file).unwrap_or_default();
            assert!(
                !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
                "{kind}: the secret is in {} in the clear",
                file.display()
            );
        }
        plane.stop_with_nodes([node]).await;
    }
}

/// Every file under `dir`.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

#[tokio::test]
async fn every_kv_and_secret_limit_is_refused_as_documented() {
    for kind in databases() {
        let plane = Plane::start_with(kind, |config| {
            config.quotas.max_kv_stores_per_tenant = 2;
            config.quotas.max_kv_keys_per_store = 3;
            config.quotas.max_kv_bytes_per_tenant = 64 * 1024;
            config.quotas.kv_writes_per_second = 20;
            config.quotas.max_secrets_per_tenant = 1;
        })
        .await;
        let token = plane.tenant("acme").await;
        state_service(&plane, &token, DOMAIN, json!({"kv_stores": ["counters"]})).await;
        let (_dir, node) = one_node(&plane).await;
        until_answers(&node, DOMAIN, "/kv/k", 404, "no such key\n").await;
        let api = plane.api(&token);
        let refusal = |result: Result<(), edgectl::client::ApiError>| {
            let error = result.expect_err("refused");
            (error.status().map(|s| s.as_u16()), error.to_string())
        };

        // Key and value sizes.
        let long_key = "k".repeat(513);
        let (status, message) = refusal(api.kv_put("counters", &long_key, b"v".to_vec()).await);
        assert_eq!(status, Some(400), "{kind}: {message}");
        assert!(message.contains("1 to 512 bytes"), "{kind}: {message}");
        let too_big = "x".repeat(1024 * 1024 + 1);
        let (status, message) = refusal(
            api.kv_put("counters", "big", too_big.clone().into_bytes())
                .await,
        );
        assert_eq!(status, Some(413), "{kind}: {message}");
        let (status, body) = call(&node, "PUT", DOMAIN, "/kv/big", &too_big).await;
        assert_eq!(status, 503, "{kind}");
        assert!(body.contains("at most 1048576 bytes"), "{kind}: {body}");
        let path = format!("/kv/{long_key}");
        let (status, body) = call(&node, "PUT", DOMAIN, &path, "v").await;
        assert_eq!(
            (status, body.contains("1 to 512 bytes")),
            (503, true),
            "{kind}: {body}"
        );

        // Bytes per tenant, then keys per store.
        let (status, message) =
            refusal(api.kv_put("counters", "huge", vec![b'h'; 65 * 1024]).await);
        assert_eq!(status, Some(400), "{kind}: {message}");
        assert!(message.contains("at most 65536 bytes"), "{kind}: {message}");
        for key in ["a", "b", "c"] {
            api.kv_put("counters", key, b"1".to_vec())
                .await
                .expect("within the quota");
        }
        let (status, message) = refusal(api.kv_put("counters", "d", b"1".to_vec()).await);
        assert_eq!(status, Some(400), "{kind}: {message}");
        assert!(message.contains("at most 3 keys"), "{kind}: {message}");
        let (status, body) = call(&node, "PUT", DOMAIN, "/kv/d", "1").await;
        assert_eq!(
            (status, body.contains("at most 3 keys")),
            (503, true),
            "{kind}: {body}"
        );
        // Overwriting a key adds none.
        api.kv_put("counters", "a", b"2".to_vec())
            .await
            .expect("overwrite");

        // Stores per tenant.
        let (status, _) = plane
            .post("/v1/kv", &token, json!({"name": "second"}))
            .await;
        assert_eq!(status, StatusCode::CREATED);
        let (status, body) = plane.post("/v1/kv", &token, json!({"name": "third"})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{kind}: {body}");
        assert_eq!(body["error"]["code"], "quota_exceeded");
        let (status, body) = plane
            .post("/v1/kv", &token, json!({"name": "Bad/Name"}))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{kind}: {body}");

        // Writes per second: guests and the API share the tenant's rate.
        // The rate counts in one-second windows, so on a busy machine a
        // window may end between the guests' refusal and the API's write:
        // that attempt proves nothing and another is made. With separate
        // rates the API's write would never be refused.
        let mut shared = None;
        for _attempt in 0..5 {
            let mut guest_refusal = None;
            for i in 0..40 {
                let (status, body) = call(&node, "PUT", DOMAIN, "/kv/a", &i.to_string()).await;
                if status == 503 {
                    guest_refusal = Some(body);
                    break;
                }
            }
            let body = guest_refusal.expect("a guest's writes past the rate are refused");
            assert!(body.contains("KV keys written"), "{kind}: {body}");
            match api.kv_put("counters", "a", b"x".to_vec()).await {
                Ok(()) => continue,
                Err(error) => {
                    shared = Some((error.status().map(|s| s.as_u16()), error.to_string()));
                    break;
                }
            }
        }
        let (status, message) = shared.expect("the API's write is refused after the guests'");
        assert_eq!(status, Some(429), "{kind}: {message}");

        // Secrets: how many, and how large.
        let (status, _) = plane
            .put("/v1/secrets/one", &token, json!({"value": "1"}))
            .await;
        assert_eq!(status, StatusCode::OK);
        let (status, body) = plane
            .put("/v1/secrets/two", &token, json!({"value": "2"}))
            .await;
        assert_eq!(
            (status, &body["error"]["code"]),
            (StatusCode::BAD_REQUEST, &json!("quota_exceeded")),
            "{kind}"
        );
        let big = "s".repeat(8 * 1024 + 1);
        let (status, body) = plane
            .put("/v1/secrets/one", &token, json!({"value": big}))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{kind}: {body}");
        plane.stop_with_nodes([node]).await;
    }
}

#[tokio::test]
async fn a_deleted_store_leaves_every_node_and_opens_no_more() {
    for kind in databases() {
        let plane = Plane::start(kind).await;
        let token = plane.tenant("acme").await;
        state_service(&plane, &token, DOMAIN, json!({"kv_stores": ["counters"]})).await;
        let (_dir, node) = one_node(&plane).await;
        until_answers(&node, DOMAIN, "/kv/k", 404, "no such key\n").await;
        assert_eq!(call(&node, "PUT", DOMAIN, "/kv/k", "v").await.0, 200);
        let (status, _) = plane.delete("/v1/kv/counters", &token).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{kind}");
        until_answers(&node, DOMAIN, "/kv/k", 404, "no-such-store\n").await;
        // Created again, it is a new, empty store.
        let (status, _) = plane
            .post("/v1/kv", &token, json!({"name": "counters"}))
            .await;
        assert_eq!(status, StatusCode::CREATED);
        until_answers(&node, DOMAIN, "/kv/k", 404, "no such key\n").await;
        plane.stop_with_nodes([node]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javascript_and_python_guests_share_a_store_and_read_config_through_the_same_interfaces() {
    let plane = Plane::start_with("sqlite", |config| {
        // The language runtimes are large components.
        config.max_upload_bytes = 64 * 1024 * 1024;
    })
    .await;
    let token = plane.tenant("acme").await;
    let (status, _) = plane
        .post("/v1/kv", &token, json!({"name": "counters"}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let spec = json!({"kv_stores": ["counters"], "config": {"feature_x": "on"}});
    for (service, guest) in [
        ("js", edge_tests::guests::javascript_guest()),
        ("py", edge_tests::guests::python_guest()),
    ] {
        let (status, body) = plane.create_service(&token, service, spec.clone()).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let bytes = std::fs::read(guest).expect("guest");
        plane.deploy(&token, service, bytes).await;
    }
    let (_dir, node) = one_node(&plane).await;
    let (js, py) = ("js.acme.test", "py.acme.test");
    until_answers(&node, js, "/flag", 200, "feature_x is on\n").await;
    until_answers(&node, py, "/flag", 200, "feature_x is on\n").await;
    // One counter, incremented by both languages in turn.
    for (host, expected) in [(js, 1), (py, 2), (js, 3), (py, 4)] {
        let reply = get(node.addr, host, "/visits").await;
        assert_eq!(
            (reply.status, reply.text()),
            (200, format!("visit {expected}\n")),
            "{host}"
        );
    }
    plane.stop_with_nodes([node]).await;
}

#[tokio::test]
async fn a_tenant_manages_stores_keys_and_secrets_with_edgectl() {
    // An import of 1 500 keys takes three seconds of the default rate.
    let plane = Plane::start_with("sqlite", |config| {
        config.quotas.kv_writes_per_second = 10_000
    })
    .await;
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("edgectl.json");
    let token = edgectl_tenant(&config, &plane, "acme", &[]).await;
    edgectl(&config, &["kv", "create", "carts"]).await;
    edgectl(&config, &["kv", "put", "carts", "user:1", "[1,2]"]).await;
    let file = dir.path().join("value.bin");
    std::fs::write(&file, [0u8, 159, 146, 150]).expect("write");
    edgectl(
        &config,
        &["kv", "put", "carts", "bytes/with/slashes", "--file"]
            .iter()
            .copied()
            .chain([file.to_str().expect("path")])
            .collect::<Vec<_>>(),
    )
    .await;
    assert_eq!(
        edgectl(&config, &["kv", "get", "carts", "user:1"]).await,
        "[1,2]"
    );
    let seed = dir.path().join("seed.json");
    let entries: serde_json::Map<String, serde_json::Value> = (0..1_500)
        .map(|i| (format!("seed:{i:04}"), json!(format!("value {i}"))))
        .collect();
    std::fs::write(&seed, serde_json::to_vec(&entries).expect("json")).expect("write");
    let imported = edgectl(
        &config,
        &["kv", "import", "carts", seed.to_str().expect("path")],
    )
    .await;
    assert_eq!(imported.trim(), "1500 keys imported into carts");
    let listed = edgectl(&config, &["kv", "list", "carts", "--prefix", "seed:"]).await;
    assert_eq!(listed.lines().count(), 1_500, "every page");
    assert_eq!(listed.lines().next(), Some("seed:0000"));
    let stores = edgectl(&config, &["kv", "stores"]).await;
    assert!(stores.starts_with("carts\t1502 keys\t"), "{stores}");
    let raw = plane
        .api(&token)
        .kv_get("carts", "bytes/with/slashes")
        .await
        .expect("read");
    assert_eq!(raw, Some(vec![0u8, 159, 146, 150]));
    // Compare-and-swap from the command line.
    let version = edgectl(
        &config,
        &["kv", "get", "carts", "user:1", "--print-version"],
    )
    .await;
    let version = version.trim();
    edgectl(
        &config,
        &[
            "kv",
            "put",
            "carts",
            "user:1",
            "[3]",
            "--if-version",
            version,
        ],
    )
    .await;
    edgectl(
        &config,
        &["kv", "put", "carts", "fresh", "new", "--if-absent"],
    )
    .await;
    assert_eq!(
        edgectl(&config, &["kv", "get", "carts", "user:1"]).await,
        "[3]"
    );
    edgectl(&config, &["kv", "delete", "carts", "user:1"]).await;
    assert_eq!(
        plane
            .api(&token)
            .kv_get("carts", "user:1")
            .await
            .expect("read"),
        None
    );

    // A secret from standard input, never printed back.
    let mut child = tokio::process::Command::new(workspace_binary("edgectl"))
        .args(["secret", "set", "api_key"])
        .env("EDGECTL_CONFIG", &config)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("edgectl runs");
    {
        use tokio::io::AsyncWriteExt as _;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(b"from-stdin-value\n").await.expect("write");
    }
    let output = child.wait_with_output().await.expect("edgectl ends");
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "secret api_key set\n"
    );
    let listed = edgectl(&config, &["secret", "list"]).await;
    assert_eq!(listed, "api_key\n");
    edgectl(&config, &["secret", "delete", "api_key"]).await;
    assert_eq!(edgectl(&config, &["secret", "list"]).await, "");
    edgectl(&config, &["kv", "delete-store", "carts"]).await;
    assert_eq!(edgectl(&config, &["kv", "stores"]).await, "");
    plane.stop().await;
}

/// Makes every tombstone of `plane`'s database older than the retention,
/// as a day's wait would, and prunes them.
async fn age_and_prune_tombstones(plane: &Plane) -> u64 {
    sqlx::any::install_default_drivers();
    let mut db = <sqlx::AnyConnection as sqlx::Connection>::connect(&plane.database_url)
        .await
        .expect("the control plane's database");
    sqlx::query("UPDATE kv_entries SET updated_at = 0 WHERE value IS NULL")
        .execute(&mut db)
        .await
        .expect("aged");
    plane
        .store()
        .prune_kv_tombstones(10_000)
        .await
        .expect("pruned")
}

#[tokio::test]
async fn a_node_away_past_the_pruned_deletes_reads_every_store_again_and_keeps_serving_meanwhile() {
    for kind in databases() {
        let plane =
            Plane::start_with(kind, |config| config.quotas.kv_writes_per_second = 10_000).await;
        let token = plane.tenant("acme").await;
        state_service(&plane, &token, DOMAIN, json!({"kv_stores": ["counters"]})).await;
        // More keys than one feed answer holds.
        let entries: Vec<_> = (0..2_500)
            .map(|i| edgectl::wire::KvEntry {
                key: format!("seed:{i:04}"),
                value: format!("value {i}").into_bytes(),
            })
            .collect();
        let api = plane.api(&token);
        for chunk in entries.chunks(1_000) {
            let import = edgectl::wire::KvImport {
                entries: chunk.to_vec(),
            };
            api.kv_import("counters", &import).await.expect("imported");
        }
        let dir = tempfile::tempdir().expect("dir");
        let node = EdgeNode::start(&plane.base, dir.path(), "node-a").await;
        until_answers(&node, DOMAIN, "/kv/seed:2499", 200, "value 2499").await;
        node.stop().await;

        // While the node is away a key is deleted, and its tombstone is
        // pruned: the node cannot hear of the delete any more.
        api.kv_delete("counters", "seed:0001")
            .await
            .expect("deleted");
        assert_eq!(age_and_prune_tombstones(&plane).await, 1, "{kind}");
        api.kv_put("counters", "after", b"the prune".to_vec())
            .await
            .expect("put");

        let node = EdgeNode::start(&plane.base, dir.path(), "node-a").await;
        // It is told to reset, reads every store again, and then serves
        // exactly what the control plane holds.
        until_answers(&node, DOMAIN, "/kv/after", 200, "the prune").await;
        until_answers(&node, DOMAIN, "/kv/seed:0001", 404, "no such key\n").await;
        assert_eq!(
            call(&node, "GET", DOMAIN, "/kv/seed:2000", "").await,
            (200, "value 2000".to_string()),
            "{kind}"
        );
        assert_eq!(
            node.metric("edge_kv_feed_resets_total").await,
            1.0,
            "{kind}"
        );
        // Caught up, it stays caught up: no further reset.
        let newest = plane.store().kv_seq().await.expect("seq");
        api.kv_put("counters", "later", b"still".to_vec())
            .await
            .expect("put");
        until_answers(&node, DOMAIN, "/kv/later", 200, "still").await;
        assert!(node.metric("edge_kv_feed_position").await > newest as f64);
        assert_eq!(
            node.metric("edge_kv_feed_resets_total").await,
            1.0,
            "{kind}: reset again"
        );
        // A node that starts empty reads it all once.
        let fresh_dir = tempfile::tempdir().expect("dir");
        let fresh = EdgeNode::start(&plane.base, fresh_dir.path(), "node-b").await;
        until_answers(&fresh, DOMAIN, "/kv/later", 200, "still").await;
        assert!(
            fresh.metric("edge_kv_feed_resets_total").await <= 1.0,
            "{kind}"
        );
        until_answers(&fresh, DOMAIN, "/kv/seed:0001", 404, "no such key\n").await;
        plane.stop_with_nodes([node, fresh]).await;
    }
}

/// A free loopback port.
fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
}

/// `program` with `args`, logging at debug level into `log`; killed on drop.
fn spawn_logging(program: &Path, args: &[&str], log: &Path) -> tokio::process::Child {
    tokio::process::Command::new(program)
        .args(args)
        .env("RUST_LOG", "debug")
        .env("EDGE_ADMIN_TOKEN", ADMIN)
        .env("EDGE_CLUSTER_TOKEN", CLUSTER)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log).expect("log file"))
        .kill_on_drop(true)
        .spawn()
        .expect("starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_is_in_no_log_line_of_the_control_plane_or_the_node() {
    const SECRET: &str = "sk-log-probe-93c1f7e2";
    let dir = tempfile::tempdir().expect("dir");
    let key_file = dir.path().join("secrets.key");
    std::fs::write(&key_file, SECRETS_KEY_HEX).expect("key");
    let (plane_addr, node_addr, admin_addr) = (free_port(), free_port(), free_port());
    let (plane_log, node_log) = (dir.path().join("plane.log"), dir.path().join("node.log"));
    let plane_dir = dir.path().join("plane");
    let mut plane = spawn_logging(
        &workspace_binary("control-plane"),
        &[
            "serve",
            "--platform-domain",
            PLATFORM_DOMAIN,
            "--listen",
            &plane_addr.to_string(),
            "--data-dir",
            plane_dir.to_str().expect("path"),
            "--secrets-key-file",
            key_file.to_str().expect("path"),
        ],
        &plane_log,
    );
    let base = format!("http://{plane_addr}");
    let api = edgectl::client::ApiClient::with_http(&base, ADMIN, reqwest::Client::new());
    let started = Instant::now();
    let token = loop {
        match api.create_tenant("acme", false).await {
            Ok(created) => break created.token,
            Err(_) if started.elapsed() < Duration::from_secs(30) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => panic!("the control plane never answered: {error}"),
        }
    };
    let tenant = api.as_token(&token);
    tenant
        .set_secret("api_key", SECRET)
        .await
        .expect("secret set");
    tenant.create_kv_store("counters").await.expect("store");
    let spec = serde_json::from_value(json!({
        "domains": [DOMAIN],
        "kv_stores": ["counters"],
        "secrets": ["api_key"],
    }))
    .expect("spec");
    tenant.create_service("web", &spec).await.expect("service");
    tenant.deploy("web", state_guest()).await.expect("deployed");

    let node_dir = dir.path().join("node");
    std::fs::create_dir_all(&node_dir).expect("node dir");
    let config = node_dir.join("node.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\nlisten = \"{node_addr}\"\nadmin_listen = \"{admin_addr}\"\n\
             data_dir = \"{}\"\nsecrets_key_file = \"{}\"\n\n\
             [control_plane]\nurl = \"{base}\"\ncluster_token = \"{CLUSTER}\"\nnode_name = \"logged\"\n",
            node_dir.display(),
            key_file.display()
        ),
    )
    .expect("node config");
    let mut node = spawn_logging(
        &workspace_binary("edge-node"),
        &["serve", "--config", config.to_str().expect("path")],
        &node_log,
    );
    let started = Instant::now();
    while tokio::net::TcpStream::connect(node_addr).await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the node never listened"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The guest reads the secret (and a wrong key is refused), and writes.
    let private = |key: &'static str| async move {
        let mut request = request("GET", DOMAIN, "/private", Bytes::new());
        request
            .headers_mut()
            .insert("x-api-key", key.parse().expect("header"));
        tokio::time::timeout(
            Duration::from_secs(5),
            send(node_addr, Protocol::Http1, request),
        )
        .await
        .map(|reply| reply.status)
        .unwrap_or(0)
    };
    let started = Instant::now();
    while private(SECRET).await != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the node never served the secret"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(private("wrong").await, 401);
    let put = request("PUT", DOMAIN, "/kv/k", Bytes::from_static(b"v"));
    assert_eq!(send(node_addr, Protocol::Http1, put).await.status, 200);
    let _ = tenant.secrets().await.expect("listed");

    let _ = node.kill().await;
    let _ = plane.kill().await;
    let (plane_text, node_text) = (
        std::fs::read_to_string(&plane_log).expect("plane log"),
        std::fs::read_to_string(&node_log).expect("node log"),
    );
    // The logs were written, at debug level, and name the secret only.
    assert!(plane_text.contains("secret set"), "{plane_text}");
    assert!(node_text.contains("applied snapshot"), "{node_text}");
    for (what, text) in [("control plane", &plane_text), ("node", &node_text)] {
        assert!(!text.contains(SECRET), "the secret is in the {what}'s log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_and_swap_through_the_api_is_decided_by_the_control_plane() {
    use edgectl::wire::KvExpect;
    for kind in databases() {
        let plane =
            Plane::start_with(kind, |config| config.quotas.kv_writes_per_second = 10_000).await;
        let token = plane.tenant("acme").await;
        let (status, _) = plane
            .post("/v1/kv", &token, json!({"name": "counters"}))
            .await;
        assert_eq!(status, StatusCode::CREATED);
        let api = plane.api(&token);
        let precondition = |result: Result<u64, edgectl::client::ApiError>| {
            result.expect_err("refused").status().map(|s| s.as_u16())
        };

        // Create-only, then swaps that name the version they read.
        let v1 = api
            .kv_put_if("counters", "doc", b"one".to_vec(), Some(KvExpect::Absent))
            .await
            .expect("created");
        let again = api
            .kv_put_if("counters", "doc", b"x".to_vec(), Some(KvExpect::Absent))
            .await;
        assert_eq!(precondition(again), Some(412), "{kind}");
        let (value, version) = api
            .kv_get_versioned("counters", "doc")
            .await
            .expect("read")
            .expect("some");
        assert_eq!((value.as_slice(), version), (&b"one"[..], v1), "{kind}");
        let v2 = api
            .kv_put_if(
                "counters",
                "doc",
                b"two".to_vec(),
                Some(KvExpect::Version(v1)),
            )
            .await
            .expect("swapped");
        assert!(v2 > v1);
        let stale = api
            .kv_put_if(
                "counters",
                "doc",
                b"lost".to_vec(),
                Some(KvExpect::Version(v1)),
            )
            .await;
        assert_eq!(precondition(stale), Some(412), "{kind}");
        let stale = api
            .kv_delete_if("counters", "doc", Some(KvExpect::Version(v1)))
            .await;
        assert_eq!(
            stale.expect_err("refused").status().map(|s| s.as_u16()),
            Some(412)
        );
        assert_eq!(
            api.kv_get("counters", "doc").await.expect("read"),
            Some(b"two".to_vec())
        );
        api.kv_delete_if("counters", "doc", Some(KvExpect::Version(v2)))
            .await
            .expect("deleted at its version");
        let (status, body) = plane
            .call("PUT", "/v1/kv/counters/keys/doc", &token, None)
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{kind}: {body}");

        // Twenty clients each add one with read, modify, swap and retry:
        // no update is lost.
        api.kv_put("counters", "total", b"0".to_vec())
            .await
            .expect("put");
        let clients: Vec<_> = (0..20)
            .map(|_| {
                let api = api.clone();
                tokio::spawn(async move {
                    loop {
                        let (value, version) = api
                            .kv_get_versioned("counters", "total")
                            .await
                            .expect("read")
                            .expect("some");
                        let n: u64 = String::from_utf8(value).expect("utf8").parse().expect("n");
                        let next = (n + 1).to_string().into_bytes();
                        let swap = api
                            .kv_put_if("counters", "total", next, Some(KvExpect::Version(version)))
                            .await;
                        match swap {
                            Ok(_) => return,
                            Err(error)
                                if error.status() == Some(StatusCode::PRECONDITION_FAILED) => {}
                            Err(error) => panic!("{error}"),
                        }
                    }
                })
            })
            .collect();
        for client in clients {
            client.await.expect("client");
        }
        let total = api.kv_get("counters", "total").await.expect("read");
        assert_eq!(total, Some(b"20".to_vec()), "{kind}");
        plane.stop().await;
    }
}
