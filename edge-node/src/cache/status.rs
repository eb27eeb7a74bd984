//! `Cache-Status` (RFC 9211): what the cache did with one request, written
//! after any entry the origin's own caches wrote.

use http::{HeaderMap, HeaderValue, Response, header};
use wasmtime_wasi_http::WasiBody;

/// `Cache-Status` (RFC 9211).
pub const CACHE_STATUS: header::HeaderName = header::HeaderName::from_static("cache-status");

/// What the cache did with one request, for its `Cache-Status` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheStatus {
    pub(super) hit: bool,
    /// Why the request went forward to the origin: `miss`, `stale`
    /// (revalidation), `method`, `bypass` (the backend's cache is off).
    pub(super) fwd: Option<&'static str>,
    pub(super) fwd_status: Option<u16>,
    pub(super) stored: bool,
    pub(super) collapsed: bool,
    pub(super) ttl: Option<i64>,
}

impl CacheStatus {
    pub(super) fn hit(ttl: i64) -> Self {
        Self {
            hit: true,
            ttl: Some(ttl),
            ..Self::default()
        }
    }

    pub fn forward(reason: &'static str) -> Self {
        Self {
            fwd: Some(reason),
            ..Self::default()
        }
    }

    /// Appends this entry under the cache's `name` to `headers`, after
    /// any entry already there.
    pub(super) fn append_to(&self, headers: &mut HeaderMap, name: &str) {
        if let Ok(value) = HeaderValue::from_str(&self.entry(name)) {
            headers.append(CACHE_STATUS, value);
        }
    }

    /// `edge; hit; ttl=55` or `edge; fwd=miss; stored; ttl=60`.
    pub(super) fn entry(&self, name: &str) -> String {
        use std::fmt::Write as _;
        let mut entry = String::with_capacity(name.len() + 40);
        entry.push_str(name);
        if self.hit {
            entry.push_str("; hit");
        }
        if let Some(fwd) = self.fwd {
            entry.push_str("; fwd=");
            entry.push_str(fwd);
        }
        if let Some(status) = self.fwd_status {
            let _ = write!(entry, "; fwd-status={status}");
        }
        if self.stored {
            entry.push_str("; stored");
        }
        if self.collapsed {
            entry.push_str("; collapsed");
        }
        if let Some(ttl) = self.ttl {
            let _ = write!(entry, "; ttl={ttl}");
        }
        entry
    }
}

/// `response`, carrying what the cache did until `fetch` writes it out.
pub(super) fn marked(mut response: Response<WasiBody>, status: CacheStatus) -> Response<WasiBody> {
    response.extensions_mut().insert(status);
    response
}
