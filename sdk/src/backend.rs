//! Requests to the service's backends: the named origins declared with the
//! service (`backends` in its spec). A backend is addressed by its name; the
//! platform decides where it is, how long to wait, and what to cache.
//!
//! ```ignore
//! use edge_sdk::backend::{Backend, BackendRequest};
//!
//! let origin = Backend::new("origin");
//! let page = origin.get("/index.html")?;            // through the HTTP cache
//! let created = origin.send(BackendRequest::post("/items", b"{}".to_vec()))?;
//! ```

use std::fmt;
use std::io::{Read, Write};

use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, Method as WasiMethod, OutgoingBody, OutgoingRequest, Scheme,
};

use crate::request::{BodyReader, Request};
use crate::response::{BodyWriter, Response};

/// Response bodies read by [`BackendResponse::body_bytes`] stop here unless
/// the handler asks for more.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;

/// Backend response bodies of known length up to this size are passed on
/// whole by [`BackendResponse::into_response`].
pub const BUFFERED_BODY_BYTES: usize = 64 * 1024;

/// A named backend of this service.
#[derive(Debug, Clone)]
pub struct Backend {
    name: String,
}

/// Why a backend request failed.
#[derive(Debug)]
pub enum FetchError {
    /// The host refused or failed the request: an undeclared backend
    /// (`HttpRequestDenied`), a timeout (`HttpResponseTimeout`,
    /// `ConnectionReadTimeout`), the per-execution limit, ...
    Host(ErrorCode),
    /// A header the platform does not let guests set (`Connection`, `Host`,
    /// ...) or that is not valid.
    Header(String),
    /// Reading or writing a body failed.
    Body(String),
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchError::Host(code) => write!(f, "backend request failed: {code:?}"),
            FetchError::Header(e) => write!(f, "backend request header refused: {e}"),
            FetchError::Body(e) => write!(f, "backend body: {e}"),
        }
    }
}

impl std::error::Error for FetchError {}

/// A request to a backend: method, path and query, headers and body.
#[derive(Debug, Clone)]
pub struct BackendRequest {
    pub method: Method,
    pub path_with_query: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl BackendRequest {
    pub fn new(method: Method, path_with_query: impl Into<String>) -> Self {
        Self {
            method,
            path_with_query: path_with_query.into(),
            headers: HeaderMap::new(),
            body: Vec::new(),
        }
    }

    pub fn get(path_with_query: impl Into<String>) -> Self {
        Self::new(Method::GET, path_with_query)
    }

    pub fn post(path_with_query: impl Into<String>, body: Vec<u8>) -> Self {
        Self {
            body,
            ..Self::new(Method::POST, path_with_query)
        }
    }

    /// The incoming request as it is, to be sent on to a backend: its
    /// method, path, headers (but the ones that belong to the client's
    /// connection) and body, read up to `max_body_bytes`.
    pub fn forward(request: &mut Request, max_body_bytes: usize) -> Result<Self, FetchError> {
        // A request without Content-Length or Transfer-Encoding has no body
        // (RFC 9112 6.3): nothing to read.
        let has_body = request.header("transfer-encoding").is_some()
            || request
                .header("content-length")
                .is_some_and(|length| length != "0");
        let body = if has_body {
            request
                .body_bytes(max_body_bytes)
                .map_err(|e| FetchError::Body(e.to_string()))?
        } else {
            Vec::new()
        };
        let mut headers = request.headers().clone();
        for name in FORBIDDEN_HEADERS {
            headers.remove(*name);
        }
        Ok(Self {
            method: request.method().clone(),
            path_with_query: request.path_with_query().to_string(),
            headers,
            body,
        })
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            self.headers.append(name, value);
        }
        self
    }
}

/// Headers wasi:http does not let a guest set on an outgoing request.
const FORBIDDEN_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "host",
    "http2-settings",
    "te",
];

/// A backend's response. Its body stays on the host until read.
#[derive(Debug)]
pub struct BackendResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    body: BodyReader,
}

impl BackendResponse {
    /// The first value of header `name` when it is valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)?.to_str().ok()
    }

    /// Reads the whole body, refusing one over `limit` bytes.
    pub fn body_bytes(&mut self, limit: usize) -> Result<Vec<u8>, FetchError> {
        let mut bytes = Vec::new();
        let read = (&mut self.body)
            .take(limit as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| FetchError::Body(e.to_string()))?;
        if read > limit {
            return Err(FetchError::Body(format!("the body is over {limit} bytes")));
        }
        Ok(bytes)
    }

    /// The body as a stream.
    pub fn body_reader(&mut self) -> &mut impl Read {
        &mut self.body
    }

    /// This response as the handler's own, headers included. A body of known
    /// length up to [`BUFFERED_BODY_BYTES`] is passed on whole (fewer host
    /// calls); any other is streamed through as it arrives.
    pub fn into_response(mut self) -> Response {
        let known_small = self
            .header("content-length")
            .and_then(|length| length.parse::<usize>().ok())
            .is_some_and(|length| length <= BUFFERED_BODY_BYTES);
        let mut response = if known_small {
            match self.body_bytes(BUFFERED_BODY_BYTES) {
                Ok(body) => Response::bytes(self.status.as_u16(), body),
                Err(error) => return Response::text(502, format!("{error}\n")),
            }
        } else {
            let mut body = self.body;
            Response::streaming(self.status.as_u16(), move |writer| {
                std::io::copy(&mut body, writer).map(|_| ())
            })
        };
        for (name, value) in &self.headers {
            // The platform frames the body itself.
            if name != http::header::CONTENT_LENGTH && name != http::header::TRANSFER_ENCODING {
                response.headers_mut().append(name.clone(), value.clone());
            }
        }
        response
    }
}

impl Backend {
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into() }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `GET path_with_query`.
    pub fn get(&self, path_with_query: &str) -> Result<BackendResponse, FetchError> {
        self.send(BackendRequest::get(path_with_query))
    }

    /// Sends `request` and waits for the response head.
    pub fn send(&self, request: BackendRequest) -> Result<BackendResponse, FetchError> {
        let entries: Vec<(String, Vec<u8>)> = request
            .headers
            .iter()
            .map(|(name, value)| (name.as_str().to_string(), value.as_bytes().to_vec()))
            .collect();
        let fields =
            Fields::from_list(&entries).map_err(|e| FetchError::Header(format!("{e:?}")))?;
        let outgoing = OutgoingRequest::new(fields);
        let _ = outgoing.set_method(&wasi_method(&request.method));
        let _ = outgoing.set_scheme(Some(&Scheme::Http));
        let _ = outgoing.set_authority(Some(&self.name));
        outgoing
            .set_path_with_query(Some(&request.path_with_query))
            .map_err(|()| FetchError::Header(format!("path {:?}", request.path_with_query)))?;
        let body = outgoing
            .body()
            .map_err(|()| FetchError::Body("the request body was taken".into()))?;
        let pending = outgoing_handler::handle(outgoing, None).map_err(FetchError::Host)?;
        // The body is written after the request is handed over: the host
        // streams it to the origin as it is written. If the host refused the
        // request, writing fails too; the refusal is the error to report.
        let written = write_body(&body, &request.body);
        let finished = written.and_then(|()| {
            OutgoingBody::finish(body, None).map_err(|code| FetchError::Body(format!("{code:?}")))
        });

        pending.subscribe().block();
        let response = match pending.get() {
            Some(Ok(Ok(response))) => response,
            Some(Ok(Err(code))) => return Err(FetchError::Host(code)),
            _ => return Err(FetchError::Host(ErrorCode::InternalError(None))),
        };
        finished?;
        let status = StatusCode::from_u16(response.status())
            .map_err(|e| FetchError::Header(format!("status: {e}")))?;
        let mut headers = HeaderMap::new();
        for (name, value) in response.headers().entries() {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_bytes(&value),
            ) {
                headers.append(name, value);
            }
        }
        let body = response
            .consume()
            .map_err(|()| FetchError::Body("the response body was taken".into()))?;
        Ok(BackendResponse {
            status,
            headers,
            body: BodyReader::new(body)
                .map_err(|()| FetchError::Body("the response body stream was taken".into()))?,
        })
    }
}

fn write_body(body: &OutgoingBody, bytes: &[u8]) -> Result<(), FetchError> {
    if bytes.is_empty() {
        return Ok(());
    }
    let stream = body
        .write()
        .map_err(|()| FetchError::Body("the request body stream was taken".into()))?;
    let mut writer = BodyWriter::new(stream);
    writer
        .write_all(bytes)
        .and_then(|()| writer.flush())
        .map_err(|e| FetchError::Body(e.to_string()))
}

fn wasi_method(method: &Method) -> WasiMethod {
    match *method {
        Method::GET => WasiMethod::Get,
        Method::HEAD => WasiMethod::Head,
        Method::POST => WasiMethod::Post,
        Method::PUT => WasiMethod::Put,
        Method::DELETE => WasiMethod::Delete,
        Method::CONNECT => WasiMethod::Connect,
        Method::OPTIONS => WasiMethod::Options,
        Method::TRACE => WasiMethod::Trace,
        Method::PATCH => WasiMethod::Patch,
        ref other => WasiMethod::Other(other.as_str().to_string()),
    }
}
