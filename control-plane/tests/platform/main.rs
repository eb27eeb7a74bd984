//! The platform end to end: a control plane and edge nodes that follow it,
//! all on loopback. Deploys reach every node, rollbacks too; nodes keep
//! serving without the control plane, and after a restart serve from disk.
//! Modules: deploys, purges, certificates, usage and logs. Here: the
//! control plane as a process that a test can kill.

mod certificates;
mod chaining;
#[path = "../common/mod.rs"]
mod common;
mod deploys;
mod lifecycle;
mod purges;
mod replicas;
mod rollouts;
mod state;
mod usage_and_logs;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use edge_tests::client::get;
use reqwest::StatusCode;

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
