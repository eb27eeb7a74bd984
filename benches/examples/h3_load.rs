//! HTTP/3 load generator for benches/tls-load.sh: C QUIC connections, each
//! with S request streams in a loop (GET, read the body), for D seconds.
//! Prints requests per second; fails if any answer is not a 200.
//!
//!   h3_load ADDR SERVER_NAME CA_PEM [CONNECTIONS=16] [STREAMS=10] [SECONDS=10]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Buf;

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: h3_load ADDR SERVER_NAME CA_PEM [CONNECTIONS] [STREAMS] [SECONDS]");
        return std::process::ExitCode::from(2);
    }
    let number =
        |i: usize, default: u64| args.get(i).and_then(|v| v.parse().ok()).unwrap_or(default);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let result = runtime.block_on(run(
        args[1].parse().expect("ADDR"),
        args[2].clone(),
        std::fs::read(&args[3]).expect("CA_PEM"),
        number(4, 16),
        number(5, 10),
        Duration::from_secs(number(6, 10)),
    ));
    match result {
        Ok(rps) => {
            println!("{rps:.0}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("h3_load: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(
    addr: SocketAddr,
    name: String,
    ca: Vec<u8>,
    connections: u64,
    streams: u64,
    duration: Duration,
) -> Result<f64, String> {
    let client_config = edge_tests::h3::client_config(&ca)?;
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let mut endpoint = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0)))
            .map_err(|e| e.to_string())?;
        endpoint.set_default_client_config(client_config.clone());
        let connection = endpoint
            .connect(addr, &name)
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        let (mut driver, sender) = h3::client::new(h3_quinn::Connection::new(connection))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move { driver.wait_idle().await });
        for _ in 0..streams {
            let mut sender = sender.clone();
            let (done, failed, name) = (Arc::clone(&done), Arc::clone(&failed), name.clone());
            tasks.push(tokio::spawn(async move {
                while Instant::now() < deadline {
                    let request = http::Request::get(format!("https://{name}/"))
                        .body(())
                        .expect("request");
                    let ok = async {
                        let mut stream = sender.send_request(request).await.ok()?;
                        stream.finish().await.ok()?;
                        let response = stream.recv_response().await.ok()?;
                        while let Some(mut chunk) = stream.recv_data().await.ok()? {
                            chunk.advance(chunk.remaining());
                        }
                        (response.status() == 200).then_some(())
                    }
                    .await;
                    match ok {
                        Some(()) => done.fetch_add(1, Ordering::Relaxed),
                        None => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            }));
        }
        // Keep the endpoint alive for the run.
        tokio::spawn(async move {
            tokio::time::sleep_until(deadline.into()).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            drop(endpoint);
        });
    }
    for task in tasks {
        let _ = task.await;
    }
    let failed = failed.load(Ordering::Relaxed);
    if failed > 0 {
        return Err(format!("{failed} requests failed"));
    }
    Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}
