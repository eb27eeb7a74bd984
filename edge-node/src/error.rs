//! Every outcome a client can see other than the guest's own response.
//!
//! Each has one status and one stable code (sent in the `edge-error` header
//! and used as a metric label), and knows who is at fault. The body names the
//! problem and the request id, never internals: details go to the node's log.

use std::fmt;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// The response header that carries the request id, on every response the
/// node sends (also in the access log and the guest's log lines).
pub const REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// Who caused an outcome; decides the log level and whether a retry helps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The request was malformed or over a limit.
    Client,
    /// The tenant's code failed or exceeded its budget.
    Tenant,
    /// The node is at capacity; retrying later helps.
    Capacity,
    /// A bug or an environment problem on the node.
    Internal,
}

/// An outcome the node answers itself. See docs/limits.md for the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EdgeError {
    /// No service is configured for the request's Host.
    UnknownHost,
    /// The request has no Host (HTTP/1.1) or `:authority`.
    MissingHost,
    /// The Host or `:authority` is not a valid `host[:port]`, or there are
    /// two Host fields.
    InvalidAuthority,
    /// On HTTP/2 or HTTP/3, `host` names another authority than
    /// `:authority`.
    HostMismatch,
    /// The connection's TLS server name routes to another tenant than the
    /// request's Host: the handshake served that other tenant's
    /// certificate, so this connection may not carry the request.
    MisdirectedRequest,
    /// The request line is longer than `http.max_uri_bytes`.
    UriTooLong { limit: u64 },
    /// More header fields than `http.max_header_count`.
    TooManyHeaders { limit: u64 },
    /// The body is over the service's `max_request_body_bytes`.
    BodyTooLarge { limit: u64 },
    /// The client sent no body bytes for `http.body_read_timeout_ms` while
    /// the guest was waiting for them.
    BodyReadTimeout { limit_ms: u64 },
    /// The node has `http.max_in_flight_requests` requests in flight, or no
    /// free instance slot.
    Overloaded,
    /// The service's tenant has `http.max_in_flight_requests_per_tenant`
    /// requests in flight on this node.
    TenantOverloaded,
    /// The guest trapped (panic, unreachable, stack overflow, bad access).
    GuestTrap,
    /// The guest used its CPU budget.
    CpuBudgetExceeded { budget_ms: u64 },
    /// The guest ran past its wall-clock deadline without answering.
    WallTimeExceeded { limit_ms: u64 },
    /// The guest hit its memory (or table) limit and failed.
    MemoryLimitExceeded { limit_bytes: u64 },
    /// The guest finished (or exited) without setting a response.
    NoResponse,
    /// The guest answered with a wasi:http `error-code` instead of a response.
    GuestError,
    /// The guest's response has more header fields or bytes than the node
    /// accepts from clients (`http.max_header_count`, `http.max_header_bytes`).
    ResponseHeadersTooLarge { limit_count: u64, limit_bytes: u64 },
    /// The service's module could not be loaded on this node.
    ModuleUnavailable,
    /// A node bug; the details are in the node's log.
    Internal,
}

impl EdgeError {
    pub fn status(&self) -> StatusCode {
        match self {
            EdgeError::UnknownHost => StatusCode::MISDIRECTED_REQUEST,
            EdgeError::MissingHost | EdgeError::InvalidAuthority | EdgeError::HostMismatch => {
                StatusCode::BAD_REQUEST
            }
            EdgeError::MisdirectedRequest => StatusCode::MISDIRECTED_REQUEST,
            EdgeError::UriTooLong { .. } => StatusCode::URI_TOO_LONG,
            EdgeError::TooManyHeaders { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            EdgeError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            EdgeError::BodyReadTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            EdgeError::Overloaded | EdgeError::TenantOverloaded => StatusCode::SERVICE_UNAVAILABLE,
            EdgeError::GuestTrap => StatusCode::INTERNAL_SERVER_ERROR,
            EdgeError::CpuBudgetExceeded { .. } => StatusCode::LOOP_DETECTED,
            EdgeError::WallTimeExceeded { .. } => StatusCode::GATEWAY_TIMEOUT,
            EdgeError::MemoryLimitExceeded { .. } => StatusCode::INSUFFICIENT_STORAGE,
            EdgeError::NoResponse
            | EdgeError::GuestError
            | EdgeError::ResponseHeadersTooLarge { .. } => StatusCode::BAD_GATEWAY,
            EdgeError::ModuleUnavailable | EdgeError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Stable machine-readable code: the `edge-error` header and metric label.
    pub fn code(&self) -> &'static str {
        match self {
            EdgeError::UnknownHost => "unknown-host",
            EdgeError::MissingHost => "missing-host",
            EdgeError::InvalidAuthority => "invalid-authority",
            EdgeError::HostMismatch => "host-mismatch",
            EdgeError::MisdirectedRequest => "misdirected-request",
            EdgeError::UriTooLong { .. } => "uri-too-long",
            EdgeError::TooManyHeaders { .. } => "too-many-headers",
            EdgeError::BodyTooLarge { .. } => "body-too-large",
            EdgeError::BodyReadTimeout { .. } => "body-read-timeout",
            EdgeError::Overloaded => "overloaded",
            EdgeError::TenantOverloaded => "tenant-overloaded",
            EdgeError::GuestTrap => "guest-trap",
            EdgeError::CpuBudgetExceeded { .. } => "cpu-budget-exceeded",
            EdgeError::WallTimeExceeded { .. } => "wall-time-exceeded",
            EdgeError::MemoryLimitExceeded { .. } => "memory-limit-exceeded",
            EdgeError::NoResponse => "no-response",
            EdgeError::GuestError => "guest-error",
            EdgeError::ResponseHeadersTooLarge { .. } => "response-headers-too-large",
            EdgeError::ModuleUnavailable => "module-unavailable",
            EdgeError::Internal => "internal",
        }
    }

    pub fn fault(&self) -> Fault {
        match self {
            EdgeError::UnknownHost
            | EdgeError::MissingHost
            | EdgeError::InvalidAuthority
            | EdgeError::HostMismatch
            | EdgeError::MisdirectedRequest
            | EdgeError::UriTooLong { .. }
            | EdgeError::TooManyHeaders { .. }
            | EdgeError::BodyTooLarge { .. }
            | EdgeError::BodyReadTimeout { .. } => Fault::Client,
            EdgeError::Overloaded | EdgeError::TenantOverloaded => Fault::Capacity,
            EdgeError::GuestTrap
            | EdgeError::CpuBudgetExceeded { .. }
            | EdgeError::WallTimeExceeded { .. }
            | EdgeError::MemoryLimitExceeded { .. }
            | EdgeError::NoResponse
            | EdgeError::GuestError
            | EdgeError::ResponseHeadersTooLarge { .. } => Fault::Tenant,
            EdgeError::ModuleUnavailable | EdgeError::Internal => Fault::Internal,
        }
    }

    /// The response a client gets: status, `edge-error`, `x-request-id`,
    /// `Retry-After` when retrying later helps, and a one-line explanation.
    pub fn to_response(
        &self,
        request_id: &str,
        retry_after_seconds: u64,
    ) -> Response<HyperOutgoingBody> {
        let body = format!(
            "{} {}: {self}\nrequest-id: {request_id}\n",
            self.status().as_u16(),
            self.status().canonical_reason().unwrap_or("")
        );
        let mut response = Response::new(
            Full::new(Bytes::from(body))
                .map_err(|never| match never {})
                .boxed_unsync(),
        );
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        headers.insert("edge-error", HeaderValue::from_static(self.code()));
        if let Ok(id) = HeaderValue::from_str(request_id) {
            headers.insert(REQUEST_ID, id);
        }
        if self.fault() == Fault::Capacity {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_seconds));
        }
        if self.fault() == Fault::Client {
            // The connection may hold the rest of a refused body: do not reuse it.
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

impl fmt::Display for EdgeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EdgeError::UnknownHost => write!(f, "no service is configured for this host"),
            EdgeError::MissingHost => write!(f, "the request has no Host header"),
            EdgeError::InvalidAuthority => write!(
                f,
                "the request's Host or :authority is not a valid host[:port]"
            ),
            EdgeError::HostMismatch => {
                write!(f, "the host header names another authority than :authority")
            }
            EdgeError::MisdirectedRequest => write!(
                f,
                "this connection was opened for another tenant's name; open one for this host"
            ),
            EdgeError::UriTooLong { limit } => write!(f, "the URI is longer than {limit} bytes"),
            EdgeError::TooManyHeaders { limit } => {
                write!(f, "the request has more than {limit} header fields")
            }
            EdgeError::BodyTooLarge { limit } => {
                write!(f, "the request body is larger than {limit} bytes")
            }
            EdgeError::BodyReadTimeout { limit_ms } => {
                write!(f, "the request body stalled: no bytes for {limit_ms} ms")
            }
            EdgeError::Overloaded => write!(f, "the node is at capacity; retry later"),
            EdgeError::TenantOverloaded => write!(
                f,
                "this tenant has too many requests in flight on this node; retry later"
            ),
            EdgeError::GuestTrap => write!(f, "the service's code failed"),
            EdgeError::CpuBudgetExceeded { budget_ms } => {
                write!(
                    f,
                    "the service's code used its CPU budget of {budget_ms} ms"
                )
            }
            EdgeError::WallTimeExceeded { limit_ms } => {
                write!(f, "the service's code did not answer within {limit_ms} ms")
            }
            EdgeError::MemoryLimitExceeded { limit_bytes } => {
                write!(
                    f,
                    "the service's code ran out of its {limit_bytes} bytes of memory"
                )
            }
            EdgeError::NoResponse => write!(f, "the service's code did not produce a response"),
            EdgeError::GuestError => write!(f, "the service's code answered with an error"),
            EdgeError::ResponseHeadersTooLarge {
                limit_count,
                limit_bytes,
            } => write!(
                f,
                "the service's response has more than {limit_count} header fields or {limit_bytes} header bytes"
            ),
            EdgeError::ModuleUnavailable => write!(f, "the service's code is not available"),
            EdgeError::Internal => write!(f, "internal error"),
        }
    }
}

impl std::error::Error for EdgeError {}
