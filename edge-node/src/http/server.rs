//! The public listeners: HTTP/1.1 and HTTP/2 with prior knowledge (h2c) on
//! one TCP port, and both over TLS on another, with every protocol limit
//! from [`HttpLimits`] set.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use edge_config::HttpLimits;
use http_body_util::BodyExt;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

use super::pipeline;
use crate::admission::TenantConnection;
use crate::interim::{InterimChannel, InterimIo, InterimSink};
use crate::lifecycle::Shutdown;
use crate::metrics::OpenConnection;
use crate::node_state::FrontDoor;

/// Resets a client may cause before HTTP/2 closes its connection (the
/// rapid-reset attack, CVE-2023-44487).
const H2_MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;
/// Streams the server may reset for a client's errors before closing the
/// connection (CVE-2024-27316 family).
const H2_MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;
/// Flow-control windows: how much a client may send before the guest reads.
/// 1 MiB per stream lets one upload run at loopback speed; 4 MiB per
/// connection bounds what 100 streams can make the node buffer.
const H2_STREAM_WINDOW_BYTES: u32 = 1024 * 1024;
const H2_CONNECTION_WINDOW_BYTES: u32 = 4 * 1024 * 1024;
/// Largest frame a client may send (the protocol's default).
const H2_MAX_FRAME_BYTES: u32 = 16 * 1024;
/// Response bytes buffered per stream before the guest's writes wait.
const H2_MAX_SEND_BUFFER_BYTES: usize = 400 * 1024;
/// A client that does not answer a keep-alive ping within this is gone.
const H2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// What a connection has been doing, for its two deadlines: its first
/// request must arrive within `http.header_read_timeout_ms` of the
/// connection being ready (a client that sends nothing, half an HTTP/2
/// preface, or a preface and no stream is cut), and a connection with no
/// request in flight for `http.keep_alive_idle_ms` is closed (HTTP/2:
/// GOAWAY), whatever the protocol keeps alive underneath.
#[derive(Debug)]
struct ConnectionActivity {
    started: tokio::time::Instant,
    seen_request: AtomicBool,
    in_flight: AtomicUsize,
    /// When the last request ended, in ms since `started`.
    idle_since_ms: AtomicU64,
    /// Set when the connection is to close after the requests in flight
    /// (HTTP/2: GOAWAY), as a connection over capacity is.
    close: AtomicBool,
    /// Wakes the connection's task to close it, or at its first request.
    /// Later requests starting and ending wake nothing: the task looks at
    /// them when its deadline fires and moves the deadline then (a request
    /// can only move it later), so a busy keep-alive connection costs no
    /// wake-up and no new timer per request.
    changed: tokio::sync::Notify,
}

impl ConnectionActivity {
    fn new() -> Self {
        Self {
            started: tokio::time::Instant::now(),
            seen_request: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            close: AtomicBool::new(false),
            changed: tokio::sync::Notify::new(),
        }
    }

    /// Asks the connection's task to close the connection gracefully.
    fn close_after_requests(&self) {
        self.close.store(true, Ordering::Relaxed);
        self.changed.notify_one();
    }

    fn request_started(self: &Arc<Self>) -> RequestInFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        // The first request moves the deadline from the first-request one
        // to the idle one: that once, the task is woken.
        if !self.seen_request.swap(true, Ordering::Relaxed) {
            self.changed.notify_one();
        }
        RequestInFlight(Arc::clone(self))
    }

    /// The next moment a deadline may be due, and what is due then.
    fn next_deadline(
        &self,
        first_request: Duration,
        idle: Duration,
    ) -> (tokio::time::Instant, Due) {
        if !self.seen_request.load(Ordering::Relaxed) {
            return (self.started + first_request, Due::FirstRequest);
        }
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            // Moved on when the request ends; until then, looked at again
            // after one idle period.
            return (tokio::time::Instant::now() + idle, Due::Recheck);
        }
        let idle_since =
            self.started + Duration::from_millis(self.idle_since_ms.load(Ordering::Relaxed));
        (idle_since + idle, Due::Idle)
    }
}

/// What a connection's deadline found when it fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Due {
    FirstRequest,
    Idle,
    Recheck,
}

/// One request of a connection, from its head to its response head.
#[derive(Debug)]
struct RequestInFlight(Arc<ConnectionActivity>);

impl RequestInFlight {
    /// The connection closes once this request is answered.
    fn closing(&self) {
        self.0.close_after_requests();
    }
}

impl Drop for RequestInFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        let now = u64::try_from(activity.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        activity.idle_since_ms.store(now, Ordering::Relaxed);
        activity.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The hyper connection builder with the node's protocol limits.
pub fn connection_builder(limits: &HttpLimits) -> auto::Builder<TokioExecutor> {
    let header_bytes = usize::try_from(limits.max_header_bytes).unwrap_or(usize::MAX);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // hyper applies this from the moment it waits for a request head,
        // so it is also how long an idle HTTP/1.1 connection stays open.
        .header_read_timeout(Duration::from_millis(limits.header_read_timeout_ms))
        .max_buf_size(header_bytes.max(8192))
        .max_headers(usize::try_from(limits.max_header_count).unwrap_or(usize::MAX))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(u32::try_from(limits.h2_max_concurrent_streams).unwrap_or(u32::MAX))
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_pending_accept_reset_streams(H2_MAX_PENDING_ACCEPT_RESET_STREAMS)
        .max_local_error_reset_streams(H2_MAX_LOCAL_ERROR_RESET_STREAMS)
        .initial_stream_window_size(H2_STREAM_WINDOW_BYTES)
        .initial_connection_window_size(H2_CONNECTION_WINDOW_BYTES)
        .adaptive_window(false)
        .max_frame_size(H2_MAX_FRAME_BYTES)
        .max_send_buf_size(H2_MAX_SEND_BUFFER_BYTES)
        .keep_alive_interval(Duration::from_millis(limits.keep_alive_idle_ms))
        .keep_alive_timeout(H2_KEEP_ALIVE_TIMEOUT);
    builder
}

/// Accepts cleartext connections (HTTP/1.1 and h2c) until the node drains,
/// then drains them (see `accept_loop`).
pub async fn serve(listener: TcpListener, node: Arc<FrontDoor>, shutdown: Shutdown) {
    accept_loop(
        listener,
        node,
        shutdown,
        false,
        |stream, _node| async move { Some((stream, None)) },
    )
    .await;
}

/// Accepts TLS connections: the handshake runs in the connection's own task
/// and is cut at the handshake timeout. ALPN picks HTTP/2 or HTTP/1.1.
pub async fn serve_tls(listener: TcpListener, node: Arc<FrontDoor>, shutdown: Shutdown) {
    accept_loop(listener, node, shutdown, true, |stream, node| async move {
        let tls = node.tls.as_ref()?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&tls.config));
        match tokio::time::timeout(tls.handshake_timeout, acceptor.accept(stream)).await {
            Ok(Ok(stream)) => {
                let server_name = stream.get_ref().1.server_name().map(str::to_string);
                Some((stream, server_name))
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                tracing::debug!("TLS handshake timed out");
                None
            }
        }
    })
    .await;
}

/// The answer on a connection over `http.max_connections` (or the
/// tenant's): 503, and the connection closes after it: HTTP/1.1 with
/// `Connection: close`, HTTP/2 with GOAWAY (see `close_after_requests`).
fn refuse_connection(
    node: &FrontDoor,
) -> http::Response<wasmtime_wasi_http::p2::body::HyperOutgoingBody> {
    node.metrics
        .limit_refusals
        .with_label_values(&["connections"])
        .inc();
    let request_id = node.request_ids.next();
    let mut response = crate::error::EdgeError::Overloaded
        .to_response(&request_id, node.http_limits.retry_after_seconds);
    response.headers_mut().insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    response
}

/// The accept loop both listeners share. `advertise_h3` adds `Alt-Svc` to
/// responses (TLS only: HTTP/3 is always encrypted). `secure` turns an accepted stream
/// into the one HTTP runs over (or drops it); it runs in the connection's
/// task so a slow handshake never holds up accepting; it also returns the
/// SNI server name, if any.
///
/// When the node drains the listener closes (new connections are refused),
/// HTTP/2 connections get GOAWAY and HTTP/1.1 ones close after their
/// response in flight, and this returns once every connection has ended,
/// or has been cut when the drain's grace ran out.
async fn accept_loop<S, F, Io>(
    listener: TcpListener,
    node: Arc<FrontDoor>,
    mut shutdown: Shutdown,
    advertise_h3: bool,
    secure: S,
) where
    S: Fn(TcpStream, Arc<FrontDoor>) -> F + Send + Sync + 'static,
    F: Future<Output = Option<(Io, Option<String>)>> + Send + 'static,
    Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let builder = Arc::new(connection_builder(&node.http_limits));
    let graceful = GracefulShutdown::new();
    let secure = Arc::new(secure);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, usually: back off briefly.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            () = shutdown.draining() => break,
        };
        // Refused before any handshake: the client's other connections
        // are what it may use.
        let Some(client_connection) = node.client_connection(peer.ip()) else {
            tracing::debug!(%peer, "connection refused: its address is at its connection limit");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let node = Arc::clone(&node);
        let builder = Arc::clone(&builder);
        // Taken before the handshake, so a drain waits for it too.
        let watcher = graceful.watcher();
        let secure = Arc::clone(&secure);
        // Over the node's connection bound the client still gets an HTTP
        // answer, 503 with Retry-After, rather than a reset it cannot read.
        let over_capacity =
            node.lifecycle.open_connections() as u64 >= node.http_limits.max_connections;
        let open = node.lifecycle.connection_opened();
        let listener_name = if advertise_h3 { "https" } else { "http" };
        let counted = Arc::new(OpenConnection::accepted(&node.metrics, listener_name));
        let mut cut = shutdown.clone();
        let mut draining = shutdown.clone();
        tokio::spawn(async move {
            let _open = open;
            let _client_connection = client_connection;
            // Held until the connection ends: the drain waits for it.
            let _drain = watcher;
            let Some((io, server_name)) = secure(stream, Arc::clone(&node)).await else {
                return;
            };
            let interim = Arc::new(InterimChannel::default());
            let io = TokioIo::new(InterimIo::new(io, Arc::clone(&interim)));
            let first_request = Duration::from_millis(node.http_limits.header_read_timeout_ms);
            let idle = Duration::from_millis(node.http_limits.keep_alive_idle_ms);
            let activity = Arc::new(ConnectionActivity::new());
            let tenant_connection = node.tenant_connection(server_name.as_deref());
            let over_capacity = over_capacity || tenant_connection.is_err();
            let tenant_connection = tenant_connection.ok().flatten().map(Arc::new);
            let metrics_node = Arc::clone(&node);
            let service_activity = Arc::clone(&activity);
            let service = service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
                let node = Arc::clone(&node);
                let tenant_connection = tenant_connection.clone();
                let in_flight = service_activity.request_started();
                let interim = Arc::clone(&interim);
                counted.request(request.version());
                async move {
                    let _in_flight = in_flight;
                    if over_capacity {
                        drop(request);
                        _in_flight.closing();
                        return Ok(refuse_connection(&node));
                    }
                    // HTTP/1.1 only: HTTP/1.0 clients must get no 1xx, and
                    // h2 cannot send one.
                    let http11 = request.version() == http::Version::HTTP_11;
                    let sink = if http11 {
                        InterimSink::open(&interim).await
                    } else {
                        None
                    };
                    if let Some(sink) = &sink {
                        request.extensions_mut().insert(sink.clone());
                    }
                    request
                        .extensions_mut()
                        .insert(crate::routing::ClientAddress(peer.ip()));
                    // Boxed: hyper spawns a task per HTTP/2 stream, and moving
                    // the pipeline's large future into it copied kilobytes
                    // per request.
                    let mut response = Box::pin(pipeline::handle(
                        &node.pipeline,
                        request,
                        tenant_connection.as_deref().map(TenantConnection::tenant),
                    ))
                    .await;
                    if let Some(sink) = sink {
                        sink.close().await;
                    }
                    if http11 {
                        response = response
                            .map(|body| InterimSink::track_end(&interim, body).boxed_unsync());
                    }
                    // Tells clients HTTP/3 is on the same port.
                    if advertise_h3
                        && let Some(alt_svc) = node.tls.as_ref().and_then(|tls| tls.alt_svc.get())
                    {
                        response
                            .headers_mut()
                            .insert(http::header::ALT_SVC, alt_svc.clone());
                    }
                    Ok::<_, Infallible>(response)
                }
            });
            let connection = builder.serve_connection(io, service).into_owned();
            tokio::pin!(connection);
            let mut closing = false;
            loop {
                let (deadline, due) = activity.next_deadline(first_request, idle);
                tokio::select! {
                    ended = connection.as_mut() => {
                        if let Err(e) = ended {
                            tracing::debug!(%peer, error = %e, "connection ended with an error");
                        }
                        return;
                    }
                    () = cut.cut() => {
                        tracing::debug!(%peer, "connection cut at the end of the drain");
                        return;
                    }
                    () = activity.changed.notified() => {
                        if !closing && activity.close.load(Ordering::Relaxed) {
                            connection.as_mut().graceful_shutdown();
                            closing = true;
                        }
                    }
                    () = draining.draining(), if !closing => {
                        connection.as_mut().graceful_shutdown();
                        closing = true;
                    }
                    () = tokio::time::sleep_until(deadline), if !closing || due == Due::FirstRequest => {
                        // What the connection did since the deadline was
                        // set decides: it may have moved.
                        let (deadline, due) = activity.next_deadline(first_request, idle);
                        match due {
                            Due::FirstRequest => {
                                metrics_node
                                    .metrics
                                    .limit_refusals
                                    .with_label_values(&["first-request-timeout"])
                                    .inc();
                                tracing::debug!(%peer, "no request within the first-request deadline; closed");
                                return;
                            }
                            Due::Idle if tokio::time::Instant::now() >= deadline => {
                                tracing::debug!(%peer, "idle connection closed");
                                connection.as_mut().graceful_shutdown();
                                closing = true;
                            }
                            Due::Idle | Due::Recheck => {}
                        }
                    }
                }
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
