//! A bound on connections to the API that send nothing.
//!
//! The API is served with `axum::serve`, which sets no header read timeout:
//! a client could open connections (after their TLS handshake, which has
//! its own bound) and hold them silent for ever. Every connection's reads
//! go through [`IdleRead`], and one that has waited [`ApiConfig::idle_read_timeout`]
//! for a byte is closed. hyper keeps reading (to see the client go) while
//! a request is answered, so the bound must be longer than the API's
//! longest request: the snapshot long-poll (30 s) and a compile (60 s).
//!
//! [`ApiConfig::idle_read_timeout`]: crate::api::state::ApiConfig::idle_read_timeout

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The default bound: past the 30 s snapshot long-poll and the 60 s
/// compile timeout.
pub const DEFAULT_IDLE_READ_TIMEOUT: Duration = Duration::from_secs(120);

/// A stream whose reads fail with `TimedOut` once one has waited `limit`
/// for a byte. The clock starts when a read first finds nothing, and stops
/// with every byte read.
#[derive(Debug)]
pub struct IdleRead<S> {
    inner: S,
    limit: Duration,
    waiting: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> IdleRead<S> {
    pub fn new(inner: S, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            waiting: None,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for IdleRead<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                this.waiting = None;
                Poll::Ready(result)
            }
            Poll::Pending => {
                let limit = this.limit;
                let waiting = this
                    .waiting
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                if waiting.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "nothing received within the API's idle read timeout",
                    )));
                }
                Poll::Pending
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for IdleRead<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A listener whose connections' reads are [`IdleRead`].
#[derive(Debug)]
pub struct Bounded<L> {
    inner: L,
    limit: Duration,
}

impl<L> Bounded<L> {
    pub fn new(inner: L, limit: Duration) -> Self {
        Self { inner, limit }
    }
}

impl<L> axum::serve::Listener for Bounded<L>
where
    L: axum::serve::Listener,
    L::Io: Unpin,
{
    type Io = IdleRead<L::Io>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = self.inner.accept().await;
        (IdleRead::new(io, self.limit), addr)
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}
