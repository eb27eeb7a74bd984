//! Streams `?chunks=N` (default 10) chunks of `?size=BYTES` (default 1024)
//! bytes each, flushing after every chunk, so the client receives the body
//! while the handler is still producing it. Chunk `i` is filled with the
//! letter `b'a' + i % 26`, so a client can check order and completeness.

use std::io::Write;

use edge_sdk::{Request, Response};

fn stream(req: Request) -> Response {
    let chunks: usize = req.query_param("chunks").and_then(|v| v.parse().ok()).unwrap_or(10);
    let size: usize = req.query_param("size").and_then(|v| v.parse().ok()).unwrap_or(1024);
    Response::streaming(200, move |body| {
        for i in 0..chunks {
            let letter = b'a' + (i % 26) as u8;
            body.write_all(&vec![letter; size])?;
            body.flush()?;
        }
        Ok(())
    })
    .with_header("content-type", "application/octet-stream")
}

edge_sdk::handler!(stream);
