//! The admin listener's Prometheus metrics move with the traffic.

use edge_tests::guests::rust_guest;
use edge_tests::node::{TestNode, TestService, metric_value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_terminations_and_module_cache_are_counted() {
    let node = TestNode::start(vec![
        TestService::new("hello", "hello.test", rust_guest("hello")),
        TestService::new("buggy", "buggy.test", rust_guest("panic")),
    ])
    .await;
    for _ in 0..3 {
        edge_tests::client::get(node.addr, "hello.test", "/").await;
    }
    edge_tests::client::get(node.addr, "buggy.test", "/1").await;
    edge_tests::client::get(node.addr, "nobody.test", "/").await;
    edge_tests::client::get(node.addr, "evil-host-1.test", "/").await;

    let page = node.metrics().await;
    let value = |series: &str| metric_value(&page, series);
    assert_eq!(
        value("edge_requests_total{service=\"hello\",status=\"200\"}"),
        3.0
    );
    assert_eq!(
        value("edge_requests_total{service=\"buggy\",status=\"500\"}"),
        1.0
    );
    // Unknown hosts share one label value: clients cannot mint series.
    assert_eq!(
        value("edge_requests_total{service=\"_unknown\",status=\"421\"}"),
        2.0
    );
    assert!(!page.contains("evil-host-1"));
    assert_eq!(
        value("edge_guest_terminations_total{reason=\"trap\",service=\"buggy\"}"),
        1.0
    );
    assert_eq!(
        value("edge_request_duration_seconds_count{service=\"hello\"}"),
        3.0
    );
    assert_eq!(value("edge_instantiation_duration_seconds_count"), 4.0);
    // Both components were loaded at install time; every request was a hit.
    assert_eq!(value("edge_module_loads_total{source=\"compiled\"}"), 2.0);
    assert_eq!(value("edge_module_cache_hits_total"), 4.0);
    assert_eq!(value("edge_module_cache_misses_total"), 0.0);
    assert!(value("edge_guest_cpu_seconds_total{service=\"hello\"}") > 0.0);
    assert_eq!(value("edge_in_flight_requests"), 0.0);
}
