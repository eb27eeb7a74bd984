//! The in-process cost of one request through a fresh instance of the hello
//! guest: new store, instantiate, handle, read the body, tear down. No
//! sockets and no thread hand-off: this is the sandbox's own cost per
//! request.

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
    let data = tempfile_dir();
    let mut config = NodeConfig::default();
    config.node.data_dir = data.clone();
    let node = Node::new(&config).expect("node");
    let service = ServiceConfig {
        name: "hello".into(),
        domains: vec!["hello.bench".into()],
        module: edge_tests::guests::rust_guest("hello"),
        limits: ServiceLimits::default(),
    };
    runtime
        .block_on(node.install_services(&[service], &data))
        .expect("install hello");
    let hello = node.router().route("hello.bench").expect("routed");
    let ready = runtime
        .block_on(node.modules().get(hello.module))
        .expect("ready component");
    let identity = GuestIdentity {
        service: Arc::clone(&hello.name),
        request_id: "bench".into(),
    };
    let sandbox = node.sandbox();

    c.bench_function("hello: instantiate + handle + teardown", |b| {
        b.to_async(&runtime).iter(|| async {
            let response = sandbox
                .handle(&ready, &identity, &hello.limits, request(), |_| {})
                .await
                .expect("hello answers");
            let body = response
                .into_body()
                .collect()
                .await
                .expect("body")
                .to_bytes();
            assert_eq!(body.len(), 20);
        });
    });
    let _ = std::fs::remove_dir_all(&data);
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("edge-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("bench data dir");
    dir
}

criterion_group!(benches, instantiate_and_handle);
criterion_main!(benches);
