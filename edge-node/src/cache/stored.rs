//! A response kept for reuse, and what it answers: the whole response with
//! its `Age`, a 304 to the request's own conditions, one byte range; how a
//! 304 from the origin refreshes it, and how a soft purge marks it stale.

use std::sync::atomic::AtomicBool;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use edge_config::limits::CACHE_MAX_SURROGATE_KEYS;
use http::request::Parts as RequestParts;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use http_cache_semantics::{BeforeRequest, CachePolicy};
use wasmtime_wasi_http::WasiBody;

use super::body::{clone_parts, full};
use super::policy::{self, StaleAllowance};

/// A stored response that can be revalidated is kept this long past the end
/// of its freshness (and stale allowances): a conditional request that
/// comes back 304 saves sending the body again.
pub const REVALIDATABLE_KEEP: Duration = Duration::from_secs(3600);
/// Bytes each entry is charged on top of its body and headers.
pub(super) const ENTRY_OVERHEAD_BYTES: usize = 256;

/// A backend response kept for reuse.
#[derive(Debug)]
pub(super) struct StoredResponse {
    pub(super) policy: CachePolicy,
    /// The response headers as the cache reads them ([`policy::policy_view`]
    /// of what was received, or as updated by a 304).
    pub(super) headers: HeaderMap,
    /// What a hit serves, plus `Age`: the headers as received, without
    /// hop-by-hop fields or the edge's own cache directives.
    pub(super) served_headers: HeaderMap,
    /// Whether the response has a `Vary` header.
    pub(super) varies: bool,
    pub(super) status: StatusCode,
    pub(super) body: Bytes,
    /// Freshness lifetime, measured from the response's age of zero.
    pub(super) freshness: Duration,
    pub(super) stale: StaleAllowance,
    pub(super) surrogate_keys: Vec<String>,
    /// When a soft purge marked it stale: it is never fresh again, and its
    /// staleness counts from then at the latest. A 304 or a new response
    /// replaces it.
    pub(super) soft_purged_at: Option<SystemTime>,
    /// Set while a background revalidation runs, so that one runs at a time.
    pub(super) revalidating: AtomicBool,
    pub(super) weight: usize,
}

impl StoredResponse {
    /// `headers` as received; the policy was made from their view.
    /// `default_if_error` is the platform's `stale-if-error` for a response
    /// that gives none.
    pub(super) fn new(
        policy: CachePolicy,
        status: StatusCode,
        received: &HeaderMap,
        body: Bytes,
        default_if_error: Duration,
    ) -> Self {
        let served_headers = served(received);
        Self::with_served(
            policy,
            status,
            received,
            served_headers,
            body,
            default_if_error,
        )
    }

    pub(super) fn with_served(
        policy: CachePolicy,
        status: StatusCode,
        received: &HeaderMap,
        served_headers: HeaderMap,
        body: Bytes,
        default_if_error: Duration,
    ) -> Self {
        let headers = policy::policy_view(received);
        let now = SystemTime::now();
        let freshness = policy.time_to_live(now) + policy.age(now);
        let header_bytes: usize = headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len())
            .sum();
        Self {
            varies: headers.contains_key(header::VARY),
            served_headers,
            stale: StaleAllowance::from_headers(&headers, default_if_error),
            surrogate_keys: policy::surrogate_keys(&headers, CACHE_MAX_SURROGATE_KEYS),
            weight: body.len() + header_bytes + ENTRY_OVERHEAD_BYTES,
            policy,
            headers,
            status,
            body,
            freshness,
            soft_purged_at: None,
            revalidating: AtomicBool::new(false),
        }
    }

    /// This response marked stale by a soft purge at `now` (or still at the
    /// first soft purge that marked it).
    pub(super) fn soft_purged(&self, now: SystemTime) -> Self {
        Self {
            policy: self.policy.clone(),
            headers: self.headers.clone(),
            served_headers: self.served_headers.clone(),
            varies: self.varies,
            status: self.status,
            body: self.body.clone(),
            freshness: self.freshness,
            stale: self.stale,
            surrogate_keys: self.surrogate_keys.clone(),
            soft_purged_at: self.soft_purged_at.or(Some(now)),
            revalidating: AtomicBool::new(false),
            weight: self.weight,
        }
    }

    /// Whether the crate's freshness may decide a hit: not once soft-purged.
    pub(super) fn may_be_fresh(&self) -> bool {
        self.soft_purged_at.is_none()
    }

    /// The crate's decision for `request`. A soft-purged response is never
    /// fresh: it is asked as if the request carried `Pragma: no-cache`,
    /// which makes the crate build the same conditional request it builds
    /// for a stale response, and the request's own `Pragma` is put back.
    pub(super) fn before_request(&self, request: &RequestParts, now: SystemTime) -> BeforeRequest {
        if self.may_be_fresh() {
            return self.policy.before_request(request, now);
        }
        let mut probe = clone_parts(request);
        probe
            .headers
            .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        match self.policy.before_request(&probe, now) {
            BeforeRequest::Stale {
                request: mut revalidation,
                matches,
            } => {
                revalidation.headers.remove(header::PRAGMA);
                for value in request.headers.get_all(header::PRAGMA) {
                    revalidation.headers.append(header::PRAGMA, value.clone());
                }
                BeforeRequest::Stale {
                    request: revalidation,
                    matches,
                }
            }
            fresh @ BeforeRequest::Fresh(_) => fresh,
        }
    }

    /// This response updated by a 304 that selected it (RFC 9111 4.3.4):
    /// the 304's fields replace the stored ones, but for those that
    /// describe the stored body.
    pub(super) fn refreshed(
        &self,
        request: &RequestParts,
        not_modified: &HeaderMap,
        now: SystemTime,
        default_if_error: Duration,
    ) -> Self {
        let mut received = self.served_headers.clone();
        let mut served_headers = self.served_headers.clone();
        for name in not_modified.keys() {
            if KEPT_ON_REVALIDATION.contains(name) {
                continue;
            }
            for headers in [&mut received, &mut served_headers] {
                headers.remove(name);
                for value in not_modified.get_all(name) {
                    headers.append(name.clone(), value.clone());
                }
            }
        }
        // The edge's own directives count for the cache, not for clients.
        for name in [policy::CDN_CACHE_CONTROL, policy::SURROGATE_CONTROL] {
            if let Some(value) = not_modified.get(&name).or_else(|| self.headers.get(&name)) {
                received.insert(name, value.clone());
            }
        }
        crate::backend::client::remove_hop_by_hop(&mut served_headers);
        policy::strip_targeted(&mut served_headers);
        let view = Response::builder()
            .status(self.status)
            .body(())
            .map(|response| {
                let (mut parts, ()) = response.into_parts();
                parts.headers = policy::policy_view(&received);
                parts
            });
        let policy = match view {
            Ok(parts) => CachePolicy::new_options(request, &parts, now, policy::options()),
            Err(_) => self.policy.clone(),
        };
        Self::with_served(
            policy,
            self.status,
            &received,
            served_headers,
            self.body.clone(),
            default_if_error,
        )
    }

    /// RFC 9211 `ttl`: seconds of freshness left, negative once stale.
    pub(super) fn ttl(&self, now: SystemTime) -> i64 {
        if self.may_be_fresh() {
            self.ttl_at(self.policy.age(now))
        } else {
            -i64::try_from(self.staleness(now).as_secs()).unwrap_or(i64::MAX)
        }
    }

    pub(super) fn ttl_at(&self, age: Duration) -> i64 {
        i64::try_from(self.freshness.as_secs())
            .unwrap_or(i64::MAX)
            .saturating_sub(i64::try_from(age.as_secs()).unwrap_or(i64::MAX))
    }

    /// Time past freshness (or since a soft purge, if that is longer), zero
    /// while fresh.
    pub(super) fn staleness(&self, now: SystemTime) -> Duration {
        let by_age = self.policy.age(now).saturating_sub(self.freshness);
        match self.soft_purged_at {
            Some(at) => by_age.max(now.duration_since(at).unwrap_or_default()),
            None => by_age,
        }
    }

    pub(super) fn usable_for(&self, now: SystemTime) -> Duration {
        let stale_use = self.stale.while_revalidate.max(self.stale.if_error);
        let keep = if policy::has_validator(&self.headers) {
            REVALIDATABLE_KEEP.max(stale_use)
        } else {
            stale_use
        };
        let fresh_left = if self.may_be_fresh() {
            self.freshness.saturating_sub(self.policy.age(now))
        } else {
            Duration::ZERO
        };
        (fresh_left + keep).saturating_sub(self.staleness(now))
    }

    /// Whether this variant is the one `request` selects (same `Vary`ing
    /// request headers), fresh or not.
    pub(super) fn selected_by(&self, request: &RequestParts, now: SystemTime) -> bool {
        match self.before_request(request, now) {
            BeforeRequest::Fresh(_) => true,
            BeforeRequest::Stale { matches, .. } => matches,
        }
    }

    /// What a fresh stored response answers `request` with, without the
    /// origin: 304 when the request's own conditions say the client's copy
    /// is current, 206 (or 416) for one byte range of a 200, else the
    /// whole response.
    pub(super) fn answer(
        &self,
        request: &RequestParts,
        now: SystemTime,
    ) -> (Response<WasiBody>, i64) {
        let age = self.policy.age(now);
        (self.answer_aged(request, age), self.ttl_at(age))
    }

    pub(super) fn answer_aged(&self, request: &RequestParts, age: Duration) -> Response<WasiBody> {
        if policy::not_modified(request, &self.served_headers) {
            let mut response = self.serve_aged(age);
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            *response.body_mut() = full(Bytes::new());
            for name in [header::CONTENT_LENGTH, header::CONTENT_RANGE] {
                response.headers_mut().remove(name);
            }
            return response;
        }
        if self.status != StatusCode::OK {
            return self.serve_aged(age);
        }
        let len = self.body.len() as u64;
        match policy::byte_range(request, &self.served_headers, len) {
            None => self.serve_aged(age),
            Some(Ok((first, last))) => {
                let mut response = self.serve_aged(age);
                *response.status_mut() = StatusCode::PARTIAL_CONTENT;
                // Bounded by the body's length above.
                let slice = self.body.slice(first as usize..=last as usize);
                let headers = response.headers_mut();
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(slice.len()));
                if let Ok(range) = HeaderValue::from_str(&format!("bytes {first}-{last}/{len}")) {
                    headers.insert(header::CONTENT_RANGE, range);
                }
                *response.body_mut() = full(slice);
                response
            }
            Some(Err(())) => {
                let mut response = self.serve_aged(age);
                *response.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
                *response.body_mut() = full(Bytes::new());
                let headers = response.headers_mut();
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
                if let Ok(range) = HeaderValue::from_str(&format!("bytes */{len}")) {
                    headers.insert(header::CONTENT_RANGE, range);
                }
                response
            }
        }
    }

    /// The stored response with its current `Age`.
    pub(super) fn serve(&self, now: SystemTime) -> Response<WasiBody> {
        self.serve_aged(self.policy.age(now))
    }

    /// The stored response with `Age: age`.
    pub(super) fn serve_aged(&self, age: Duration) -> Response<WasiBody> {
        let mut response = Response::new(full(self.body.clone()));
        *response.status_mut() = self.status;
        *response.headers_mut() = self.served_headers.clone();
        response
            .headers_mut()
            .insert(header::AGE, HeaderValue::from(age.as_secs()));
        response
    }
}

/// Fields a 304 does not replace in a stored response: they describe the
/// stored body, not the 304's.
pub(super) const KEPT_ON_REVALIDATION: [header::HeaderName; 5] = [
    header::CONTENT_LENGTH,
    header::CONTENT_ENCODING,
    header::TRANSFER_ENCODING,
    header::CONTENT_RANGE,
    header::CONTENT_TYPE,
];

/// What a hit serves of `received`: no hop-by-hop fields, none of the
/// edge's own cache directives.
pub(super) fn served(received: &HeaderMap) -> HeaderMap {
    let mut served = received.clone();
    crate::backend::client::remove_hop_by_hop(&mut served);
    policy::strip_targeted(&mut served);
    served
}

/// RFC 9111 4.3.4: whether a 304 to the cache's conditional request
/// selects the stored response the request's validators came from. A
/// validator in the 304 must be the stored one's (weakly compared); a 304
/// with none selects it, since there is one stored response the conditions
/// were made from (the crate wants the stored response to lack validators
/// too, and would hand on the 304 itself).
pub(super) fn selects(stored: &HeaderMap, not_modified: &HeaderMap) -> bool {
    let text = |headers: &HeaderMap, name: header::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_string())
    };
    let etag = |headers: &HeaderMap| {
        text(headers, header::ETAG).map(|e| e.trim_start_matches("W/").to_string())
    };
    match etag(not_modified) {
        Some(new) => etag(stored).as_deref() == Some(new.as_str()),
        None => match text(not_modified, header::LAST_MODIFIED) {
            Some(new) => text(stored, header::LAST_MODIFIED).as_deref() == Some(new.as_str()),
            None => true,
        },
    }
}

/// A response with `headers` as the cache reads them, for the crate.
pub(super) fn viewed(status: StatusCode, headers: &HeaderMap) -> http::response::Parts {
    let (mut parts, ()) = Response::new(()).into_parts();
    parts.status = status;
    parts.headers = policy::policy_view(headers);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::testing::{body_bytes, header_map};

    fn request(headers: &[(&str, &str)]) -> RequestParts {
        let mut builder = http::Request::get("http://origin.test/page");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).expect("request").into_parts().0
    }

    /// A 200 stored now for a plain GET, with `headers` as received.
    fn stored(headers: &[(&str, &str)], body: &'static [u8]) -> StoredResponse {
        let received = header_map(headers);
        let view = viewed(StatusCode::OK, &received);
        let policy =
            CachePolicy::new_options(&request(&[]), &view, SystemTime::now(), policy::options());
        StoredResponse::new(
            policy,
            StatusCode::OK,
            &received,
            Bytes::from_static(body),
            Duration::from_secs(60),
        )
    }

    #[tokio::test]
    async fn a_fresh_response_answers_conditions_and_ranges_itself() {
        let page = stored(
            &[
                ("cache-control", "max-age=60"),
                ("etag", "\"v1\""),
                ("cdn-cache-control", "max-age=600"),
            ],
            b"0123456789",
        );
        let now = SystemTime::now();
        let (whole, ttl) = page.answer(&request(&[]), now);
        assert_eq!(whole.status(), StatusCode::OK);
        assert_eq!(ttl, 600, "CDN-Cache-Control decides for the edge");
        assert!(whole.headers().get("cdn-cache-control").is_none());
        assert_eq!(
            whole.headers().get(header::AGE).map(|a| a.as_bytes()),
            Some(&b"0"[..])
        );
        assert_eq!(body_bytes(whole).await, b"0123456789");

        let (current, _) = page.answer(&request(&[("if-none-match", "W/\"v1\"")]), now);
        assert_eq!(current.status(), StatusCode::NOT_MODIFIED);
        assert!(body_bytes(current).await.is_empty());

        let (part, _) = page.answer(&request(&[("range", "bytes=2-4")]), now);
        assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(
            part.headers()
                .get(header::CONTENT_RANGE)
                .map(|v| v.as_bytes()),
            Some(&b"bytes 2-4/10"[..])
        );
        assert_eq!(body_bytes(part).await, b"234");

        let (outside, _) = page.answer(&request(&[("range", "bytes=20-")]), now);
        assert_eq!(outside.status(), StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(
            outside
                .headers()
                .get(header::CONTENT_RANGE)
                .map(|v| v.as_bytes()),
            Some(&b"bytes */10"[..])
        );
    }

    #[test]
    fn a_304_refreshes_the_fields_but_those_of_the_stored_body() {
        let page = stored(
            &[
                ("cache-control", "max-age=0"),
                ("etag", "\"v1\""),
                ("content-type", "text/html"),
                ("x-version", "1"),
            ],
            b"page",
        );
        let not_modified = header_map(&[
            ("cache-control", "max-age=120"),
            ("content-type", "text/plain"),
            ("x-version", "2"),
        ]);
        assert!(
            selects(&page.headers, &not_modified),
            "no validator: selects"
        );
        assert!(selects(&page.headers, &header_map(&[("etag", "W/\"v1\"")])));
        assert!(!selects(&page.headers, &header_map(&[("etag", "\"v2\"")])));

        let now = SystemTime::now();
        let refreshed = page.refreshed(&request(&[]), &not_modified, now, Duration::ZERO);
        assert_eq!(refreshed.ttl(now), 120);
        let served = refreshed.serve(now);
        assert_eq!(
            served.headers().get("x-version").map(|v| v.as_bytes()),
            Some(&b"2"[..])
        );
        assert_eq!(
            served
                .headers()
                .get(header::CONTENT_TYPE)
                .map(|v| v.as_bytes()),
            Some(&b"text/html"[..]),
            "describes the stored body"
        );
    }

    #[test]
    fn a_soft_purged_response_is_stale_from_the_purge_and_kept_for_its_stale_uses() {
        let page = stored(&[("cache-control", "max-age=300")], b"page");
        let now = SystemTime::now();
        assert!(page.may_be_fresh());
        assert!(page.usable_for(now) > Duration::from_secs(300));

        let purged = page.soft_purged(now);
        assert!(!purged.may_be_fresh());
        let later = now + Duration::from_secs(10);
        assert_eq!(purged.staleness(later), Duration::from_secs(10));
        assert_eq!(purged.ttl(later), -10);
        // No validator: kept only for the default stale-if-error (60 s).
        assert_eq!(purged.usable_for(later), Duration::from_secs(50));
        // The crate is asked as if the request said `Pragma: no-cache`: a
        // revalidation, without the probe's header.
        match purged.before_request(&request(&[]), later) {
            BeforeRequest::Stale { request, matches } => {
                assert!(matches);
                assert!(request.headers.get(header::PRAGMA).is_none());
            }
            BeforeRequest::Fresh(_) => panic!("a soft-purged response served fresh"),
        }
        // A second soft purge does not move the first one's time.
        assert_eq!(
            purged.soft_purged(later).staleness(later),
            Duration::from_secs(10)
        );
    }
}
