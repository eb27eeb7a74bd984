//! The incoming request.

use std::fmt;
use std::io::Read;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use wasip2::http::types::{IncomingBody, IncomingRequest, Method as WasiMethod, Scheme};
use wasip2::io::streams::{InputStream, StreamError};

/// An HTTP request as the handler sees it. Headers are parsed up front; the
/// body stays on the host until it is read.
#[derive(Debug)]
pub struct Request {
    method: Method,
    scheme: Option<String>,
    authority: Option<String>,
    path_with_query: String,
    headers: HeaderMap,
    body: Option<IncomingBody>,
}

/// Why a request or its body could not be read.
#[derive(Debug)]
pub enum BodyError {
    /// The body was already taken.
    AlreadyRead,
    /// The body is larger than the limit the handler gave.
    TooLarge { limit: usize },
    /// The host or client ended the body with an error.
    Stream(String),
    /// The request head was not valid HTTP.
    InvalidHead(String),
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::AlreadyRead => write!(f, "the request body was already read"),
            BodyError::TooLarge { limit } => write!(f, "the request body is over {limit} bytes"),
            BodyError::Stream(e) => write!(f, "reading the request body failed: {e}"),
            BodyError::InvalidHead(e) => write!(f, "invalid request: {e}"),
        }
    }
}

impl std::error::Error for BodyError {}

impl Request {
    pub(crate) fn from_incoming(request: IncomingRequest) -> Result<Self, BodyError> {
        let method = match request.method() {
            WasiMethod::Get => Method::GET,
            WasiMethod::Head => Method::HEAD,
            WasiMethod::Post => Method::POST,
            WasiMethod::Put => Method::PUT,
            WasiMethod::Delete => Method::DELETE,
            WasiMethod::Connect => Method::CONNECT,
            WasiMethod::Options => Method::OPTIONS,
            WasiMethod::Trace => Method::TRACE,
            WasiMethod::Patch => Method::PATCH,
            WasiMethod::Other(other) => Method::from_bytes(other.as_bytes())
                .map_err(|e| BodyError::InvalidHead(format!("method {other:?}: {e}")))?,
        };
        let scheme = request.scheme().map(|scheme| match scheme {
            Scheme::Http => "http".to_string(),
            Scheme::Https => "https".to_string(),
            Scheme::Other(other) => other,
        });
        let mut headers = HeaderMap::new();
        for (name, value) in request.headers().entries() {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| BodyError::InvalidHead(format!("header name {name:?}: {e}")))?;
            let value = HeaderValue::from_bytes(&value)
                .map_err(|e| BodyError::InvalidHead(format!("header {name}: {e}")))?;
            headers.append(name, value);
        }
        Ok(Self {
            method,
            scheme,
            authority: request.authority(),
            path_with_query: request.path_with_query().unwrap_or_else(|| "/".to_string()),
            headers,
            body: request.consume().ok(),
        })
    }

    pub fn method(&self) -> &Method {
        &self.method
    }

    /// `http` or `https`, as the client connected.
    pub fn scheme(&self) -> Option<&str> {
        self.scheme.as_deref()
    }

    /// The host (and port) the client asked for.
    pub fn authority(&self) -> Option<&str> {
        self.authority.as_deref()
    }

    /// The path, without the query string.
    pub fn path(&self) -> &str {
        match self.path_with_query.split_once('?') {
            Some((path, _)) => path,
            None => &self.path_with_query,
        }
    }

    /// The query string, without the `?`.
    pub fn query(&self) -> Option<&str> {
        self.path_with_query.split_once('?').map(|(_, query)| query)
    }

    /// The value of query parameter `name`, as sent (not percent-decoded).
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query()?
            .split('&')
            .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value)
    }

    pub fn path_with_query(&self) -> &str {
        &self.path_with_query
    }

    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The first value of header `name` when it is valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)?.to_str().ok()
    }

    /// Reads the whole body, refusing one over `limit` bytes.
    pub fn body_bytes(&mut self, limit: usize) -> Result<Vec<u8>, BodyError> {
        let mut reader = self.body_reader()?;
        let mut bytes = Vec::new();
        let read = (&mut reader)
            .take(limit as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| BodyError::Stream(e.to_string()))?;
        if read > limit {
            return Err(BodyError::TooLarge { limit });
        }
        Ok(bytes)
    }

    /// The body as a stream, for bodies too big to hold at once.
    pub fn body_reader(&mut self) -> Result<BodyReader, BodyError> {
        let body = self.body.take().ok_or(BodyError::AlreadyRead)?;
        BodyReader::new(body).map_err(|()| BodyError::AlreadyRead)
    }
}

/// Reads a request body as it arrives ([`std::io::Read`]).
#[derive(Debug)]
pub struct BodyReader {
    // The stream must be dropped before its body: field order matters.
    stream: Option<InputStream>,
    body: Option<IncomingBody>,
}

impl BodyReader {
    pub(crate) fn new(body: IncomingBody) -> Result<Self, ()> {
        let stream = body.stream()?;
        Ok(Self {
            stream: Some(stream),
            body: Some(body),
        })
    }
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let Some(stream) = &self.stream else {
            return Ok(0);
        };
        match stream.blocking_read(buf.len() as u64) {
            Ok(chunk) => {
                buf[..chunk.len()].copy_from_slice(&chunk);
                Ok(chunk.len())
            }
            Err(StreamError::Closed) => {
                self.stream = None;
                if let Some(body) = self.body.take() {
                    // Trailers are not exposed; finishing releases the body.
                    drop(IncomingBody::finish(body));
                }
                Ok(0)
            }
            Err(StreamError::LastOperationFailed(e)) => {
                Err(std::io::Error::other(e.to_debug_string()))
            }
        }
    }
}
