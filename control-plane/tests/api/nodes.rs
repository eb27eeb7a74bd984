//! The node protocol: registration, snapshots, usage, failure reports,
//! guest log lines.

use super::*;

/// A report carries an id: sent again (its answer was lost, or the node
/// was killed before it knew), it is counted once; another id counts.
#[tokio::test]
async fn a_usage_report_sent_again_with_its_id_is_counted_once() {
    on_every_database(async |kind, plane| {
        let token = plane.acme_web_hello().await;
        let node = plane.register_node("n1").await;
        let report = |id: &str| {
            json!({"snapshot_version": 1, "report_id": id, "services": [{
                "service": "acme/web", "requests": 10, "status_2xx": 10, "status_3xx": 0,
                "status_4xx": 0, "status_5xx": 0, "guest_cpu_micros": 100, "bytes_out": 200
            }]})
        };
        for id in ["run1-0", "run1-0", "run1-0", "run1-1"] {
            let (status, _) = plane.post("/v1/node/usage", &node, report(id)).await;
            assert_eq!(status, StatusCode::NO_CONTENT, "{kind}");
        }
        let (_, usage) = plane.get("/v1/usage", &token).await;
        assert_eq!(usage[0]["requests"], 20, "{kind}: two distinct reports");
        let (status, body) = plane
            .post("/v1/node/usage", &node, report(&"x".repeat(65)))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{kind}: {body}");
    })
    .await;
}

#[tokio::test]
async fn nodes_register_report_usage_and_are_listed() {
    on_every_database(async |kind, plane| {
        let token = plane.acme_web_hello().await;
        let (status, _) = plane
            .post(
                "/v1/node/register",
                "wrong",
                json!({"name": "n1", "engine_fingerprint": "x"}),
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{kind}");
        let node = plane.register_node("n1").await;
        // The cluster token only registers: reports need the node's own.
        let report = json!({"snapshot_version": 1, "services": [{
            "service": "acme/web", "requests": 10, "status_2xx": 9, "status_3xx": 0,
            "status_4xx": 1, "status_5xx": 0, "guest_cpu_micros": 1234, "bytes_out": 200
        }]});
        let (status, _) = plane.post("/v1/node/usage", CLUSTER, report.clone()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{kind}");
        for _ in 0..2 {
            let (status, _) = plane.post("/v1/node/usage", &node, report.clone()).await;
            assert_eq!(status, StatusCode::NO_CONTENT, "{kind}");
        }
        let (_, usage) = plane.get("/v1/usage", &token).await;
        assert_eq!(usage[0]["service"], "web");
        assert_eq!(usage[0]["requests"], 20, "{kind}");
        assert_eq!(usage[0]["guest_cpu_micros"], 2468);
        let (_, nodes) = plane.get("/v1/nodes", ADMIN).await;
        assert_eq!(nodes[0]["name"], "n1", "{kind}");
        assert_eq!(nodes[0]["snapshot_version"], 1);
        assert_eq!(nodes[0]["healthy"], true);
        // The operator removes the node: its credential is refused at once.
        let id = nodes[0]["id"].as_str().expect("id");
        let (status, _) = plane.delete(&format!("/v1/nodes/{id}"), ADMIN).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{kind}");
        let (status, _) = plane.post("/v1/node/usage", &node, report.clone()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{kind}");
        for name in ["", "a b", &"n".repeat(129)] {
            let (status, body) = plane
                .post(
                    "/v1/node/register",
                    CLUSTER,
                    json!({"name": name, "engine_fingerprint": "x"}),
                )
                .await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{kind}: {name:?}");
            assert_eq!(body["error"]["code"], "invalid_node_name");
        }
    })
    .await;
}

/// What a node says about services it could not load is bounded: at most
/// `MAX_REPORTED_FAILURES` entries and `MAX_FAILURE_ERROR_CHARS` of each
/// error are kept, a service that does not exist is left out, and the next
/// report replaces the last.
#[tokio::test]
async fn node_failure_reports_are_bounded_and_replaced() {
    use control_plane::store::node_failures::{MAX_FAILURE_ERROR_CHARS, MAX_REPORTED_FAILURES};
    let plane = Plane::start("sqlite").await;
    let token = plane.acme_web_hello().await;
    let node = plane.register_node("n1").await;
    let failure = |service: &str| {
        json!({"service": service, "version": 1, "module_sha256": "x",
               "error": "e".repeat(MAX_FAILURE_ERROR_CHARS + 100)})
    };
    let mut failures: Vec<Value> = (0..=MAX_REPORTED_FAILURES)
        .map(|_| failure("acme/web"))
        .collect();
    failures.insert(0, failure("nobody/nothing"));
    let (status, body) = plane
        .post(
            "/v1/node/status",
            &node,
            json!({"snapshot_version": 1, "failures": failures}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let versions = reported_failures(&plane, &token, |kept| !kept.is_empty()).await;
    let kept = versions[0]["node_failures"].as_array().expect("failures");
    // The unknown service took one of the places and was then left out.
    assert_eq!(kept.len(), MAX_REPORTED_FAILURES - 1);
    let error = kept[0]["error"].as_str().expect("error");
    assert_eq!(error.chars().count(), MAX_FAILURE_ERROR_CHARS);
    let (status, _) = plane
        .post(
            "/v1/node/status",
            &node,
            json!({"snapshot_version": 2, "failures": []}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    reported_failures(&plane, &token, Vec::is_empty).await;
    plane.stop().await;
}

/// The web service's versions, once the failures nodes reported about its
/// newest pass `written`: statuses are written in batches, every
/// `SIGHTINGS_FLUSH_INTERVAL`. Panics after 20 of those.
async fn reported_failures(
    plane: &Plane,
    token: &str,
    written: impl Fn(&Vec<Value>) -> bool,
) -> Value {
    let interval = control_plane::sightings::SIGHTINGS_FLUSH_INTERVAL;
    for _ in 0..20 {
        let (_, versions) = plane.get("/v1/services/web/versions", token).await;
        if versions[0]["node_failures"]
            .as_array()
            .is_some_and(&written)
        {
            return versions;
        }
        tokio::time::sleep(interval).await;
    }
    panic!("the node's status was not written within 20 flush intervals");
}

/// A hostile node (it holds the cluster token) cannot break usage for
/// everyone: counts no node could have served are refused, and what is
/// stored can never make the sums fail.
#[tokio::test]
async fn implausible_usage_is_refused_and_usage_and_metrics_still_answer() {
    on_every_database(async |kind, plane| {
        let token = plane.acme_web_hello().await;
        let nodes = [
            plane.register_node("n1").await,
            plane.register_node("n2").await,
        ];
        let usage = |requests: u64, ok: u64, cpu: u64, bytes: u64| {
            json!({"snapshot_version": 1, "services": [{
                "service": "acme/web", "requests": requests, "status_2xx": ok, "status_3xx": 0,
                "status_4xx": 0, "status_5xx": 0, "guest_cpu_micros": cpu, "bytes_out": bytes
            }]})
        };
        let max = u64::MAX;
        let limit = control_plane::api::nodes::MAX_REPORTED_REQUESTS;
        for hostile in [
            usage(max, max, max, max),
            usage(max, 0, 0, 0),
            usage(10, 11, 0, 0),
            usage(10, 10, max, 0),
            usage(0, 0, 0, max),
        ] {
            for node in &nodes {
                let (status, body) = plane.post("/v1/node/usage", node, hostile.clone()).await;
                assert_eq!(status, StatusCode::BAD_REQUEST, "{kind}: {hostile}");
                assert_eq!(body["error"]["code"], "implausible_usage", "{kind}");
            }
        }
        // CPU and bytes may come without requests (a request is counted at
        // its response head; its guest may finish in the next report).
        let (status, body) = plane
            .post("/v1/node/usage", &nodes[0], usage(0, 0, 5, 7))
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{kind}: {body}");
        // The largest plausible report, several times from two nodes.
        let big = usage(
            limit,
            limit,
            control_plane::api::nodes::MAX_REPORTED_CPU_MICROS,
            control_plane::api::nodes::MAX_REPORTED_BYTES,
        );
        for _ in 0..3 {
            for node in &nodes {
                let (status, body) = plane.post("/v1/node/usage", node, big.clone()).await;
                assert_eq!(status, StatusCode::NO_CONTENT, "{kind}: {body}");
            }
        }
        let (status, totals) = plane.get("/v1/usage", &token).await;
        assert_eq!(status, StatusCode::OK, "{kind}: {totals}");
        assert_eq!(totals[0]["requests"], 6 * limit, "{kind}");
        assert_eq!(
            totals[0]["guest_cpu_micros"],
            6 * control_plane::api::nodes::MAX_REPORTED_CPU_MICROS + 5,
            "{kind}"
        );
        assert_eq!(
            totals[0]["bytes_out"],
            6 * control_plane::api::nodes::MAX_REPORTED_BYTES + 7,
            "{kind}"
        );
        let metrics = plane
            .http
            .get(plane.url("/metrics"))
            .send()
            .await
            .expect("metrics");
        assert_eq!(metrics.status(), StatusCode::OK, "{kind}");
    })
    .await;
}

#[tokio::test]
async fn guest_logs_are_kept_per_service_bounded_and_read_in_order() {
    use control_plane::store::guest_logs::MAX_GUEST_LOG_LINES_PER_SERVICE;
    on_every_database(async |kind, plane| {
        let [token, other] = plane.tenants(["acme", "other"]).await;
        plane.service(&token, "web", "web.acme.test").await;
        let node = plane.register_node("n1").await;
        let line = |n: i64| {
            json!({"service": "acme/web", "version": 1, "request_id": format!("r{n}"),
                   "stream": "stdout", "timestamp_ms": 1_000 + n, "line": format!("line {n}")})
        };
        // One shipment over the batch limit is refused whole.
        let too_many: Vec<Value> = (0..201).map(line).collect();
        let (status, body) = plane
            .post("/v1/node/logs", &node, json!({"lines": too_many}))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{kind}: {body}");
        // The largest shipment a node sends is read, even when JSON escapes
        // every byte: 200 lines of 8 KiB control characters (~10 MB).
        let escaped = "\u{1}".repeat(8 * 1024);
        let heavy: Vec<Value> = (0..200)
            .map(|n| {
                json!({"service": "acme/web", "version": 1, "request_id": format!("h{n}"),
                            "stream": "stderr", "timestamp_ms": 1, "line": escaped})
            })
            .collect();
        let (status, body) = plane
            .post("/v1/node/logs", &node, json!({"lines": heavy}))
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{kind}: {body}");
        // A line of a service that does not exist is skipped.
        let (status, _) = plane
            .post(
                "/v1/node/logs",
                &node,
                json!({"lines": [{"service": "ghost/x", "version": 1, "request_id": "r",
                    "stream": "stdout", "timestamp_ms": 1, "line": "lost"}]}),
            )
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{kind}");
        // Past the per-service bound the oldest lines go.
        let total = MAX_GUEST_LOG_LINES_PER_SERVICE + 200;
        for start in (0..total).step_by(200) {
            let lines: Vec<Value> = (start..start + 200).map(line).collect();
            let (status, _) = plane
                .post("/v1/node/logs", &node, json!({"lines": lines}))
                .await;
            assert_eq!(status, StatusCode::NO_CONTENT, "{kind}");
        }
        let (_, page) = plane.get("/v1/services/web/logs?limit=3", &token).await;
        let texts: Vec<&str> = page["lines"]
            .as_array()
            .expect("lines")
            .iter()
            .map(|l| l["line"].as_str().unwrap_or_default())
            .collect();
        let last = total - 1;
        assert_eq!(
            texts,
            [
                format!("line {}", last - 2),
                format!("line {}", last - 1),
                format!("line {last}")
            ],
            "{kind}"
        );
        let (_, oldest) = plane
            .get("/v1/services/web/logs?after=0&limit=1", &token)
            .await;
        assert_eq!(oldest["lines"][0]["line"], "line 200", "{kind}");
        // Reading on from the last id gives nothing new.
        let next = page["next_after"].as_i64().expect("next_after");
        let (_, rest) = plane
            .get(&format!("/v1/services/web/logs?after={next}"), &token)
            .await;
        assert_eq!(rest["lines"].as_array().map(Vec::len), Some(0), "{kind}");
        // One request's lines only.
        let (_, one) = plane
            .get(
                &format!("/v1/services/web/logs?request_id=r{}", last - 5),
                &token,
            )
            .await;
        let one = one["lines"].as_array().expect("lines");
        assert_eq!(one.len(), 1, "{kind}");
        assert_eq!(one[0]["line"], format!("line {}", last - 5));
        // Another tenant cannot read them.
        let (status, _) = plane.get("/v1/services/web/logs", &other).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{kind}");
    })
    .await;
}

/// A snapshot is read and serialized once per version, however many nodes
/// poll for it: the bytes every node gets are the same.
#[tokio::test]
async fn a_snapshot_is_built_once_per_version_for_every_node() {
    let plane = Plane::start("sqlite").await;
    let token = plane.acme_web_hello().await;
    let builds = || async {
        edge_tests::node::metric_value(&plane.metrics_page().await, "cp_snapshot_builds_total")
    };
    let mut nodes = Vec::new();
    for i in 0..5 {
        nodes.push(plane.register_node(&format!("n{i}")).await);
    }
    let fetch_all = || async {
        let mut bodies = Vec::new();
        for node in &nodes {
            let (status, body) = plane.get("/v1/node/snapshot?after=0", node).await;
            assert_eq!(status, StatusCode::OK);
            bodies.push(body);
        }
        bodies
    };
    let first = fetch_all().await;
    assert!(first.windows(2).all(|pair| pair[0] == pair[1]));
    assert_eq!(builds().await, 1.0);
    plane.deploy(&token, "web", plain_wasi()).await;
    let second = fetch_all().await;
    assert_ne!(first[0]["version"], second[0]["version"]);
    assert_eq!(builds().await, 2.0, "one more version, one more build");
}
