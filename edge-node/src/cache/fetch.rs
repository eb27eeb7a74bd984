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
use super::{HttpCache, Lookup, Outcome, Stale, policy};
use crate::backend::{Backend, Origin, Timeouts};
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
    pub async fn fetch(
        self: &Arc<Self>,
        namespace: &Arc<str>,
        backend: &Backend,
        origin: &Origin,
        request: Request<WasiBody>,
        timeouts: Timeouts,
    ) -> Result<Response<WasiBody>, WasiHttpError> {
        let mut response = self
            .fetch_through(namespace, backend, origin, request, timeouts)
            .await?;
        let status = response
            .extensions_mut()
            .remove::<CacheStatus>()
            .unwrap_or_default();
        status.append_to(response.headers_mut(), &self.status_name);
        Ok(response)
    }

    async fn fetch_through(
        self: &Arc<Self>,
        namespace: &Arc<str>,
        backend: &Backend,
        origin: &Origin,
        request: Request<WasiBody>,
        timeouts: Timeouts,
    ) -> Result<Response<WasiBody>, WasiHttpError> {
        let path = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
        let url = format!("{}{path}", origin.base_url());
        if !policy::is_safe(request.method()) {
            self.count(Outcome::Pass);
            let response = origin.send(request, timeouts).await?;
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
        if backend.spec.cache == BackendCache::Off || request.method() != Method::GET {
            self.count(Outcome::Pass);
            let reason = if backend.spec.cache == BackendCache::Off {
                "bypass"
            } else {
                "method"
            };
            let response = origin.send(request, timeouts).await?;
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
                    self.revalidate_in_background(&key, &stale, &parts, origin, timeouts);
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
                        let bound = timeouts.connect + timeouts.first_byte;
                        let _ = tokio::time::timeout(bound, done.changed()).await;
                        waited = true;
                        collapsed = true;
                        continue;
                    }
                }
            };
            return self
                .fill(key, guard, parts, body, stale, origin, timeouts)
                .await;
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
    #[allow(clippy::too_many_arguments)]
    async fn fill(
        &self,
        key: CacheKey,
        guard: Option<FillGuard>,
        request: RequestParts,
        body: WasiBody,
        stale: Option<Stale>,
        origin: &Origin,
        timeouts: Timeouts,
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
        let result = origin
            .send(Request::from_parts(outgoing, body), timeouts)
            .await;
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
                let response = origin
                    .send(Request::from_parts(plain, body), timeouts)
                    .await?;
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
    fn revalidate_in_background(
        self: &Arc<Self>,
        key: &CacheKey,
        stale: &Stale,
        request: &RequestParts,
        origin: &Origin,
        timeouts: Timeouts,
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
                    timeouts,
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
