//! Streams `?chunks=N` (default 10) chunks of `?size=BYTES` (default 1024)
//! bytes each, flushing after every chunk, so the client receives the body
//! while the handler is still producing it. Chunk `i` is filled with the
//! letter `b'a' + i % 26`, so a client can check order and completeness.
//! `?delay_ms=D` waits D ms before each chunk after the first: a slow
//! producer (waiting costs no CPU budget). `?busy_ms=B` instead keeps the
//! CPU busy for B ms (by the guest's own clock) before each chunk after the
//! first: a producer that computes.

use std::io::Write;

use edge_sdk::{Request, Response};

fn stream(req: Request) -> Response {
    let chunks: usize = req.query_param("chunks").and_then(|v| v.parse().ok()).unwrap_or(10);
    let size: usize = req.query_param("size").and_then(|v| v.parse().ok()).unwrap_or(1024);
    let delay: u64 = req.query_param("delay_ms").and_then(|v| v.parse().ok()).unwrap_or(0);
    let busy: u64 = req.query_param("busy_ms").and_then(|v| v.parse().ok()).unwrap_or(0);
    Response::streaming(200, move |body| {
        for i in 0..chunks {
            if i > 0 && delay > 0 {
                std::thread::sleep(std::time::Duration::from_millis(delay));
            }
            if i > 0 && busy > 0 {
                let started = std::time::Instant::now();
                while started.elapsed() < std::time::Duration::from_millis(busy) {
                    std::hint::spin_loop();
                }
            }
            let letter = b'a' + (i % 26) as u8;
            body.write_all(&vec![letter; size])?;
            body.flush()?;
        }
        Ok(())
    })
    .with_header("content-type", "application/octet-stream")
}

edge_sdk::handler!(stream);
