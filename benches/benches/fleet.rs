//! A fleet of 100 nodes on one machine: in-process followers that do
//! everything a node does on the control-plane side (register, long-poll
//! the snapshot asking for deltas, fetch each new component and artifact,
//! apply, acknowledge with a status, follow purges, report usage every
//! 5 s) against a control plane running as its own process: one on
//! SQLite, then two replicas on PostgreSQL with the fleet split between
//! them. While tenants keep deploying (a new module every time) and
//! purging, it measures deploy-to-served and purge propagation across all
//! nodes, the control plane's CPU and RSS, and the snapshot bytes a change
//! costs, at two tenant counts.
//!
//! `cargo build --release -p control-plane && cargo bench --bench fleet`
//! (the replicas are `target/release/control-plane`). PostgreSQL comes
//! from `EDGE_TEST_POSTGRES_URL` (`scripts/postgres.sh start`); without it
//! only the SQLite rounds run. `FLEET_NODES`, `FLEET_DEPLOYS` and
//! `FLEET_TENANTS` (the larger count) change the sizes.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edge_config::api::PurgeRequest;
use edge_config::protocol::{
    NodeRegistered, NodeRegistration, NodeStatus, PurgeBatch, SNAPSHOT_DELTA, SNAPSHOT_KIND_HEADER,
    ServiceUsage, Snapshot, SnapshotDelta, UsageReport,
};
use edge_config::{SandboxLimits, protocol::ServiceSpec};
use edge_tests::node::metric_value;
use edge_tests::platform::{ADMIN, CLUSTER, PLATFORM_DOMAIN, ReplicaProcess, database_url, hello};
use edgectl::client::ApiClient;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What one follower saw, and when.
#[derive(Debug, Default)]
struct Seen {
    /// (service, version, when it was served: modules fetched, applied).
    versions: Vec<(String, u64, Instant)>,
    /// (purges through, when they arrived).
    purges: Vec<(u64, Instant)>,
}

/// A node's control-plane side, without an engine.
struct Follower {
    http: reqwest::Client,
    base: String,
    token: String,
    fingerprint: String,
    seen: Arc<Mutex<Seen>>,
}

impl Follower {
    async fn register(base: &str, name: String, fingerprint: &str) -> (Self, u64) {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client");
        let registered: NodeRegistered = http
            .post(format!("{base}/v1/node/register"))
            .bearer_auth(CLUSTER)
            .json(&NodeRegistration {
                name,
                engine_fingerprint: fingerprint.to_string(),
            })
            .send()
            .await
            .expect("register")
            .json()
            .await
            .expect("registered");
        let follower = Self {
            http,
            base: base.to_string(),
            token: registered.node_token,
            fingerprint: fingerprint.to_string(),
            seen: Arc::default(),
        };
        (follower, registered.purge_seq)
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("control plane answers")
    }

    async fn post(&self, path: &str, body: &impl serde::Serialize) {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .expect("control plane answers");
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
    }

    /// Long-polls the snapshot, applying deltas and fetching new modules.
    async fn follow_snapshots(self: Arc<Self>) {
        let mut held = Snapshot::default();
        let mut fetched = HashSet::new();
        loop {
            let path = format!("/v1/node/snapshot?after={}&delta=true", held.version);
            let response = self.get(&path).await;
            if response.status() == reqwest::StatusCode::NOT_MODIFIED {
                continue;
            }
            assert!(
                response.status().is_success(),
                "snapshot: {}",
                response.status()
            );
            let delta = response
                .headers()
                .get(SNAPSHOT_KIND_HEADER)
                .is_some_and(|kind| kind == SNAPSHOT_DELTA);
            let next = if delta {
                let delta: SnapshotDelta = response.json().await.expect("delta");
                held.apply(delta).expect("a delta from the held version")
            } else {
                response.json().await.expect("snapshot")
            };
            for service in &next.services {
                if fetched.insert(service.module_sha256.clone()) {
                    self.fetch_module(&service.module_sha256).await;
                }
            }
            let now = Instant::now();
            {
                let mut seen = self.seen.lock().expect("seen");
                for service in &next.services {
                    seen.versions
                        .push((service.name.clone(), service.version, now));
                }
            }
            self.post(
                "/v1/node/status",
                &NodeStatus {
                    snapshot_version: next.version,
                    failures: Vec::new(),
                },
            )
            .await;
            held = next;
        }
    }

    async fn fetch_module(&self, hash: &str) {
        let component = self.get(&format!("/v1/node/components/{hash}")).await;
        assert!(component.status().is_success(), "component {hash}");
        let bytes = component.bytes().await.expect("component");
        assert_eq!(edge_platform::ModuleHash::of(&bytes).to_hex(), hash);
        for suffix in ["", "/manifest"] {
            let artifact = self
                .get(&format!(
                    "/v1/node/artifacts/{hash}/{}{suffix}",
                    self.fingerprint
                ))
                .await;
            assert!(artifact.status().is_success(), "artifact {hash}{suffix}");
            artifact.bytes().await.expect("artifact");
        }
    }

    async fn follow_purges(self: Arc<Self>, mut after: u64) {
        loop {
            let response = self.get(&format!("/v1/node/purges?after={after}")).await;
            if response.status() == reqwest::StatusCode::NOT_MODIFIED {
                continue;
            }
            let batch: PurgeBatch = response.json().await.expect("purges");
            after = batch.through;
            self.seen
                .lock()
                .expect("seen")
                .purges
                .push((after, Instant::now()));
        }
    }

    async fn report_usage(self: Arc<Self>, service: String) {
        let mut ticks = tokio::time::interval(Duration::from_secs(5));
        for n in 0u64.. {
            ticks.tick().await;
            let report = UsageReport {
                snapshot_version: 0,
                services: vec![ServiceUsage {
                    service: service.clone(),
                    version: 0,
                    guest_failures: 0,
                    responses_cut: 0,
                    requests: 100,
                    status_2xx: 100,
                    status_3xx: 0,
                    status_4xx: 0,
                    status_5xx: 0,
                    guest_cpu_micros: 5_000,
                    bytes_out: 10_000,
                }],
                report_id: Some(format!("{}-{n}", &self.token[..16])),
            };
            self.post("/v1/node/usage", &report).await;
        }
    }
}

/// A distinct component per deploy: hello with a custom section that
/// names it, so every deploy brings a new artifact to fetch.
fn module(n: usize) -> Vec<u8> {
    let mut bytes = hello();
    let name = b"fleet";
    let payload = n.to_le_bytes();
    let size = 1 + name.len() + payload.len();
    bytes.push(0);
    bytes.push(u8::try_from(size).expect("small section"));
    bytes.push(u8::try_from(name.len()).expect("short name"));
    bytes.extend_from_slice(name);
    bytes.extend_from_slice(&payload);
    bytes
}

/// CPU seconds (user + system) and RSS / peak RSS (bytes) of `pid`.
fn process_usage(pid: u32) -> (f64, u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let cpu = (ticks(11) + ticks(12)) / 100.0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (cpu, kib("VmRSS:"), kib("VmHWM:"))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

struct Round {
    label: String,
    deploys: Vec<f64>,
    purges: Vec<f64>,
    /// How long the tenant's purge call took to answer.
    purges_accepted: Vec<f64>,
    cpu_seconds: f64,
    wall_seconds: f64,
    rss: u64,
    peak_rss: u64,
    delta_bytes_per_answer: f64,
    full_bytes: f64,
}

async fn fleet_round(label: &str, replicas: &[ReplicaProcess], tenants: usize) -> Round {
    let nodes = env_or("FLEET_NODES", 100);
    let deploys = env_or("FLEET_DEPLOYS", 40);
    let admin = replicas[0].api(ADMIN);
    let engine =
        edge_platform::engine::build_validation_engine(&SandboxLimits::default()).expect("engine");
    let fingerprint = edge_platform::engine::engine_fingerprint(&engine);

    // Tenants, each with a service serving its first module.
    let mut clients = Vec::new();
    for t in 0..tenants {
        let name = format!("t{t}");
        let token = admin
            .create_tenant(&name, false)
            .await
            .expect("tenant")
            .token;
        let api = ApiClient::new(&replicas[t % replicas.len()].base, &token);
        let spec = ServiceSpec {
            domains: vec![format!("web.{name}.{PLATFORM_DOMAIN}")],
            ..ServiceSpec::default()
        };
        api.create_service("web", &spec).await.expect("service");
        api.deploy("web", hello()).await.expect("first deploy");
        clients.push((format!("{name}/web"), api));
    }
    // Every deploy's module, compiled before the clock starts.
    let mut uploaded = Vec::new();
    for n in 0..deploys {
        let (_, api) = &clients[n % clients.len()];
        let module = api.upload_module("web", module(n)).await.expect("upload");
        uploaded.push(module.module_sha256);
    }

    let mut tasks = Vec::new();
    let mut seen = Vec::new();
    for i in 0..nodes {
        let base = &replicas[i % replicas.len()].base;
        let (follower, purge_seq) =
            Follower::register(base, format!("fleet-{i}"), &fingerprint).await;
        let follower = Arc::new(follower);
        seen.push(Arc::clone(&follower.seen));
        tasks.push(tokio::spawn(Arc::clone(&follower).follow_snapshots()));
        tasks.push(tokio::spawn(Arc::clone(&follower).follow_purges(purge_seq)));
        let service = clients[i % clients.len()].0.clone();
        tasks.push(tokio::spawn(follower.report_usage(service)));
    }
    // Every follower holds the starting snapshot.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let pids: Vec<u32> = replicas.iter().map(ReplicaProcess::pid).collect();
    let before: Vec<(f64, u64, u64)> = pids.iter().map(|p| process_usage(*p)).collect();
    let pages_before = metrics_pages(replicas).await;
    let started = Instant::now();
    let mut deployed = Vec::new();
    let mut purged = Vec::new();
    let mut purge_accepted_ms = Vec::new();
    for (n, hash) in uploaded.iter().enumerate() {
        let (service, api) = &clients[n % clients.len()];
        let at = Instant::now();
        let created = api.create_version("web", hash, true).await.expect("deploy");
        deployed.push((
            service.clone(),
            u64::try_from(created.version).unwrap_or(0),
            at,
        ));
        let at = Instant::now();
        let purge = PurgeRequest {
            url: None,
            surrogate_key: Some(format!("key-{n}")),
            soft: false,
        };
        let accepted = api.purge(&purge).await.expect("purge");
        purge_accepted_ms.push(at.elapsed().as_secs_f64() * 1e3);
        purged.push((accepted.seq, at));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let wall_seconds = started.elapsed().as_secs_f64();
    // Time for the last deploy and purge to reach every node.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after: Vec<(f64, u64, u64)> = pids.iter().map(|p| process_usage(*p)).collect();
    let pages_after = metrics_pages(replicas).await;
    for task in &tasks {
        task.abort();
    }

    let mut deploy_ms = Vec::new();
    let mut purge_ms = Vec::new();
    for seen in &seen {
        let seen = seen.lock().expect("seen");
        for (service, version, at) in &deployed {
            let served = seen
                .versions
                .iter()
                .filter(|(name, v, _)| name == service && v >= version)
                .map(|(_, _, when)| *when)
                .min()
                .expect("every node serves every deploy");
            deploy_ms.push(served.saturating_duration_since(*at).as_secs_f64() * 1e3);
        }
        for (seq, at) in &purged {
            let arrived = seen
                .purges
                .iter()
                .filter(|(through, _)| through >= seq)
                .map(|(_, when)| *when)
                .min()
                .expect("every node gets every purge");
            purge_ms.push(arrived.saturating_duration_since(*at).as_secs_f64() * 1e3);
        }
    }
    deploy_ms.sort_by(f64::total_cmp);
    purge_ms.sort_by(f64::total_cmp);
    purge_accepted_ms.sort_by(f64::total_cmp);
    let sent = |kind: &str, what: &str| -> f64 {
        let series = format!("cp_snapshot{what}{{kind=\"{kind}\"}}");
        pages_after
            .iter()
            .zip(&pages_before)
            .map(|(a, b)| metric_value(a, &series) - metric_value(b, &series))
            .sum()
    };
    let delta_answers = sent("delta", "s_sent_total");
    let delta_bytes = sent("delta", "_bytes_sent_total");
    let full_bytes = sent("full", "_bytes_sent_total") / sent("full", "s_sent_total").max(1.0);
    let full_bytes = if full_bytes > 0.0 {
        full_bytes
    } else {
        // No node needed a whole snapshot while measured: the size of the
        // one each got at the start.
        pages_before
            .iter()
            .map(|p| {
                metric_value(p, "cp_snapshot_bytes_sent_total{kind=\"full\"}")
                    / metric_value(p, "cp_snapshots_sent_total{kind=\"full\"}").max(1.0)
            })
            .fold(0.0, f64::max)
    };
    Round {
        label: format!("{label}, {tenants} tenants"),
        deploys: deploy_ms,
        purges: purge_ms,
        purges_accepted: purge_accepted_ms,
        cpu_seconds: after.iter().zip(&before).map(|(a, b)| a.0 - b.0).sum(),
        wall_seconds,
        rss: after.iter().map(|a| a.1).sum(),
        peak_rss: after.iter().map(|a| a.2).sum(),
        delta_bytes_per_answer: delta_bytes / delta_answers.max(1.0),
        full_bytes,
    }
}

async fn metrics_pages(replicas: &[ReplicaProcess]) -> Vec<String> {
    let mut pages = Vec::new();
    for replica in replicas {
        pages.push(replica.metrics_page().await);
    }
    pages
}

fn report(round: &Round) {
    println!(
        "{}: deploy-to-served p50 {:.0} ms p99 {:.0} ms max {:.0} ms ({} node-deploys); purge p50 {:.1} ms p99 {:.1} ms ({} node-purges; the API answered in p50 {:.1} ms p99 {:.1} ms); control plane {:.2} CPU s over {:.1} s ({:.0} % of a core), RSS {} MiB (peak {} MiB); snapshot: {:.0} bytes per delta answer, {:.0} bytes whole",
        round.label,
        percentile(&round.deploys, 50.0),
        percentile(&round.deploys, 99.0),
        percentile(&round.deploys, 100.0),
        round.deploys.len(),
        percentile(&round.purges, 50.0),
        percentile(&round.purges, 99.0),
        round.purges.len(),
        percentile(&round.purges_accepted, 50.0),
        percentile(&round.purges_accepted, 99.0),
        round.cpu_seconds,
        round.wall_seconds,
        100.0 * round.cpu_seconds / round.wall_seconds,
        round.rss >> 20,
        round.peak_rss >> 20,
        round.delta_bytes_per_answer,
        round.full_bytes,
    );
}

/// `FLEET_BASELINE=<another control-plane binary>`: this build and that
/// one in `FLEET_ROUNDS` pairs of rounds in rotated order (AB, BA, ...) at
/// 20 tenants, on SQLite and (when there is one) on PostgreSQL with two
/// replicas, then the medians of each side.
async fn compare(baseline: &std::path::Path) {
    let current = edge_tests::platform::workspace_binary("control-plane");
    let rounds = env_or("FLEET_ROUNDS", 3);
    let mut setups = vec!["SQLite"];
    if std::env::var("EDGE_TEST_POSTGRES_URL").is_ok() {
        setups.push("PostgreSQL");
    }
    for setup in setups {
        let mut results: [Vec<Round>; 2] = [Vec::new(), Vec::new()];
        for round in 0..rounds * 2 {
            // A B B A A B ...: each side as often first as second.
            let side = (round + round / 2) % 2;
            let binary = if side == 0 { &current } else { baseline };
            let label = if side == 0 { "this build" } else { "baseline" };
            let dir = tempfile::tempdir().expect("dir");
            let replicas = if setup == "SQLite" {
                let url = format!("sqlite://{}", dir.path().join("cp.db").display());
                vec![ReplicaProcess::start_binary(binary, &url).await]
            } else {
                let url = database_url("postgres", dir.path()).await;
                vec![
                    ReplicaProcess::start_binary(binary, &url).await,
                    ReplicaProcess::start_binary(binary, &url).await,
                ]
            };
            let result = fleet_round(&format!("{label} on {setup}"), &replicas, 20).await;
            report(&result);
            results[side].push(result);
        }
        for (side, label) in [(0, "this build"), (1, "baseline")] {
            let median = |value: &dyn Fn(&Round) -> f64| {
                let mut values: Vec<f64> = results[side].iter().map(value).collect();
                values.sort_by(f64::total_cmp);
                values[values.len() / 2]
            };
            println!(
                "median of {rounds} on {setup}, {label}: deploy p50 {:.0} ms p99 {:.0} ms; purge p50 {:.1} ms p99 {:.1} ms; purge API p50 {:.1} ms; control plane {:.0} % of a core",
                median(&|r| percentile(&r.deploys, 50.0)),
                median(&|r| percentile(&r.deploys, 99.0)),
                median(&|r| percentile(&r.purges, 50.0)),
                median(&|r| percentile(&r.purges, 99.0)),
                median(&|r| percentile(&r.purges_accepted, 50.0)),
                median(&|r| 100.0 * r.cpu_seconds / r.wall_seconds),
            );
        }
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let many = env_or("FLEET_TENANTS", 200);
    if let Ok(baseline) = std::env::var("FLEET_BASELINE") {
        runtime.block_on(compare(std::path::Path::new(&baseline)));
        return;
    }
    runtime.block_on(async {
        for tenants in [20, many] {
            let dir = tempfile::tempdir().expect("dir");
            let url = format!("sqlite://{}", dir.path().join("cp.db").display());
            let replica = ReplicaProcess::start(&url).await;
            let round = fleet_round("one control plane on SQLite", &[replica], tenants).await;
            report(&round);
        }
        if std::env::var("EDGE_TEST_POSTGRES_URL").is_ok() {
            for tenants in [20, many] {
                let dir = tempfile::tempdir().expect("dir");
                let url = database_url("postgres", dir.path()).await;
                let replicas = [
                    ReplicaProcess::start(&url).await,
                    ReplicaProcess::start(&url).await,
                ];
                let round = fleet_round("two replicas on PostgreSQL", &replicas, tenants).await;
                report(&round);
            }
        }
    });
}
