//! A bound on the HTTP/3 frames a client can make the node buffer.
//!
//! The h3 crate (0.0.8) streams DATA frames but reads every other frame
//! whole into memory before looking at it: a HEADERS frame before
//! `max_field_section_size` applies, and a frame of an unknown or reserved
//! type before it is thrown away (hyperium/h3#294). A client declaring a
//! 1 GiB HEADERS frame would have the node buffer all of it. h3 cannot be
//! bounded from outside, so the QUIC connection it runs on is wrapped here:
//! [`GuardedConnection`] hands h3 streams whose received bytes pass a
//! [`FrameScanner`] first. The scanner reads each frame's type and declared
//! length as they go by; a HEADERS frame declaring more than
//! `http.max_header_bytes` plus [`H3_FRAME_SLACK_BYTES`], or any other
//! non-DATA frame declaring more than the slack, stops the stream with
//! `H3_EXCESSIVE_LOAD` before its payload is read. On a unidirectional
//! stream only the control stream carries frames; the others pass through.

use std::fmt;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use h3::quic::{self, ConnectionErrorIncoming, StreamErrorIncoming, StreamId, WriteBuf};

/// What a HEADERS frame may declare beyond `http.max_header_bytes` (QPACK
/// encoding can be a little larger than the field section it decodes to),
/// and what any other non-DATA frame (SETTINGS, GOAWAY, unknown types) may
/// declare at all.
pub const H3_FRAME_SLACK_BYTES: u64 = 16 * 1024;

/// RFC 9114 section 8.1: "the endpoint detected that its peer is exhibiting
/// a behavior that might be generating excessive load".
const H3_EXCESSIVE_LOAD: u64 = 0x0107;

const FRAME_DATA: u64 = 0x00;
const FRAME_HEADERS: u64 = 0x01;
/// WebTransport streams carry a session id where a length would be; this
/// node serves no WebTransport, so the frame is refused.
const FRAME_WEBTRANSPORT_STREAM: u64 = 0x41;
const STREAM_TYPE_CONTROL: u64 = 0x00;

/// A frame declared longer than its bound.
#[derive(Debug)]
pub struct FrameTooLarge {
    pub frame_type: u64,
    pub declared: u64,
    pub limit: u64,
}

impl fmt::Display for FrameTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "HTTP/3 frame of type {:#x} declares {} bytes, over the bound of {}",
            self.frame_type, self.declared, self.limit
        )
    }
}

impl std::error::Error for FrameTooLarge {}

/// One QUIC variable-length integer, read a byte at a time (RFC 9000
/// section 16).
#[derive(Debug, Default, Clone, Copy)]
struct VarInt {
    value: u64,
    /// Bytes it takes, from the first byte's two high bits; 0 before it.
    length: u8,
    read: u8,
}

impl VarInt {
    /// Adds `byte`; the value once complete.
    fn push(&mut self, byte: u8) -> Option<u64> {
        if self.read == 0 {
            self.length = 1 << (byte >> 6);
            self.value = u64::from(byte & 0x3f);
        } else {
            self.value = (self.value << 8) | u64::from(byte);
        }
        self.read += 1;
        (self.read == self.length).then_some(self.value)
    }
}

#[derive(Debug, Clone, Copy)]
enum Scan {
    /// The stream type of a unidirectional stream.
    StreamType(VarInt),
    /// A unidirectional stream that carries no frames.
    PassThrough,
    FrameType(VarInt),
    FrameLength {
        frame_type: u64,
        length: VarInt,
    },
    Payload {
        remaining: u64,
    },
}

/// Follows the frames of one stream through the bytes received on it.
#[derive(Debug, Clone, Copy)]
pub struct FrameScanner {
    max_headers_frame: u64,
    scan: Scan,
}

impl FrameScanner {
    /// For a request stream: frames from the first byte.
    pub fn request(max_header_bytes: u64) -> Self {
        Self {
            max_headers_frame: max_header_bytes.saturating_add(H3_FRAME_SLACK_BYTES),
            scan: Scan::FrameType(VarInt::default()),
        }
    }

    /// For a unidirectional stream: a stream type, then frames if it is
    /// the control stream.
    pub fn unidirectional(max_header_bytes: u64) -> Self {
        Self {
            scan: Scan::StreamType(VarInt::default()),
            ..Self::request(max_header_bytes)
        }
    }

    /// Looks at the next `bytes` of the stream.
    pub fn scan(&mut self, mut bytes: &[u8]) -> Result<(), FrameTooLarge> {
        while let Some((&byte, rest)) = bytes.split_first() {
            match &mut self.scan {
                Scan::PassThrough => return Ok(()),
                Scan::Payload { remaining } => {
                    let skipped = (*remaining).min(bytes.len() as u64);
                    *remaining -= skipped;
                    if *remaining == 0 {
                        self.scan = Scan::FrameType(VarInt::default());
                    }
                    // At most `bytes.len()`, so it fits.
                    bytes = &bytes[usize::try_from(skipped).unwrap_or(bytes.len())..];
                    continue;
                }
                Scan::StreamType(varint) => {
                    if let Some(stream_type) = varint.push(byte) {
                        self.scan = if stream_type == STREAM_TYPE_CONTROL {
                            Scan::FrameType(VarInt::default())
                        } else {
                            Scan::PassThrough
                        };
                    }
                }
                Scan::FrameType(varint) => {
                    if let Some(frame_type) = varint.push(byte) {
                        self.scan = Scan::FrameLength {
                            frame_type,
                            length: VarInt::default(),
                        };
                    }
                }
                Scan::FrameLength { frame_type, length } => {
                    if let Some(declared) = length.push(byte) {
                        let frame_type = *frame_type;
                        self.check(frame_type, declared)?;
                        self.scan = if declared == 0 {
                            Scan::FrameType(VarInt::default())
                        } else {
                            Scan::Payload {
                                remaining: declared,
                            }
                        };
                    }
                }
            }
            bytes = rest;
        }
        Ok(())
    }

    fn check(&self, frame_type: u64, declared: u64) -> Result<(), FrameTooLarge> {
        let limit = match frame_type {
            FRAME_DATA => return Ok(()),
            FRAME_HEADERS => self.max_headers_frame,
            FRAME_WEBTRANSPORT_STREAM => 0,
            _ => H3_FRAME_SLACK_BYTES,
        };
        if declared > limit || frame_type == FRAME_WEBTRANSPORT_STREAM {
            return Err(FrameTooLarge {
                frame_type,
                declared,
                limit,
            });
        }
        Ok(())
    }
}

// h3-quinn's types have no `Debug` to show.
debug_fields!(GuardedBidiStream<B: Buf> {});
debug_fields!(GuardedRecvStream {});

debug_fields!(Guarded<T> { max_header_bytes });

/// A QUIC connection (or its stream opener) whose streams h3 reads through
/// a [`FrameScanner`].
#[derive(Clone)]
pub struct Guarded<T> {
    inner: T,
    max_header_bytes: u64,
}

/// The connection h3 is given.
pub type GuardedConnection = Guarded<h3_quinn::Connection>;

impl GuardedConnection {
    pub fn new(inner: h3_quinn::Connection, max_header_bytes: u64) -> Self {
        Self {
            inner,
            max_header_bytes,
        }
    }
}

impl<B, T> quic::OpenStreams<B> for Guarded<T>
where
    B: Buf,
    T: quic::OpenStreams<
            B,
            BidiStream = h3_quinn::BidiStream<B>,
            SendStream = h3_quinn::SendStream<B>,
        >,
{
    type BidiStream = GuardedBidiStream<B>;
    type SendStream = h3_quinn::SendStream<B>;

    fn poll_open_bidi(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::BidiStream, StreamErrorIncoming>> {
        let max_header_bytes = self.max_header_bytes;
        self.inner
            .poll_open_bidi(cx)
            .map_ok(|stream| GuardedBidiStream::request(stream, max_header_bytes))
    }

    fn poll_open_send(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::SendStream, StreamErrorIncoming>> {
        self.inner.poll_open_send(cx)
    }

    fn close(&mut self, code: h3::error::Code, reason: &[u8]) {
        self.inner.close(code, reason);
    }
}

impl<B: Buf> quic::Connection<B> for GuardedConnection {
    type RecvStream = GuardedRecvStream;
    type OpenStreams = Guarded<h3_quinn::OpenStreams>;

    fn poll_accept_recv(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::RecvStream, ConnectionErrorIncoming>> {
        let scanner = FrameScanner::unidirectional(self.max_header_bytes);
        quic::Connection::<B>::poll_accept_recv(&mut self.inner, cx)
            .map_ok(|stream| GuardedRecvStream::new(stream, scanner))
    }

    fn poll_accept_bidi(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::BidiStream, ConnectionErrorIncoming>> {
        let max_header_bytes = self.max_header_bytes;
        quic::Connection::<B>::poll_accept_bidi(&mut self.inner, cx)
            .map_ok(|stream| GuardedBidiStream::request(stream, max_header_bytes))
    }

    fn opener(&self) -> Self::OpenStreams {
        Guarded {
            inner: quic::Connection::<B>::opener(&self.inner),
            max_header_bytes: self.max_header_bytes,
        }
    }
}

/// A QUIC receiving stream whose bytes pass a [`FrameScanner`] before h3
/// reads them. One type for both kinds of stream h3 receives on, so the
/// scanning `poll_data` is written once.
pub struct Scanned<S> {
    inner: S,
    scanner: FrameScanner,
    refused: bool,
}

/// A request stream, its received bytes scanned.
pub type GuardedBidiStream<B> = Scanned<h3_quinn::BidiStream<B>>;

/// A receiving stream (a request's, once split, or a unidirectional one),
/// its bytes scanned.
pub type GuardedRecvStream = Scanned<h3_quinn::RecvStream>;

impl<S> Scanned<S> {
    fn new(inner: S, scanner: FrameScanner) -> Self {
        Self {
            inner,
            scanner,
            refused: false,
        }
    }
}

impl<B: Buf> GuardedBidiStream<B> {
    fn request(inner: h3_quinn::BidiStream<B>, max_header_bytes: u64) -> Self {
        Self::new(inner, FrameScanner::request(max_header_bytes))
    }
}

impl<S: quic::RecvStream<Buf = Bytes>> quic::RecvStream for Scanned<S> {
    type Buf = Bytes;

    /// Polls the stream for data and passes it through the scanner; a frame
    /// over its bound stops the stream and fails the read, from then on.
    fn poll_data(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Bytes>, StreamErrorIncoming>> {
        if self.refused {
            return Poll::Ready(Err(StreamErrorIncoming::StreamTerminated {
                error_code: H3_EXCESSIVE_LOAD,
            }));
        }
        let polled = ready!(self.inner.poll_data(cx));
        if let Ok(Some(bytes)) = &polled
            && let Err(too_large) = self.scanner.scan(bytes)
        {
            tracing::debug!(error = %too_large, "HTTP/3 stream stopped");
            self.refused = true;
            self.inner.stop_sending(H3_EXCESSIVE_LOAD);
            return Poll::Ready(Err(StreamErrorIncoming::Unknown(Box::new(too_large))));
        }
        Poll::Ready(polled)
    }

    fn stop_sending(&mut self, error_code: u64) {
        self.inner.stop_sending(error_code);
    }

    fn recv_id(&self) -> StreamId {
        self.inner.recv_id()
    }
}

impl<B: Buf> quic::SendStream<B> for GuardedBidiStream<B> {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamErrorIncoming>> {
        self.inner.poll_ready(cx)
    }

    fn send_data<T: Into<WriteBuf<B>>>(&mut self, data: T) -> Result<(), StreamErrorIncoming> {
        self.inner.send_data(data)
    }

    fn poll_finish(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamErrorIncoming>> {
        self.inner.poll_finish(cx)
    }

    fn reset(&mut self, reset_code: u64) {
        self.inner.reset(reset_code);
    }

    fn send_id(&self) -> StreamId {
        self.inner.send_id()
    }
}

impl<B: Buf> quic::BidiStream<B> for GuardedBidiStream<B> {
    type SendStream = h3_quinn::SendStream<B>;
    type RecvStream = GuardedRecvStream;

    fn split(self) -> (Self::SendStream, Self::RecvStream) {
        let (send, recv) = self.inner.split();
        let recv = Scanned {
            inner: recv,
            scanner: self.scanner,
            refused: self.refused,
        };
        (send, recv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame header: type and length as QUIC varints (8-byte lengths).
    fn header(frame_type: u8, length: u64) -> Vec<u8> {
        let mut bytes = vec![frame_type];
        bytes.extend_from_slice(&(length | (0b11 << 62)).to_be_bytes());
        bytes
    }

    #[test]
    fn a_headers_frame_over_its_bound_is_refused_at_its_header_wherever_it_splits() {
        let mut frames = header(0x01, 100);
        frames.extend_from_slice(&[0; 100]);
        frames.extend(header(0x00, 1 << 40)); // DATA: any length
        frames.extend_from_slice(&[0; 10]);
        let mut scanner = FrameScanner::request(64 * 1024);
        scanner.scan(&frames).expect("within bounds");

        let huge = header(0x01, 1 << 30);
        for split in 0..huge.len() {
            let mut scanner = FrameScanner::request(64 * 1024);
            let first = scanner.scan(&huge[..split]);
            assert!(first.is_ok(), "incomplete at {split}");
            let error = scanner.scan(&huge[split..]).expect_err("refused");
            assert_eq!((error.frame_type, error.declared), (1, 1 << 30));
        }
    }

    #[test]
    fn unknown_frames_get_the_slack_and_only_the_control_stream_is_scanned() {
        let mut scanner = FrameScanner::request(64 * 1024);
        // A reserved (grease) type, 0x21, one-byte varint: within the slack.
        scanner.scan(&[0x21, 0x05, 1, 2, 3, 4, 5]).expect("small");
        let error = scanner
            .scan(&header(0x21, H3_FRAME_SLACK_BYTES + 1))
            .expect_err("over the slack");
        assert_eq!(error.limit, H3_FRAME_SLACK_BYTES);

        let mut control = FrameScanner::unidirectional(64 * 1024);
        let mut bytes = vec![STREAM_TYPE_CONTROL as u8];
        bytes.extend(header(0x04, 1 << 20)); // a 1 MiB SETTINGS frame
        assert!(control.scan(&bytes).is_err());
        // A QPACK encoder stream (type 0x02) is no frames: left alone.
        let mut qpack = FrameScanner::unidirectional(64 * 1024);
        let mut bytes = vec![0x02];
        bytes.extend(header(0x01, 1 << 30));
        qpack.scan(&bytes).expect("not frames");
    }
}
