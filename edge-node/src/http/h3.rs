//! HTTP/3: QUIC (quinn) on the TLS listener's port, UDP, with the same
//! certificates and the same request path to the guest as TCP.
//!
//! Limits: concurrent streams, receive windows and idle timeout per
//! connection (QUIC transport parameters), `max_field_section_size` (h3's
//! default is unlimited), frames bounded before h3 buffers them
//! ([`super::h3_frames`]), a request head within the header read timeout,
//! the handshake timeout, a cap on open connections, and address
//! validation (Retry) once many are open.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use edge_config::Http3Section;
use h3::server::RequestStream;
use http_body::{Body, Frame};
use http_body_util::BodyExt;

use tokio::task::JoinSet;

use super::h3_frames::{GuardedBidiStream, GuardedConnection, GuardedRecvStream};
use super::pipeline;
use crate::lifecycle::Shutdown;

/// How much a client may send on one request stream, and on the whole
/// connection, before the node reads it: as for HTTP/2. quinn's default
/// connection window is unbounded.
const H3_STREAM_WINDOW_BYTES: u32 = 1024 * 1024;
const H3_CONNECTION_WINDOW_BYTES: u32 = 4 * 1024 * 1024;
use crate::node_state::FrontDoor;

/// Builds the QUIC endpoint on `addr` (UDP).
pub fn endpoint(
    addr: SocketAddr,
    tls: Arc<rustls::ServerConfig>,
    section: &Http3Section,
) -> anyhow::Result<quinn::Endpoint> {
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(quinn::VarInt::from_u64(section.max_concurrent_streams)?)
        // The client's control stream and two QPACK streams, plus room for
        // grease; request streams are bidirectional.
        .max_concurrent_uni_streams(quinn::VarInt::from_u32(8))
        .stream_receive_window(quinn::VarInt::from_u32(H3_STREAM_WINDOW_BYTES))
        .receive_window(quinn::VarInt::from_u32(H3_CONNECTION_WINDOW_BYTES))
        .max_idle_timeout(Some(
            Duration::from_millis(section.idle_timeout_ms).try_into()?,
        ));
    server.transport_config(Arc::new(transport));
    Ok(quinn::Endpoint::server(server, addr)?)
}

/// Accepts QUIC connections until the node drains; then new ones are
/// refused, open ones get GOAWAY and finish their requests, and this
/// returns when they have (or the drain's grace ran out and cut them).
pub async fn serve(
    endpoint: quinn::Endpoint,
    node: Arc<FrontDoor>,
    section: Http3Section,
    mut shutdown: Shutdown,
) {
    let mut connections = JoinSet::new();
    loop {
        let incoming = tokio::select! {
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => incoming,
                None => break,
            },
            () = shutdown.draining() => break,
        };
        // Open QUIC connections: the tasks not yet finished.
        while connections.try_join_next().is_some() {}
        let count = connections.len() as u64;
        if count >= section.max_connections {
            tracing::debug!(count, "QUIC connection refused: at the connection limit");
            incoming.refuse();
            continue;
        }
        if count >= section.retry_above_connections && !incoming.remote_address_validated() {
            // Stateless: costs us one packet, the client one round trip.
            let _ = incoming.retry();
            continue;
        }
        let node = Arc::clone(&node);
        let shutdown = shutdown.clone();
        let open = node.lifecycle.connection_opened();
        let counted = crate::metrics::OpenConnection::accepted(&node.metrics, "quic");
        connections.spawn(async move {
            let _open = open;
            connection(incoming, node, counted, shutdown).await;
        });
    }
    // Stop taking new connections; the open ones drain.
    endpoint.set_server_config(None);
    while connections.join_next().await.is_some() {}
    endpoint.close(quinn::VarInt::from_u32(0), b"shutting down");
}

async fn connection(
    incoming: quinn::Incoming,
    node: Arc<FrontDoor>,
    counted: crate::metrics::OpenConnection,
    mut shutdown: Shutdown,
) {
    let Some(tls) = node.tls.as_ref() else {
        return;
    };
    let connecting = match incoming.accept() {
        Ok(connecting) => connecting,
        Err(e) => {
            tracing::debug!(error = %e, "QUIC accept failed");
            return;
        }
    };
    let quic = match tokio::time::timeout(tls.handshake_timeout, connecting).await {
        Ok(Ok(quic)) => quic,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "QUIC handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!("QUIC handshake timed out");
            return;
        }
    };
    let peer = quic.remote_address();
    // Counted once the handshake has proved the address: a spoofed one
    // cannot take a real client's share.
    let Some(_client_connection) = node.client_connection(peer.ip()) else {
        tracing::debug!(%peer, "QUIC connection refused: its address is at its connection limit");
        quic.close(quinn::VarInt::from_u32(0x0107), b"client connection limit");
        return;
    };
    // Every request on it is HTTP/3: counted as such from the handshake on.
    counted.request(http::Version::HTTP_3);
    // Counted against the tenant its SNI names, like a TLS connection.
    let server_name = quic
        .handshake_data()
        .and_then(|data| data.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|data| data.server_name);
    let Ok(tenant_connection) = node.tenant_connection(server_name.as_deref()) else {
        tracing::debug!(%peer, "QUIC connection refused: its tenant is at its connection limit");
        quic.close(quinn::VarInt::from_u32(0x0107), b"tenant connection limit");
        return;
    };
    let mut h3 = match h3::server::builder()
        .max_field_section_size(node.http_limits.max_header_bytes)
        // A grease frame after the last DATA frame leaves some clients
        // (aioquic) waiting for an end of stream they never report.
        .send_grease(false)
        .build::<_, Bytes>(GuardedConnection::new(
            h3_quinn::Connection::new(quic.clone()),
            node.http_limits.max_header_bytes,
        ))
        .await
    {
        Ok(h3) => h3,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "HTTP/3 connection setup failed");
            return;
        }
    };
    let header_read_timeout = Duration::from_millis(node.http_limits.header_read_timeout_ms);
    let mut cut = shutdown.clone();
    let mut requests = JoinSet::new();
    let mut draining = false;
    loop {
        tokio::select! {
            accepted = h3.accept() => match accepted {
                Ok(Some(resolver)) => {
                    let node = Arc::clone(&node);
                    let sni_tenant = tenant_connection.as_ref().map(|c| Arc::clone(c.tenant()));
                    requests.spawn(async move {
                        // A stream whose head does not come in time is
                        // dropped, and with it what h3 holds for it.
                        match tokio::time::timeout(header_read_timeout, resolver.resolve_request()).await {
                            Ok(Ok((mut request, stream))) => {
                                request
                                    .extensions_mut()
                                    .insert(crate::routing::ClientAddress(peer.ip()));
                                respond(&node, request, stream, sni_tenant.as_ref()).await
                            }
                            Ok(Err(e)) => tracing::debug!(%peer, error = %e, "HTTP/3 request refused"),
                            Err(_) => tracing::debug!(%peer, "HTTP/3 request head not received in time"),
                        }
                    });
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "HTTP/3 connection ended");
                    break;
                }
            },
            () = shutdown.draining(), if !draining => {
                // GOAWAY: no new requests, the accepted ones finish.
                draining = true;
                if h3.shutdown(0).await.is_err() || requests.is_empty() {
                    break;
                }
            }
            // Reaps finished requests; a draining connection closes after
            // its last one.
            Some(_) = requests.join_next() => {
                if draining && requests.is_empty() {
                    break;
                }
            }
            () = cut.cut() => {
                requests.abort_all();
                quic.close(quinn::VarInt::from_u32(0x0102), b"node stopping");
                return;
            }
        }
    }
    tokio::select! {
        _ = async { while requests.join_next().await.is_some() {} } => {}
        () = cut.cut() => requests.abort_all(),
    }
    quic.close(quinn::VarInt::from_u32(0x0100), b"");
}

/// Runs one request through the pipeline and streams the response back.
async fn respond(
    node: &FrontDoor,
    request: http::Request<()>,
    stream: RequestStream<GuardedBidiStream<Bytes>, Bytes>,
    sni_tenant: Option<&Arc<str>>,
) {
    let (mut send, recv) = stream.split();
    let (returned, mut unread) = tokio::sync::oneshot::channel();
    let request = request.map(|()| H3Body {
        stream: Some(recv),
        ended: false,
        reading: false,
        returned: Some(returned),
    });
    let response = pipeline::handle(&node.pipeline, request, sni_tenant).await;
    send_response(&mut send, response).await;
    // A request stream the guest dropped before its end came back here: it
    // is let go only now that the response is complete. (One the guest
    // still holds is let go when the guest drops it.)
    if let Ok(recv) = unread.try_recv() {
        stop_reading(recv);
    }
}

async fn send_response(
    send: &mut RequestStream<h3_quinn::SendStream<Bytes>, Bytes>,
    response: http::Response<wasmtime_wasi_http::p2::body::HyperOutgoingBody>,
) {
    let (parts, mut body) = response.into_parts();
    if let Err(e) = send
        .send_response(http::Response::from_parts(parts, ()))
        .await
    {
        tracing::debug!(error = %e, "HTTP/3 response head not sent");
        return;
    }
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data()
                    && let Err(e) = send.send_data(data).await
                {
                    tracing::debug!(error = %e, "HTTP/3 response body cut by the client");
                    return;
                }
            }
            Err(e) => {
                // The guest failed mid-body: reset the stream, so the
                // client never takes a truncated body for a whole one.
                tracing::debug!(error = %e, "HTTP/3 response body failed");
                send.stop_stream(h3::error::Code::H3_INTERNAL_ERROR);
                return;
            }
        }
    }
    let _ = send.finish().await;
}

/// Lets go of a request stream the guest did not read to its end. Dropping
/// it as is would have quinn send STOP_SENDING with code 0, which is no
/// HTTP/3 code: a client still finishing its request (a GET's FIN a moment
/// behind its HEADERS) sees its stream reset. Instead the client is asked to
/// stop with H3_NO_ERROR, as RFC 9114 section 4.1 says a server that has
/// answered in full does (quinn sends nothing if the request had ended).
fn stop_reading(mut recv: RequestStream<GuardedRecvStream, Bytes>) {
    recv.stop_sending(h3::error::Code::H3_NO_ERROR);
}

/// The client's request body, read from the QUIC stream as the guest asks.
/// Dropped before its end, it hands the stream back to [`respond`] (see
/// [`stop_reading`]).
struct H3Body {
    stream: Option<RequestStream<GuardedRecvStream, Bytes>>,
    /// The stream has ended (or failed): nothing to stop.
    ended: bool,
    /// A read is in flight: h3-quinn holds the QUIC stream inside it, and
    /// the stream can only be dropped as it is.
    reading: bool,
    returned: Option<tokio::sync::oneshot::Sender<RequestStream<GuardedRecvStream, Bytes>>>,
}

impl Drop for H3Body {
    fn drop(&mut self) {
        if self.ended || self.reading {
            return;
        }
        if let (Some(stream), Some(returned)) = (self.stream.take(), self.returned.take()) {
            // The response is complete already: let go of the stream here.
            if let Err(stream) = returned.send(stream) {
                stop_reading(stream);
            }
        }
    }
}

impl Body for H3Body {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let Some(stream) = self.stream.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = stream.poll_recv_data(cx);
        self.reading = polled.is_pending();
        match polled {
            Poll::Ready(Ok(Some(mut data))) => {
                let bytes = data.copy_to_bytes(data.remaining());
                Poll::Ready(Some(Ok(Frame::data(bytes))))
            }
            Poll::Ready(Ok(None)) => {
                self.ended = true;
                Poll::Ready(None)
            }
            Poll::Ready(Err(e)) => {
                self.ended = true;
                Poll::Ready(Some(Err(wasmtime_wasi_http::Error::InternalError(Some(
                    format!("HTTP/3 request body: {e}"),
                )))))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
