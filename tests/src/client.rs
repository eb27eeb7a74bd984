//! Clients: one request per connection over HTTP/1.1 or HTTP/2 (prior
//! knowledge), and raw TCP for requests no well-behaved client would send.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Time any single test request may take before the test fails.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A response, with the body as far as it arrived.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    /// Set when the body ended with an error instead of its end.
    pub body_error: Option<String>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts that the node answered `status` with `edge-error: error`,
    /// as it marks its own refusals and a guest's failures.
    #[track_caller]
    pub fn assert_edge_error(&self, status: u16, error: &str) {
        assert_eq!(
            (self.status, self.header("edge-error")),
            (status, Some(error)),
            "{}",
            self.text()
        );
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
}

/// Sends `request` on a new connection and reads the whole response.
pub async fn send(addr: SocketAddr, protocol: Protocol, request: Request<Full<Bytes>>) -> Reply {
    tokio::time::timeout(REQUEST_TIMEOUT, send_inner(addr, protocol, request))
        .await
        .expect("request timed out")
}

async fn send_inner(addr: SocketAddr, protocol: Protocol, request: Request<Full<Bytes>>) -> Reply {
    let stream = TcpStream::connect(addr).await.expect("connect");
    send_over(stream, protocol, request).await
}

/// An HTTP/2 connection (prior knowledge) to `addr`: its sender, and the
/// task that drives it, which ends when the connection does.
pub async fn h2_connection<B>(
    addr: SocketAddr,
) -> (
    hyper::client::conn::http2::SendRequest<B>,
    tokio::task::JoinHandle<hyper::Result<()>>,
)
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    (sender, tokio::spawn(connection))
}

/// Sends `request` over an open connection (TCP, TLS, ...) and reads the
/// whole response.
pub async fn send_over<S>(stream: S, protocol: Protocol, request: Request<Full<Bytes>>) -> Reply
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(stream);
    let response = match protocol {
        Protocol::Http1 => {
            let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
                .await
                .expect("h1 handshake");
            tokio::spawn(connection);
            sender.send_request(request).await.expect("h1 response")
        }
        Protocol::Http2 => {
            let (mut sender, connection) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .expect("h2 handshake");
            tokio::spawn(connection);
            sender.send_request(request).await.expect("h2 response")
        }
    };
    let (parts, mut body) = response.into_parts();
    let mut bytes = Vec::new();
    let mut body_error = None;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    bytes.extend_from_slice(data);
                }
            }
            Err(e) => {
                body_error = Some(e.to_string());
                break;
            }
        }
    }
    Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: bytes,
        body_error,
    }
}

/// A request to `path` for `host`, ready to send.
pub fn request(
    method: &str,
    host: &str,
    path: &str,
    body: impl Into<Bytes>,
) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("host", host)
        .body(Full::new(body.into()))
        .expect("valid request")
}

/// `GET http://host/path` over HTTP/1.1.
pub async fn get(addr: SocketAddr, host: &str, path: &str) -> Reply {
    send(
        addr,
        Protocol::Http1,
        request("GET", host, path, Bytes::new()),
    )
    .await
}

/// Writes `bytes` to a new connection and reads until the server closes it
/// or `wait` passes. Returns what was read and whether the server closed.
pub async fn raw(addr: SocketAddr, bytes: &[u8], wait: Duration) -> (String, bool) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    let (out, closed) = read_until_closed(&mut stream, wait).await;
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

/// Reads `stream` until the server closes it (or errors) or `wait` passes.
/// Returns what was read and whether the server closed.
pub async fn read_until_closed(stream: &mut TcpStream, wait: Duration) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let closed = tokio::time::timeout(wait, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    (out, closed)
}

/// Sends `GET host/` over one HTTP/1.1 keep-alive connection, one request
/// after another, until `duration` has passed. Returns each request's
/// latency; every answer must be 200, and the connection must stay open.
pub async fn keep_alive_latencies(
    addr: SocketAddr,
    host: &str,
    duration: Duration,
) -> Vec<Duration> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("h1 handshake");
    tokio::spawn(connection);
    let started = std::time::Instant::now();
    let mut latencies = Vec::new();
    while started.elapsed() < duration {
        let sent = std::time::Instant::now();
        let response = tokio::time::timeout(
            REQUEST_TIMEOUT,
            sender.send_request(request("GET", host, "/", Bytes::new())),
        )
        .await
        .expect("request timed out")
        .expect("response");
        assert_eq!(response.status(), 200, "{host}");
        response.into_body().collect().await.expect("body");
        latencies.push(sent.elapsed());
    }
    latencies
}

/// The `q` quantile (0..=1) of `samples`.
pub fn quantile(samples: &mut [Duration], q: f64) -> Duration {
    assert!(!samples.is_empty(), "no samples");
    samples.sort_unstable();
    let index = ((samples.len() - 1) as f64 * q).round() as usize;
    samples[index]
}
