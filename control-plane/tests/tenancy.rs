//! Tenants who do not trust each other, on the real platform: a control
//! plane and two edge nodes on loopback. A custom domain reaches no node
//! until its tenant proves control of it through a real DNS server; a
//! suspended tenant leaves every node at once; a service no node can load
//! does not hold back anyone else's deploy.

mod common;

use std::time::{Duration, Instant};

use common::dns::DnsServer;
use common::*;
use control_plane::dns::ChallengeResolver;
use edge_tests::client::get;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Waits until every node answers `host` with `status`; returns how long
/// that took.
async fn until_all_answer(nodes: &[EdgeNode], host: &str, status: u16) -> Duration {
    let started = Instant::now();
    for node in nodes {
        loop {
            let reply = get(node.addr, host, "/").await;
            if reply.status == status {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "node {} still answers {} for {host}, not {status}",
                node.addr,
                reply.status
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    started.elapsed()
}

async fn verify(plane: &Plane, token: &str, domain: &str) -> (StatusCode, Value) {
    plane
        .call(
            "POST",
            &format!("/v1/services/web/domains/{domain}/verify"),
            token,
            None,
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_domain_reaches_no_node_until_its_txt_record_proves_it() {
    const CUSTOM: &str = "www.shop.example";
    let dns = DnsServer::start("shop.example").await;
    let plane = Plane::start_with("sqlite", |c| {
        c.dns_resolver = Some(ChallengeResolver { addr: dns.addr });
    })
    .await;
    let token = plane.tenant("acme").await;
    plane.service(&token, "web", CUSTOM).await;
    plane.deploy(&token, "web", hello()).await;
    let (_dirs, nodes) = two_nodes(&plane).await;
    // The platform name needs no proof.
    until_all_serve(&nodes, HELLO).await;
    for node in &nodes {
        assert_eq!(get(node.addr, CUSTOM, "/").await.status, 421, "pending");
    }

    let (status, claims) = plane.get("/v1/services/web/domains", &token).await;
    assert_eq!(status, StatusCode::OK);
    let claim = claims
        .as_array()
        .and_then(|claims| claims.iter().find(|c| c["domain"] == CUSTOM))
        .expect("the claim is listed")
        .clone();
    assert_eq!(claim["status"], "pending");
    assert_eq!(claim["challenge"]["type"], "TXT");
    assert_eq!(
        claim["challenge"]["name"],
        "_edge-challenge.www.shop.example"
    );
    let challenge = claim["challenge"]["value"].as_str().expect("token");

    // No record yet, then a record with the wrong text: still pending.
    let (status, body) = verify(&plane, &token, CUSTOM).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "domain_unverified");
    dns.publish_txt("_edge-challenge.www.shop.example", "not-the-token")
        .await;
    let (status, body) = verify(&plane, &token, CUSTOM).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    // Another tenant cannot verify (or even see) the claim.
    let beta = plane.tenant("beta").await;
    plane.service(&beta, "web", "web.beta.test").await;
    let (status, _) = verify(&plane, &beta, CUSTOM).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    tokio::time::sleep(Duration::from_millis(300)).await;
    for node in &nodes {
        assert_eq!(get(node.addr, CUSTOM, "/").await.status, 421, "pending");
    }

    dns.publish_txt("_edge-challenge.www.shop.example", challenge)
        .await;
    let (status, body) = verify(&plane, &token, CUSTOM).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "verified");
    assert!(body.get("challenge").is_none(), "{body}");
    let took = until_all_answer(&nodes, CUSTOM, 200).await;
    assert!(
        took < Duration::from_secs(1),
        "verified domain took {took:?}"
    );
    assert_eq!(get(nodes[1].addr, CUSTOM, "/").await.text(), HELLO);
    // Verifying again is a no-op.
    let (status, _) = verify(&plane, &token, CUSTOM).await;
    assert_eq!(status, StatusCode::OK);

    plane.stop_with_nodes(nodes).await;
    dns.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_challenge_too_large_for_udp_is_read_over_tcp() {
    let dns = DnsServer::start("shop.example").await;
    let name = "_edge-challenge.big.shop.example";
    // 40 strings of 200 bytes: about 8 KB, past any UDP answer size, so the
    // server truncates and only the TCP answer holds the token.
    for i in 0..40 {
        dns.publish_txt(name, &format!("{i:03}{}", "x".repeat(197)))
            .await;
    }
    dns.publish_txt(name, "the-token").await;
    let resolver = ChallengeResolver { addr: dns.addr };
    let values = resolver.txt_values(name).await.expect("answered");
    assert_eq!(values.len(), 41, "every record read");
    assert!(resolver.holds(name, "the-token").await.expect("answered"));
    assert!(!resolver.holds(name, "another").await.expect("answered"));
    // A name with no record is told apart from a resolver that fails.
    let missing = resolver
        .txt_values("_edge-challenge.none.shop.example")
        .await;
    assert!(
        matches!(missing, Err(control_plane::dns::DnsError::NoRecord(_))),
        "{missing:?}"
    );
    dns.stop().await;
}

/// A UDP relay to `server` that drops the first datagram it gets: a lost
/// query, as a busy network loses one.
async fn lossy_relay(server: std::net::SocketAddr) -> std::net::SocketAddr {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = socket.local_addr().expect("addr");
    tokio::spawn(async move {
        let upstream = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let mut buf = vec![0u8; 65_536];
        let mut dropped = false;
        loop {
            let Ok(Ok((len, client))) =
                tokio::time::timeout(Duration::from_secs(20), socket.recv_from(&mut buf)).await
            else {
                return;
            };
            if !dropped {
                dropped = true;
                continue;
            }
            let _ = upstream.send_to(&buf[..len], server).await;
            let mut answer = vec![0u8; 65_536];
            if let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_secs(5), upstream.recv(&mut answer)).await
            {
                let _ = socket.send_to(&answer[..n], client).await;
            }
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_query_is_sent_again() {
    let dns = DnsServer::start("shop.example").await;
    dns.publish_txt("_edge-challenge.shop.example", "the-token")
        .await;
    let resolver = ChallengeResolver {
        addr: lossy_relay(dns.addr).await,
    };
    let started = Instant::now();
    assert!(
        resolver
            .holds("_edge-challenge.shop.example", "the-token")
            .await
            .expect("answered on the second attempt")
    );
    assert!(started.elapsed() >= control_plane::dns::DNS_QUERY_TIMEOUT);
    dns.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_resolver_only_the_operator_verifies_and_a_dead_resolver_is_502() {
    // A port nothing listens on: the resolver's queries are refused.
    let unused = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|socket| socket.local_addr())
        .expect("port");
    for resolver in [None, Some(unused)] {
        let plane = Plane::start_with("sqlite", |c| {
            c.dns_resolver = resolver.map(|addr| ChallengeResolver { addr });
        })
        .await;
        let token = plane.tenant("acme").await;
        plane.service(&token, "web", "www.shop.example").await;
        let (status, body) = verify(&plane, &token, "www.shop.example").await;
        match resolver {
            None => {
                assert_eq!(status, StatusCode::CONFLICT, "{body}");
                assert_eq!(body["error"]["code"], "verification_unavailable");
            }
            Some(_) => {
                assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
                assert_eq!(body["error"]["code"], "dns_unavailable");
            }
        }
        plane.approve("www.shop.example").await;
        let (status, body) = verify(&plane, &token, "www.shop.example").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["status"], "verified");
        plane.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_tenant_is_served_by_no_node_within_a_second() {
    let plane = Plane::start_with("sqlite", |c| c.snapshot_wait = Duration::from_secs(20)).await;
    let token = plane.acme_web_hello().await;
    let beta = plane.tenant("beta").await;
    plane.service(&beta, "web", "web.beta.test").await;
    plane.deploy(&beta, "web", hello()).await;
    let (_dirs, nodes) = two_nodes(&plane).await;
    until_all_serve(&nodes, HELLO).await;

    let (status, _) = plane
        .call("POST", "/v1/tenants/acme/suspend", ADMIN, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let took = until_all_answer(&nodes, DOMAIN, 421).await;
    assert!(took < Duration::from_secs(1), "suspension took {took:?}");
    // The other tenant is untouched; the suspended one cannot call the API.
    until_all_answer(&nodes, "web.beta.test", 200).await;
    let (status, _) = plane.get("/v1/services", &token).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let (status, _) = plane
        .call("POST", "/v1/tenants/acme/resume", ADMIN, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let took = until_all_serve(&nodes, HELLO).await;
    assert!(took < Duration::from_secs(1), "resumption took {took:?}");
    plane.stop_with_nodes(nodes).await;
}

/// A component that fits the control plane's ceilings but not the nodes':
/// 2049 pages of initial memory, one page over the nodes' default 128 MiB.
/// (A control plane configured with the nodes' real ceilings refuses it at
/// upload; see `api.rs`.)
fn too_big_for_the_nodes() -> Vec<u8> {
    edge_tests::guests::hostile_component(&format!(
        r#"(module (memory (export "memory") 2049)
            (func (export "{}") (param i32 i32)))"#,
        edge_tests::guests::HANDLE_EXPORT
    ))
}

/// Waits until both nodes have reported the newest version of the
/// tenant's service `web` as not served; returns the first one's error.
async fn until_both_nodes_report(plane: &Plane, token: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, versions) = plane.get("/v1/services/web/versions", token).await;
        assert_eq!(status, StatusCode::OK);
        let failures = versions[0]["node_failures"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if failures.len() == 2 {
            return failures[0]["error"]
                .as_str()
                .unwrap_or_default()
                .to_string();
        }
        assert!(Instant::now() < deadline, "not reported: {versions}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_no_node_can_load_holds_back_no_one_elses_deploy() {
    let plane = Plane::start_with("sqlite", |c| {
        c.snapshot_wait = Duration::from_secs(20);
        c.sandbox.max_memory_bytes = 256 * 1024 * 1024;
    })
    .await;
    let mallory = plane.tenant("mallory").await;
    plane.service(&mallory, "web", "web.mallory.test").await;
    plane.deploy(&mallory, "web", too_big_for_the_nodes()).await;
    let token = plane.acme_web().await;
    let (_dirs, nodes) = two_nodes(&plane).await;

    plane.deploy(&token, "web", hello()).await;
    let took = until_all_serve(&nodes, HELLO).await;
    assert!(took < Duration::from_secs(1), "the deploy took {took:?}");
    plane.deploy(&token, "web", plain_wasi()).await;
    let took = until_all_serve(&nodes, PLAIN).await;
    assert!(
        took < Duration::from_secs(1),
        "the next deploy took {took:?}"
    );
    for node in &nodes {
        assert_eq!(
            get(node.addr, "web.mallory.test", "/").await.status,
            421,
            "the service that does not load is not routed"
        );
        assert!(
            node.metric("edge_snapshot_services_skipped_total").await >= 1.0,
            "counted"
        );
        // Compiled once per node at most, not once per snapshot.
        assert!(
            node.metric("edge_module_loads_total{source=\"compiled\"}")
                .await
                <= 1.0
        );
    }
    // Each node reported it; the tenant sees that in its versions.
    let error = until_both_nodes_report(&plane, &mallory).await;
    assert!(error.contains("memory"), "{error}");
    let (_, theirs) = plane.get("/v1/services/web/versions", &token).await;
    assert_eq!(theirs[0]["node_failures"], json!([]), "{theirs}");
    plane.stop_with_nodes(nodes).await;
}

/// A node holds services to its own operator maxima, whatever the control
/// plane let through (its flags set higher, or a spec stored before the
/// maxima were lowered): such a service is not served, and the node says
/// which limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_does_not_serve_a_service_above_its_own_maxima() {
    let plane = Plane::start_with("sqlite", |c| {
        c.sandbox.max_cpu_budget_ms = 60_000;
    })
    .await;
    let mallory = plane.tenant("mallory").await;
    let (status, body) = plane
        .create_service(
            &mallory,
            "web",
            json!({
                "domains": ["web.mallory.test"],
                "limits": {"cpu_budget_ms": 60_000}
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    plane.deploy(&mallory, "web", hello()).await;
    plane.acme_web_hello().await;
    let (_dirs, nodes) = two_nodes(&plane).await;
    until_all_serve(&nodes, HELLO).await;
    for node in &nodes {
        assert_eq!(get(node.addr, "web.mallory.test", "/").await.status, 421);
    }
    let error = until_both_nodes_report(&plane, &mallory).await;
    assert!(
        error.contains("limits.cpu_budget_ms") && error.contains("1..=5000"),
        "{error}"
    );
    plane.stop_with_nodes(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_manages_domains_tokens_and_services_with_edgectl() {
    let dns = DnsServer::start("shop.example").await;
    let plane = Plane::start_with("sqlite", |c| {
        c.dns_resolver = Some(ChallengeResolver { addr: dns.addr });
    })
    .await;
    let token = plane.acme_web().await;
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("edgectl.json");
    edgectl_login(&config, &plane, &token).await;

    // Claim, publish the printed record, verify.
    let added = edgectl(&config, &["domain", "add", "web", "WWW.Shop.Example."]).await;
    let line = added
        .lines()
        .find(|l| l.starts_with("www.shop.example\tpending\tTXT "))
        .unwrap_or_else(|| panic!("no pending claim in {added:?}"));
    let value = line.rsplit('"').nth(1).expect("the token");
    dns.publish_txt("_edge-challenge.www.shop.example", value)
        .await;
    let verified = edgectl(&config, &["domain", "verify", "web", "www.shop.example"]).await;
    assert_eq!(verified.trim(), "www.shop.example\tverified");
    let listed = edgectl(&config, &["domain", "list", "web"]).await;
    assert!(listed.contains("web.acme.test\tplatform"), "{listed}");
    assert!(listed.contains("www.shop.example\tverified"), "{listed}");
    edgectl(&config, &["domain", "remove", "web", "www.shop.example"]).await;
    let listed = edgectl(&config, &["domain", "list", "web"]).await;
    assert!(!listed.contains("www.shop.example"), "{listed}");

    // A second token, listed by id, revoked: 401 at once.
    let second = edgectl(&config, &["token", "create", "--label", "ci"]).await;
    let second = second.trim().to_string();
    let (status, _) = plane.get("/v1/services", &second).await;
    assert_eq!(status, StatusCode::OK);
    let tokens = edgectl(&config, &["token", "list"]).await;
    let id = tokens
        .lines()
        .find(|l| l.contains("\tci\t"))
        .and_then(|l| l.split('\t').next())
        .unwrap_or_else(|| panic!("no ci token in {tokens:?}"))
        .to_string();
    edgectl(&config, &["token", "revoke", &id]).await;
    let (status, _) = plane.get("/v1/services", &second).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Delete the service; its platform name is free again.
    edgectl(&config, &["service", "delete", "web"]).await;
    let (status, _) = plane.get("/v1/services/web/domains", &token).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The operator suspends and resumes the tenant.
    for (action, expected) in [
        ("suspend", StatusCode::FORBIDDEN),
        ("resume", StatusCode::OK),
    ] {
        edgectl(&config, &["tenant", action, "acme", "--admin-token", ADMIN]).await;
        let (status, _) = plane.get("/v1/services", &token).await;
        assert_eq!(status, expected, "after {action}");
    }
    plane.stop().await;
    dns.stop().await;
}

/// The node protocol over HTTPS: nodes that trust the operator's CA follow
/// the control plane; a node that trusts another CA never gets a snapshot
/// (and so never a tenant's key); plaintext is refused off loopback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_follow_the_control_plane_over_https_and_only_with_its_ca() {
    let ca = DevCa::new();
    let plane = Plane::start_https("sqlite", &ca).await;
    assert!(
        plane.base.starts_with("https://127.0.0.1:"),
        "{}",
        plane.base
    );
    let token = plane.acme_web_hello().await;
    let dirs = [
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    ];
    let trusting =
        EdgeNode::start_trusting(&plane.base, dirs[0].path(), "node-a", Some(&ca.ca_file)).await;
    let other_ca = DevCa::new();
    let stranger = EdgeNode::start_trusting(
        &plane.base,
        dirs[1].path(),
        "node-b",
        Some(&other_ca.ca_file),
    )
    .await;
    until_all_serve(std::slice::from_ref(&trusting), HELLO).await;
    let (_, nodes) = plane.get("/v1/nodes", ADMIN).await;
    let names: Vec<&str> = nodes
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["name"].as_str())
        .collect();
    assert_eq!(names, ["node-a"], "the stranger never registered");
    assert_eq!(stranger.body().await.0, 421, "and serves nothing");

    // edgectl over HTTPS: with the CA file it logs in, without it it fails.
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("edgectl.json");
    let ca_file = ca.ca_file.to_str().expect("path");
    edgectl(
        &config,
        &[
            "login",
            "--url",
            &plane.base,
            "--token",
            &token,
            "--ca-file",
            ca_file,
        ],
    )
    .await;
    let listed = edgectl(&config, &["service", "list"]).await;
    assert!(listed.contains("web"), "{listed}");
    let refused = tokio::process::Command::new(workspace_binary("edgectl"))
        .args(["login", "--url", &plane.base, "--token", &token])
        .env("EDGECTL_CONFIG", dir.path().join("other.json"))
        .env_remove("EDGECTL_CA_FILE")
        .output()
        .await
        .expect("edgectl runs");
    assert!(
        !refused.status.success(),
        "a certificate it cannot verify is refused"
    );

    trusting.stop().await;
    stranger.stop().await;
    plane.stop().await;
}

#[tokio::test]
async fn a_node_refuses_a_plaintext_control_plane_off_loopback() {
    let node = edge_node::Node::new(&edge_config::NodeConfig::default()).expect("node");
    let dir = tempfile::tempdir().expect("dir");
    for url in ["http://cp.example.net:7070", "http://10.1.2.3:7070"] {
        let section = edge_config::node::ControlPlaneSection {
            replica_urls: Vec::new(),
            url: url.to_string(),
            ca_file: None,
            cluster_token: CLUSTER.to_string(),
            node_name: "n".to_string(),
            usage_report_interval_ms: 1_000,
        };
        let error = edge_node::sync::Follower::start(&node, section, dir.path())
            .await
            .expect_err("plaintext refused");
        let message = format!("{error:#}");
        assert!(message.contains("not a loopback address"), "{message}");
    }
}

/// Clients that connect and send nothing hold at most
/// `MAX_HANDSHAKES_PER_ADDRESS` handshake slots, from their own address:
/// one more connection from it is closed at once, and a client from
/// another address is served as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_hold_only_their_own_addresss_handshake_slots() {
    use control_plane::tls::{HANDSHAKE_TIMEOUT, MAX_HANDSHAKES_PER_ADDRESS};
    use tokio::io::AsyncReadExt;
    let ca = DevCa::new();
    let plane = Plane::start_https("sqlite", &ca).await;
    let addr: std::net::SocketAddr = plane
        .base
        .trim_start_matches("https://")
        .parse()
        .expect("address");
    let mut silent = Vec::new();
    for _ in 0..MAX_HANDSHAKES_PER_ADDRESS {
        silent.push(tokio::net::TcpStream::connect(addr).await.expect("connect"));
    }
    // Let the accept loop take them all.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let mut one_more = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(HANDSHAKE_TIMEOUT, one_more.read(&mut byte)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "closed at once, not left waiting: {read:?}"
    );
    assert!(
        started.elapsed() < HANDSHAKE_TIMEOUT / 2,
        "{:?}",
        started.elapsed()
    );
    // Another client address is served while they sit there.
    let pem = std::fs::read(&ca.ca_file).expect("CA");
    let other = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("CA"))
        .build()
        .expect("client");
    let health = other
        .get(plane.url("/healthz"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .expect("served");
    assert_eq!(health.status(), StatusCode::OK);
    drop(silent);
    plane.stop().await;
}
