//! The in-process cost of one request through a fresh instance: new store,
//! instantiate, handle, read the body, tear down. No sockets and no thread
//! hand-off: this is the sandbox's own cost per request.
//!
//! Two guests that give the same answer: the SDK's hello (Rust std for
//! wasm32-wasip2, which imports much of WASI), and a minimal WAT component
//! that makes only the wasi:http calls an answer takes, the floor for what a
//! request costs the sandbox.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use edge_config::{NodeConfig, ServiceConfig, ServiceLimits};
use edge_node::Node;
use edge_node::sandbox::GuestIdentity;
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
    let data = bench_dir();
    let mut config = NodeConfig::default();
    config.node.data_dir = data.clone();
    let node = Node::new(&config).expect("node");
    let minimal = data.join("minimal-hello.wasm");
    std::fs::write(&minimal, edge_tests::hostile::minimal_hello()).expect("write minimal guest");
    let services = [
        ("hello", edge_tests::guests::rust_guest("hello")),
        ("minimal", minimal),
    ]
    .map(|(name, module)| ServiceConfig {
        name: name.into(),
        domains: vec![format!("{name}.bench")],
        module,
        limits: ServiceLimits::default(),
    });
    runtime
        .block_on(node.install_services(&services, &data))
        .expect("install guests");
    let sandbox = node.sandbox();

    for (name, what) in [
        ("hello", "SDK hello (Rust std, wasm32-wasip2)"),
        ("minimal", "minimal WAT hello (wasi:http calls only)"),
    ] {
        let service = node
            .router()
            .route(&format!("{name}.bench"))
            .expect("routed");
        let ready = runtime
            .block_on(node.modules().get(service.module))
            .expect("ready component");
        let identity = GuestIdentity {
            service: Arc::clone(&service.name),
            request_id: "bench".into(),
        };
        c.bench_function(&format!("{what}: instantiate + handle + teardown"), |b| {
            b.to_async(&runtime).iter(|| async {
                let response = sandbox
                    .handle(&ready, &identity, &service.limits, request(), |_| {})
                    .await
                    .expect("hello answers");
                let body = response
                    .into_body()
                    .collect()
                    .await
                    .expect("body")
                    .to_bytes();
                assert_eq!(body, "hello from the edge\n");
            });
        });
    }
    let _ = std::fs::remove_dir_all(&data);
}

fn bench_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("edge-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("bench data dir");
    dir
}

criterion_group!(benches, instantiate_and_handle);
criterion_main!(benches);
