//! The shipped observability config against a real Prometheus: it scrapes a
//! node and the control plane with `config/observability/prometheus.yml`,
//! the series carry the values the traffic made, and every query of the
//! Grafana dashboard is valid PromQL against them.
//!
//! Needs the `prometheus` binary (Debian package `prometheus`, installed by
//! scripts/install-toolchain.sh).

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use edge_tests::client::get;
use serde_json::Value;

/// A Prometheus server on loopback, stopped (by its PID) when dropped.
struct Prometheus {
    child: tokio::process::Child,
    base: String,
    http: reqwest::Client,
}

impl Prometheus {
    async fn start(config: &Path, storage: &Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let child = tokio::process::Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", storage.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("prometheus runs (scripts/install-toolchain.sh installs it)");
        let prometheus = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = prometheus
                .http
                .get(format!("{}/-/ready", prometheus.base))
                .send()
                .await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return prometheus;
            }
            assert!(Instant::now() < deadline, "Prometheus never got ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs an instant query; returns the `data.result` array, or panics
    /// with Prometheus's error.
    async fn query(&self, promql: &str) -> Vec<Value> {
        let reply: Value = self
            .http
            .get(format!("{}/api/v1/query", self.base))
            .query(&[("query", promql)])
            .send()
            .await
            .expect("query")
            .json()
            .await
            .expect("json");
        assert_eq!(reply["status"], "success", "{promql}: {reply}");
        reply["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The single value of `promql`, once Prometheus has one.
    async fn value(&self, promql: &str) -> Option<f64> {
        let result = self.query(promql).await;
        result.first()?["value"][1].as_str()?.parse().ok()
    }

    /// Waits until `promql` has the value `expected`.
    async fn until_value(&self, promql: &str, expected: f64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let value = self.value(promql).await;
            if value == Some(expected) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{promql} is {value:?}, not {expected}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// The shipped scrape config, pointed at this test's node and control plane
/// and scraping every second.
fn scrape_config(node_admin: SocketAddr, plane: &str, ca_file: &Path) -> String {
    let shipped = std::fs::read_to_string(
        edge_tests::guests::repo_root().join("config/observability/prometheus.yml"),
    )
    .expect("config/observability/prometheus.yml");
    let plane = plane.trim_start_matches("https://");
    const SHIPPED_CA: &str = "../../target/platform/ca/ca.pem";
    for default in [
        "127.0.0.1:9090",
        "127.0.0.1:7070",
        "scrape_interval: 15s",
        SHIPPED_CA,
    ] {
        assert!(
            shipped.contains(default),
            "the shipped config lost {default}"
        );
    }
    shipped
        .replace("127.0.0.1:9090", &node_admin.to_string())
        .replace("127.0.0.1:7070", plane)
        .replace(SHIPPED_CA, &ca_file.display().to_string())
        .replace("scrape_interval: 15s", "scrape_interval: 1s")
}

/// Every PromQL expression of the dashboard, with its panel's title, and the
/// dashboard's variables filled in as Grafana would.
fn dashboard_queries() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(
        edge_tests::guests::repo_root().join("config/observability/grafana/edge-platform.json"),
    )
    .expect("dashboard");
    let dashboard: Value = serde_json::from_str(&text).expect("dashboard is JSON");
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("expr");
            queries.push((
                panel["title"].as_str().unwrap_or_default().to_string(),
                expr.replace("$__rate_interval", "1m")
                    .replace("$service", ".*"),
            ));
        }
    }
    queries
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_platform_and_the_dashboard_queries_hold() {
    let ca = DevCa::new();
    let plane = Plane::start_https("sqlite", &ca).await;
    let token = plane.acme_web().await;
    let node_dir = tempfile::tempdir().expect("dir");
    let node =
        EdgeNode::start_trusting(&plane.base, node_dir.path(), "node-a", Some(&ca.ca_file)).await;
    plane.deploy(&token, "web", hello()).await;
    // Wait for the deploy, then a known burst.
    let deadline = Instant::now() + Duration::from_secs(10);
    while node.body().await.0 != 200 {
        assert!(Instant::now() < deadline, "the deploy never arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..20 {
        assert_eq!(node.body().await.0, 200);
    }
    for _ in 0..3 {
        assert_eq!(get(node.addr, "nobody.test", "/").await.status, 421);
    }
    // What the node itself counted: the burst plus the readiness probes.
    let served = node
        .metric(r#"edge_requests_total{protocol="http1",service="acme/web",status_class="2xx"}"#)
        .await;
    assert!(served >= 21.0, "{served}");
    // The three unknown hosts, and any probe that came before the deploy.
    let unknown = node
        .metric(r#"edge_requests_total{protocol="http1",service="_unknown",status_class="4xx"}"#)
        .await;
    assert!(unknown >= 3.0, "{unknown}");

    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        scrape_config(node.admin_addr, &plane.base, &ca.ca_file),
    )
    .expect("config");
    let prometheus = Prometheus::start(&config, &dir.path().join("data")).await;

    // Both jobs of the shipped config are up, and the series carry the
    // values the traffic made.
    prometheus.until_value(r#"up{job="edge-node"}"#, 1.0).await;
    prometheus
        .until_value(r#"up{job="control-plane"}"#, 1.0)
        .await;
    prometheus
        .until_value(
            r#"sum(edge_requests_total{job="edge-node",service="acme/web",status_class="2xx"})"#,
            served,
        )
        .await;
    prometheus
        .until_value(
            r#"sum(edge_requests_total{service="_unknown",status_class="4xx"})"#,
            unknown,
        )
        .await;
    prometheus
        .until_value(
            r#"sum(edge_request_duration_seconds_count{service="acme/web"})"#,
            served,
        )
        .await;
    let cpu = prometheus
        .value(r#"sum(edge_guest_cpu_seconds_total{service="acme/web"})"#)
        .await
        .expect("guest CPU series");
    assert!(cpu > 0.0, "{cpu}");
    prometheus
        .until_value(r#"edge_node_phase{phase="serving"}"#, 1.0)
        .await;
    prometheus
        .until_value(r#"cp_nodes{health="healthy"}"#, 1.0)
        .await;
    prometheus
        .until_value(r#"cp_node_snapshot_lag{node="node-a"}"#, 0.0)
        .await;
    let version = prometheus
        .value("cp_snapshot_version")
        .await
        .expect("snapshot version");
    assert!(version >= 1.0);
    prometheus
        .until_value("edge_snapshot_version", version)
        .await;
    prometheus
        .until_value(r#"cp_uploads_total{outcome="stored"}"#, 1.0)
        .await;

    // Every dashboard query is valid PromQL; those over the traffic this
    // test made have data.
    let with_data = [
        "Requests per second by service",
        "Requests per second by protocol",
        "Responses by status class",
        "Request latency (head to head)",
        "Time inside the guest",
        "Guest CPU (cores) by service",
        "Nodes up",
        "Node phase",
        "Snapshot lag per node (versions behind)",
        "Snapshot version and age",
        "API requests by route",
        "API latency p99 by route (without long-polls)",
    ];
    let queries = dashboard_queries();
    assert!(queries.len() >= 25, "{} queries", queries.len());
    for (title, expr) in &queries {
        // A rate needs two scrapes inside its window: wait for them.
        let deadline = Instant::now() + Duration::from_secs(30);
        while prometheus.query(expr).await.is_empty() && with_data.contains(&title.as_str()) {
            assert!(
                Instant::now() < deadline,
                "panel {title:?}: no data for {expr}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    prometheus.stop().await;
    node.stop().await;
    plane.stop().await;
}
