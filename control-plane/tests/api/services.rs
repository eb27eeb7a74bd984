//! Services, uploads, versions and activation; validation of specs
//! and components.

use super::*;

#[tokio::test]
async fn deploy_activate_and_roll_back_through_the_snapshot() {
    on_every_database(async |kind, plane| {
        let token = plane.acme_web().await;
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

        let (_, versions) = plane.get("/v1/services/web/versions", &token).await;
        let versions = versions.as_array().expect("versions");
        assert_eq!(versions.len(), 2, "{kind}: rollback makes no new version");
        assert_eq!(versions[0]["author"], "initial");
    })
    .await;
}

#[tokio::test]
async fn a_long_poll_answers_as_soon_as_a_version_is_activated() {
    for kind in databases() {
        let plane = Plane::start_with(kind, |c| c.snapshot_wait = Duration::from_secs(20)).await;
        let token = plane.acme_web().await;
        let (status, body) = plane.upload(&token, "web", hello()).await;
        assert!(status.is_success());
        let hash = body["module_sha256"].as_str().expect("hash").to_string();

        let started = Instant::now();
        let poll = plane.snapshot(0);
        let activate = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            plane
                .post(
                    "/v1/services/web/versions",
                    &token,
                    json!({"module_sha256": hash, "activate": true}),
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
    on_every_database(async |kind, plane| {
        let token = plane.acme_web().await;
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
    })
    .await;
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
    let token = plane.acme_web().await;
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
    on_every_database(async |kind, plane| {
        let token = plane.acme_web().await;
        let (first, a) = plane.upload(&token, "web", hello()).await;
        let (second, b) = plane.upload(&token, "web", hello()).await;
        assert_eq!(first, StatusCode::CREATED, "{kind}");
        assert_eq!(second, StatusCode::OK, "{kind}: already stored");
        assert_eq!(a["module_sha256"], b["module_sha256"]);
        assert_eq!(plane.stored_components(), 1, "{kind}");
    })
    .await;
}

/// Creating service `web` with `spec` is refused (400 `invalid_spec`) with
/// a message that holds each of `named`.
async fn assert_spec_refused_naming(plane: &Plane, token: &str, spec: Value, named: &[&str]) {
    let (status, body) = plane.create_service(token, "web", spec).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "invalid_spec");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    for text in named {
        assert!(message.contains(text), "{text} missing from {message}");
    }
}

#[tokio::test]
async fn invalid_specs_name_every_problem() {
    on_every_database(async |_, plane| {
        let token = plane.tenant("acme").await;
        let spec = json!({
            "domains": ["bad domain!"],
            "limits": {"cpu_budget_ms": 0},
            "backends": {"origin": {"origin": "ftp://x"}}
        });
        let named = [
            "domains[0]",
            "limits.cpu_budget_ms",
            "backends.origin.origin",
        ];
        assert_spec_refused_naming(plane, &token, spec, &named).await;
    })
    .await;
}

/// What a tenant may set for its requests has the operator's maxima
/// (`--node-max-cpu-budget-ms`, `--node-max-wall-time-ms`,
/// `--node-max-log-bytes-per-request`): a spec above one is 400, naming it.
#[tokio::test]
async fn limits_above_the_operators_maxima_are_refused_naming_them() {
    on_every_database(async |kind, plane| {
        let token = plane.tenant("acme").await;
        let spec = json!({
            "domains": ["web.acme.test"],
            "limits": {
                "cpu_budget_ms": 60_000,
                "wall_time_ms": 3_600_000,
                "max_log_bytes_per_request": 16 * 1024 * 1024
            }
        });
        let named = [
            "limits.cpu_budget_ms: 60000 is outside the allowed range 1..=5000",
            "limits.wall_time_ms: 3600000 is outside the allowed range 1..=120000",
            "limits.max_log_bytes_per_request",
            "0..=1048576",
        ];
        assert_spec_refused_naming(plane, &token, spec, &named).await;
        // At the maxima, it is accepted.
        let (status, _) = plane
            .create_service(
                &token,
                "web",
                json!({
                    "domains": ["web.acme.test"],
                    "limits": {"cpu_budget_ms": 5_000, "wall_time_ms": 120_000}
                }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{kind}");
    })
    .await;
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
    let token = plane.acme_web().await;
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

#[tokio::test]
async fn the_openapi_document_lists_every_route() {
    let plane = Plane::start("sqlite").await;
    let (status, document) = plane.get("/openapi.json", "").await;
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
