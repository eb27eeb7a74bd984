//! Interim (1xx) responses from origins, passed on to the client: RFC 9110
//! 15.2 has a proxy forward the 1xx responses it did not ask for, and
//! `103 Early Hints` (RFC 8297) is what lets a browser start fetching a
//! page's assets while the edge still waits for the page.
//!
//! hyper's server can send no 1xx of its own, so on an HTTP/1.1 connection
//! the node writes them itself, into the connection below hyper
//! ([`InterimIo`]), and only where that cannot cut one of hyper's messages:
//!
//! - while the request's response has not been handed to hyper (the
//!   request's [`InterimSink`] closes first, and waits for what it queued
//!   to be written, for at most [`INTERIM_DRAIN_TIMEOUT`]);
//! - once every earlier response on the connection has been written whole
//!   (a request that arrives pipelined behind a response still streaming
//!   forwards nothing);
//! - from inside hyper's own flush of the connection, when hyper's write
//!   buffer is empty (hyper flushes the socket only once it has written
//!   all it buffered), so never between the bytes of one of its messages.
//!
//! HTTP/2 and HTTP/3 responses carry none: neither h2 nor h3 can send a
//! 1xx from a server. Clients of HTTP/1.0 get none (RFC 9110 15.2).
//! `100 Continue` answers the node's own request and `101` switches the
//! origin connection's protocol: neither is the client's to see.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, StatusCode};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

/// Interim responses passed on for one request; later ones are dropped.
pub const MAX_INTERIM_RESPONSES_PER_REQUEST: usize = 8;
/// Largest interim response head passed on (status line and fields).
pub const MAX_INTERIM_RESPONSE_BYTES: usize = 16 * 1024;
/// How long a finished request waits for its interim responses to reach
/// the socket before its own response; what is still queued then is
/// dropped.
pub const INTERIM_DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// One HTTP/1.1 connection's interim responses, between the requests that
/// queue them and the connection that writes them.
#[derive(Debug, Default)]
pub struct InterimChannel {
    /// Something is queued or half written: the only thing the connection
    /// checks on its hot path.
    pending: AtomicBool,
    /// Responses whose bodies have ended (or were dropped), in order.
    responses_ended: AtomicU64,
    state: Mutex<ChannelState>,
    drained: Notify,
}

#[derive(Debug, Default)]
struct ChannelState {
    /// Requests that asked for a sink, numbered from 0.
    requests: u64,
    /// The request whose interim responses are taken now, if any.
    accepting: Option<u64>,
    forwarded: usize,
    queue: VecDeque<Bytes>,
    /// An interim response partly written: finished before anything else.
    writing: Option<Bytes>,
    /// Wakes the connection's task to write what was queued.
    connection: Option<Waker>,
}

impl ChannelState {
    fn is_empty(&self) -> bool {
        self.queue.is_empty() && self.writing.is_none()
    }
}

impl InterimChannel {
    fn state(&self) -> MutexGuard<'_, ChannelState> {
        // Nothing panics while holding the lock; if something did, the
        // state is still consistent (every change is one assignment).
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts the end of one response handed to hyper.
    fn response_ended(&self) {
        self.responses_ended.fetch_add(1, Ordering::AcqRel);
    }
}

/// Where one request's interim responses go.
#[derive(Debug, Clone)]
pub struct InterimSink {
    channel: Arc<InterimChannel>,
    request: u64,
}

impl InterimSink {
    /// Opens the sink of the connection's next request. Must run in the
    /// connection's task (hyper polls an HTTP/1.1 request's service there):
    /// that task is woken to write. `None` while an earlier response is
    /// still being written.
    pub async fn open(channel: &Arc<InterimChannel>) -> Option<Self> {
        std::future::poll_fn(|cx| Poll::Ready(Self::open_for(channel, cx.waker()))).await
    }

    fn open_for(channel: &Arc<InterimChannel>, connection: &Waker) -> Option<Self> {
        let mut state = channel.state();
        let request = state.requests;
        state.requests += 1;
        if channel.responses_ended.load(Ordering::Acquire) != request {
            return None;
        }
        state.accepting = Some(request);
        state.forwarded = 0;
        if !state
            .connection
            .as_ref()
            .is_some_and(|known| known.will_wake(connection))
        {
            state.connection = Some(connection.clone());
        }
        Some(Self {
            channel: Arc::clone(channel),
            request,
        })
    }

    /// Queues an origin's interim response for the client (its fields
    /// without the hop-by-hop ones; `Content-Length` too, which a 1xx must
    /// not carry, RFC 9110 8.6), if it is one to pass on and the request
    /// may still send one.
    pub fn forward(&self, status: StatusCode, headers: &HeaderMap) {
        if !status.is_informational()
            || status == StatusCode::CONTINUE
            || status == StatusCode::SWITCHING_PROTOCOLS
        {
            return;
        }
        let mut state = self.channel.state();
        if state.accepting != Some(self.request)
            || state.forwarded >= MAX_INTERIM_RESPONSES_PER_REQUEST
        {
            return;
        }
        let Some(head) = serialize(status, headers) else {
            tracing::debug!(%status, "interim response too large to pass on");
            return;
        };
        state.forwarded += 1;
        state.queue.push_back(head);
        self.channel.pending.store(true, Ordering::Release);
        if let Some(connection) = &state.connection {
            connection.wake_by_ref();
        }
    }

    /// Takes no more, and waits for what was queued to be written (the
    /// connection writes it when hyper next flushes, which it does each
    /// time it polls the request), for at most [`INTERIM_DRAIN_TIMEOUT`].
    pub async fn close(self) {
        let channel = &self.channel;
        {
            let mut state = channel.state();
            state.accepting = None;
            if state.is_empty() {
                return;
            }
        }
        let drained = tokio::time::timeout(INTERIM_DRAIN_TIMEOUT, async {
            loop {
                let notified = channel.drained.notified();
                if channel.state().is_empty() {
                    return;
                }
                notified.await;
            }
        })
        .await;
        if drained.is_err() {
            // One half written is finished before the response; the rest
            // is dropped.
            let mut state = channel.state();
            state.queue.clear();
            channel
                .pending
                .store(state.writing.is_some(), Ordering::Release);
        }
    }

    /// `body`, counted as ended on the channel when it ends or is dropped:
    /// the next request may forward only then.
    pub fn track_end<B>(channel: &Arc<InterimChannel>, body: B) -> EndTracked<B> {
        EndTracked {
            inner: body,
            channel: Some(Arc::clone(channel)),
        }
    }
}

/// `HTTP/1.1 103 Early Hints` and the fields, or `None` past
/// [`MAX_INTERIM_RESPONSE_BYTES`]. Field values cannot hold CR or LF (the
/// `http` types refuse them), so nothing can be smuggled into the stream.
fn serialize(status: StatusCode, headers: &HeaderMap) -> Option<Bytes> {
    let mut head = BytesMut::with_capacity(256);
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(status.as_str().as_bytes());
    head.extend_from_slice(b" ");
    head.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    head.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        if name == http::header::CONTENT_LENGTH {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
        if head.len() > MAX_INTERIM_RESPONSE_BYTES {
            return None;
        }
    }
    head.extend_from_slice(b"\r\n");
    Some(head.freeze())
}

/// A response body that tells its connection's [`InterimChannel`] when it
/// is over.
#[derive(Debug)]
pub struct EndTracked<B> {
    inner: B,
    channel: Option<Arc<InterimChannel>>,
}

impl<B> EndTracked<B> {
    fn ended(&mut self) {
        if let Some(channel) = self.channel.take() {
            channel.response_ended();
        }
    }
}

impl<B> Drop for EndTracked<B> {
    fn drop(&mut self) {
        self.ended();
    }
}

impl<B: Body + Unpin> Body for EndTracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let frame = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(frame, Poll::Ready(None | Some(Err(_)))) {
            self.ended();
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A connection's transport with the interim responses written into it
/// between hyper's messages: queued ones when hyper flushes, and the rest
/// of a half-written one before any byte of hyper's.
#[derive(Debug)]
pub struct InterimIo<T> {
    inner: T,
    channel: Arc<InterimChannel>,
}

impl<T> InterimIo<T> {
    pub fn new(inner: T, channel: Arc<InterimChannel>) -> Self {
        Self { inner, channel }
    }
}

impl<T: AsyncWrite + Unpin> InterimIo<T> {
    /// Writes interim responses: every queued one when `queued` (hyper's
    /// buffer is empty), else only the rest of a half-written one.
    fn write_interim(&mut self, cx: &mut Context<'_>, queued: bool) -> Poll<io::Result<()>> {
        if !self.channel.pending.load(Ordering::Acquire) {
            return Poll::Ready(Ok(()));
        }
        let mut state = self.channel.state();
        loop {
            if state.writing.is_none() && queued {
                state.writing = state.queue.pop_front();
            }
            let Some(bytes) = state.writing.as_mut() else {
                break;
            };
            let written = match Pin::new(&mut self.inner).poll_write(cx, bytes) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(written)) => written,
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => return Poll::Pending,
            };
            bytes.advance(written);
            if bytes.is_empty() {
                state.writing = None;
            }
        }
        if state.is_empty() {
            self.channel.pending.store(false, Ordering::Release);
            drop(state);
            self.channel.drained.notify_waiters();
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for InterimIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for InterimIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        std::task::ready!(self.write_interim(cx, false))?;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        std::task::ready!(self.write_interim(cx, false))?;
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.write_interim(cx, true))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn hints() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::LINK,
            http::HeaderValue::from_static("</style.css>; rel=preload; as=style"),
        );
        headers
    }

    #[tokio::test]
    async fn queued_interim_responses_are_written_at_a_flush_never_inside_a_write() {
        let channel = Arc::new(InterimChannel::default());
        let (client, server) = tokio::io::duplex(64 * 1024);
        let mut io = InterimIo::new(server, Arc::clone(&channel));
        let sink = InterimSink::open(&channel).await.expect("first request");
        sink.forward(StatusCode::EARLY_HINTS, &hints());
        sink.forward(StatusCode::CONTINUE, &hints());
        // Bytes of hyper's own: the queued 103 waits for a flush.
        io.write_all(b"partial").await.expect("write");
        io.flush().await.expect("flush");
        drop(io);
        let mut seen = String::new();
        let mut client = client;
        client.read_to_string(&mut seen).await.expect("read");
        assert_eq!(
            seen,
            "partialHTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload; as=style\r\n\r\n",
            "after hyper's bytes, and no 100"
        );
    }

    #[tokio::test]
    async fn a_closed_or_later_request_forwards_nothing_until_earlier_responses_end() {
        let channel = Arc::new(InterimChannel::default());
        let response = |channel: &Arc<InterimChannel>| {
            InterimSink::track_end(channel, http_body_util::Empty::<Bytes>::new())
        };
        let first = InterimSink::open(&channel).await.expect("first request");
        let first_body = response(&channel);
        first.clone().close().await;
        first.forward(StatusCode::EARLY_HINTS, &hints());
        assert!(channel.state().queue.is_empty(), "closed");
        // The first response is still being written: nothing for the second.
        assert!(InterimSink::open(&channel).await.is_none());
        let second_body = response(&channel);
        drop(first_body);
        drop(second_body);
        assert!(InterimSink::open(&channel).await.is_some(), "{channel:?}");
    }

    /// A client that reads nothing cannot hold a finished request's
    /// response back for longer than the drain timeout: what is still
    /// queued then is dropped, and nothing is left to write before it.
    #[tokio::test]
    async fn a_finished_request_waits_for_its_hints_only_so_long() {
        let channel = Arc::new(InterimChannel::default());
        let sink = InterimSink::open(&channel).await.expect("first request");
        sink.forward(StatusCode::EARLY_HINTS, &hints());
        // The connection is never flushed: the hint cannot be written.
        let closed = tokio::time::timeout(INTERIM_DRAIN_TIMEOUT * 5, sink.close()).await;
        assert!(closed.is_ok(), "close waited past its bound");
        assert!(channel.state().is_empty(), "{channel:?}");
        assert!(!channel.pending.load(Ordering::Acquire));
    }

    #[tokio::test]
    async fn forwarding_is_bounded_per_request() {
        let channel = Arc::new(InterimChannel::default());
        let sink = InterimSink::open(&channel).await.expect("first request");
        for _ in 0..MAX_INTERIM_RESPONSES_PER_REQUEST + 5 {
            sink.forward(StatusCode::EARLY_HINTS, &hints());
        }
        assert_eq!(
            channel.state().queue.len(),
            MAX_INTERIM_RESPONSES_PER_REQUEST
        );
        let mut huge = HeaderMap::new();
        let value = "x".repeat(MAX_INTERIM_RESPONSE_BYTES);
        huge.insert(
            http::header::LINK,
            http::HeaderValue::from_str(&value).expect("value"),
        );
        assert!(serialize(StatusCode::EARLY_HINTS, &huge).is_none());
    }
}
