//! Custom domains: claims, proofs, and no overlap across tenants.

use super::*;

/// Asks to create service `name` claiming `domains`.
async fn create(plane: &Plane, token: &str, name: &str, domains: &[&str]) -> (StatusCode, Value) {
    plane
        .create_service(token, name, json!({"domains": domains}))
        .await
}

/// Domains added one at a time stop at the bound a spec has: a tenant
/// cannot grow a service's domains, and every snapshot, without end.
#[tokio::test]
async fn domains_added_one_by_one_stop_at_the_specs_bound() {
    let plane = Plane::start_with("sqlite", |c| c.quotas.activations_per_minute = u32::MAX).await;
    let token = plane.tenant("acme").await;
    let names: Vec<String> = (0..edge_config::protocol::MAX_DOMAINS_PER_SERVICE)
        .map(|i| format!("d{i}.shop.example"))
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let (status, body) = create(&plane, &token, "web", &names).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let add = |domain: &'static str| {
        plane.post(
            "/v1/services/web/domains",
            &token,
            json!({ "domain": domain }),
        )
    };
    let (status, body) = add("one-more.shop.example").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "invalid_spec");
    // A domain the spec already names is no new one.
    let (status, body) = add("d0.shop.example").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    plane.stop().await;
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
        let [squatter, owner] = plane.tenants(["squatter", "owner"]).await;
        let (status, _) = create(&plane, &squatter, "web", &["*.victim.example"]).await;
        assert_eq!(status, StatusCode::CREATED);
        let (status, body) = create(&plane, &owner, "web", &["www.victim.example"]).await;
        if ttl.is_zero() {
            assert_eq!(status, StatusCode::CREATED, "expired: {body}");
            let (_, claims) = plane.get("/v1/services/web/domains", &squatter).await;
            assert!(!claims.to_string().contains("victim"), "released: {claims}");
        } else {
            assert_eq!(status, StatusCode::CONFLICT, "still pending: {body}");
        }
        plane.stop().await;
    }
    // Verified, it holds even with a TTL of zero.
    let plane = Plane::start_with("sqlite", |c| c.pending_claim_ttl = Duration::ZERO).await;
    let [first, second] = plane.tenants(["first", "second"]).await;
    let (status, _) = create(&plane, &first, "web", &["*.shop.example"]).await;
    assert_eq!(status, StatusCode::CREATED);
    plane.approve("*.shop.example").await;
    let (status, _) = create(&plane, &second, "web", &["www.shop.example"]).await;
    assert_eq!(status, StatusCode::CONFLICT);
    plane.stop().await;
}

#[tokio::test]
async fn domain_claims_never_overlap_across_tenants() {
    on_every_database(async |kind, plane| {
        let [alpha, beta] = plane.tenants(["alpha", "beta"]).await;
        let (status, body) =
            create(plane, &alpha, "web", &["*.Alpha.Example", "bücher.example"]).await;
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
            let (status, body) = create(plane, &beta, &format!("s{i}"), &[taken]).await;
            assert_eq!(status, StatusCode::CONFLICT, "{kind}: {taken}: {body}");
            assert_eq!(body["error"]["code"], "domain_conflict", "{kind}");
            let message = body["error"]["message"].as_str().unwrap_or_default();
            assert!(message.contains("domain "), "{kind}: {message}");
            assert!(!message.contains("tenant alpha"), "{kind}: {message}");
        }
        for public in ["*.com", "*.co.uk", "*.github.io", "*.example"] {
            let (status, body) = create(plane, &beta, "wide", &[public]).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{kind}: {public}: {body}");
        }
        // The other way round: alpha's wildcard over beta's name.
        let (status, _) = create(plane, &beta, "shop", &["shop.beta.example"]).await;
        assert_eq!(status, StatusCode::CREATED, "{kind}");
        let widen_over_beta = || {
            plane.put(
                "/v1/services/web",
                &alpha,
                json!({"domains": ["*.alpha.example", "*.beta.example"]}),
            )
        };
        let (status, _) = widen_over_beta().await;
        assert_eq!(
            status,
            StatusCode::CONFLICT,
            "{kind}: a wildcard over beta's name"
        );
        // Within one tenant, services may nest, but never share a name.
        let (status, _) = create(plane, &alpha, "api", &["api.alpha.example"]).await;
        assert_eq!(status, StatusCode::CREATED, "{kind}");
        let (status, _) = create(plane, &alpha, "api2", &["api.alpha.example"]).await;
        assert_eq!(status, StatusCode::CONFLICT, "{kind}");
        // A deleted service releases its domains.
        let (status, _) = plane.delete("/v1/services/shop", &beta).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{kind}");
        let (status, body) = widen_over_beta().await;
        assert_eq!(status, StatusCode::OK, "{kind}: {body}");
    })
    .await;
}

/// Claims hold per version: a version whose domains another tenant holds
/// now cannot be activated, and the snapshot never holds a domain twice.
#[tokio::test]
async fn activating_a_version_whose_domain_another_tenant_holds_now_is_refused() {
    on_every_database(async |kind, plane| {
        let [alpha, beta] = plane.tenants(["alpha", "beta"]).await;
        let (status, _) = create(plane, &beta, "s", &["shop.example"]).await;
        assert_eq!(status, StatusCode::CREATED);
        let (_, upload) = plane.upload(&beta, "s", hello()).await;
        let (status, _) = plane
            .post(
                "/v1/services/s/versions",
                &beta,
                json!({"module_sha256": upload["module_sha256"]}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{kind}");
        let (status, _) = plane
            .put("/v1/services/s", &beta, json!({"domains": []}))
            .await;
        assert_eq!(status, StatusCode::OK, "{kind}");
        let (status, body) = create(plane, &alpha, "shop", &["shop.example"]).await;
        assert_eq!(status, StatusCode::CREATED, "{kind}: released: {body}");
        plane.deploy(&alpha, "shop", hello()).await;
        plane.approve("shop.example").await;

        let (status, body) = plane
            .post("/v1/services/s/activate", &beta, json!({"version": 1}))
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
    })
    .await;
}

/// A custom domain is pending, and out of every snapshot, until approved;
/// the platform name needs nothing.
#[tokio::test]
async fn a_pending_domain_is_in_no_snapshot_until_approved() {
    on_every_database(async |kind, plane| {
        let token = plane.tenant("acme").await;
        let (status, _) = create(plane, &token, "web", &["shop.example"]).await;
        assert_eq!(status, StatusCode::CREATED);
        plane.deploy(&token, "web", hello()).await;
        let (_, domains) = plane.get("/v1/services/web/domains", &token).await;
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
    })
    .await;
}
