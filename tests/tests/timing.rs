//! Checks whose assertion is a time bound: a CPU budget, a wall deadline,
//! an immediate refusal. They run one at a time, in their own test binary
//! (after the others), so that other tests do not compete for the cores.

use std::time::{Duration, Instant};

use edge_config::NodeConfig;
use edge_tests::client::{self, get};
use edge_tests::hostile::{assert_others_still_served, guest, node_with, spin, terminations};
use edge_tests::node::{TestNode, TestService};
use tokio::sync::{Mutex, MutexGuard};

/// Held by each test for its whole run.
async fn alone() -> MutexGuard<'static, ()> {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());
    ONE_AT_A_TIME.lock().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infinite_loop_is_stopped_at_the_cpu_budget() {
    let _alone = alone().await;
    let node = node_with(spin(), |l| l.cpu_budget_ms = 50).await;
    let started = Instant::now();
    let reply = get(node.addr, "hostile.test", "/").await;
    reply.assert_edge_error(508, "cpu-budget-exceeded");
    let elapsed = started.elapsed();
    assert!(
        elapsed <= Duration::from_millis(150),
        "took {elapsed:?}: budget + 100 ms at most"
    );
    assert_others_still_served(&node).await;
    assert_eq!(terminations(&node, "cpu").await, 1.0);
    // The budget is charged in CPU time: between the budget and a few ticks more.
    let cpu = node
        .metric("edge_guest_cpu_seconds_total{service=\"hostile\"}")
        .await;
    assert!((0.050..0.080).contains(&cpu), "cpu charged: {cpu}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_loops_are_stopped_in_time_while_hello_keeps_answering() {
    let _alone = alone().await;
    const LOOPS: usize = 20;
    // What one loop may be charged: its 50 ms budget and the ticks it runs
    // past it before the check stops it.
    const CHARGED_PER_LOOP_MS: u64 = 60;
    let node = node_with(spin(), |l| l.cpu_budget_ms = 50).await;
    let addr = node.addr;
    let loops: Vec<_> = (0..LOOPS)
        .map(|_| {
            tokio::spawn(async move {
                let started = Instant::now();
                let reply = get(addr, "hostile.test", "/").await;
                (reply.status, started.elapsed())
            })
        })
        .collect();
    // While the loops burn their budgets, another tenant is still served.
    let mut hello_answers = 0;
    while loops.iter().any(|task| !task.is_finished()) {
        assert_others_still_served(&node).await;
        hello_answers += 1;
    }
    assert!(hello_answers >= 1);
    for task in loops {
        let (status, elapsed) = task.await.expect("loop request");
        assert_eq!(status, 508);
        // Two cores run 20 loops: each gets its CPU (at most
        // CHARGED_PER_LOOP_MS, checked below), but they share the cores, so
        // the wall time is bounded by all of it spread over both cores,
        // plus a fifth for the hello tenant's turns beside them and the
        // 100 ms allowance. (Bounding by the 50 ms budgets alone, 700 ms,
        // once failed at 700.8 ms on a busy machine; a fifth for hello's
        // turns once failed at 860 ms against 820 ms, with the machine's
        // other work beside it: half is allowed.)
        let bound = Duration::from_millis((CHARGED_PER_LOOP_MS * LOOPS as u64) / 2 * 3 / 2 + 100);
        assert!(
            elapsed <= bound,
            "a loop took {elapsed:?} (bound {bound:?})"
        );
    }
    assert_eq!(terminations(&node, "cpu").await, LOOPS as f64);
    // Each loop was charged its budget and a tick or two more, not the time
    // it spent waiting for a core.
    let cpu = node
        .metric("edge_guest_cpu_seconds_total{service=\"hostile\"}")
        .await;
    assert!(
        cpu <= LOOPS as f64 * CHARGED_PER_LOOP_MS as f64 / 1000.0,
        "charged {cpu} s for {LOOPS} loops"
    );
    assert_eq!(
        node.metric(
            "edge_requests_total{protocol=\"http1\",service=\"hostile\",status_class=\"5xx\"}"
        )
        .await,
        LOOPS as f64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_service_gets_its_own_cpu_budget() {
    let _alone = alone().await;
    let spin = spin();
    let node = TestNode::start(vec![
        TestService::from_bytes("tight", "tight.test", spin.clone())
            .limits(|l| l.cpu_budget_ms = 10),
        TestService::from_bytes("loose", "loose.test", spin).limits(|l| l.cpu_budget_ms = 200),
    ])
    .await;
    assert_eq!(get(node.addr, "tight.test", "/").await.status, 508);
    assert_eq!(get(node.addr, "loose.test", "/").await.status, 508);
    let tight = node
        .metric("edge_guest_cpu_seconds_total{service=\"tight\"}")
        .await;
    let loose = node
        .metric("edge_guest_cpu_seconds_total{service=\"loose\"}")
        .await;
    assert!((0.010..0.030).contains(&tight), "tight: {tight}");
    assert!((0.200..0.240).contains(&loose), "loose: {loose}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_that_waits_forever_is_cut_at_the_wall_deadline() {
    let _alone = alone().await;
    // Sleeps for an hour on a monotonic-clock pollable: no CPU used.
    let sleeper = guest(
        r#"(import "wasi:clocks/monotonic-clock@0.2.12" "subscribe-duration" (func $sleep_for (param i64) (result i32)))
           (import "wasi:io/poll@0.2.12" "[method]pollable.block" (func $block (param i32)))"#,
        "",
        "(call $block (call $sleep_for (i64.const 3600000000000)))",
    );
    let node = node_with(sleeper, |l| l.wall_time_ms = 300).await;
    let started = Instant::now();
    let reply = get(node.addr, "hostile.test", "/").await;
    reply.assert_edge_error(504, "wall-time-exceeded");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(2),
        "{elapsed:?}"
    );
    assert_others_still_served(&node).await;
    assert_eq!(terminations(&node, "wall").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_gets_503_with_retry_after_never_a_hang() {
    let _alone = alone().await;
    let mut config = NodeConfig::default();
    config.http.max_in_flight_requests = 1;
    config.http.retry_after_seconds = 2;
    config.http.admission_queue_timeout_ms = 100;
    let spin = spin();
    let node = TestNode::start_with(
        config,
        vec![TestService::from_bytes("busy", "busy.test", spin).limits(|l| l.cpu_budget_ms = 300)],
    )
    .await;
    let addr = node.addr;
    let first = tokio::spawn(async move { get(addr, "busy.test", "/").await.status });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let refused = get(node.addr, "busy.test", "/").await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(100) && waited < Duration::from_millis(400),
        "refused at its queue deadline: {waited:?}"
    );
    assert_eq!(refused.status, 503);
    assert_eq!(refused.header("retry-after"), Some("2"));
    assert_eq!(refused.header("edge-error"), Some("overloaded"));
    assert_eq!(first.await.expect("first request"), 508);
    // The slot is free again once the first guest ended.
    assert_eq!(get(node.addr, "busy.test", "/").await.status, 508);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_trickling_its_header_is_cut_at_the_header_read_timeout() {
    let _alone = alone().await;
    let mut config = NodeConfig::default();
    config.http.header_read_timeout_ms = 300;
    let node = TestNode::start_with(config, vec![TestService::example("echo", "echo")]).await;
    let started = Instant::now();
    let (_, closed) = client::raw(
        node.addr,
        b"GET / HTTP/1.1\r\nhost: echo.test\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(closed, "the node closed the connection");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(2),
        "{elapsed:?}"
    );
}

/// Hello's latencies over `connections` keep-alive connections for `time`.
async fn hello_latencies(node: &TestNode, connections: usize, time: Duration) -> Vec<Duration> {
    let loops: Vec<_> = (0..connections)
        .map(|_| {
            let addr = node.addr;
            tokio::spawn(
                async move { client::keep_alive_latencies(addr, "hello.test", time).await },
            )
        })
        .collect();
    let mut all = Vec::new();
    for task in loops {
        all.extend(task.await.expect("hello loop"));
    }
    all
}

/// What another tenant's hello gets: p99 latency with two clients one
/// request after another, and throughput (requests in half a second) with
/// sixteen, enough to keep both cores busy; each the median of three
/// windows.
#[derive(Debug)]
struct HelloService {
    p99: Duration,
    throughput: usize,
}

impl HelloService {
    /// Under attack, hello keeps p99 under 10 ms (a few epoch ticks) and at
    /// least a third of its throughput alone. Its fair share is half (two
    /// tenants with work), and it gets 55-62 % here; the bound leaves room
    /// for this shared machine's noise between the two measurements (one
    /// CI run measured 49 %), and is still thirty times what an unfair
    /// node gives it (under 1 %).
    fn assert_fared_against(&self, alone: &HelloService) {
        // 10 ms: one CI run measured 5.6 ms on a machine busy beside it;
        // an unfair node keeps hello waiting for whole loops (seconds).
        assert!(
            self.p99 < Duration::from_millis(10),
            "hello p99 under attack: {:?} (alone: {:?})",
            self.p99,
            alone.p99
        );
        assert!(
            self.throughput * 3 >= alone.throughput,
            "hello throughput under attack: {} vs {} alone",
            self.throughput,
            alone.throughput
        );
    }
}

async fn measure_hello(node: &TestNode) -> HelloService {
    // Medians of three windows each: one hiccup of this shared machine (a
    // few milliseconds away from both cores) does not decide either.
    let mut p99s = Vec::new();
    let mut throughputs = Vec::new();
    for _ in 0..3 {
        let mut light = hello_latencies(node, 2, Duration::from_millis(500)).await;
        p99s.push(client::quantile(&mut light, 0.99));
        throughputs.push(
            hello_latencies(node, 16, Duration::from_millis(500))
                .await
                .len(),
        );
    }
    p99s.sort_unstable();
    throughputs.sort_unstable();
    HelloService {
        p99: p99s[1],
        throughput: throughputs[1],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_spinning_200_guests_leaves_another_tenant_its_share_of_the_cpu() {
    let _alone = alone().await;
    const SPINNERS: usize = 200;
    // Hello's budget is not what this measures: beside 200 spinners its
    // instances land in pool slots never used before, and one CI run saw a
    // first instantiation there charged past the default 50 ms (an open
    // item in docs/limits.md). Its latency and throughput are.
    let node = TestNode::start(vec![
        TestService::from_bytes("hostile", "hostile.test", spin()).limits(|l| l.cpu_budget_ms = 50),
        TestService::example("hello", "hello").limits(|l| l.cpu_budget_ms = 1_000),
    ])
    .await;
    let alone = measure_hello(&node).await;

    // 200 × 50 ms of CPU: five seconds of both cores, one tenant's.
    let addr = node.addr;
    let spinners: Vec<_> = (0..SPINNERS)
        .map(|_| tokio::spawn(async move { get(addr, "hostile.test", "/").await.status }))
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        node.metric("edge_guests_waiting_for_cpu").await > 0.0,
        "the spinners saturate the node"
    );
    let attacked = measure_hello(&node).await;
    let still_spinning = spinners.iter().filter(|t| !t.is_finished()).count();
    for spinner in spinners {
        assert_eq!(spinner.await.expect("spinner"), 508);
    }
    eprintln!(
        "hello alone: {alone:?}; beside {SPINNERS} spinners: {attacked:?} \
         ({still_spinning} spinners still running at the end)"
    );
    assert!(
        still_spinning > 0,
        "the attack lasted the whole measurement"
    );
    attacked.assert_fared_against(&alone);
    // The spinners were charged their budgets, not their waits.
    let cpu = node
        .metric("edge_guest_cpu_seconds_total{service=\"hostile\"}")
        .await;
    assert!(cpu <= SPINNERS as f64 * 0.060, "charged {cpu} s");
}

/// The resident memory of this process (the node runs in it), from
/// `/proc/self/status`.
fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// A tenant at its operator maximum: 500 requests in flight (its share of
/// `http.max_in_flight_requests`), each a loop with the largest CPU budget
/// the operator allows (5 s). Another tenant fares as beside the 50 ms
/// spinners: fair turns do not depend on the budget. The node's memory
/// stays bounded, and the loops are cut when the node stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_at_its_maxima_with_500_long_loops_does_no_worse_to_another() {
    let _alone = alone().await;
    const LOOPS: usize = 500;
    let max_cpu = edge_config::limits::DEFAULT_SANDBOX_MAX_CPU_BUDGET_MS;
    // All from one loopback address: let it hold them all.
    let mut config = NodeConfig::default();
    config.http.max_connections_per_client = 2 * LOOPS as u64;
    let node = TestNode::start_with(
        config,
        vec![
            TestService::from_bytes("hostile", "hostile.test", spin())
                .limits(|l| l.cpu_budget_ms = max_cpu),
            // As beside the spinners above: latency and throughput, not
            // hello's budget.
            TestService::example("hello", "hello").limits(|l| l.cpu_budget_ms = 1_000),
        ],
    )
    .await;
    let alone = measure_hello(&node).await;
    let addr = node.addr;
    let loops: Vec<_> = (0..LOOPS)
        .map(|_| {
            tokio::spawn(async move {
                let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
                client::send_over(
                    stream,
                    client::Protocol::Http1,
                    client::request("GET", "hostile.test", "/", ""),
                )
                .await
                .status
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while node.metric("edge_in_flight_requests").await < LOOPS as f64 {
        assert!(Instant::now() < deadline, "the loops did not all start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let attacked = measure_hello(&node).await;
    let resident = resident_bytes();
    eprintln!(
        "hello alone: {alone:?}; beside {LOOPS} loops of {max_cpu} ms: {attacked:?}; \
         resident {} MiB",
        resident / (1024 * 1024)
    );
    attacked.assert_fared_against(&alone);
    assert!(
        resident < 1024 * 1024 * 1024,
        "{} MiB resident with {LOOPS} guests",
        resident / (1024 * 1024)
    );
    // Stopping the node cuts them (after its drain grace): none hangs.
    drop(node);
    for task in loops {
        task.abort();
    }
}

/// A tenant that keeps the node's in-flight bound full cannot keep another
/// out: the other's request waits in its own queue, and a freed slot goes
/// to the tenants waiting in turn, so it is served while the full tenant's
/// extra requests wait their turn (or their deadline).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_filling_the_node_leaves_another_its_turn_at_a_freed_slot() {
    let _alone = alone().await;
    let mut config = NodeConfig::default();
    config.http.max_in_flight_requests = 4;
    config.http.max_in_flight_requests_per_tenant = 16;
    config.http.admission_queue_timeout_ms = 3_000;
    let node = TestNode::start_with(
        config,
        vec![
            TestService::from_bytes("busy", "busy.test", spin()).limits(|l| l.cpu_budget_ms = 200),
            TestService::example("hello", "hello"),
        ],
    )
    .await;
    let addr = node.addr;
    // 4 in flight and 8 more waiting: two rounds of the node's bound.
    let busy: Vec<_> = (0..12)
        .map(|_| {
            tokio::spawn(async move {
                let status = get(addr, "busy.test", "/").await.status;
                (status, Instant::now())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let hello = get(node.addr, "hello.test", "/").await;
    let answered = Instant::now();
    assert_eq!(hello.status, 200, "served, not refused");
    let busy: Vec<(u16, Instant)> = futures::future::join_all(busy)
        .await
        .into_iter()
        .map(|answer| answer.expect("busy request"))
        .collect();
    let statuses: Vec<u16> = busy.iter().map(|(status, _)| *status).collect();
    let before = busy.iter().filter(|(_, at)| *at < answered).count();
    eprintln!(
        "hello waited {:?}, after {before} of the busy tenant's 12; busy answers {statuses:?}",
        answered - started
    );
    // Its turn came with the first round of freed slots, not after the
    // full tenant's 8 waiting requests (first come, first served).
    assert!(before <= 6, "{before} busy requests were answered first");
    assert!(
        statuses.iter().all(|&s| s == 508 || s == 503),
        "{statuses:?}"
    );
}
