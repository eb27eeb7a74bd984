//! Components from other toolchains run unchanged.

use edge_tests::client::get;
use edge_tests::guests::python_guest;
use edge_tests::node::{TestNode, TestService};

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
