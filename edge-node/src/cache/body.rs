//! Bodies and request heads as the cache handles them: whole bodies it
//! collects to store (or passes on, past the size it stores), bodies of its
//! own, and copies of request heads.

use bytes::Bytes;
use http::Request;
use http::request::Parts as RequestParts;
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use wasmtime_wasi_http::{Error as WasiHttpError, WasiBody};

/// The body of a request the cache makes itself.
pub(super) fn empty_body() -> WasiBody {
    http_body_util::Empty::new()
        .map_err(|never: std::convert::Infallible| match never {})
        .boxed_unsync()
}

/// `http::request::Parts` is not `Clone` (its extensions need not be); the
/// cache needs only the method, URI, version and headers, and where the
/// origin's interim responses go.
pub(crate) fn clone_parts(parts: &RequestParts) -> RequestParts {
    let (mut clone, ()) = Request::builder()
        .method(parts.method.clone())
        .uri(parts.uri.clone())
        .version(parts.version)
        .body(())
        .map(Request::into_parts)
        .unwrap_or_else(|_| Request::new(()).into_parts());
    clone.headers = parts.headers.clone();
    if let Some(interim) = parts.extensions.get::<crate::interim::InterimSink>() {
        clone.extensions.insert(interim.clone());
    }
    clone
}

pub(super) fn full(bytes: Bytes) -> WasiBody {
    Full::new(bytes)
        .map_err(|never: std::convert::Infallible| match never {})
        .boxed_unsync()
}

pub(super) enum Collected {
    Complete(Bytes),
    TooLarge { prefix: Bytes, rest: WasiBody },
}

/// Reads `body` whole if it is at most `limit` bytes; otherwise returns what
/// was read and the rest, to be streamed without storing.
pub(super) async fn collect_up_to(
    mut body: WasiBody,
    limit: usize,
) -> Result<Collected, WasiHttpError> {
    let mut buffer = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue; // trailers are not stored
        };
        buffer.extend_from_slice(&data);
        if buffer.len() > limit {
            return Ok(Collected::TooLarge {
                prefix: buffer.freeze(),
                rest: body,
            });
        }
    }
    Ok(Collected::Complete(buffer.freeze()))
}

/// Bytes already read, then the rest of the body.
pub(super) struct PrefixedBody {
    prefix: Option<Bytes>,
    rest: WasiBody,
}

impl PrefixedBody {
    pub(super) fn boxed(prefix: Bytes, rest: WasiBody) -> WasiBody {
        Self {
            prefix: Some(prefix),
            rest,
        }
        .boxed_unsync()
    }
}

impl Body for PrefixedBody {
    type Data = Bytes;
    type Error = WasiHttpError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(prefix) = self.prefix.take() {
            return std::task::Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        std::pin::Pin::new(&mut self.rest).poll_frame(cx)
    }
}
