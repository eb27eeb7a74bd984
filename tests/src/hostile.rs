//! Hostile guests made from core-wasm WAT, and the checks the tests that
//! use them share.

use crate::client::get;
use crate::guests::{HANDLE_EXPORT, hostile_component};
use crate::node::{TestNode, TestService};

/// A core module whose handler runs `body` (WAT instructions), with
/// `imports` and `extra` (functions, data) added, as a component.
pub fn guest(imports: &str, extra: &str, body: &str) -> Vec<u8> {
    hostile_component(&format!(
        r#"(module
            {imports}
            (memory (export "memory") 1)
            {extra}
            (func (export "{HANDLE_EXPORT}") (param $request i32) (param $out i32)
                (local $fields i32) (local $response i32) (local $body i32) (local $stream i32) (local $i i32)
                {body}))"#
    ))
}

/// A handler that loops forever.
pub fn spin() -> Vec<u8> {
    guest("", "", "(loop $spin (br $spin))")
}

/// The wasi:http imports the response-building guests use, in the
/// canonical ABI's flattened form.
pub const HTTP_IMPORTS: &str = r#"
    (import "wasi:http/types@0.2.12" "[constructor]fields" (func $fields_new (result i32)))
    (import "wasi:http/types@0.2.12" "[method]fields.append" (func $fields_append (param i32 i32 i32 i32 i32 i32)))
    (import "wasi:http/types@0.2.12" "[constructor]outgoing-response" (func $response_new (param i32) (result i32)))
    (import "wasi:http/types@0.2.12" "[method]outgoing-response.body" (func $response_body (param i32 i32)))
    (import "wasi:http/types@0.2.12" "[static]response-outparam.set" (func $outparam_set (param i32 i32 i32 i32 i64 i32 i32 i32 i32)))
    (import "wasi:http/types@0.2.12" "[method]outgoing-body.write" (func $body_write (param i32 i32)))
    (import "wasi:io/streams@0.2.12" "[method]output-stream.blocking-write-and-flush" (func $write (param i32 i32 i32 i32)))
"#;

/// The smallest complete handler: answers 200 `hello from the edge\n` with
/// nothing but the wasi:http calls that takes. The floor for what a request
/// costs the sandbox, next to a toolchain-built hello.
pub fn minimal_hello() -> Vec<u8> {
    guest(
        &format!(
            r#"{HTTP_IMPORTS}
            (import "wasi:http/types@0.2.12" "[static]outgoing-body.finish" (func $body_finish (param i32 i32 i32 i32)))
            (import "wasi:io/streams@0.2.12" "[resource-drop]output-stream" (func $drop_stream (param i32)))"#
        ),
        // `finish` may return an error-code with strings, which the ABI
        // lifts through the guest's allocator: a fixed scratch area will do.
        r#"(data (i32.const 1024) "hello from the edge\n")
           (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) (i32.const 4096))"#,
        &format!(
            "{OPEN_BODY_STREAM}
             (call $write (local.get $stream) (i32.const 1024) (i32.const 20) (i32.const 16))
             (call $drop_stream (local.get $stream))
             (call $body_finish (local.get $body) (i32.const 0) (i32.const 0) (i32.const 16))"
        ),
    )
}

/// Sets a 200 response with no headers and leaves its body's output stream
/// in `$stream` (and the body in `$body`).
pub const OPEN_BODY_STREAM: &str = "(local.set $response (call $response_new (call $fields_new)))
    (call $response_body (local.get $response) (i32.const 0))
    (local.set $body (i32.load offset=4 (i32.const 0)))
    (call $outparam_set (local.get $out) (i32.const 0) (local.get $response)
        (i32.const 0) (i64.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0))
    (call $body_write (local.get $body) (i32.const 0))
    (local.set $stream (i32.load offset=4 (i32.const 0)))";

/// Sets `$response` as the response (an `ok` result in the flattened ABI).
pub const SET_RESPONSE: &str = "(call $outparam_set (local.get $out) (i32.const 0) (local.get $response) \
    (i32.const 0) (i64.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0))";

/// A node with the hostile component on `hostile.test` (with `limits`) and
/// the hello guest on `hello.test`.
pub async fn node_with(
    hostile: Vec<u8>,
    limits: impl FnOnce(&mut edge_config::ServiceLimits),
) -> TestNode {
    TestNode::start(vec![
        TestService::from_bytes("hostile", "hostile.test", hostile).limits(limits),
        TestService::example("hello", "hello"),
    ])
    .await
}

/// The other tenant on the node still gets its answer.
pub async fn assert_others_still_served(node: &TestNode) {
    let reply = get(node.addr, "hello.test", "/").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "hello from the edge\n");
}

/// The check most hostile guests end with: `GET /` on `hostile.test` gets
/// `status` with `edge-error: error`, and the other tenant is still served.
pub async fn assert_stopped_with(node: &TestNode, status: u16, error: &str) {
    let reply = get(node.addr, "hostile.test", "/").await;
    reply.assert_edge_error(status, error);
    assert_others_still_served(node).await;
}

/// `edge_guest_terminations_total` of the hostile service for `reason`.
pub async fn terminations(node: &TestNode, reason: &str) -> f64 {
    node.metric(&format!(
        "edge_guest_terminations_total{{reason=\"{reason}\",service=\"hostile\"}}"
    ))
    .await
}
