//! A tenant's certificate, rotated through the control plane.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_rotated_through_the_control_plane_is_served_without_a_restart() {
    use edge_tests::tls::{TestCertificate, TlsClient};
    let plane = Plane::start("sqlite").await;
    let token = plane.acme_web_hello().await;
    let (dir, node) = one_node(&plane).await;
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
        let (status, answer) = plane.put(path, &token, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert_eq!(answer["error"]["code"], "invalid_certificate");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(expected), "{message}");
    }
    let (status, _) = plane.get(path, &token).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Uploaded with edgectl, served by SNI within a second.
    let config = dir.path().join("edgectl.json");
    edgectl_login(&config, &plane, &token).await;
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
    let (status, shown) = plane.get(path, &token).await;
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
    let (status, _) = plane.get(path, &other).await;
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
