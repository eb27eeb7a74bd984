//! One owner for the node's lifecycle: starting, serving, draining,
//! stopped, with the follower's last report part of the stop.

use edge_config::NodeConfig;
use edge_config::node::ControlPlaneSection;
use edge_node::Node;
use edge_node::lifecycle::Phase;
use edge_node::sync::Follower;

use super::*;

/// Every phase `node` is seen in from now on, until it has stopped. A watch
/// keeps only the newest value, so a phase that lasts less than a wake-up
/// may be missed; the ones that are seen must come in order.
fn record_phases(node: &Node) -> tokio::task::JoinHandle<Vec<Phase>> {
    let mut phases = node.lifecycle().phases();
    let first = *phases.borrow_and_update();
    tokio::spawn(async move {
        let mut seen = vec![first];
        while phases.changed().await.is_ok() {
            let phase = *phases.borrow_and_update();
            seen.push(phase);
            if phase == Phase::Stopped {
                break;
            }
        }
        seen
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_goes_through_its_phases_and_stops_after_its_followers_last_report() {
    let plane = Plane::start("sqlite").await;
    let token = plane.acme_web().await;
    let streaming = std::fs::read(edge_tests::guests::rust_guest("streaming")).expect("guest");
    plane.deploy(&token, "web", streaming).await;

    let dir = tempfile::tempdir().expect("dir");
    let mut config = NodeConfig::default();
    config.node.data_dir = dir.path().to_path_buf();
    let node = Node::new(&config).expect("node builds");
    assert_eq!(node.lifecycle().phase(), Phase::Starting);
    let phases = record_phases(&node);
    // Reports only at the stop: the usage the API shows afterwards can only
    // come from the last one.
    let link = ControlPlaneSection {
        replica_urls: Vec::new(),
        ca_file: None,
        url: plane.base.clone(),
        cluster_token: CLUSTER.into(),
        node_name: "phases".into(),
        usage_report_interval_ms: 3_600_000,
    };
    // Owned by the node's lifecycle from here on.
    let _follower = Follower::start(&node, link, dir.path())
        .await
        .expect("follower starts");
    let localhost = SocketAddr::from(([127, 0, 0, 1], 0));
    let running = node.start(localhost, localhost).await.expect("node starts");
    let (addr, admin) = (running.addr, running.admin_addr);
    let started = Instant::now();
    while get(addr, DOMAIN, "/?chunks=1&size=1").await.status != 200 {
        assert!(started.elapsed() < Duration::from_secs(10), "never served");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(get(admin, "admin", "/healthz").await.text(), "serving\n");
    assert_eq!(node.lifecycle().phase(), Phase::Serving);

    // A response that streams for about half a second holds the drain open.
    let slow =
        tokio::spawn(async move { get(addr, DOMAIN, "/?chunks=20&size=1000&delay_ms=25").await });
    let in_flight = running.node().metrics().in_flight_requests.clone();
    while in_flight.get() == 0 {
        assert!(
            !slow.is_finished(),
            "the slow request ended before the drain"
        );
        tokio::task::yield_now().await;
    }
    let drain = tokio::spawn(running.shutdown());
    let draining = get(admin, "admin", "/healthz").await;
    assert_eq!(
        (draining.status, draining.text().as_str()),
        (503, "draining\n")
    );
    assert_eq!(node.lifecycle().phase(), Phase::Draining);
    let (_, usage) = plane.get("/v1/usage", &token).await;
    assert_eq!(
        usage[0]["requests"], 0,
        "no report before the stop: {usage}"
    );

    let reply = slow.await.expect("task");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body.len(), 20 * 1000, "the drain let it finish");
    let report = drain.await.expect("drain");
    assert_eq!(report.cut_connections, 0);
    assert_eq!(node.lifecycle().phase(), Phase::Stopped);
    let seen = phases.await.expect("recorder");
    assert!(seen.is_sorted(), "phases only move forward: {seen:?}");
    assert_eq!(seen.first(), Some(&Phase::Starting));
    assert_eq!(seen.last(), Some(&Phase::Stopped));
    // The stop returned after the follower's last report was delivered.
    let (_, usage) = plane.get("/v1/usage", &token).await;
    assert!(usage[0]["requests"].as_i64() >= Some(2), "{usage}");
    plane.stop().await;
}
