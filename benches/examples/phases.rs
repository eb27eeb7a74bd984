//! Where one request's sandbox time goes, phase by phase: store creation,
//! request resources, instantiation, the handler call, reading the body, and
//! store teardown (returning the instance's slot to the pool).
//!
//!   cargo run --release -p edge-benches --example phases
//!   N=100000 ONLY=hello cargo run --release -p edge-benches --example phases
//!
//! The JavaScript and Python examples are measured too, with a twentieth
//! of the iterations (each request costs them about as much as twenty of a
//! Rust guest's); `LANGUAGES=0` leaves them out (they are built first).
//!
//! Complements the criterion bench, which times the whole `Sandbox::handle`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use edge_node::sandbox::GuestState;
use edge_node::sandbox::cpu::CpuAccount;
use edge_tests::bench::{HELLO_BODY, HELLO_GUESTS, HelloNode, LANGUAGE_GUESTS};
use http_body_util::{BodyExt, Empty};
use wasmtime::Store;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;

const PHASES: [&str; 6] = [
    "store",
    "request",
    "instantiate",
    "call",
    "body",
    "teardown",
];

fn main() {
    let iterations: u32 = std::env::var("N")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_000);
    let only = std::env::var("ONLY").ok();
    let languages = std::env::var("LANGUAGES").map_or(true, |v| v != "0");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let hello = if languages {
        runtime.block_on(HelloNode::install_with_languages())
    } else {
        runtime.block_on(HelloNode::install())
    };

    let hello_guests = HELLO_GUESTS.iter().map(|&(name, _)| (name, iterations));
    let language_guests = LANGUAGE_GUESTS
        .iter()
        .filter(|_| languages)
        .map(|&(name, _)| (name, (iterations / 20).max(100)));
    for (name, iterations) in hello_guests.chain(language_guests) {
        if only.as_deref().is_some_and(|only| only != name) {
            continue;
        }
        let guest = runtime.block_on(hello.guest(name));
        let mut totals = [Duration::ZERO; PHASES.len()];
        runtime.block_on(async {
            for _ in 0..iterations {
                let mut marks = [Instant::now(); PHASES.len() + 1];
                let cpu = Arc::new(CpuAccount::default());
                let state = GuestState::new(
                    &guest.identity,
                    &guest.service.capabilities,
                    &guest.service.limits,
                    cpu,
                );
                let mut store = Store::new(hello.node.sandbox().engine(), state);
                store.set_epoch_deadline(u64::MAX / 2);
                marks[1] = Instant::now();
                let body = Empty::<Bytes>::new()
                    .map_err(|never: Infallible| -> wasmtime_wasi_http::Error { match never {} });
                let request = http::Request::builder()
                    .uri("http://hello.bench/")
                    .body(body)
                    .expect("request");
                let incoming = store
                    .data_mut()
                    .http()
                    .new_incoming_request(Scheme::Http, request)
                    .expect("incoming request");
                let (response_tx, response_rx) = tokio::sync::oneshot::channel();
                let outparam = store
                    .data_mut()
                    .http()
                    .new_response_outparam(response_tx)
                    .expect("outparam");
                marks[2] = Instant::now();
                let proxy = guest
                    .component
                    .instantiate_async(&mut store)
                    .await
                    .expect("instance");
                marks[3] = Instant::now();
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, incoming, outparam)
                    .await
                    .expect("handled");
                marks[4] = Instant::now();
                let response = response_rx.await.expect("response").expect("ok");
                let body = response.into_body().collect().await.expect("body");
                let body = body.to_bytes();
                if HELLO_GUESTS.iter().any(|&(hello, _)| hello == name) {
                    assert_eq!(body, HELLO_BODY);
                } else {
                    assert!(body.starts_with(b"hello from"), "{name} answered {body:?}");
                }
                marks[5] = Instant::now();
                drop(store);
                marks[6] = Instant::now();
                for (total, pair) in totals.iter_mut().zip(marks.windows(2)) {
                    *total += pair[1] - pair[0];
                }
            }
        });
        let micros = |d: Duration| d.as_secs_f64() * 1e6 / f64::from(iterations);
        let line: Vec<String> = PHASES
            .iter()
            .zip(totals)
            .map(|(phase, total)| format!("{phase} {:.2}", micros(total)))
            .collect();
        let sum: Duration = totals.iter().sum();
        println!("{name}: {} | total {:.2} µs", line.join(", "), micros(sum));
    }
}
