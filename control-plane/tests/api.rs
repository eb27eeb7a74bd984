//! The API suite. It runs against SQLite, and also against PostgreSQL when
//! `EDGE_TEST_POSTGRES_URL` names a server (`scripts/test.sh` starts one):
//! each test then runs once per database, each time on a fresh schema.

mod common;

use std::time::{Duration, Instant};

use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test]
async fn tenants_need_the_admin_token() {
    for kind in databases() {
        let plane = Plane::start(kind).await;
        let body = Some(json!({"name": "acme"}));
        let (status, error) = plane
            .call("POST", "/v1/tenants", "wrong-token", body.clone())
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{kind}");
        assert_eq!(error["error"]["code"], "unauthorized");
        let token = plane.tenant("acme").await;
        // A tenant's token is not the admin's.
        let (status, _) = plane.call("GET", "/v1/tenants", &token, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{kind}");
        let (status, _) = plane.call("POST", "/v1/tenants", ADMIN, body).await;
        assert_eq!(status, StatusCode::CONFLICT, "{kind}: duplicate tenant");
        let (status, list) = plane.call("GET", "/v1/tenants", ADMIN, None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(list.as_array().map(Vec::len), Some(1));
        plane.stop().await;
    }
}

#[tokio::test]
async fn deploy_activate_and_roll_back_through_the_snapshot() {
    for kind in databases() {
        let plane = Plane::start(kind).await;
        let token = plane.tenant("acme").await;
        plane.service(&token, "web", "web.acme.test").await;
        let (status, _) = plane.snapshot(0).await;
        assert_eq!(
            status,
            StatusCode::NOT_MODIFIED,
            "{kind}: nothing active yet"
        );

        let v1 = plane.deploy(&token, "web", hello()).await;
        let (status, snapshot) = plane.snapshot(0).await;
        assert_eq!(status, StatusCode::OK, "{kind}");
        let first = snapshot["version"].as_u64().expect("version");
        let service = &snapshot["services"][0];
        assert_eq!(service["name"], "acme/web");
        assert_eq!(service["version"], v1);
        assert_eq!(service["spec"]["domains"][0], "web.acme.test");
        let v1_hash = service["module_sha256"].clone();

        let v2 = plane.deploy(&token, "web", echo()).await;
        assert_eq!(v2, v1 + 1);
        let (_, snapshot) = plane.snapshot(first).await;
        assert_eq!(snapshot["services"][0]["version"], v2, "{kind}");
        assert_ne!(snapshot["services"][0]["module_sha256"], v1_hash);
        let second = snapshot["version"].as_u64().expect("version");

        let (status, body) = plane
            .call("POST", "/v1/services/web/rollback", &token, None)
            .await;
        assert_eq!(status, StatusCode::OK, "{kind}: {body}");
        assert_eq!(body["active_version"], v1);
        let (_, snapshot) = plane.snapshot(second).await;
        assert_eq!(snapshot["services"][0]["module_sha256"], v1_hash, "{kind}");

        let (_, versions) = plane
            .call("GET", "/v1/services/web/versions", &token, None)
            .await;
        let versions = versions.as_array().expect("versions");
        assert_eq!(versions.len(), 2, "{kind}: rollback makes no new version");
        assert_eq!(versions[0]["author"], "initial");
        plane.stop().await;
    }
}

#[tokio::test]
async fn a_long_poll_answers_as_soon_as_a_version_is_activated() {
    for kind in databases() {
        let plane = Plane::start_with(kind, |c| c.snapshot_wait = Duration::from_secs(20)).await;
        let token = plane.tenant("acme").await;
        plane.service(&token, "web", "web.acme.test").await;
        let (status, body) = plane.upload(&token, "web", hello()).await;
        assert!(status.is_success());
        let hash = body["module_sha256"].as_str().expect("hash").to_string();

        let started = Instant::now();
        let poll = plane.snapshot(0);
        let activate = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            plane
                .call(
                    "POST",
                    "/v1/services/web/versions",
                    &token,
                    Some(json!({"module_sha256": hash, "activate": true})),
                )
                .await
        };
        let ((status, snapshot), (created, _)) = tokio::join!(poll, activate);
        assert_eq!(created, StatusCode::CREATED);
        assert_eq!(status, StatusCode::OK, "{kind}");
        assert_eq!(snapshot["services"][0]["name"], "acme/web");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{kind}: the poll waited {:?} instead of answering on activation",
            started.elapsed()
        );
        plane.stop().await;
    }
}

#[tokio::test]
async fn bad_uploads_are_refused_by_name_and_nothing_is_stored() {
    let forbidden = wat::parse_str(
        r#"(component
            (import "acme:db/query" (instance))
        )"#,
    )
    .expect("component with a forbidden import");
    let core_module = wat::parse_str("(module)").expect("core module");
    let no_handler = wat::parse_str("(component)").expect("empty component");
    let cases: Vec<(&str, Vec<u8>, StatusCode, &str, &str)> = vec![
        (
            "text file",
            b"this is not wasm".to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_component",
            "not a WebAssembly binary",
        ),
        (
            "core module",
            core_module,
            StatusCode::BAD_REQUEST,
            "invalid_component",
            "core WebAssembly module",
        ),
        (
            "forbidden import",
            forbidden,
            StatusCode::BAD_REQUEST,
            "invalid_component",
            "imports acme:db/query, which the platform does not provide",
        ),
        (
            "no handler",
            no_handler,
            StatusCode::BAD_REQUEST,
            "invalid_component",
            "does not export wasi:http/incoming-handler",
        ),
        (
            "oversized",
            vec![0u8; TEST_MAX_UPLOAD_BYTES + 1],
            StatusCode::PAYLOAD_TOO_LARGE,
            "upload_too_large",
            "at most",
        ),
    ];
    for kind in databases() {
        let plane = Plane::start(kind).await;
        let token = plane.tenant("acme").await;
        plane.service(&token, "web", "web.acme.test").await;
        for (what, bytes, status, code, message) in &cases {
            let response = plane
                .http
                .post(plane.url("/v1/services/web/modules"))
                .bearer_auth(&token)
                .body(bytes.clone())
                .send()
                .await
                .expect("upload");
            assert_eq!(response.status(), *status, "{kind}: {what}");
            let body: Value = response.json().await.expect("JSON error");
            assert_eq!(body["error"]["code"], *code, "{kind}: {what}: {body}");
            let text = body["error"]["message"].as_str().unwrap_or_default();
            assert!(text.contains(message), "{kind}: {what}: {text}");
        }
        assert_eq!(plane.stored_components(), 0, "{kind}: nothing stored");
        plane.stop().await;
    }
}

/// A core module of a handler that does nothing, with `items` (memories,
/// tables) in place of the usual one-page memory.
fn handler_with(items: &str) -> Vec<u8> {
    edge_tests::guests::hostile_component(&format!(
        r#"(module {items}
            (func (export "{}") (param i32 i32)))"#,
        edge_tests::guests::HANDLE_EXPORT
    ))
}

/// What the nodes' instance pool would refuse at load (the snapshot of every
/// node would otherwise carry a service none of them can run) is refused at
/// upload, with the limit named; what fits is accepted.
#[tokio::test]
async fn components_no_node_could_load_are_refused_at_upload_naming_the_limit() {
    let plane = Plane::start("sqlite").await;
    let token = plane.tenant("acme").await;
    plane.service(&token, "web", "web.acme.test").await;
    // 2048 pages are the default 128 MiB ceiling exactly.
    let cases = [
        (
            "initial memory over max_memory_bytes",
            r#"(memory (export "memory") 2049)"#,
            "sandbox.max_memory_bytes (134217728)",
        ),
        (
            "two memories in one module",
            r#"(memory (export "memory") 1) (memory 1)"#,
            "one memory per core module",
        ),
        (
            "a table over max_table_elements",
            r#"(memory (export "memory") 1) (table 100001 funcref)"#,
            "sandbox.max_table_elements (100000)",
        ),
        (
            "two tables in one module",
            r#"(memory (export "memory") 1) (table 1 funcref) (table 1 funcref)"#,
            "one table per core module",
        ),
    ];
    for (what, items, limit) in cases {
        let (status, body) = plane.upload(&token, "web", handler_with(items)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {body}");
        assert_eq!(body["error"]["code"], "invalid_component", "{what}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(limit), "{what}: {message}");
    }
    assert_eq!(plane.stored_components(), 0, "nothing stored");
    let (status, body) = plane
        .upload(
            &token,
            "web",
            handler_with(r#"(memory (export "memory") 2048)"#),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "at the ceiling: {body}");
    plane.stop().await;
}

#[tokio::test]
async fn the_same_bytes_are_stored_once() {
    for kind in databases() {
        let plane = Plane::start(kind).await;
        let token = plane.tenant("acme").await;
        plane.service(&token, "web", "web.acme.test").await;
        let (first, a) = plane.upload(&token, "web", hello()).await;
        let (second, b) = plane.upload(&token, "web", hello()).await;
        assert_eq!(first, StatusCode::CREATED, "{kind}");
        assert_eq!(second, StatusCode::OK, "{kind}: already stored");
        assert_eq!(a["module_sha256"], b["module_sha256"]);
        assert_eq!(plane.stored_components(), 1, "{kind}");
        plane.stop().await;
    }
}

#[tokio::test]
async fn a_tenant_cannot_touch_another_tenants_service() {
    for kind in databases() {
        let plane = Plane::start(kind).await;
        let a = plane.tenant("alpha").await;
        let b = plane.tenant("beta").await;
        plane.service(&a, "web", "web.alpha.test").await;
        let v1 = plane.deploy(&a, "web", hello()).await;
        let (_, hello_upload) = plane.upload(&a, "web", hello()).await;
        let hash = hello_upload["module_sha256"].clone();

        let attempts: Vec<(&str, String, Option<Value>)> = vec![
            ("GET", "/v1/services/web".into(), None),
            (
                "PUT",
                "/v1/services/web".into(),
                Some(json!({"domains": ["evil.test"]})),
            ),
            ("GET", "/v1/services/web/versions".into(), None),
            (
                "POST",
                "/v1/services/web/versions".into(),
                Some(json!({"module_sha256": hash, "activate": true})),
            ),
            (
                "POST",
                "/v1/services/web/activate".into(),
                Some(json!({"version": v1})),
            ),
            ("POST", "/v1/services/web/rollback".into(), None),
        ];
        let mut refused = 0;
        for (method, path, body) in &attempts {
            let (status, error) = plane.call(method, path, &b, body.clone()).await;
            assert_eq!(
                status,
                StatusCode::NOT_FOUND,
                "{kind}: {method} {path}: {error}"
            );
            assert_eq!(error["error"]["code"], "not_found");
            refused += 1;
        }
        let (status, _) = plane.upload(&b, "web", echo()).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{kind}: upload");
        assert_eq!(refused, attempts.len());
        // B sees none of A's services, and A's service is as it was.
        let (_, listed) = plane.call("GET", "/v1/services", &b, None).await;
        assert_eq!(listed, json!([]), "{kind}");
        let (_, service) = plane.call("GET", "/v1/services/web", &a, None).await;
        assert_eq!(
            service["spec"]["domains"],
            json!(["web.alpha.test"]),
            "{kind}"
        );
        assert_eq!(service["active_version"], v1);
        let (_, versions) = plane
            .call("GET", "/v1/services/web/versions", &a, None)
            .await;
        assert_eq!(versions.as_array().map(Vec::len), Some(1), "{kind}");
        // Another tenant's platform name is not beta's to claim.
        let (status, _) = plane
            .call(
                "POST",
                "/v1/services",
                &b,
                Some(json!({"name": "web", "spec": {"domains": ["web.alpha.test"]}})),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{kind}: a platform name");
        plane.stop().await;
    }
}

#[tokio::test]
async fn invalid_specs_name_every_problem() {
    for kind in databases() {
        let plane = Plane::start(kind).await;
        let token = plane.tenant("acme").await;
        let (status, body) = plane
            .call(
                "POST",
                "/v1/services",
                &token,
                Some(json!({"name": "web", "spec": {
                    "domains": ["bad domain!"],
                    "limits": {"cpu_budget_ms": 0},
                    "backends": {"origin": {"origin": "ftp://x"}}
                }})),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{kind}");
        assert_eq!(body["error"]["code"], "invalid_spec");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        for key in [
            "domains[0]",
            "limits.cpu_budget_ms",
            "backends.origin.origin",
        ] {
            assert!(
                message.contains(key),
                "{kind}: {key} missing from {message}"
            );
        }
        plane.stop().await;
    }
}

/// What a tenant may set for its requests has the operator's maxima
/// (`--node-max-cpu-budget-ms`, `--node-max-wall-time-ms`,
/// `--node-max-log-bytes-per-request`): a spec above one is 400, naming it.
#[tokio::test]
async fn limits_above_the_operators_maxima_are_refused_naming_them() {
    for kind in databases() {
        let plane = Plane::start(kind).await;
        let token = plane.tenant("acme").await;
        let (status, body) = plane
            .call(
                "POST",
                "/v1/services",
                &token,
                Some(json!({"name": "web", "spec": {
                    "domains": ["web.acme.test"],
                    "limits": {
                        "cpu_budget_ms": 60_000,
                        "wall_time_ms": 3_600_000,
                        "max_log_bytes_per_request": 16 * 1024 * 1024
                    }
                }})),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{kind}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        for (key, maximum) in [
            ("limits.cpu_budget_ms", "1..=5000"),
            ("limits.wall_time_ms", "1..=120000"),
            ("limits.max_log_bytes_per_request", "0..=1048576"),
        ] {
            assert!(
                message.contains(key) && message.contains(maximum),
                "{kind}: {key} {maximum} missing from {message}"
            );
        }
        // At the maxima, it is accepted.
        let (status, _) = plane
            .call(
                "POST",
                "/v1/services",
                &token,
                Some(json!({"name": "web", "spec": {
                    "domains": ["web.acme.test"],
                    "limits": {"cpu_budget_ms": 5_000, "wall_time_ms": 120_000}
                }})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{kind}");
        plane.stop().await;
    }
}

/// A report carries an id: sent again (its answer was lost, or the node
/// was killed before it knew), it is counted once; another id counts.
#[tokio::test]
async fn a_usage_report_sent_again_with_its_id_is_counted_once() {
    for kind in databases() {
        let plane = Plane::start(kind).await;
        let token = plane.tenant("acme").await;
        plane.service(&token, "web", "web.acme.test").await;
        plane.deploy(&token, "web", hello()).await;
        let node = plane.register_node("n1").await;
        let report = |id: &str| {
            json!({"snapshot_version": 1, "report_id": id, "services": [{
                "service": "acme/web", "requests": 10, "status_2xx": 10, "status_3xx": 0,
                "status_4xx": 0, "status_5xx": 0, "guest_cpu_micros": 100, "bytes_out": 200
            }]})
        };
        for id in ["run1-0", "run1-0", "run1-0", "run1-1"] {
            let (status, _) = plane
                .call("POST", "/v1/node/usage", &node, Some(report(id)))
                .await;
            assert_eq!(status, StatusCode::NO_CONTENT, "{kind}");
        }
        let (_, usage) = plane.call("GET", "/v1/usage", &token, None).await;
        assert_eq!(usage[0]["requests"], 20, "{kind}: two distinct reports");
        let (status, body) = plane
            .call(
                "POST",
                "/v1/node/usage",
                &node,
                Some(report(&"x".repeat(65))),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{kind}: {body}");
        plane.stop().await;
    }
}

#[tokio::test]
async fn nodes_register_report_usage_and_are_listed() {
    for kind in databases() {
        let plane = Plane::start(kind).await;
        let token = plane.tenant("acme").await;
        plane.service(&token, "web", "web.acme.test").await;
        plane.deploy(&token, "web", hello()).await;
        let (status, _) = plane
            .call(
                "POST",
                "/v1/node/register",
                "wrong",
                Some(json!({"name": "n1", "engine_fingerprint": "x"})),
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{kind}");
        let node = plane.register_node("n1").await;
        // The cluster token only registers: reports need the node's own.
        let report = json!({"snapshot_version": 1, "services": [{
            "service": "acme/web", "requests": 10, "status_2xx": 9, "status_3xx": 0,
            "status_4xx": 1, "status_5xx": 0, "guest_cpu_micros": 1234, "bytes_out": 200
        }]});
        let (status, _) = plane
            .call("POST", "/v1/node/usage", CLUSTER, Some(report.clone()))
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{kind}");
        for _ in 0..2 {
            let (status, _) = plane
                .call("POST", "/v1/node/usage", &node, Some(report.clone()))
                .await;
            assert_eq!(status, StatusCode::NO_CONTENT, "{kind}");
        }
        let (_, usage) = plane.call("GET", "/v1/usage", &token, None).await;
        assert_eq!(usage[0]["service"], "web");
        assert_eq!(usage[0]["requests"], 20, "{kind}");
        assert_eq!(usage[0]["guest_cpu_micros"], 2468);
        let (_, nodes) = plane.call("GET", "/v1/nodes", ADMIN, None).await;
        assert_eq!(nodes[0]["name"], "n1", "{kind}");
        assert_eq!(nodes[0]["snapshot_version"], 1);
        assert_eq!(nodes[0]["healthy"], true);
        // The operator removes the node: its credential is refused at once.
        let id = nodes[0]["id"].as_str().expect("id");
        let (status, _) = plane
            .call("DELETE", &format!("/v1/nodes/{id}"), ADMIN, None)
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{kind}");
        let (status, _) = plane
            .call("POST", "/v1/node/usage", &node, Some(report.clone()))
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{kind}");
        for name in ["", "a b", &"n".repeat(129)] {
            let (status, body) = plane
                .call(
                    "POST",
                    "/v1/node/register",
                    CLUSTER,
                    Some(json!({"name": name, "engine_fingerprint": "x"})),
                )
                .await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{kind}: {name:?}");
            assert_eq!(body["error"]["code"], "invalid_node_name");
        }
        plane.stop().await;
    }
}

/// What a node says about services it could not load is bounded: at most
/// `MAX_REPORTED_FAILURES` entries and `MAX_FAILURE_ERROR_CHARS` of each
/// error are kept, a service that does not exist is left out, and the next
/// report replaces the last.
#[tokio::test]
async fn node_failure_reports_are_bounded_and_replaced() {
    use control_plane::store::node_failures::{MAX_FAILURE_ERROR_CHARS, MAX_REPORTED_FAILURES};
    let plane = Plane::start("sqlite").await;
    let token = plane.tenant("acme").await;
    plane.service(&token, "web", "web.acme.test").await;
    plane.deploy(&token, "web", hello()).await;
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
        .call(
            "POST",
            "/v1/node/status",
            &node,
            Some(json!({"snapshot_version": 1, "failures": failures})),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (_, versions) = plane
        .call("GET", "/v1/services/web/versions", &token, None)
        .await;
    let kept = versions[0]["node_failures"].as_array().expect("failures");
    // The unknown service took one of the places and was then left out.
    assert_eq!(kept.len(), MAX_REPORTED_FAILURES - 1);
    let error = kept[0]["error"].as_str().expect("error");
    assert_eq!(error.chars().count(), MAX_FAILURE_ERROR_CHARS);
    let (status, _) = plane
        .call(
            "POST",
            "/v1/node/status",
            &node,
            Some(json!({"snapshot_version": 2, "failures": []})),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, versions) = plane
        .call("GET", "/v1/services/web/versions", &token, None)
        .await;
    assert_eq!(versions[0]["node_failures"], json!([]), "replaced");
    plane.stop().await;
}

/// A hostile node (it holds the cluster token) cannot break usage for
/// everyone: counts no node could have served are refused, and what is
/// stored can never make the sums fail.
#[tokio::test]
async fn implausible_usage_is_refused_and_usage_and_metrics_still_answer() {
    for kind in databases() {
        let plane = Plane::start(kind).await;
        let token = plane.tenant("acme").await;
        plane.service(&token, "web", "web.acme.test").await;
        plane.deploy(&token, "web", hello()).await;
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
                let (status, body) = plane
                    .call("POST", "/v1/node/usage", node, Some(hostile.clone()))
                    .await;
                assert_eq!(status, StatusCode::BAD_REQUEST, "{kind}: {hostile}");
                assert_eq!(body["error"]["code"], "implausible_usage", "{kind}");
            }
        }
        // CPU and bytes may come without requests (a request is counted at
        // its response head; its guest may finish in the next report).
        let (status, body) = plane
            .call("POST", "/v1/node/usage", &nodes[0], Some(usage(0, 0, 5, 7)))
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
                let (status, body) = plane
                    .call("POST", "/v1/node/usage", node, Some(big.clone()))
                    .await;
                assert_eq!(status, StatusCode::NO_CONTENT, "{kind}: {body}");
            }
        }
        let (status, totals) = plane.call("GET", "/v1/usage", &token, None).await;
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
        plane.stop().await;
    }
}

#[tokio::test]
async fn the_openapi_document_lists_every_route() {
    let plane = Plane::start("sqlite").await;
    let (status, document) = plane.call("GET", "/openapi.json", "", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(document["openapi"], "3.1.0");
    for (method, path, _, _) in control_plane::api::openapi::OPERATIONS {
        assert!(
            document["paths"][path][method].is_object(),
            "{method} {path} missing"
        );
    }
    // Each documented operation is served: none answers 404 or 405 for
    // lack of a route (404s from a missing resource carry a JSON code).
    for (method, path, _, _) in control_plane::api::openapi::OPERATIONS {
        let concrete = path
            .replace("{service}", "web")
            .replace("{sha256}", &"0".repeat(64))
            .replace("{fingerprint}", "f");
        let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
        let response = plane
            .http
            .request(method.clone(), plane.url(&concrete))
            .send()
            .await
            .expect("request");
        assert_ne!(
            response.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {concrete}"
        );
        if response.status() == StatusCode::NOT_FOUND {
            let body: Value = response.json().await.unwrap_or(Value::Null);
            assert_eq!(
                body["error"]["code"], "not_found",
                "{method} {concrete}: no route"
            );
        }
    }
    plane.stop().await;
}

#[tokio::test]
async fn guest_logs_are_kept_per_service_bounded_and_read_in_order() {
    use control_plane::store::guest_logs::MAX_GUEST_LOG_LINES_PER_SERVICE;
    for kind in databases() {
        let plane = Plane::start(kind).await;
        let token = plane.tenant("acme").await;
        let other = plane.tenant("other").await;
        plane.service(&token, "web", "web.acme.test").await;
        let node = plane.register_node("n1").await;
        let line = |n: i64| {
            json!({"service": "acme/web", "version": 1, "request_id": format!("r{n}"),
                   "stream": "stdout", "timestamp_ms": 1_000 + n, "line": format!("line {n}")})
        };
        // One shipment over the batch limit is refused whole.
        let too_many: Vec<Value> = (0..201).map(line).collect();
        let (status, body) = plane
            .call(
                "POST",
                "/v1/node/logs",
                &node,
                Some(json!({"lines": too_many})),
            )
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
            .call(
                "POST",
                "/v1/node/logs",
                &node,
                Some(json!({"lines": heavy})),
            )
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{kind}: {body}");
        // A line of a service that does not exist is skipped.
        let (status, _) = plane
            .call(
                "POST",
                "/v1/node/logs",
                &node,
                Some(
                    json!({"lines": [{"service": "ghost/x", "version": 1, "request_id": "r",
                    "stream": "stdout", "timestamp_ms": 1, "line": "lost"}]}),
                ),
            )
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{kind}");
        // Past the per-service bound the oldest lines go.
        let total = MAX_GUEST_LOG_LINES_PER_SERVICE + 200;
        for start in (0..total).step_by(200) {
            let lines: Vec<Value> = (start..start + 200).map(line).collect();
            let (status, _) = plane
                .call(
                    "POST",
                    "/v1/node/logs",
                    &node,
                    Some(json!({"lines": lines})),
                )
                .await;
            assert_eq!(status, StatusCode::NO_CONTENT, "{kind}");
        }
        let (_, page) = plane
            .call("GET", "/v1/services/web/logs?limit=3", &token, None)
            .await;
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
            .call("GET", "/v1/services/web/logs?after=0&limit=1", &token, None)
            .await;
        assert_eq!(oldest["lines"][0]["line"], "line 200", "{kind}");
        // Reading on from the last id gives nothing new.
        let next = page["next_after"].as_i64().expect("next_after");
        let (_, rest) = plane
            .call(
                "GET",
                &format!("/v1/services/web/logs?after={next}"),
                &token,
                None,
            )
            .await;
        assert_eq!(rest["lines"].as_array().map(Vec::len), Some(0), "{kind}");
        // One request's lines only.
        let (_, one) = plane
            .call(
                "GET",
                &format!("/v1/services/web/logs?request_id=r{}", last - 5),
                &token,
                None,
            )
            .await;
        let one = one["lines"].as_array().expect("lines");
        assert_eq!(one.len(), 1, "{kind}");
        assert_eq!(one[0]["line"], format!("line {}", last - 5));
        // Another tenant cannot read them.
        let (status, _) = plane
            .call("GET", "/v1/services/web/logs", &other, None)
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{kind}");
        plane.stop().await;
    }
}

async fn create(plane: &Plane, token: &str, name: &str, domains: &[&str]) -> (StatusCode, Value) {
    plane
        .call(
            "POST",
            "/v1/services",
            token,
            Some(json!({"name": name, "spec": {"domains": domains}})),
        )
        .await
}

/// A claim conflicts with every domain of another tenant that it equals,
/// covers or is covered by, in any spelling; wildcards on a public suffix
/// are refused.
/// A claim nobody proves blocks other tenants only for the pending-claim
/// TTL: a squatter cannot keep a name from its owner. A verified claim
/// never expires.
#[tokio::test]
async fn a_pending_claim_nobody_proves_stops_blocking_after_its_ttl() {
    for ttl in [Duration::from_secs(3600), Duration::ZERO] {
        let plane = Plane::start_with("sqlite", |c| c.pending_claim_ttl = ttl).await;
        let squatter = plane.tenant("squatter").await;
        let owner = plane.tenant("owner").await;
        let (status, _) = create(&plane, &squatter, "web", &["*.victim.example"]).await;
        assert_eq!(status, StatusCode::CREATED);
        let (status, body) = create(&plane, &owner, "web", &["www.victim.example"]).await;
        if ttl.is_zero() {
            assert_eq!(status, StatusCode::CREATED, "expired: {body}");
            let (_, claims) = plane
                .call("GET", "/v1/services/web/domains", &squatter, None)
                .await;
            assert!(!claims.to_string().contains("victim"), "released: {claims}");
        } else {
            assert_eq!(status, StatusCode::CONFLICT, "still pending: {body}");
        }
        plane.stop().await;
    }
    // Verified, it holds even with a TTL of zero.
    let plane = Plane::start_with("sqlite", |c| c.pending_claim_ttl = Duration::ZERO).await;
    let first = plane.tenant("first").await;
    let second = plane.tenant("second").await;
    let (status, _) = create(&plane, &first, "web", &["*.shop.example"]).await;
    assert_eq!(status, StatusCode::CREATED);
    plane.approve("*.shop.example").await;
    let (status, _) = create(&plane, &second, "web", &["www.shop.example"]).await;
    assert_eq!(status, StatusCode::CONFLICT);
    plane.stop().await;
}

#[tokio::test]
async fn domain_claims_never_overlap_across_tenants() {
    for kind in databases() {
        let plane = Plane::start(kind).await;
        let alpha = plane.tenant("alpha").await;
        let beta = plane.tenant("beta").await;
        let (status, body) = create(
            &plane,
            &alpha,
            "web",
            &["*.Alpha.Example", "bücher.example"],
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{kind}: {body}");
        assert_eq!(
            body["spec"]["domains"],
            json!(["*.alpha.example", "xn--bcher-kva.example"]),
            "{kind}: one spelling"
        );
        for (i, taken) in [
            "www.alpha.example",
            "WWW.Alpha.EXAMPLE.",
            "*.x.alpha.example",
            "a.b.alpha.example",
            "*.alpha.example",
            "xn--bcher-kva.example",
            "BÜCHER.example",
        ]
        .iter()
        .enumerate()
        {
            let (status, body) = create(&plane, &beta, &format!("s{i}"), &[taken]).await;
            assert_eq!(status, StatusCode::CONFLICT, "{kind}: {taken}: {body}");
            assert_eq!(body["error"]["code"], "domain_conflict", "{kind}");
            let message = body["error"]["message"].as_str().unwrap_or_default();
            assert!(message.contains("domain "), "{kind}: {message}");
            assert!(!message.contains("tenant alpha"), "{kind}: {message}");
        }
        for public in ["*.com", "*.co.uk", "*.github.io", "*.example"] {
            let (status, body) = create(&plane, &beta, "wide", &[public]).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{kind}: {public}: {body}");
        }
        // The other way round: alpha's wildcard over beta's name.
        let (status, _) = create(&plane, &beta, "shop", &["shop.beta.example"]).await;
        assert_eq!(status, StatusCode::CREATED, "{kind}");
        let (status, _) = plane
            .call(
                "PUT",
                "/v1/services/web",
                &alpha,
                Some(json!({"domains": ["*.alpha.example", "*.beta.example"]})),
            )
            .await;
        assert_eq!(
            status,
            StatusCode::CONFLICT,
            "{kind}: a wildcard over beta's name"
        );
        // Within one tenant, services may nest, but never share a name.
        let (status, _) = create(&plane, &alpha, "api", &["api.alpha.example"]).await;
        assert_eq!(status, StatusCode::CREATED, "{kind}");
        let (status, _) = create(&plane, &alpha, "api2", &["api.alpha.example"]).await;
        assert_eq!(status, StatusCode::CONFLICT, "{kind}");
        // A deleted service releases its domains.
        let (status, _) = plane.call("DELETE", "/v1/services/shop", &beta, None).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{kind}");
        let (status, body) = plane
            .call(
                "PUT",
                "/v1/services/web",
                &alpha,
                Some(json!({"domains": ["*.alpha.example", "*.beta.example"]})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{kind}: {body}");
        plane.stop().await;
    }
}

/// Claims hold per version: a version whose domains another tenant holds
/// now cannot be activated, and the snapshot never holds a domain twice.
#[tokio::test]
async fn activating_a_version_whose_domain_another_tenant_holds_now_is_refused() {
    for kind in databases() {
        let plane = Plane::start(kind).await;
        let alpha = plane.tenant("alpha").await;
        let beta = plane.tenant("beta").await;
        let (status, _) = create(&plane, &beta, "s", &["shop.example"]).await;
        assert_eq!(status, StatusCode::CREATED);
        let (_, upload) = plane.upload(&beta, "s", hello()).await;
        let (status, _) = plane
            .call(
                "POST",
                "/v1/services/s/versions",
                &beta,
                Some(json!({"module_sha256": upload["module_sha256"]})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{kind}");
        let (status, _) = plane
            .call("PUT", "/v1/services/s", &beta, Some(json!({"domains": []})))
            .await;
        assert_eq!(status, StatusCode::OK, "{kind}");
        let (status, body) = create(&plane, &alpha, "shop", &["shop.example"]).await;
        assert_eq!(status, StatusCode::CREATED, "{kind}: released: {body}");
        plane.deploy(&alpha, "shop", hello()).await;
        plane.approve("shop.example").await;

        let (status, body) = plane
            .call(
                "POST",
                "/v1/services/s/activate",
                &beta,
                Some(json!({"version": 1})),
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{kind}: {body}");
        let (_, snapshot) = plane.snapshot(0).await;
        let holders: Vec<&Value> = snapshot["services"]
            .as_array()
            .expect("services")
            .iter()
            .filter(|s| {
                s["spec"]["domains"]
                    .as_array()
                    .is_some_and(|d| d.contains(&json!("shop.example")))
            })
            .collect();
        assert_eq!(holders.len(), 1, "{kind}: {snapshot}");
        assert_eq!(holders[0]["name"], "alpha/shop", "{kind}");
        plane.stop().await;
    }
}

/// A custom domain is pending, and out of every snapshot, until approved;
/// the platform name needs nothing.
#[tokio::test]
async fn a_pending_domain_is_in_no_snapshot_until_approved() {
    for kind in databases() {
        let plane = Plane::start(kind).await;
        let token = plane.tenant("acme").await;
        let (status, _) = create(&plane, &token, "web", &["shop.example"]).await;
        assert_eq!(status, StatusCode::CREATED);
        plane.deploy(&token, "web", hello()).await;
        let (_, domains) = plane
            .call("GET", "/v1/services/web/domains", &token, None)
            .await;
        assert_eq!(domains[0]["domain"], "web.acme.test", "{kind}: {domains}");
        assert_eq!(domains[0]["status"], "platform");
        assert_eq!(domains[1]["status"], "pending");
        assert_eq!(
            domains[1]["challenge"]["name"],
            "_edge-challenge.shop.example"
        );
        let (_, snapshot) = plane.snapshot(0).await;
        assert_eq!(
            snapshot["services"][0]["spec"]["domains"],
            json!(["web.acme.test"]),
            "{kind}"
        );
        plane.approve("shop.example").await;
        let (_, snapshot) = plane.snapshot(0).await;
        assert_eq!(
            snapshot["services"][0]["spec"]["domains"],
            json!(["web.acme.test", "shop.example"]),
            "{kind}"
        );
        plane.stop().await;
    }
}

/// A version may name only a module its own tenant uploaded; identical
/// bytes from two tenants are stored once, and neither learns of the other.
#[tokio::test]
async fn modules_belong_to_the_tenants_that_uploaded_them() {
    for kind in databases() {
        let plane = Plane::start(kind).await;
        let alpha = plane.tenant("alpha").await;
        let beta = plane.tenant("beta").await;
        plane.service(&alpha, "web", "web.alpha.test").await;
        plane.service(&beta, "web", "web.beta.test").await;
        let (status, upload) = plane.upload(&alpha, "web", hello()).await;
        assert_eq!(status, StatusCode::CREATED);
        let hash = upload["module_sha256"].clone();
        let (status, body) = plane
            .call(
                "POST",
                "/v1/services/web/versions",
                &beta,
                Some(json!({"module_sha256": hash})),
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{kind}: {body}");
        let (status, _) = plane.upload(&beta, "web", hello()).await;
        assert_eq!(
            status,
            StatusCode::CREATED,
            "{kind}: the same as for new bytes"
        );
        let (status, _) = plane.upload(&beta, "web", hello()).await;
        assert_eq!(status, StatusCode::OK, "{kind}: beta's own duplicate");
        assert_eq!(plane.stored_components(), 1, "{kind}");
        let (status, _) = plane
            .call(
                "POST",
                "/v1/services/web/versions",
                &beta,
                Some(json!({"module_sha256": hash})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{kind}");
        plane.stop().await;
    }
}

/// Kill switches: a suspended tenant leaves the snapshot and its tokens
/// get 403; a revoked token gets 401 at once.
#[tokio::test]
async fn tenants_can_be_suspended_and_tokens_revoked() {
    for kind in databases() {
        let plane = Plane::start(kind).await;
        let token = plane.tenant("acme").await;
        plane.service(&token, "web", "web.acme.test").await;
        plane.deploy(&token, "web", hello()).await;
        let (status, _) = plane
            .call("POST", "/v1/tenants/acme/suspend", ADMIN, None)
            .await;
        assert_eq!(status, StatusCode::OK, "{kind}");
        let (_, snapshot) = plane.snapshot(0).await;
        assert_eq!(snapshot["services"], json!([]), "{kind}");
        let (status, _) = plane.call("GET", "/v1/services", &token, None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{kind}");
        let (status, _) = plane
            .call("POST", "/v1/tenants/acme/resume", ADMIN, None)
            .await;
        assert_eq!(status, StatusCode::OK, "{kind}");
        let (_, snapshot) = plane.snapshot(0).await;
        assert_eq!(
            snapshot["services"].as_array().map(Vec::len),
            Some(1),
            "{kind}"
        );

        let (status, created) = plane
            .call("POST", "/v1/tokens", &token, Some(json!({"label": "ci"})))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{kind}");
        let ci = created["token"].as_str().expect("token").to_string();
        let (_, tokens) = plane.call("GET", "/v1/tokens", &ci, None).await;
        let id = tokens
            .as_array()
            .and_then(|t| t.iter().find(|t| t["label"] == "ci"))
            .map(|t| t["id"].as_str().unwrap_or_default().to_string())
            .expect("the ci token is listed");
        assert!(
            !tokens.to_string().contains(&ci),
            "{kind}: tokens are never shown again"
        );
        let (status, _) = plane
            .call("DELETE", &format!("/v1/tokens/{id}"), &token, None)
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{kind}");
        let (status, _) = plane.call("GET", "/v1/services", &ci, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{kind}: revoked");
        let (status, _) = plane.call("GET", "/v1/services", &token, None).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{kind}: the other token still works"
        );
        let (status, _) = plane
            .call("DELETE", "/v1/tenants/acme/tokens", ADMIN, None)
            .await;
        assert_eq!(status, StatusCode::OK, "{kind}");
        let (status, _) = plane.call("GET", "/v1/services", &token, None).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{kind}: revoked by the operator"
        );
        plane.stop().await;
    }
}

/// `bytes` (a component) with a custom section naming `n` appended: a
/// distinct upload each time, compiled like the original.
fn distinct_component(bytes: &[u8], n: usize) -> Vec<u8> {
    let name = b"edge-test";
    let payload = n.to_le_bytes();
    let mut section = vec![name.len() as u8];
    section.extend_from_slice(name);
    section.extend_from_slice(&payload);
    let mut out = bytes.to_vec();
    out.push(0); // custom section id
    out.push(section.len() as u8);
    out.extend(section);
    out
}

/// Compiles are bounded for the whole control plane: of 20 uploads at
/// once, those that find every compile slot taken get 429 with
/// `Retry-After`, and nothing is half-stored.
#[tokio::test]
async fn twenty_concurrent_uploads_compile_at_most_the_bound_and_the_rest_get_429() {
    let plane = Plane::start_with("sqlite", |config| {
        config.quotas.max_concurrent_compiles = 2;
        config.quotas.max_uploads_per_tenant = 20;
    })
    .await;
    let token = plane.tenant("acme").await;
    plane.service(&token, "web", "web.acme.test").await;
    let plane = std::sync::Arc::new(plane);
    let uploads: Vec<_> = (0..20)
        .map(|n| {
            let plane = std::sync::Arc::clone(&plane);
            let token = token.clone();
            tokio::spawn(async move {
                let response = plane
                    .http
                    .post(plane.url("/v1/services/web/modules"))
                    .bearer_auth(&token)
                    .body(distinct_component(&hello(), n))
                    .send()
                    .await
                    .expect("upload");
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                (response.status(), retry_after)
            })
        })
        .collect();
    let mut created = 0;
    let mut limited = 0;
    for upload in uploads {
        match upload.await.expect("upload task") {
            (StatusCode::CREATED, _) => created += 1,
            (StatusCode::TOO_MANY_REQUESTS, Some(_)) => limited += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    eprintln!("{created} compiled, {limited} refused");
    assert!(created >= 2, "{created} compiled");
    assert!(limited >= 10, "{limited} refused of 20");
    assert_eq!(plane.stored_components(), created, "nothing half-stored");
    // The slots are free again.
    let (status, _) = plane
        .upload(&token, "web", distinct_component(&hello(), 100))
        .await;
    assert_eq!(status, StatusCode::CREATED);
}

/// A tenant's quotas (services, spec size) are 400 naming them; its rates
/// (activations per minute, purges per second) are 429 with `Retry-After`,
/// and another tenant is not touched by them.
#[tokio::test]
async fn a_tenant_past_its_quotas_and_rates_is_refused_and_others_are_not() {
    let plane = Plane::start_with("sqlite", |config| {
        config.quotas.max_services_per_tenant = 2;
        config.quotas.max_versions_per_service = 2;
        config.quotas.max_spec_bytes = 2048;
        config.quotas.activations_per_minute = 2;
        config.quotas.purges_per_second = 3;
    })
    .await;
    let acme = plane.tenant("acme").await;
    let other = plane.tenant("other").await;
    plane.service(&acme, "one", "one.acme.test").await;
    plane.service(&acme, "two", "two.acme.test").await;
    let (status, body) = plane
        .call(
            "POST",
            "/v1/services",
            &acme,
            Some(json!({"name": "three", "spec": {"domains": ["three.acme.test"]}})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "quota_exceeded");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("at most 2 services")),
        "{body}"
    );
    let big_config: serde_json::Map<String, Value> = (0..40)
        .map(|i| (format!("key{i}"), json!("v".repeat(100))))
        .collect();
    let (status, body) = plane
        .call(
            "PUT",
            "/v1/services/one",
            &acme,
            Some(json!({"domains": ["one.acme.test"], "config": big_config})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("at most 2048")),
        "{body}"
    );

    // Two activations a minute: the third deploy is 429.
    plane.deploy(&acme, "one", hello()).await;
    plane.deploy(&acme, "two", hello()).await;
    // Two versions a service: a third is 400 (before any rate applies).
    let (status, uploaded) = plane.upload(&acme, "two", hello()).await;
    assert_eq!(status, StatusCode::OK);
    let third = json!({"module_sha256": uploaded["module_sha256"]});
    let _ = plane
        .call(
            "POST",
            "/v1/services/two/versions",
            &acme,
            Some(third.clone()),
        )
        .await;
    let (status, body) = plane
        .call("POST", "/v1/services/two/versions", &acme, Some(third))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("at most 2 versions")),
        "{body}"
    );
    let (status, uploaded) = plane.upload(&acme, "one", hello()).await;
    assert_eq!(status, StatusCode::OK);
    let response = plane
        .http
        .post(plane.url("/v1/services/one/versions"))
        .bearer_auth(&acme)
        .json(&json!({"module_sha256": uploaded["module_sha256"], "activate": true}))
        .send()
        .await
        .expect("deploy");
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .ok()
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=60).contains(&retry_after), "{retry_after}");

    // Three purges a second.
    let purge = |token: String| {
        let plane = &plane;
        async move {
            plane
                .call(
                    "POST",
                    "/v1/purge",
                    &token,
                    Some(json!({"surrogate_key": "k"})),
                )
                .await
        }
    };
    for _ in 0..3 {
        assert_eq!(purge(acme.clone()).await.0, StatusCode::ACCEPTED);
    }
    let (status, body) = purge(acme.clone()).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["error"]["code"], "rate_limited");
    // The other tenant has its own.
    assert_eq!(purge(other.clone()).await.0, StatusCode::ACCEPTED);
    plane.service(&other, "web", "web.other.test").await;
    plane.deploy(&other, "web", hello()).await;
}

/// Median latency of `rounds` calls of `call`.
async fn median_latency<F, Fut>(rounds: usize, mut call: F) -> Duration
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = StatusCode>,
{
    let mut samples = Vec::with_capacity(rounds);
    for i in 0..rounds {
        let started = Instant::now();
        let status = call(i).await;
        assert!(status.is_success(), "{status}");
        samples.push(started.elapsed());
    }
    samples.sort_unstable();
    samples[rounds / 2]
}

/// Purges are pruned by an indexed statement in a task of their own, not
/// by a full-table delete in every purge's transaction on the one SQLite
/// connection: with 200 000 purges stored (half of them expired), a purge
/// and another tenant's API call take about what they take with none.
#[tokio::test]
async fn two_hundred_thousand_stored_purges_leave_purge_and_api_latency_flat() {
    let plane = Plane::start("sqlite").await;
    let acme = plane.tenant("acme").await;
    let other = plane.tenant("other").await;
    plane.service(&other, "web", "web.other.test").await;
    let purge = |i: usize| {
        let plane = &plane;
        let acme = acme.clone();
        async move {
            plane
                .call(
                    "POST",
                    "/v1/purge",
                    &acme,
                    Some(json!({"surrogate_key": format!("k{i}")})),
                )
                .await
                .0
        }
    };
    let list = |_| {
        let plane = &plane;
        let other = other.clone();
        async move { plane.call("GET", "/v1/services", &other, None).await.0 }
    };
    // Under the purge rate: 50 a round, a second apart.
    let purge_before = median_latency(50, purge).await;
    let list_before = median_latency(50, list).await;

    let url = format!("sqlite://{}", plane.data.path().join("cp.db").display());
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&url).await.expect("database");
    let now = control_plane::store::now_ms();
    let expired = now - 2 * control_plane::store::purges::PURGE_RETENTION_MS;
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200000) \
         INSERT INTO purges (seq, tenant_id, kind, value, created_at) \
         SELECT 1000000 + i, (SELECT id FROM tenants WHERE name = 'acme'), 'surrogate_key', 'old', \
         CASE WHEN i % 2 = 0 THEN $1 ELSE $2 END FROM n",
    )
    .bind(expired)
    .bind(now)
    .execute(&pool)
    .await
    .expect("200 000 purges stored");
    pool.close().await;

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let purge_after = median_latency(50, purge).await;
    let list_after = median_latency(50, list).await;
    eprintln!(
        "purge median {purge_before:?} -> {purge_after:?}; another tenant's list {list_before:?} -> {list_after:?}"
    );
    // The control plane runs in this process: its memory stays bounded
    // with 200 000 purges stored.
    let resident_mib = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024);
    eprintln!("resident {resident_mib} MiB");
    assert!(resident_mib < 512, "{resident_mib} MiB resident");
    let flat = |before: Duration, after: Duration| after <= before * 3 + Duration::from_millis(2);
    assert!(
        flat(purge_before, purge_after),
        "purge {purge_before:?} -> {purge_after:?}"
    );
    assert!(
        flat(list_before, list_after),
        "list {list_before:?} -> {list_after:?}"
    );
    // The pruner takes the expired ones (it runs at start, then every
    // minute: run it now).
    plane.store().prune().await.expect("prune");
    let pool = sqlx::AnyPool::connect(&url).await.expect("database");
    let left: i64 = sqlx::Row::get(
        &sqlx::query("SELECT COUNT(*) FROM purges WHERE value = 'old'")
            .fetch_one(&pool)
            .await
            .expect("count"),
        0,
    );
    assert_eq!(left, 100_000, "the expired half is pruned");
}

/// A snapshot is read and serialized once per version, however many nodes
/// poll for it: the bytes every node gets are the same.
#[tokio::test]
async fn a_snapshot_is_built_once_per_version_for_every_node() {
    let plane = Plane::start("sqlite").await;
    let token = plane.tenant("acme").await;
    plane.service(&token, "web", "web.acme.test").await;
    plane.deploy(&token, "web", hello()).await;
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
            let (status, body) = plane
                .call("GET", "/v1/node/snapshot?after=0", node, None)
                .await;
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

/// A connection that sends nothing is closed after the idle read timeout;
/// the API's requests, the snapshot long-poll included, are shorter than
/// it and are served.
#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_idle_read_timeout() {
    use tokio::io::AsyncReadExt;
    let plane = Plane::start_with("sqlite", |config| {
        config.idle_read_timeout = Duration::from_millis(300);
        config.snapshot_wait = Duration::from_millis(100);
    })
    .await;
    let addr = plane.base.trim_start_matches("http://").to_string();
    let mut silent = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf))
        .await
        .expect("closed within 5 s");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(2),
        "{took:?}"
    );
    // A long-poll that waits its whole wait gets its answer.
    let node = plane.register_node("n1").await;
    let version = plane.store().snapshot_version().await.expect("version");
    let (status, _) = plane
        .call(
            "GET",
            &format!("/v1/node/snapshot?after={version}"),
            &node,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
}
