//! The request body handed to a guest, cut at the service's size limit and
//! when the client stalls.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

/// The body length a request's head declares (`Content-Length`), if it
/// declares one that parses: a body over the limit is refused before a byte
/// of it is read.
pub fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// Why a request body was cut, for the answer the client gets when the
/// guest does not answer itself (413 or 408).
#[derive(Debug, Default)]
pub struct BodyCut(AtomicU8);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutReason {
    TooLarge,
    Stalled,
}

impl BodyCut {
    fn set(&self, reason: CutReason) {
        let code = match reason {
            CutReason::TooLarge => 1,
            CutReason::Stalled => 2,
        };
        self.0.store(code, Ordering::Release);
    }

    pub fn reason(&self) -> Option<CutReason> {
        match self.0.load(Ordering::Acquire) {
            1 => Some(CutReason::TooLarge),
            2 => Some(CutReason::Stalled),
            _ => None,
        }
    }
}

/// Streams the client's body to the guest. Past `limit` bytes the guest's
/// read fails with `HTTP-request-body-size`; when the guest waits for bytes
/// and none come for `stall_timeout` (`http.body_read_timeout_ms`), with
/// `connection-read-timeout`. Either way `cut` says why, so that the client
/// gets 413 or 408 when the guest does not answer. The timer runs only
/// while the guest waits: a guest that reads slowly stalls nobody.
#[derive(Debug)]
pub struct LimitedBody<B> {
    inner: B,
    remaining: u64,
    limit: u64,
    stall_timeout: Duration,
    /// Runs from the first read that finds nothing ready; a frame stops it.
    stall: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The guest is waiting for bytes now (the timer is running).
    waiting: bool,
    cut: Arc<BodyCut>,
}

impl<B> LimitedBody<B> {
    pub fn new(inner: B, limit: u64, stall_timeout: Duration, cut: Arc<BodyCut>) -> Self {
        Self {
            inner,
            remaining: limit,
            limit,
            stall_timeout,
            stall: None,
            waiting: false,
            cut,
        }
    }
}

impl<B> Body for LimitedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<wasmtime_wasi_http::Error>,
{
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => {
                let deadline = tokio::time::Instant::now() + self.stall_timeout;
                let started = !std::mem::replace(&mut self.waiting, true);
                let stall = self
                    .stall
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                // Measured from when the guest began to wait, not from the
                // last byte: time the guest spent elsewhere is not the
                // client's.
                if started {
                    stall.as_mut().reset(deadline);
                }
                if stall.as_mut().poll(cx).is_ready() {
                    self.cut.set(CutReason::Stalled);
                    return Poll::Ready(Some(Err(
                        wasmtime_wasi_http::Error::ConnectionReadTimeout,
                    )));
                }
                return Poll::Pending;
            }
        };
        self.waiting = false;
        if let Some(data) = frame.data_ref() {
            let len = data.len() as u64;
            if len > self.remaining {
                self.cut.set(CutReason::TooLarge);
                let limit = self.limit;
                return Poll::Ready(Some(Err(wasmtime_wasi_http::Error::HttpRequestBodySize(
                    Some(limit),
                ))));
            }
            self.remaining -= len;
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that adds the bytes it sends to its service's usage.
pub struct MeteredBody {
    inner: wasmtime_wasi_http::p2::body::HyperOutgoingBody,
    counters: Arc<crate::usage::ServiceCounters>,
}

debug_fields!(MeteredBody {});

impl MeteredBody {
    pub fn boxed(
        inner: wasmtime_wasi_http::p2::body::HyperOutgoingBody,
        counters: Arc<crate::usage::ServiceCounters>,
    ) -> wasmtime_wasi_http::p2::body::HyperOutgoingBody {
        use http_body_util::BodyExt;
        Self { inner, counters }.boxed_unsync()
    }
}

impl Body for MeteredBody {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.counters.add_bytes_out(data.len() as u64);
                }
            }
            // The head went out, the body did not finish: a failure the
            // status does not show (a canary's error rate counts it).
            Poll::Ready(Some(Err(_))) => self.counters.add_cut_response(),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
