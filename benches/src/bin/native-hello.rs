//! The load benchmark's baseline: the hello answer from a plain hyper server
//! on the same stack as the node (tokio multi-thread, hyper-util auto
//! HTTP/1.1 + HTTP/2), with no sandbox. The node's throughput is reported
//! as a share of this one's.
//!
//! It is also the origin of the cache benchmark (`benches/cache-load.sh`),
//! where its answers carry a `Cache-Control` header.
//!
//! Usage: native-hello 127.0.0.1:PORT [CACHE-CONTROL]

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderValue, Response, header};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

const BODY: &[u8] = b"hello from the edge\n";

/// The same allocator as the node, so that the comparison is of the work
/// done, not of the allocators.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8088".into())
        .parse()
        .map_err(|e| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("address: {e}"))
        })?;
    let cache_control = match std::env::args().nth(2) {
        Some(value) => Some(HeaderValue::from_str(&value).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("cache-control: {e}"),
            )
        })?),
        None => None,
    };
    let listener = TcpListener::bind(addr).await?;
    println!(
        "native hello listening on http://{}",
        listener.local_addr()?
    );
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let cache_control = cache_control.clone();
        tokio::spawn(async move {
            let service = service_fn(move |_request| {
                let cache_control = cache_control.clone();
                async move {
                    let mut response = Response::new(Full::new(Bytes::from_static(BODY)));
                    response.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("text/plain; charset=utf-8"),
                    );
                    if let Some(value) = cache_control {
                        response.headers_mut().insert(header::CACHE_CONTROL, value);
                    }
                    Ok::<_, Infallible>(response)
                }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
