//! The admin listener's Prometheus metrics move with the traffic, and the
//! cardinality guard holds.

use edge_config::NodeConfig;
use edge_tests::client::{Protocol, request, send};
use edge_tests::node::{TestNode, TestService, assert_metrics, metric_value};
use edge_tests::origin::{Answer, TestOrigin};

use crate::backends::loopback_backend;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_terminations_and_module_cache_are_counted() {
    let node = TestNode::start_examples(&[("hello", "hello"), ("buggy", "panic")]).await;
    for _ in 0..3 {
        edge_tests::client::get(node.addr, "hello.test", "/").await;
    }
    let h2 = send(
        node.addr,
        Protocol::Http2,
        request("GET", "hello.test", "/", bytes::Bytes::new()),
    )
    .await;
    assert_eq!(h2.status, 200);
    edge_tests::client::get(node.addr, "buggy.test", "/1").await;
    edge_tests::client::get(node.addr, "nobody.test", "/").await;
    edge_tests::client::get(node.addr, "evil-host-1.test", "/").await;

    let page = node.metrics().await;
    assert_metrics(
        &page,
        r#"
        edge_requests_total{protocol="http1",service="hello",status_class="2xx"} 3
        edge_requests_total{protocol="http2",service="hello",status_class="2xx"} 1
        edge_requests_total{protocol="http1",service="buggy",status_class="5xx"} 1
        # Unknown hosts share one label value: clients cannot mint series.
        edge_requests_total{protocol="http1",service="_unknown",status_class="4xx"} 2
        edge_guest_terminations_total{reason="trap",service="buggy"} 1
        edge_request_duration_seconds_count{service="hello"} 4
        edge_guest_duration_seconds_count{service="hello"} 4
        edge_instantiation_duration_seconds_count 5
        # Both components were loaded at install time; every request was a hit.
        edge_module_loads_total{source="compiled"} 2
        edge_module_cache_hits_total 5
        edge_module_cache_misses_total 0
        edge_in_flight_requests 0
        # Seven connections were accepted on the cleartext listener; the
        # client closed each after its response.
        edge_connections_accepted_total{listener="http"} 7
        # Services from the config file: snapshot 0, applied just now.
        edge_snapshot_version 0
        edge_metrics_service_labels 2
        "#,
    );
    assert!(
        !page.contains("evil-host-1"),
        "an unknown host minted a series"
    );
    assert!(page.contains("edge_snapshot_age_seconds "));
    let value = |series: &str| metric_value(&page, series);
    assert!(value(r#"edge_guest_duration_seconds_sum{service="hello"}"#) > 0.0);
    assert!(value(r#"edge_guest_cpu_seconds_total{service="hello"}"#) > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_and_cache_bytes_are_counted_per_backend() {
    let origin = TestOrigin::start(|seen, _| {
        if seen.path == "/fails" {
            Answer::ok("nope").status(503)
        } else {
            Answer::ok("0123456789").header("cache-control", "max-age=60")
        }
    })
    .await;
    let node = TestNode::start(vec![
        TestService::example("proxy", "caching-proxy").backend("origin", loopback_backend(&origin)),
    ])
    .await;
    for path in ["/cached", "/cached", "/cached", "/fails"] {
        edge_tests::client::get(node.addr, "proxy.test", path).await;
    }
    let page = node.metrics().await;
    // Two requests reached the origin: the first /cached, and /fails.
    assert_eq!(origin.total(), 2);
    assert_metrics(
        &page,
        r#"
        edge_backend_requests_total{backend="origin",outcome="2xx",service="proxy"} 1
        edge_backend_requests_total{backend="origin",outcome="5xx",service="proxy"} 1
        edge_backend_duration_seconds_count{backend="origin",service="proxy"} 2
        edge_http_cache_requests_total{outcome="hit"} 2
        edge_http_cache_bytes_total{direction="stored"} 10
        edge_http_cache_bytes_total{direction="served"} 20
        "#,
    );
    let value = |series: &str| metric_value(&page, series);
    assert!(value("edge_http_cache_entries") >= 1.0);
    assert!(value("edge_http_cache_size_bytes") > 10.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_beyond_the_label_limit_share_one_series() {
    let mut config = NodeConfig::default();
    config.metrics.max_service_labels = 2;
    let names = ["one", "two", "three", "four"];
    let services = names
        .iter()
        .map(|name| TestService::example(name, "hello"))
        .collect();
    let node = TestNode::start_with(config, services).await;
    for name in names {
        let reply = edge_tests::client::get(node.addr, &format!("{name}.test"), "/").await;
        assert_eq!(reply.status, 200);
    }
    let page = node.metrics().await;
    // The first two services seen have their own label; the others share
    // `_other`, in every metric labelled by service.
    assert_metrics(
        &page,
        r#"
        edge_requests_total{protocol="http1",service="one",status_class="2xx"} 1
        edge_requests_total{protocol="http1",service="_other",status_class="2xx"} 2
        edge_guest_duration_seconds_count{service="_other"} 2
        edge_metrics_service_labels 2
        "#,
    );
    assert!(!page.contains(r#"service="three""#));
    assert!(!page.contains(r#"service="four""#));
}
