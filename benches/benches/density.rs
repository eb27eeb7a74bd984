//! Density: SERVICES services (10,000 by default), each with its own
//! module (generated, distinct bytes), deployed through the control plane
//! to edge nodes that run as their own processes on loopback. Reports:
//!
//! - the deploy time (every version activated) and the time until the
//!   node serves every service;
//! - the node's RSS with every service's component ready in memory;
//! - the first-request latency of a service whose component is not in the
//!   module cache, on a second node whose cache holds COLD_CACHE components
//!   (p50, p99 over COLD_PROBES services, each asked once);
//! - req/s and server CPU per request of a load spread at random over every
//!   service against the same load on one hot service, ROUNDS rounds of
//!   DURATION with the order rotated, medians (wrk, -t2 -c64).
//!
//!   cargo build --release -p edge-node && cargo bench -p edge-benches --bench density
//!   SERVICES=1000 GUEST=hello cargo bench -p edge-benches --bench density
//!
//! With PERF_DIR set, the last round's loads are profiled (`perf record`),
//! into PERF_DIR/hot.perf.data and PERF_DIR/mixed.perf.data.
//!
//! GUEST is `minimal` (a 1 KB hand-written component: the deploy of ten
//! thousand stays within minutes) or `hello` (the SDK hello, 110 KB, about
//! 0.1 s to compile each). Every module gets a custom section of its own,
//! so each is stored, compiled and loaded as a module of its own.

mod cluster;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use cluster::{bench_plane, env_or, percentile_ms};
use edge_tests::client::get;
use edge_tests::platform::{CLUSTER, Plane, workspace_binary};
use edgectl::client::{ApiClient, ApiError};
use futures::StreamExt;

const TENANTS: usize = 10;
/// Deploys in flight at once (uploads are compiled two at a time).
const DEPLOY_CONCURRENCY: usize = 16;

fn main() -> std::process::ExitCode {
    if let Some(code) = cluster::compile_worker() {
        return code;
    }
    cluster::runtime().block_on(bench());
    std::process::ExitCode::SUCCESS
}

async fn bench() {
    let services = env_or("SERVICES", 10_000);
    let cold_cache = env_or("COLD_CACHE", 1_000).min(services / 2);
    let cold_probes = env_or("COLD_PROBES", 500).min(services - cold_cache);
    let rounds = env_or("ROUNDS", 3);
    let duration = std::env::var("DURATION").unwrap_or_else(|_| "6s".into());
    let guest = std::env::var("GUEST").unwrap_or_else(|_| "minimal".into());
    let base_module = match guest.as_str() {
        "minimal" => edge_tests::hostile::minimal_hello(),
        name => std::fs::read(edge_tests::guests::rust_guest(name)).expect("guest"),
    };

    let plane = bench_plane(|config| {
        config.quotas.max_services_per_tenant = u64::MAX;
        config.quotas.max_module_bytes_per_tenant = u64::MAX;
        config.quotas.max_uploads_per_tenant = DEPLOY_CONCURRENCY;
    })
    .await;
    let data = tempfile::tempdir().expect("bench dir");
    // `ready`: room for every component; `cold`: for COLD_CACHE of them.
    let ready = NodeProcess::start(&plane, data.path(), "ready", services as u64).await;
    let cold = NodeProcess::start(&plane, data.path(), "cold", cold_cache as u64).await;

    let mut tenants = Vec::new();
    for t in 0..TENANTS {
        tenants.push(plane.api(&plane.tenant(&format!("t{t}")).await));
    }
    let hosts: Vec<String> = (0..services)
        .map(|i| format!("s{i}.t{}.test", i % TENANTS))
        .collect();

    println!(
        "\ndensity: {services} services of {TENANTS} tenants, guest {guest}, each its own module\n"
    );
    let started = Instant::now();
    futures::stream::iter(0..services)
        .map(|i| deploy(&tenants[i % TENANTS], i, &hosts[i], &base_module))
        .buffer_unordered(DEPLOY_CONCURRENCY)
        .collect::<Vec<()>>()
        .await;
    let deployed = started.elapsed();
    println!(
        "deploy, every version activated   {:>8.1} s ({:.0} services/s)",
        deployed.as_secs_f64(),
        services as f64 / deployed.as_secs_f64()
    );
    // In deploy order: what `cold` keeps in its cache at the end are the
    // services deployed last, and the probes below ask for the first ones.
    for node in [&ready, &cold] {
        futures::stream::iter(&hosts)
            .map(|host| node.until_served(host))
            .buffer_unordered(32)
            .collect::<Vec<()>>()
            .await;
    }
    println!(
        "deploy to served on both nodes    {:>8.1} s",
        started.elapsed().as_secs_f64()
    );
    println!(
        "ready node RSS, {services} services     {:>8.0} MiB ({:.0} KiB per service)",
        ready.rss_kib() as f64 / 1024.0,
        ready.rss_kib() as f64 / services as f64
    );

    // Cold: the services `cold` served first have been evicted by the
    // COLD_CACHE it served last.
    let misses_before = cold.metric("edge_module_cache_misses_total").await;
    let mut first = Vec::new();
    for host in &hosts[..cold_probes] {
        let asked = Instant::now();
        let reply = get(cold.addr, host, "/").await;
        first.push(asked.elapsed());
        assert_eq!(reply.status, 200, "{host}: {}", reply.text());
    }
    let misses = cold.metric("edge_module_cache_misses_total").await - misses_before;
    let mut warm = Vec::new();
    for _ in 0..cold_probes {
        let asked = Instant::now();
        get(cold.addr, &hosts[services - 1], "/").await;
        warm.push(asked.elapsed());
    }
    first.sort();
    warm.sort();
    println!(
        "first request, not in the module cache ({misses:.0} misses of {cold_probes}): p50 {:.2} ms, p99 {:.2} ms \
         (a cached service, same client: p50 {:.2} ms, p99 {:.2} ms)",
        percentile_ms(&first, 0.5),
        percentile_ms(&first, 0.99),
        percentile_ms(&warm, 0.5),
        percentile_ms(&warm, 0.99),
    );
    cold.stop();

    let hot_script = wrk_script(data.path(), "hot", &hosts[..1]);
    let mixed_script = wrk_script(data.path(), "mixed", &hosts);
    let loads = [("hot", &hot_script), ("mixed", &mixed_script)];
    let ticks_per_second = clock_ticks_per_second();
    let mut results: Vec<(&str, f64, f64)> = Vec::new();
    for round in 0..rounds {
        for step in 0..loads.len() {
            let (name, script) = loads[(step + round) % loads.len()];
            let before = ready.cpu_ticks();
            let profile = (round + 1 == rounds)
                .then(|| ready.profile(&format!("{name}.perf.data")))
                .flatten();
            let requests_per_second = wrk(ready.addr, script, &duration);
            if let Some(mut perf) = profile {
                let _ = perf.wait();
            }
            let cpu_seconds = (ready.cpu_ticks() - before) as f64 / ticks_per_second;
            let seconds = duration.trim_end_matches('s').parse::<f64>().unwrap_or(6.0);
            let cpu_us = cpu_seconds * 1e6 / (requests_per_second * seconds);
            println!(
                "  round {round} {name:<5} {requests_per_second:>9.0} req/s {cpu_us:>6.1} µs/req"
            );
            results.push((name, requests_per_second, cpu_us));
        }
    }
    let median = |name: &str, pick: fn(&(&str, f64, f64)) -> f64| {
        let mut values: Vec<f64> = results.iter().filter(|r| r.0 == name).map(pick).collect();
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let (hot_rps, mixed_rps) = (median("hot", |r| r.1), median("mixed", |r| r.1));
    println!(
        "one hot service                   {hot_rps:>8.0} req/s {:>6.1} µs/req",
        median("hot", |r| r.2)
    );
    println!(
        "spread over {services:<6} services     {mixed_rps:>8.0} req/s {:>6.1} µs/req  ({:.2}x hot)",
        median("mixed", |r| r.2),
        mixed_rps / hot_rps
    );
    println!(
        "ready node RSS after the load     {:>8.0} MiB",
        ready.rss_kib() as f64 / 1024.0
    );
    println!("targets: RSS <= 2 GiB, cold first request p99 <= 5 ms, spread >= 0.8x hot");
    ready.stop();
    plane.stop().await;
}

/// Creates service `i` on `host`, uploads its own module and activates it.
async fn deploy(api: &ApiClient, i: usize, host: &str, base_module: &[u8]) {
    let name = format!("s{i}");
    let spec = edge_config::protocol::ServiceSpec {
        domains: vec![host.to_string()],
        ..Default::default()
    };
    api.create_service(&name, &spec)
        .await
        .expect("service created");
    let module = distinct_module(base_module, i);
    // The control plane compiles a few uploads at a time and refuses more
    // with 429: a deploy tool waits and sends again.
    loop {
        match api.deploy(&name, module.clone()).await {
            Ok(_) => return,
            Err(ApiError::Refused { status, .. }) if status.as_u16() == 429 => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("deploying {name}: {e}"),
        }
    }
}

/// `base` with a custom section naming `i`: the same code, another module.
fn distinct_module(base: &[u8], i: usize) -> Vec<u8> {
    let name = b"edge-density";
    let payload = i.to_le_bytes();
    let mut content = leb128(name.len());
    content.extend_from_slice(name);
    content.extend_from_slice(&payload);
    let mut module = base.to_vec();
    module.push(0); // custom section
    module.extend(leb128(content.len()));
    module.extend(content);
    module
}

fn leb128(mut value: usize) -> Vec<u8> {
    let mut bytes = Vec::new();
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            bytes.push(byte);
            return bytes;
        }
        bytes.push(byte | 0x80);
    }
}

/// A wrk script that sends every request to a host picked at random.
fn wrk_script(dir: &Path, name: &str, hosts: &[String]) -> PathBuf {
    let list = dir.join(format!("{name}.hosts"));
    std::fs::write(&list, hosts.join("\n") + "\n").expect("host list");
    let script = dir.join(format!("{name}.lua"));
    std::fs::write(
        &script,
        format!(
            "local hosts = {{}}\n\
             for line in io.lines(\"{}\") do hosts[#hosts + 1] = line end\n\
             request = function()\n  \
               return wrk.format(\"GET\", \"/\", {{ Host = hosts[math.random(#hosts)] }})\n\
             end\n",
            list.display()
        ),
    )
    .expect("wrk script");
    script
}

/// Runs wrk against `addr` with `script`; returns req/s. Any non-2xx
/// answer fails the benchmark.
fn wrk(addr: SocketAddr, script: &Path, duration: &str) -> f64 {
    let output = std::process::Command::new("wrk")
        .args(["-t2", "-c64", "-d", duration, "-s"])
        .arg(script)
        .arg(format!("http://{addr}/"))
        .output()
        .expect("wrk runs (scripts/install-toolchain.sh --bench installs it)");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && !text.contains("Non-2xx"),
        "wrk: {text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    text.lines()
        .find_map(|line| line.strip_prefix("Requests/sec:"))
        .and_then(|rate| rate.trim().parse().ok())
        .unwrap_or_else(|| panic!("no rate in wrk's output: {text}"))
}

/// The unit of /proc's CPU times.
fn clock_ticks_per_second() -> f64 {
    let output = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .expect("getconf runs");
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .expect("CLK_TCK is a number")
}

/// An edge node process following `plane`.
struct NodeProcess {
    child: std::process::Child,
    addr: SocketAddr,
    admin: SocketAddr,
}

impl NodeProcess {
    async fn start(plane: &Plane, dir: &Path, name: &str, module_cache_entries: u64) -> Self {
        let data = dir.join(name);
        std::fs::create_dir_all(&data).expect("node dir");
        let (addr, admin) = (free_port(), free_port());
        let config = data.join("node.toml");
        std::fs::write(
            &config,
            format!(
                "[node]\nlisten = \"{addr}\"\nadmin_listen = \"{admin}\"\ndata_dir = \"{}\"\n\n\
                 [sandbox]\nmodule_cache_entries = {module_cache_entries}\n\n\
                 [control_plane]\nurl = \"{}\"\ncluster_token = \"{CLUSTER}\"\n\
                 node_name = \"{name}\"\nusage_report_interval_ms = 5000\n",
                data.display(),
                plane.base
            ),
        )
        .expect("node config");
        let log = std::fs::File::create(data.join("node.log")).expect("node log");
        let child = std::process::Command::new(workspace_binary("edge-node"))
            .args(["serve", "--config"])
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("edge-node starts (cargo build --release -p edge-node)");
        let node = Self { child, addr, admin };
        let started = Instant::now();
        while get_status(node.admin, "/metrics").await != Some(200) {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "node {name} never answered"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        node
    }

    async fn until_served(&self, host: &String) {
        let started = Instant::now();
        while get(self.addr, host, "/").await.status != 200 {
            assert!(
                started.elapsed() < Duration::from_secs(600),
                "{host} never served"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn metric(&self, series: &str) -> f64 {
        let page = get(self.admin, "admin", "/metrics").await.text();
        edge_tests::node::metric_value(&page, series)
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("node status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|kib| kib.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    /// With `PERF_DIR` set: `perf record` of this node for 4 s, into
    /// `PERF_DIR/file`.
    fn profile(&self, file: &str) -> Option<std::process::Child> {
        let dir = std::env::var_os("PERF_DIR")?;
        let child = std::process::Command::new("perf")
            .args(["record", "-g", "-p", &self.child.id().to_string(), "-o"])
            .arg(Path::new(&dir).join(file))
            .args(["--", "sleep", "4"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("perf runs");
        Some(child)
    }

    /// utime + stime, in clock ticks.
    fn cpu_ticks(&self) -> u64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).expect("node stat");
        // The command name may hold spaces: count fields after its ')'.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map_or("", |(_, rest)| rest)
            .split_whitespace()
            .collect();
        fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0)
    }

    fn stop(self) {
        drop(self);
    }
}

/// A benchmark that fails part-way leaves no node running.
impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn get_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let connected = tokio::net::TcpStream::connect(addr).await.ok()?;
    drop(connected);
    Some(get(addr, "admin", path).await.status)
}

fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}
