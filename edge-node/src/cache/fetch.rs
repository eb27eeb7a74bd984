//! The read-through path: a guest's backend request through the cache.
//! A fresh stored response answers it; concurrent misses for one key make
//! one origin request (the first fills, the others wait for it); a stale
//! one is revalidated, in the background within `stale-while-revalidate`,
//! or served when the origin fails; what may be stored is stored; unsafe
//! methods go through and invalidate what they changed.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use dashmap::DashMap;
use edge_config::backend::BackendCache;
use http::request::Parts as RequestParts;
use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use http_cache_semantics::CachePolicy;
use tokio::sync::watch;
use wasmtime_wasi_http::{Error as WasiHttpError, WasiBody};

use super::body::{Collected, PrefixedBody, clone_parts, collect_up_to, empty_body, full};
use super::key::CacheKey;
use super::status::{CacheStatus, marked};
use super::stored::{StoredResponse, selects, served, viewed};
use super::upstream::Upstream;
use super::{HttpCache, Lookup, Outcome, Stale, policy};
use edge_platform::urls::normalize_url;

/// Whether this request fills the key or waits for another's fill.
enum Claim {
    Fill(FillGuard),
    Wait(watch::Receiver<()>),
}

/// Held by the request filling a key. Dropping it (after the response is
/// stored, or found not storable) wakes every request waiting on the key.
struct FillGuard {
    fills: Arc<DashMap<CacheKey, watch::Receiver<()>>>,
    key: CacheKey,
    _done: watch::Sender<()>,
}

impl Drop for FillGuard {
    fn drop(&mut self) {
        self.fills.remove(&self.key);
    }
}

impl HttpCache {
    /// Sends a guest's backend request through the cache. The response says
    /// what the cache did in a `Cache-Status` entry (RFC 9211) of its own,
    /// after the origin's.
    ///
    /// `mode` is the backend's `cache` setting; `origin` is where what the
    /// cache does not have comes from.
    pub async fn fetch<U: Upstream>(
        self: &Arc<Self>,
        namespace: &Arc<str>,
        mode: BackendCache,
        origin: &U,
        request: Request<WasiBody>,
    ) -> Result<Response<WasiBody>, WasiHttpError> {
        let mut response = self.fetch_through(namespace, mode, origin, request).await?;
        let status = response
            .extensions_mut()
            .remove::<CacheStatus>()
            .unwrap_or_default();
        status.append_to(response.headers_mut(), &self.status_name);
        Ok(response)
    }

    async fn fetch_through<U: Upstream>(
        self: &Arc<Self>,
        namespace: &Arc<str>,
        mode: BackendCache,
        origin: &U,
        request: Request<WasiBody>,
    ) -> Result<Response<WasiBody>, WasiHttpError> {
        let path = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
        let url = format!("{}{path}", origin.base_url());
        if !policy::is_safe(request.method()) {
            self.count(Outcome::Pass);
            let response = origin.send(request).await?;
            if response.status().is_success() || response.status().is_redirection() {
                self.invalidate_after_unsafe(
                    namespace,
                    origin.base_url(),
                    &url,
                    response.headers(),
                );
            }
            return Ok(marked(response, CacheStatus::forward("method")));
        }
        if mode == BackendCache::Off || request.method() != Method::GET {
            self.count(Outcome::Pass);
            let reason = if mode == BackendCache::Off {
                "bypass"
            } else {
                "method"
            };
            let response = origin.send(request).await?;
            return Ok(marked(response, CacheStatus::forward(reason)));
        }

        let key = CacheKey::http(namespace, &url);
        let (parts, body) = request.into_parts();
        // A request with credentials never waits on someone else's fill:
        // what it gets back may be meant for it alone.
        let mut waited = parts.headers.contains_key(header::AUTHORIZATION);
        let mut collapsed = false;
        loop {
            let now = SystemTime::now();
            let stale = match self.lookup(&key, &parts, now) {
                Lookup::Fresh(response, ttl) => {
                    let status = if collapsed {
                        self.count(Outcome::Collapsed);
                        CacheStatus {
                            collapsed: true,
                            ..CacheStatus::forward("miss")
                        }
                    } else {
                        self.count(Outcome::Hit);
                        CacheStatus::hit(ttl)
                    };
                    return Ok(marked(response, status));
                }
                Lookup::Stale(stale)
                    if stale.stored.staleness(now) <= stale.stored.stale.while_revalidate
                        && !stale.stored.stale.while_revalidate.is_zero()
                        && policy::request_accepts_stale(&parts.headers) =>
                {
                    self.revalidate_in_background(&key, &stale, &parts, origin);
                    self.count(Outcome::Stale);
                    self.count_bytes("served", stale.stored.body.len());
                    let status = CacheStatus::hit(stale.stored.ttl(now));
                    return Ok(marked(stale.stored.serve(now), status));
                }
                Lookup::Stale(stale) => Some(stale),
                Lookup::Miss => None,
            };
            let guard = if waited {
                None
            } else {
                match self.claim(&key) {
                    Claim::Fill(guard) => Some(guard),
                    Claim::Wait(mut done) => {
                        // Bounded by the time the fill itself may take to
                        // get its response head.
                        let bound = origin.head_deadline();
                        let _ = tokio::time::timeout(bound, done.changed()).await;
                        waited = true;
                        collapsed = true;
                        continue;
                    }
                }
            };
            return self.fill(key, guard, parts, body, stale, origin).await;
        }
    }

    fn claim(&self, key: &CacheKey) -> Claim {
        match self.fills.entry(key.clone()) {
            dashmap::Entry::Occupied(fill) => Claim::Wait(fill.get().clone()),
            dashmap::Entry::Vacant(slot) => {
                let (done, waiting) = watch::channel(());
                slot.insert(waiting);
                Claim::Fill(FillGuard {
                    fills: Arc::clone(&self.fills),
                    key: key.clone(),
                    _done: done,
                })
            }
        }
    }

    /// Goes to the origin for `key`: revalidating `stale` when there is one,
    /// storing what may be stored. `guard`, if held, is released when done.
    async fn fill<U: Upstream>(
        &self,
        key: CacheKey,
        guard: Option<FillGuard>,
        request: RequestParts,
        body: WasiBody,
        stale: Option<Stale>,
        origin: &U,
    ) -> Result<Response<WasiBody>, WasiHttpError> {
        let outgoing = match &stale {
            Some(stale) => {
                // The crate builds the revalidation without the request's
                // extensions: where its interim responses go is put back.
                let mut outgoing = clone_parts(&stale.revalidation);
                if let Some(sink) = request.extensions.get::<crate::interim::InterimSink>() {
                    outgoing.extensions.insert(sink.clone());
                }
                outgoing
            }
            None => clone_parts(&request),
        };
        let position = self.purges.position();
        let result = origin.send(Request::from_parts(outgoing, body)).await;
        let now = SystemTime::now();
        // Read only when there is something stale to serve.
        let accepts_stale = stale.is_some() && policy::request_accepts_stale(&request.headers);
        let serve_stale_on_error = |stale: &Option<Stale>, now: SystemTime| -> Option<Stale> {
            stale
                .as_ref()
                .filter(|s| {
                    accepts_stale
                        && !s.stored.stale.if_error.is_zero()
                        && s.stored.staleness(now) <= s.stored.stale.if_error
                })
                .cloned()
        };
        let served_stale = |stale: &Stale, fwd_status: Option<u16>| {
            self.count(Outcome::Stale);
            self.count_bytes("served", stale.stored.body.len());
            let status = CacheStatus {
                fwd_status,
                ttl: Some(stale.stored.ttl(now)),
                ..CacheStatus::forward("stale")
            };
            marked(stale.stored.serve(now), status)
        };
        let response = match result {
            Err(error) => {
                if policy::is_origin_failure(&error)
                    && let Some(stale) = serve_stale_on_error(&stale, now)
                {
                    return Ok(served_stale(&stale, None));
                }
                return Err(error);
            }
            Ok(response) => response,
        };
        if policy::is_error_status(response.status())
            && let Some(stale) = serve_stale_on_error(&stale, now)
        {
            return Ok(served_stale(&stale, Some(response.status().as_u16())));
        }

        if let Some(stale) = &stale
            && response.status() == StatusCode::NOT_MODIFIED
        {
            if selects(&stale.stored.headers, response.headers()) {
                let refreshed = stale.stored.refreshed(
                    &request,
                    response.headers(),
                    now,
                    self.default_stale_if_error,
                );
                let status = CacheStatus {
                    fwd_status: Some(304),
                    ttl: Some(refreshed.ttl(now)),
                    ..CacheStatus::forward("stale")
                };
                let served = marked(refreshed.serve(now), status);
                self.store(&key, &request, refreshed, Some(position));
                self.count(Outcome::Revalidated);
                self.count_bytes("served", stale.stored.body.len());
                drop(guard);
                return Ok(served);
            }
            // The 304 names another response than the one asked about:
            // a client that asked for no condition must still get a whole
            // response, so the origin is asked again without one.
            if !policy::is_conditional(&request) {
                let (plain, body) = (clone_parts(&request), empty_body());
                let response = origin.send(Request::from_parts(plain, body)).await?;
                return self
                    .keep_or_pass(key, guard, &request, response, position, now)
                    .await;
            }
        }
        self.keep_or_pass(key, guard, &request, response, position, now)
            .await
    }

    /// Stores the origin's `response` when it may be stored, and returns it
    /// for the client, without the edge's own cache directives.
    /// `position` is where the purge log stood when the request was sent.
    async fn keep_or_pass(
        &self,
        key: CacheKey,
        guard: Option<FillGuard>,
        request: &RequestParts,
        response: Response<WasiBody>,
        position: u64,
        now: SystemTime,
    ) -> Result<Response<WasiBody>, WasiHttpError> {
        let (mut parts, body) = response.into_parts();
        let view = viewed(parts.status, &parts.headers);
        policy::strip_targeted(&mut parts.headers);
        let response = Response::from_parts(parts, body);
        let policy = CachePolicy::new_options(request, &view, now, policy::options());
        if !policy::may_store(&policy, &view.headers, now) {
            self.count(Outcome::Pass);
            return Ok(marked(response, CacheStatus::forward("miss")));
        }
        let (parts, body) = response.into_parts();
        match collect_up_to(body, self.max_object_bytes).await? {
            Collected::Complete(bytes) => {
                let stored = StoredResponse::with_served(
                    policy,
                    parts.status,
                    &view.headers,
                    served(&parts.headers),
                    bytes.clone(),
                    self.default_stale_if_error,
                );
                let ttl = stored.ttl(now);
                let status = CacheStatus {
                    stored: self.store(&key, request, stored, Some(position)),
                    ttl: Some(ttl),
                    ..CacheStatus::forward("miss")
                };
                self.count(Outcome::Miss);
                drop(guard);
                Ok(marked(Response::from_parts(parts, full(bytes)), status))
            }
            Collected::TooLarge { prefix, rest } => {
                self.count(Outcome::Pass);
                Ok(marked(
                    Response::from_parts(parts, PrefixedBody::boxed(prefix, rest)),
                    CacheStatus::forward("miss"),
                ))
            }
        }
    }

    /// Refreshes a stale entry without making the current request wait.
    fn revalidate_in_background<U: Upstream>(
        self: &Arc<Self>,
        key: &CacheKey,
        stale: &Stale,
        request: &RequestParts,
        origin: &U,
    ) {
        if stale.stored.revalidating.swap(true, Ordering::AcqRel) {
            return;
        }
        let Claim::Fill(guard) = self.claim(key) else {
            return;
        };
        let cache = Arc::clone(self);
        let (key, stale, request, origin) = (
            key.clone(),
            stale.clone(),
            clone_parts(request),
            origin.clone(),
        );
        tokio::spawn(async move {
            let body = empty_body();
            let result = cache
                .fill(
                    key,
                    Some(guard),
                    request,
                    body,
                    Some(stale.clone()),
                    &origin,
                )
                .await;
            stale.stored.revalidating.store(false, Ordering::Release);
            if let Err(error) = result {
                tracing::debug!(%error, "background revalidation failed");
            }
        });
    }

    /// RFC 9111 4.4: a successful unsafe request invalidates the stored
    /// responses for its URL, and for the same-origin URLs in its
    /// `Location` and `Content-Location`.
    fn invalidate_after_unsafe(
        &self,
        namespace: &Arc<str>,
        base_url: &str,
        url: &str,
        headers: &HeaderMap,
    ) {
        self.entries.invalidate(&CacheKey::http(namespace, url));
        for name in [header::LOCATION, header::CONTENT_LOCATION] {
            let Some(location) = headers.get(name).and_then(|v| v.to_str().ok()) else {
                continue;
            };
            let target = if location.starts_with('/') {
                format!("{base_url}{location}")
            } else {
                location.to_string()
            };
            if normalize_url(&target).is_some_and(|t| t.starts_with(&format!("{base_url}/"))) {
                self.entries
                    .invalidate(&CacheKey::http_normalizing(namespace, &target));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use bytes::Bytes;
    use edge_config::CacheLimits;

    use super::super::body::{empty_body, full};
    use super::super::testing::body_bytes;
    use super::*;
    use crate::metrics::Metrics;

    /// Status, `Cache-Control`, body.
    type Answer = (u16, &'static str, &'static str);

    /// An origin that answers from a script and counts what it is asked.
    #[derive(Clone)]
    struct Scripted {
        asked: Arc<AtomicUsize>,
        /// In order; the last one repeats.
        answers: Arc<Mutex<Vec<Answer>>>,
        delay: Duration,
    }

    impl Scripted {
        fn new(answers: &[Answer]) -> Self {
            Self {
                asked: Arc::default(),
                answers: Arc::new(Mutex::new(answers.iter().rev().copied().collect())),
                delay: Duration::ZERO,
            }
        }

        fn asked(&self) -> usize {
            self.asked.load(Ordering::SeqCst)
        }
    }

    impl Upstream for Scripted {
        fn base_url(&self) -> &str {
            "https://origin.example"
        }

        fn head_deadline(&self) -> Duration {
            Duration::from_secs(5)
        }

        async fn send(&self, _: Request<WasiBody>) -> Result<Response<WasiBody>, WasiHttpError> {
            self.asked.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(self.delay).await;
            let (status, cache_control, body) = {
                let mut answers = self.answers.lock().expect("script");
                if answers.len() > 1 {
                    answers.pop()
                } else {
                    answers.last().copied()
                }
            }
            .expect("a scripted answer");
            Ok(Response::builder()
                .status(status)
                .header(header::CACHE_CONTROL, cache_control)
                .header(header::DATE, httpdate::fmt_http_date(SystemTime::now()))
                .body(full(Bytes::from_static(body.as_bytes())))
                .expect("response"))
        }
    }

    fn cache() -> Arc<HttpCache> {
        let metrics = Arc::new(Metrics::new(&edge_config::MetricsSection::default()));
        Arc::new(HttpCache::new(&CacheLimits::default(), metrics))
    }

    /// The body and the cache's own `Cache-Status` entry.
    async fn fetch(
        cache: &Arc<HttpCache>,
        origin: &Scripted,
        method: Method,
        mode: BackendCache,
    ) -> (StatusCode, String, String) {
        let namespace: Arc<str> = "tenant".into();
        let request = Request::builder()
            .method(method)
            .uri("http://origin/page")
            .body(empty_body())
            .expect("request");
        let response = cache
            .fetch(&namespace, mode, origin, request)
            .await
            .expect("answered");
        let status = response.status();
        let cache_status = response
            .headers()
            .get_all("cache-status")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join(", ");
        let body = body_bytes(response).await;
        (
            status,
            String::from_utf8_lossy(&body).into_owned(),
            cache_status,
        )
    }

    const GET: Method = Method::GET;
    const ON: BackendCache = BackendCache::Http;

    #[tokio::test]
    async fn a_fresh_response_is_served_without_asking_the_origin_again() {
        let (cache, origin) = (cache(), Scripted::new(&[(200, "max-age=60", "one")]));
        let (_, body, status) = fetch(&cache, &origin, GET, ON).await;
        assert_eq!(body, "one");
        assert!(status.contains("fwd=miss; stored"), "{status}");
        let (_, body, status) = fetch(&cache, &origin, GET, ON).await;
        assert_eq!((body.as_str(), origin.asked()), ("one", 1));
        assert!(status.contains("edge; hit"), "{status}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_misses_for_one_url_ask_the_origin_once() {
        let cache = cache();
        let mut origin = Scripted::new(&[(200, "max-age=60", "shared")]);
        origin.delay = Duration::from_millis(100);
        let requests = (0..8).map(|_| fetch(&cache, &origin, GET, ON));
        let answers = futures::future::join_all(requests).await;
        assert!(answers.iter().all(|(_, body, _)| body == "shared"));
        assert_eq!(origin.asked(), 1, "one fill; the others waited for it");
    }

    #[tokio::test]
    async fn a_stale_response_is_served_while_the_origin_fails() {
        let cache = cache();
        let origin = Scripted::new(&[
            (200, "max-age=1, stale-if-error=60", "kept"),
            (503, "no-store", "down"),
        ]);
        let (_, _, first) = fetch(&cache, &origin, GET, ON).await;
        assert!(first.contains("stored"), "{first}");
        // Past its freshness (Age counts whole seconds).
        tokio::time::sleep(Duration::from_millis(2_100)).await;
        let (status, body, cache_status) = fetch(&cache, &origin, GET, ON).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "kept"));
        assert!(
            cache_status.contains("fwd=stale; fwd-status=503"),
            "{cache_status}"
        );
        assert_eq!(origin.asked(), 2);
    }

    #[tokio::test]
    async fn an_unsafe_request_invalidates_the_stored_url() {
        let (cache, origin) = (cache(), Scripted::new(&[(200, "max-age=60", "v")]));
        fetch(&cache, &origin, GET, ON).await;
        let (_, _, status) = fetch(&cache, &origin, Method::POST, ON).await;
        assert!(status.contains("fwd=method"), "{status}");
        let (_, _, status) = fetch(&cache, &origin, GET, ON).await;
        assert!(status.contains("fwd=miss"), "{status}");
        assert_eq!(
            origin.asked(),
            3,
            "the GET after the POST went to the origin"
        );
    }

    #[tokio::test]
    async fn a_backend_with_the_cache_off_always_asks_the_origin() {
        let (cache, origin) = (cache(), Scripted::new(&[(200, "max-age=60", "v")]));
        for _ in 0..3 {
            let (_, _, status) = fetch(&cache, &origin, GET, BackendCache::Off).await;
            assert!(status.contains("fwd=bypass"), "{status}");
        }
        assert_eq!(origin.asked(), 3);
    }
}
