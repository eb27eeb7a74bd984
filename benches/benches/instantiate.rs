//! The in-process cost of one request through a fresh instance: new store,
//! instantiate, handle, read the body, tear down. No sockets and no thread
//! hand-off: this is the sandbox's own cost per request.
//!
//! Two guests that give the same answer: the SDK's hello (Rust std for
//! wasm32-wasip2, which imports much of WASI), and a minimal WAT component
//! that makes only the wasi:http calls an answer takes, the floor for what a
//! request costs the sandbox.

use std::convert::Infallible;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use edge_tests::bench::{HELLO_BODY, HELLO_GUESTS, HelloNode};
use http_body_util::{BodyExt, Empty};

fn request() -> http::Request<impl http_body::Body<Data = Bytes, Error = wasmtime_wasi_http::Error>>
{
    let body = Empty::<Bytes>::new().map_err(|never: Infallible| match never {});
    http::Request::builder()
        .uri("http://hello.bench/")
        .body(body)
        .expect("valid request")
}

fn instantiate_and_handle(c: &mut Criterion) {
    // A current-thread runtime: each iteration runs on the bench thread
    // itself, so the figure is the sandbox's cost, not a thread hand-off.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let hello = runtime.block_on(HelloNode::install());
    let sandbox = hello.node.sandbox();

    for (name, what) in HELLO_GUESTS {
        let guest = runtime.block_on(hello.guest(name));
        c.bench_function(&format!("{what}: instantiate + handle + teardown"), |b| {
            b.to_async(&runtime).iter(|| async {
                let response = sandbox
                    .handle(
                        &guest.component,
                        &guest.identity,
                        &guest.service.capabilities,
                        &guest.service.limits,
                        request(),
                        |_| {},
                    )
                    .await
                    .expect("hello answers");
                let body = response
                    .into_body()
                    .collect()
                    .await
                    .expect("body")
                    .to_bytes();
                assert_eq!(body, HELLO_BODY);
            });
        });
    }
}

criterion_group!(benches, instantiate_and_handle);
criterion_main!(benches);
