//! Tenants, tokens, suspension, isolation between tenants, quotas.

use super::*;

#[tokio::test]
async fn tenants_need_the_admin_token() {
    on_every_database(async |kind, plane| {
        let body = Some(json!({"name": "acme"}));
        let (status, error) = plane
            .call("POST", "/v1/tenants", "wrong-token", body.clone())
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{kind}");
        assert_eq!(error["error"]["code"], "unauthorized");
        let token = plane.tenant("acme").await;
        // A tenant's token is not the admin's.
        let (status, _) = plane.get("/v1/tenants", &token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{kind}");
        let (status, _) = plane.call("POST", "/v1/tenants", ADMIN, body).await;
        assert_eq!(status, StatusCode::CONFLICT, "{kind}: duplicate tenant");
        let (status, list) = plane.get("/v1/tenants", ADMIN).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(list.as_array().map(Vec::len), Some(1));
    })
    .await;
}

#[tokio::test]
async fn a_tenant_cannot_touch_another_tenants_service() {
    on_every_database(async |kind, plane| {
        let [a, b] = plane.tenants(["alpha", "beta"]).await;
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
        let (_, listed) = plane.get("/v1/services", &b).await;
        assert_eq!(listed, json!([]), "{kind}");
        let (_, service) = plane.get("/v1/services/web", &a).await;
        assert_eq!(
            service["spec"]["domains"],
            json!(["web.alpha.test"]),
            "{kind}"
        );
        assert_eq!(service["active_version"], v1);
        let (_, versions) = plane.get("/v1/services/web/versions", &a).await;
        assert_eq!(versions.as_array().map(Vec::len), Some(1), "{kind}");
        // Another tenant's platform name is not beta's to claim.
        let (status, _) = plane
            .create_service(&b, "web", json!({"domains": ["web.alpha.test"]}))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{kind}: a platform name");
    })
    .await;
}

/// A version may name only a module its own tenant uploaded; identical
/// bytes from two tenants are stored once, and neither learns of the other.
#[tokio::test]
async fn modules_belong_to_the_tenants_that_uploaded_them() {
    on_every_database(async |kind, plane| {
        let [alpha, beta] = plane.tenants(["alpha", "beta"]).await;
        plane.service(&alpha, "web", "web.alpha.test").await;
        plane.service(&beta, "web", "web.beta.test").await;
        let (status, upload) = plane.upload(&alpha, "web", hello()).await;
        assert_eq!(status, StatusCode::CREATED);
        let hash = upload["module_sha256"].clone();
        let (status, body) = plane
            .post(
                "/v1/services/web/versions",
                &beta,
                json!({"module_sha256": hash}),
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
            .post(
                "/v1/services/web/versions",
                &beta,
                json!({"module_sha256": hash}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{kind}");
    })
    .await;
}

/// Kill switches: a suspended tenant leaves the snapshot and its tokens
/// get 403; a revoked token gets 401 at once.
#[tokio::test]
async fn tenants_can_be_suspended_and_tokens_revoked() {
    on_every_database(async |kind, plane| {
        let token = plane.acme_web_hello().await;
        let (status, _) = plane
            .call("POST", "/v1/tenants/acme/suspend", ADMIN, None)
            .await;
        assert_eq!(status, StatusCode::OK, "{kind}");
        let (_, snapshot) = plane.snapshot(0).await;
        assert_eq!(snapshot["services"], json!([]), "{kind}");
        let (status, _) = plane.get("/v1/services", &token).await;
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
            .post("/v1/tokens", &token, json!({"label": "ci"}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{kind}");
        let ci = created["token"].as_str().expect("token").to_string();
        let (_, tokens) = plane.get("/v1/tokens", &ci).await;
        let id = tokens
            .as_array()
            .and_then(|t| t.iter().find(|t| t["label"] == "ci"))
            .map(|t| t["id"].as_str().unwrap_or_default().to_string())
            .expect("the ci token is listed");
        assert!(
            !tokens.to_string().contains(&ci),
            "{kind}: tokens are never shown again"
        );
        let (status, _) = plane.delete(&format!("/v1/tokens/{id}"), &token).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{kind}");
        let (status, _) = plane.get("/v1/services", &ci).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{kind}: revoked");
        let (status, _) = plane.get("/v1/services", &token).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{kind}: the other token still works"
        );
        let (status, _) = plane.delete("/v1/tenants/acme/tokens", ADMIN).await;
        assert_eq!(status, StatusCode::OK, "{kind}");
        let (status, _) = plane.get("/v1/services", &token).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{kind}: revoked by the operator"
        );
    })
    .await;
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
    let [acme, other] = plane.tenants(["acme", "other"]).await;
    plane.service(&acme, "one", "one.acme.test").await;
    plane.service(&acme, "two", "two.acme.test").await;
    let (status, body) = plane
        .create_service(&acme, "three", json!({"domains": ["three.acme.test"]}))
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
        .put(
            "/v1/services/one",
            &acme,
            json!({"domains": ["one.acme.test"], "config": big_config}),
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
        .post("/v1/services/two/versions", &acme, third.clone())
        .await;
    let (status, body) = plane.post("/v1/services/two/versions", &acme, third).await;
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
                .post("/v1/purge", &token, json!({"surrogate_key": "k"}))
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
