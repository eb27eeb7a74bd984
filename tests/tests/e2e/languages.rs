//! Components from other toolchains run unchanged.

use edge_tests::client::get;
use edge_tests::guests::{javascript_guest, python_guest};
use edge_tests::node::{TestNode, TestService};
use edge_tests::origin::{Answer, TestOrigin};

use crate::backends::loopback_backend;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_component_runs_with_all_of_wasi_linked_and_nothing_granted() {
    // componentize-py's runtime imports wasi:cli/environment, exit,
    // filesystem and sockets as well as the proxy world.
    let node = TestNode::start(vec![
        TestService::new("python", "py.test", python_guest()).limits(|l| l.cpu_budget_ms = 1_000),
    ])
    .await;
    for path in ["/first", "/second?x=1"] {
        let reply = get(node.addr, "py.test", path).await;
        assert_eq!(reply.status, 200);
        assert_eq!(
            reply.text(),
            format!("hello from python\nmethod: GET\npath: {path}\nenv-vars: 0\n")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_javascript_component_fetches_from_its_backend_and_keeps_answers_in_the_cache_api() {
    // Every origin answer says no-store: the node's HTTP cache keeps none of
    // them, so a second quote that does not reach the origin was served
    // from what the guest put in the cache API.
    let origin = TestOrigin::start(|seen, _| {
        Answer::ok(format!("origin says {}\n", seen.path))
            .header("cache-control", "no-store")
            .header("content-type", "text/x-origin")
    })
    .await;
    let node = TestNode::start(vec![
        TestService::new("js", "js.test", javascript_guest())
            .backend("origin", loopback_backend(&origin))
            .limits(|l| l.cpu_budget_ms = 1_000),
    ])
    .await;

    let hello = get(node.addr, "js.test", "/hi?x=1").await;
    assert_eq!(hello.status, 200);
    assert_eq!(
        hello.text(),
        "hello from javascript\nmethod: GET\npath: /hi?x=1\n"
    );

    let relayed = get(node.addr, "js.test", "/origin/products/7").await;
    assert_eq!(relayed.status, 200);
    assert_eq!(relayed.text(), "origin says /products/7\n");
    assert_eq!(relayed.header("x-edge-guest"), Some("javascript"));
    assert_eq!(relayed.header("content-type"), Some("text/x-origin"));
    assert_eq!(origin.count("/products/7"), 1);

    for expected in ["miss", "hit", "hit"] {
        let quote = get(node.addr, "js.test", "/quote/42").await;
        assert_eq!(quote.status, 200);
        assert_eq!(quote.text(), "origin says /quotes/42\n");
        assert_eq!(quote.header("x-quote-cache"), Some(expected));
    }
    assert_eq!(
        origin.count("/quotes/42"),
        1,
        "the cache API answered the repeats"
    );
}
