//! Hostile guests: each is stopped by the limit meant for it, with its
//! documented status, and the node keeps serving everyone else. The ones
//! whose check is a time bound are in `tests/tests/timing.rs`.

use edge_tests::client::{Protocol, get, request, send};
use edge_tests::guests::{HANDLE_EXPORT, hostile_component};
use edge_tests::hostile::{
    HTTP_IMPORTS, OPEN_BODY_STREAM, SET_RESPONSE, assert_others_still_served, assert_stopped_with,
    guest, node_with, terminations,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loop_in_start_function_is_stopped_during_instantiation() {
    let spin_at_start = guest("", "(func $spin (loop $l (br $l))) (start $spin)", "");
    let node = node_with(spin_at_start, |_| {}).await;
    assert_stopped_with(&node, 508, "cpu-budget-exceeded").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_grow_bomb_is_refused_at_the_memory_limit() {
    // Grows by 1 MiB until refused, then fails as an allocator would.
    let bomb = guest(
        "",
        "",
        "(loop $grow (br_if $grow (i32.ne (memory.grow (i32.const 16)) (i32.const -1)))) unreachable",
    );
    let node = node_with(bomb, |l| l.memory_bytes = 32 * 1024 * 1024).await;
    assert_stopped_with(&node, 507, "memory-limit-exceeded").await;
    assert_eq!(terminations(&node, "memory").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_memory_over_the_limit_fails_instantiation() {
    // 64 MiB of initial memory against a 32 MiB limit.
    let big = hostile_component(&format!(
        r#"(module (memory (export "memory") 1024)
            (func (export "{HANDLE_EXPORT}") (param i32 i32)))"#
    ));
    let node = node_with(big, |l| l.memory_bytes = 32 * 1024 * 1024).await;
    assert_eq!(get(node.addr, "hostile.test", "/").await.status, 507);
    assert_others_still_served(&node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbounded_recursion_traps_on_the_stack_limit() {
    let recursion = guest("", "(func $deeper (call $deeper))", "(call $deeper)");
    let node = node_with(recursion, |_| {}).await;
    assert_stopped_with(&node, 500, "guest-trap").await;
    assert_eq!(terminations(&node, "trap").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_response_body_is_cut_at_the_cpu_budget() {
    let endless = guest(
        HTTP_IMPORTS,
        "",
        &format!(
            "{OPEN_BODY_STREAM}
             (memory.fill (i32.const 1024) (i32.const 120) (i32.const 4096))
             (loop $forever
                (call $write (local.get $stream) (i32.const 1024) (i32.const 4096) (i32.const 16))
                (br_if $forever (i32.eqz (i32.load8_u (i32.const 16)))))"
        ),
    );
    let node = node_with(endless, |l| l.cpu_budget_ms = 20).await;
    for protocol in [Protocol::Http1, Protocol::Http2] {
        let reply = send(node.addr, protocol, request("GET", "hostile.test", "/", "")).await;
        assert_eq!(reply.status, 200, "{protocol:?}");
        assert!(reply.body.len() > 4096, "{protocol:?}: some body arrived");
        assert!(reply.body.iter().all(|&b| b == b'x'));
        assert!(
            reply.body_error.is_some(),
            "{protocol:?}: the body must end in an error, not look complete"
        );
    }
    assert_others_still_served(&node).await;
    assert_eq!(terminations(&node, "cpu").await, 2.0);
}

/// A guest that appends `count` `x-many: value` headers to its response.
fn many_headers(count: u32) -> Vec<u8> {
    guest(
        HTTP_IMPORTS,
        r#"(data (i32.const 64) "x-many") (data (i32.const 80) "value")"#,
        &format!(
            "(local.set $fields (call $fields_new))
             (loop $more
                (call $fields_append (local.get $fields) (i32.const 64) (i32.const 6) (i32.const 80) (i32.const 5) (i32.const 0))
                (local.set $i (i32.add (local.get $i) (i32.const 1)))
                (br_if $more (i32.lt_u (local.get $i) (i32.const {count}))))
             (local.set $response (call $response_new (local.get $fields)))
             {SET_RESPONSE}"
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_with_more_header_fields_than_clients_may_send_is_refused() {
    let node = node_with(many_headers(500), |_| {}).await;
    for protocol in [Protocol::Http1, Protocol::Http2] {
        let reply = send(node.addr, protocol, request("GET", "hostile.test", "/", "")).await;
        assert_eq!(reply.status, 502, "{protocol:?}");
        assert_eq!(
            reply.header("edge-error"),
            Some("response-headers-too-large")
        );
    }
    assert_others_still_served(&node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_map_growing_past_the_host_field_limit_traps() {
    // wasmtime caps a header map at 128 KiB of host memory and traps the
    // guest that goes past it.
    let node = node_with(many_headers(20_000), |_| {}).await;
    assert_stopped_with(&node, 500, "guest-trap").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_ends_only_that_request() {
    let exits = guest(
        r#"(import "wasi:cli/exit@0.2.12" "exit" (func $exit (param i32)))"#,
        "",
        "(call $exit (i32.const 1))",
    );
    let node = node_with(exits, |_| {}).await;
    for _ in 0..3 {
        assert_stopped_with(&node, 502, "no-response").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_handle_cap_stops_a_handle_leak() {
    // Creates header maps forever without dropping them.
    let leak = guest(
        HTTP_IMPORTS,
        "",
        "(loop $more (drop (call $fields_new)) (br $more))",
    );
    let node = node_with(leak, |l| l.max_resource_handles = 1000).await;
    assert_stopped_with(&node, 500, "guest-trap").await;
}
