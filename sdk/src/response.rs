//! The response, and how it is sent back to the host.

use std::fmt;
use std::io::{self, Write};

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use wasip2::http::types::{Fields, OutgoingBody, OutgoingResponse, ResponseOutparam};
use wasip2::io::streams::{OutputStream, StreamError};

type StreamFn = Box<dyn FnOnce(&mut BodyWriter) -> io::Result<()>>;

enum Body {
    Bytes(Vec<u8>),
    Stream(StreamFn),
}

/// An HTTP response. Build it with [`Response::new`], [`Response::text`] or
/// [`Response::streaming`], then add headers with [`Response::with_header`].
pub struct Response {
    status: StatusCode,
    headers: HeaderMap,
    body: Body,
    /// A header the handler asked for that is not valid HTTP. Reported as a
    /// 500 when the response is sent, so that building never panics.
    invalid_header: Option<String>,
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .finish_non_exhaustive()
    }
}

impl Response {
    /// A response with an empty body. An invalid status becomes 500.
    pub fn new(status: u16) -> Self {
        Self {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            headers: HeaderMap::new(),
            body: Body::Bytes(Vec::new()),
            invalid_header: None,
        }
    }

    /// A `text/plain; charset=utf-8` response.
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Self::bytes(status, body.into().into_bytes())
            .with_header("content-type", "text/plain; charset=utf-8")
    }

    /// A response with `body` sent as is, with its `content-length`.
    pub fn bytes(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Self {
            body: Body::Bytes(body.into()),
            ..Self::new(status)
        }
    }

    /// A response whose body `write_body` produces while the client already
    /// receives it. Write as much as you like; each flush reaches the client.
    pub fn streaming(
        status: u16,
        write_body: impl FnOnce(&mut BodyWriter) -> io::Result<()> + 'static,
    ) -> Self {
        Self {
            body: Body::Stream(Box::new(write_body)),
            ..Self::new(status)
        }
    }

    /// Appends a header. An invalid name or value turns the response into a
    /// 500 that names the header.
    pub fn with_header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value.as_ref()),
        ) {
            (Ok(name), Ok(value)) => {
                self.headers.append(name, value);
            }
            _ => self.invalid_header = Some(name.to_string()),
        }
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    pub fn headers_mut(&mut self) -> &mut HeaderMap {
        &mut self.headers
    }

    /// Hands the response to the host and writes its body.
    pub(crate) fn send(self, out: ResponseOutparam) {
        if let Some(name) = &self.invalid_header {
            let message = format!("the handler set an invalid header: {name:?}\n");
            return Response::text(500, message).send(out);
        }
        let mut entries: Vec<(String, Vec<u8>)> = self
            .headers
            .iter()
            .map(|(name, value)| (name.as_str().to_string(), value.as_bytes().to_vec()))
            .collect();
        if let Body::Bytes(bytes) = &self.body
            && !self.headers.contains_key(http::header::CONTENT_LENGTH)
        {
            entries.push((
                "content-length".into(),
                bytes.len().to_string().into_bytes(),
            ));
        }
        let fields = match Fields::from_list(&entries) {
            Ok(fields) => fields,
            Err(e) => {
                let message = format!("the host refused the response headers: {e:?}\n");
                return Response::text(500, message).send(out);
            }
        };
        let response = OutgoingResponse::new(fields);
        // The status was validated by `StatusCode`; the host accepts 100-999.
        let _ = response.set_status_code(self.status.as_u16());
        let Ok(body) = response.body() else {
            return;
        };
        ResponseOutparam::set(out, Ok(response));
        let Ok(stream) = body.write() else {
            return;
        };
        let mut writer = BodyWriter { stream };
        let written = match self.body {
            Body::Bytes(bytes) => writer.write_all(&bytes).and_then(|()| writer.flush()),
            Body::Stream(write_body) => write_body(&mut writer).and_then(|()| writer.flush()),
        };
        // The stream must be dropped before the body is finished.
        drop(writer);
        match written {
            Ok(()) => {
                let _ = OutgoingBody::finish(body, None);
            }
            // Dropping an unfinished body tells the host the response is
            // incomplete, so the client sees a truncated, not a complete, body.
            Err(_) => drop(body),
        }
    }
}

/// Writes a streamed response body ([`std::io::Write`]). Writes wait while
/// the client is slower than the handler.
#[derive(Debug)]
pub struct BodyWriter {
    stream: OutputStream,
}

impl BodyWriter {
    pub(crate) fn new(stream: OutputStream) -> Self {
        Self { stream }
    }
}

impl Write for BodyWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            let permitted = self.stream.check_write().map_err(stream_error)?;
            if permitted == 0 {
                self.stream.subscribe().block();
                continue;
            }
            let len = buf
                .len()
                .min(usize::try_from(permitted).unwrap_or(usize::MAX));
            self.stream.write(&buf[..len]).map_err(stream_error)?;
            return Ok(len);
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.blocking_flush().map_err(stream_error)
    }
}

fn stream_error(e: StreamError) -> io::Error {
    match e {
        StreamError::Closed => io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"),
        StreamError::LastOperationFailed(e) => io::Error::other(e.to_debug_string()),
    }
}

/// What a handler may return.
pub trait IntoResponse {
    fn into_response(self) -> Response;
}

impl IntoResponse for Response {
    fn into_response(self) -> Response {
        self
    }
}

impl<E: fmt::Display> IntoResponse for Result<Response, E> {
    /// An error becomes a 500 whose body is the error's message.
    fn into_response(self) -> Response {
        self.unwrap_or_else(|e| Response::text(500, format!("{e}\n")))
    }
}

impl IntoResponse for String {
    fn into_response(self) -> Response {
        Response::text(200, self)
    }
}

impl IntoResponse for &'static str {
    fn into_response(self) -> Response {
        Response::text(200, self)
    }
}
