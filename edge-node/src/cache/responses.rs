//! Guests' own responses, cached at the edge: a response whose headers let
//! a shared cache keep it (`public`, `s-maxage` or `max-age`, no `private`,
//! no `no-store`, no `Set-Cookie`; RFC 9111 through the same policy as
//! backend responses) is served to the next request for the same URL
//! without running the guest. Entries live in the tenant's namespace under
//! the public URL (`https://<host><path>`), in a key space of their own (an
//! origin's response for the same URL is not the guest's); purges by URL and
//! by surrogate key reach them like any other.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::request::Parts as RequestParts;
use http::{HeaderMap, Method, Response, StatusCode, header};
use http_cache_semantics::CachePolicy;
use wasmtime_wasi_http::WasiBody;

use super::{CacheKey, CacheStatus, HttpCache, Lookup, StoredResponse, policy};

/// The key URL of a request to a service: its public URL, normalized.
pub fn public_url(request: &RequestParts) -> Option<String> {
    let host = match request.uri.authority() {
        Some(authority) => authority.as_str(),
        None => request.headers.get(header::HOST)?.to_str().ok()?,
    };
    let path = request.uri.path_and_query().map_or("/", |pq| pq.as_str());
    edge_platform::urls::normalize_url(&format!("https://{host}{path}"))
}

/// Whether a guest's response is worth collecting to store: a GET answered
/// with explicit freshness and a known, small enough length.
pub fn worth_storing(method: &Method, headers: &HeaderMap, max_bytes: usize) -> bool {
    let explicit = [
        header::CACHE_CONTROL,
        header::EXPIRES,
        policy::CDN_CACHE_CONTROL,
        policy::SURROGATE_CONTROL,
    ];
    method == Method::GET
        && explicit.iter().any(|name| headers.contains_key(name))
        && !headers.contains_key(header::SET_COOKIE)
        && headers
            .get(header::CONTENT_LENGTH)
            .and_then(|length| length.to_str().ok()?.parse::<usize>().ok())
            .is_some_and(|length| length <= max_bytes)
}

impl HttpCache {
    /// A fresh stored response of one of `namespace`'s services for this
    /// request, with its `Age`.
    pub fn stored_guest_response(
        &self,
        namespace: &Arc<str>,
        url: &str,
        request: &RequestParts,
    ) -> Option<Response<WasiBody>> {
        if request.method != Method::GET && request.method != Method::HEAD {
            return None;
        }
        match self.lookup(&CacheKey::front(namespace, url), request, SystemTime::now()) {
            Lookup::Fresh(mut response, ttl) => {
                self.mark_for_client(response.headers_mut(), &CacheStatus::hit(ttl));
                Some(response)
            }
            Lookup::Stale(_) | Lookup::Miss => None,
        }
    }

    /// Drops what is stored for `url`: a successful unsafe request to it
    /// (RFC 9111 section 4.4).
    pub fn invalidate_guest_url(&self, namespace: &Arc<str>, url: &str) {
        self.entries.invalidate(&CacheKey::front(namespace, url));
    }

    /// Where the purge log stands: taken before a guest runs, so that a
    /// response it made before a purge is not stored after it.
    pub fn purge_position(&self) -> u64 {
        self.purges.position()
    }

    /// Stores a guest's response if its headers allow a shared cache to
    /// and no purge reached it since `purge_position`. Returns what the
    /// cache did, for [`HttpCache::mark_for_client`].
    #[allow(clippy::too_many_arguments)]
    pub fn store_guest_response(
        &self,
        namespace: &Arc<str>,
        url: &str,
        request: &RequestParts,
        status: StatusCode,
        headers: &HeaderMap,
        body: Bytes,
        purge_position: u64,
    ) -> CacheStatus {
        let not_stored = CacheStatus::forward("miss");
        if body.len() > self.max_object_bytes {
            return not_stored;
        }
        let view = super::viewed(status, headers);
        let now = SystemTime::now();
        let policy = CachePolicy::new_options(request, &view, now, policy::options());
        if !policy::may_store(&policy, &view.headers, now) {
            return not_stored;
        }
        // Never served stale (the guest runs instead): no stale-if-error
        // default to keep it for.
        let stored = StoredResponse::new(policy, status, headers, body, Duration::ZERO);
        let ttl = stored.ttl(now);
        CacheStatus {
            stored: self.store(
                &CacheKey::front(namespace, url),
                request,
                stored,
                Some(purge_position),
            ),
            ttl: Some(ttl),
            ..not_stored
        }
    }

    /// What a guest's response through the edge cache tells its client:
    /// not the edge's own directives (RFC 9213), and what the cache did
    /// (RFC 9211), after any entry the guest wrote.
    pub fn mark_for_client(&self, headers: &mut HeaderMap, status: &CacheStatus) {
        policy::strip_targeted(headers);
        status.append_to(headers, &self.status_name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache() -> HttpCache {
        let metrics = Arc::new(crate::metrics::Metrics::new(&Default::default()));
        HttpCache::new(&Default::default(), metrics)
    }

    fn get(url: &str) -> RequestParts {
        http::Request::get(url)
            .body(())
            .expect("valid request")
            .into_parts()
            .0
    }

    fn public_headers() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CACHE_CONTROL,
            http::HeaderValue::from_static("public, max-age=60"),
        );
        headers
    }

    /// A backend whose `host_header` is the public domain gives its
    /// responses the guest's public URL: they must not answer for the
    /// guest, nor the guest's for the backend.
    #[test]
    fn an_origins_response_is_never_served_as_the_guests_own() {
        let cache = cache();
        let namespace: Arc<str> = "tenant".into();
        let url = "https://edge.test/secret";
        let request = get(url);
        let mut origin_response = Response::new(());
        *origin_response.headers_mut() = public_headers();
        let policy = CachePolicy::new_options(
            &request,
            &origin_response,
            SystemTime::now(),
            policy::options(),
        );
        let stored = StoredResponse::new(
            policy,
            StatusCode::OK,
            &public_headers(),
            Bytes::from_static(b"origin"),
            Duration::ZERO,
        );
        cache.store(&CacheKey::http(&namespace, url), &request, stored, None);
        assert!(
            cache
                .stored_guest_response(&namespace, url, &request)
                .is_none(),
            "the origin's entry answered for the guest"
        );

        let status = cache.store_guest_response(
            &namespace,
            url,
            &request,
            StatusCode::OK,
            &public_headers(),
            Bytes::from_static(b"guest"),
            cache.purge_position(),
        );
        assert!(status.stored);
        assert!(
            cache
                .stored_guest_response(&namespace, url, &request)
                .is_some()
        );
        // A purge by URL reaches both.
        assert_eq!(
            cache.purge_url("tenant", url, super::super::PurgeMode::Hard),
            2
        );
        assert!(
            cache
                .stored_guest_response(&namespace, url, &request)
                .is_none()
        );
    }
}
