//! API errors: JSON with a stable machine-readable `code` and a message for
//! people. Internal failures are logged with their context and answered with
//! a generic 500 that leaks nothing.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::store::StoreError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Sent as `Retry-After` (429: a rate or concurrency bound).
    pub retry_after_seconds: Option<u64>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: &'a str,
    message: &'a str,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after_seconds: None,
        }
    }

    /// 429 `rate_limited`: retrying after `retry_after` helps.
    pub fn rate_limited(message: impl Into<String>, retry_after: std::time::Duration) -> Self {
        Self {
            retry_after_seconds: Some((retry_after.as_secs_f64().ceil() as u64).max(1)),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
        }
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid token is required (Authorization: Bearer <token>)",
        )
    }

    pub fn not_found(what: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// Refuses `name` (of a tenant, a service, a token's label) unless it
    /// is a valid service name: 400 `invalid_name`, naming `field`.
    pub fn check_name(field: &str, name: &str) -> Result<(), Self> {
        edge_config::validate::validate_service_name(name)
            .map_err(|message| Self::bad_request("invalid_name", format!("{field}: {message}")))
    }

    pub fn internal(context: &str, error: &dyn std::fmt::Display) -> Self {
        tracing::error!(%error, "{context}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; the control plane's log has the details",
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Conflict(what) => Self::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("{what} already exists"),
            ),
            StoreError::DomainConflict(message) => {
                Self::new(StatusCode::CONFLICT, "domain_conflict", message)
            }
            StoreError::InvalidSpec(message) => {
                Self::new(StatusCode::BAD_REQUEST, "invalid_spec", message)
            }
            StoreError::NoSuchStore => Self::not_found("KV store"),
            StoreError::KvConflict(message) => Self::new(
                StatusCode::PRECONDITION_FAILED,
                "precondition_failed",
                message,
            ),
            StoreError::KvQuota(message) => {
                Self::new(StatusCode::BAD_REQUEST, "quota_exceeded", message)
            }
            StoreError::KvInvalid(message) => {
                Self::new(StatusCode::BAD_REQUEST, "invalid_kv", message)
            }
            StoreError::Rollout(message) => Self::new(StatusCode::CONFLICT, "rollout", message),
            other => Self::internal("database", &other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: &self.message,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after_seconds {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
