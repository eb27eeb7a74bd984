//! The node's HTTP cache: backend responses (RFC 9111) and the entries
//! guests insert through `edge:platform/cache`.
//!
//! - Every key starts with the tenant's namespace, taken from the routed
//!   service, never from anything in the request: no Host spelling, absolute
//!   URI or header can reach another tenant's entries.
//! - HTTP entries are keyed by the URL the origin sees
//!   (`scheme://host/path?query`) and hold one variant per distinct set of
//!   `Vary`-selected request headers.
//! - Concurrent misses for one key make one origin request: the first
//!   becomes the fill, the others wait for it and then read what it stored.
//! - Storage is one moka cache weighted by bytes, with entries expiring when
//!   no longer usable. Surrogate keys index entries for purges ([`tags`]),
//!   and the index is charged to the entries' weight.
//!
//! The parts:
//!
//! - `fetch`: the read-through path of a guest's backend request (lookup,
//!   fill, collapsing, revalidation, stale on error, storing);
//! - `stored`: a stored response and what it answers; `status`: its
//!   `Cache-Status`; `key`: the keys; `body`: bodies and head copies;
//! - [`policy`]: the RFC 9111 decisions, around `http-cache-semantics`;
//! - `purge` and [`purge_log`]: purges, hard and soft, and the fills they
//!   must also reach; [`tags`]: the surrogate-key index;
//! - [`responses`]: guests' own responses cached at the edge (the guest
//!   cache API itself is `crate::host::cache`);
//! - [`upstream`]: what the read-through path fetches from, so it is
//!   tested alone with a scripted origin.

mod body;
mod fetch;
mod key;
pub mod policy;
mod purge;
pub mod purge_log;
pub mod responses;
mod status;
mod stored;
pub mod tags;
pub mod upstream;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use dashmap::DashMap;
use edge_config::CacheLimits;
use edge_config::limits::CACHE_MAX_VARIANTS;
use http::request::Parts as RequestParts;
use http::{Response, header};
use http_cache_semantics::BeforeRequest;
use moka::ops::compute::Op;
use tokio::sync::watch;
use wasmtime_wasi_http::WasiBody;

use crate::metrics::Metrics;
use key::KeyKind;
use purge_log::PurgeLog;

pub(crate) use body::clone_parts;
pub use key::CacheKey;
pub use purge_log::PurgeMode;
pub use status::{CACHE_STATUS, CacheStatus};
pub use stored::REVALIDATABLE_KEEP;
use stored::{ENTRY_OVERHEAD_BYTES, StoredResponse, viewed};
use tags::{TagIndex, TagsFull};

/// What a cache lookup led to, for `edge_http_cache_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Hit,
    Miss,
    /// Served from a stored response after a 304.
    Revalidated,
    /// Served past its freshness (stale-while-revalidate, stale-if-error).
    Stale,
    /// Not cacheable: the method, the backend's policy or the response.
    Pass,
    /// Waited for another request's fill of the same key.
    Collapsed,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Revalidated => "revalidated",
            Self::Stale => "stale",
            Self::Pass => "pass",
            Self::Collapsed => "collapsed",
        }
    }
}

/// What one key holds.
#[derive(Debug)]
enum Slot {
    /// Variants of one URL, most recent first.
    Http(Vec<Arc<StoredResponse>>),
    Guest(GuestEntry),
}

impl Slot {
    fn weight(&self) -> u32 {
        let bytes = match self {
            Self::Http(variants) => variants.iter().map(|v| v.weight).sum(),
            Self::Guest(entry) => entry.value.len() + ENTRY_OVERHEAD_BYTES,
        };
        u32::try_from(bytes).unwrap_or(u32::MAX)
    }

    /// How long from now the slot can still be of use.
    fn lifetime(&self, now: SystemTime) -> Duration {
        match self {
            Self::Http(variants) => variants
                .iter()
                .map(|v| v.usable_for(now))
                .max()
                .unwrap_or_default(),
            Self::Guest(entry) => entry.expires.saturating_duration_since(Instant::now()),
        }
    }

    fn surrogate_keys(&self) -> Vec<&str> {
        match self {
            Self::Http(variants) => variants
                .iter()
                .flat_map(|v| v.surrogate_keys.iter().map(String::as_str))
                .collect(),
            Self::Guest(entry) => entry.surrogate_keys.iter().map(String::as_str).collect(),
        }
    }
}

/// An entry a guest inserted.
#[derive(Debug)]
struct GuestEntry {
    value: Bytes,
    expires: Instant,
    surrogate_keys: Vec<String>,
}

/// The result of looking a request up.
enum Lookup {
    /// With the stored response's remaining freshness, in seconds.
    Fresh(Response<WasiBody>, i64),
    /// A stored variant for this request that needs revalidation.
    Stale(Stale),
    Miss,
}

#[derive(Clone)]
struct Stale {
    stored: Arc<StoredResponse>,
    /// The request to send to revalidate it (with `If-None-Match` /
    /// `If-Modified-Since` added).
    revalidation: Arc<RequestParts>,
}

/// The node's cache, shared by every tenant through namespaced keys.
pub struct HttpCache {
    entries: moka::sync::Cache<CacheKey, Arc<Slot>>,
    tags: Arc<TagIndex>,
    fills: Arc<DashMap<CacheKey, watch::Receiver<()>>>,
    max_object_bytes: usize,
    /// This cache's name in `Cache-Status` (`cache.status_name`).
    status_name: String,
    /// `cache.default_stale_if_error_secs`.
    default_stale_if_error: Duration,
    /// The purges applied lately, for fills that started before them.
    purges: PurgeLog,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for HttpCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpCache")
            .field("entries", &self.entries.entry_count())
            .field("bytes", &self.entries.weighted_size())
            .finish_non_exhaustive()
    }
}

/// Entries expire once no longer usable: past freshness and every stale
/// allowance, and past [`REVALIDATABLE_KEEP`] for revalidatable ones.
struct SlotExpiry;

impl moka::Expiry<CacheKey, Arc<Slot>> for SlotExpiry {
    fn expire_after_create(
        &self,
        _key: &CacheKey,
        value: &Arc<Slot>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(value.lifetime(SystemTime::now()))
    }

    fn expire_after_update(
        &self,
        _key: &CacheKey,
        value: &Arc<Slot>,
        _updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.lifetime(SystemTime::now()))
    }
}

impl HttpCache {
    pub fn new(limits: &CacheLimits, metrics: Arc<Metrics>) -> Self {
        let tags = Arc::new(TagIndex::new(limits.max_surrogate_keys_per_tenant));
        let index = Arc::clone(&tags);
        let entries = moka::sync::Cache::builder()
            .max_capacity(limits.max_bytes)
            .weigher(|key: &CacheKey, slot: &Arc<Slot>| {
                let index = tags::index_weight(key, slot.surrogate_keys().into_iter());
                let index = u32::try_from(index).unwrap_or(u32::MAX);
                slot.weight()
                    .saturating_add(key.key.len() as u32)
                    .saturating_add(index)
            })
            .expire_after(SlotExpiry)
            // Whatever ends a slot (replaced, evicted, expired, removed; a
            // slot replaced after it expired is reported as replaced), its
            // tags leave the index. The listener runs inside the write; a
            // writer indexes its new slot's tags again after it (see
            // `store`), so tags the new slot shares with the old stay.
            .eviction_listener(move |key: Arc<CacheKey>, slot: Arc<Slot>, _cause| {
                index.unindex(&key, slot.surrogate_keys().into_iter());
            })
            .build();
        Self {
            entries,
            tags,
            fills: Arc::default(),
            max_object_bytes: usize::try_from(limits.max_object_bytes).unwrap_or(usize::MAX),
            status_name: limits.status_name.clone(),
            default_stale_if_error: Duration::from_secs(limits.default_stale_if_error_secs),
            purges: PurgeLog::default(),
            metrics,
        }
    }

    fn count(&self, outcome: Outcome) {
        self.metrics
            .http_cache_requests
            .with_label_values(&[outcome.label()])
            .inc();
    }

    /// Counts body bytes served from the cache (`served`) or put in it
    /// (`stored`).
    fn count_bytes(&self, direction: &str, bytes: usize) {
        self.metrics
            .http_cache_bytes
            .with_label_values(&[direction])
            .inc_by(bytes as u64);
    }

    /// Entries stored and the bytes they are charged.
    pub fn usage(&self) -> (u64, u64) {
        self.entries.run_pending_tasks();
        (self.entries.entry_count(), self.entries.weighted_size())
    }

    fn lookup(&self, key: &CacheKey, request: &RequestParts, now: SystemTime) -> Lookup {
        let Some(slot) = self.entries.get(key) else {
            return Lookup::Miss;
        };
        let Slot::Http(variants) = slot.as_ref() else {
            return Lookup::Miss;
        };
        let authorized = request.headers.contains_key(header::AUTHORIZATION);
        let plain_request = !request.headers.contains_key(header::CACHE_CONTROL)
            && !request.headers.contains_key(header::PRAGMA);
        for stored in variants {
            if authorized && !policy::may_serve_authorized(&stored.headers) {
                continue;
            }
            // The common hit, decided without `before_request`, which
            // re-parses both header blocks and copies them on every call
            // (measured at ~9 µs of a ~100 µs request). For a GET with no
            // Cache-Control or Pragma of its own, to a response without
            // Vary, under the same key (so the same URL), the crate's answer
            // is "fresh" exactly when its `time_to_live` is above zero.
            if plain_request
                && !stored.varies
                && stored.may_be_fresh()
                && !stored.policy.time_to_live(now).is_zero()
            {
                self.count_bytes("served", stored.body.len());
                let (response, ttl) = stored.answer(request, now);
                return Lookup::Fresh(response, ttl);
            }
            match stored.before_request(request, now) {
                // Served from what was stored, not from the crate's head,
                // which carries the cache's reading of the fields and a
                // `Date` of its own in RFC 2822 form.
                BeforeRequest::Fresh(_) => {
                    self.count_bytes("served", stored.body.len());
                    let (response, ttl) = stored.answer(request, now);
                    return Lookup::Fresh(response, ttl);
                }
                BeforeRequest::Stale {
                    request,
                    matches: true,
                } => {
                    return Lookup::Stale(Stale {
                        stored: Arc::clone(stored),
                        revalidation: Arc::new(request),
                    });
                }
                BeforeRequest::Stale { matches: false, .. } => {}
            }
        }
        Lookup::Miss
    }

    /// Stores `stored` as the variant `request` selects, keeping the others.
    /// Not stored if its tenant has all the surrogate keys it may, nor if a
    /// purge that reaches it was applied after `fetched_at` (the purge log's
    /// position when its request was sent; soft purges store it stale).
    /// Returns whether it was stored.
    fn store(
        &self,
        key: &CacheKey,
        request: &RequestParts,
        mut stored: StoredResponse,
        fetched_at: Option<u64>,
    ) -> bool {
        let purged = fetched_at.and_then(|at| self.purges.since(at, key, &stored.surrogate_keys));
        match purged {
            Some(PurgeMode::Soft) if key.kind == KeyKind::Http => {
                stored = stored.soft_purged(SystemTime::now());
            }
            Some(_) => {
                tracing::debug!(namespace = %key.namespace, "response not stored: purged while it was fetched");
                return false;
            }
            None => {}
        }
        if self.tags.index(key, &stored.surrogate_keys).is_err() {
            tracing::debug!(namespace = %key.namespace, "response not stored: the tenant has all the surrogate keys it may");
            return false;
        }
        self.count_bytes("stored", stored.body.len());
        let stored = Arc::new(stored);
        let now = SystemTime::now();
        let mut written = None;
        self.entries.entry(key.clone()).and_compute_with(|current| {
            let mut variants = vec![Arc::clone(&stored)];
            if let Some(current) = current
                && let Slot::Http(old) = current.value().as_ref()
            {
                variants.extend(
                    old.iter()
                        .filter(|old| !old.selected_by(request, now))
                        .take(CACHE_MAX_VARIANTS - 1)
                        .cloned(),
                );
            }
            let slot = Arc::new(Slot::Http(variants));
            written = Some(Arc::clone(&slot));
            Op::Put(slot)
        });
        self.index_written(key, written.as_deref());
        true
    }

    /// After a write at `key`: the written slot's tags are indexed again,
    /// for the ones the replaced slot's listener took out (indexed before
    /// the write too, so that a purge meanwhile finds the entry).
    fn index_written(&self, key: &CacheKey, written: Option<&Slot>) {
        if let Some(slot) = written {
            self.tags.reindex(key, slot.surrogate_keys().into_iter());
        }
    }

    // -- The guest cache API ------------------------------------------------

    pub fn guest_lookup(&self, namespace: &Arc<str>, key: &str) -> Option<Bytes> {
        let slot = self.entries.get(&CacheKey::guest(namespace, key))?;
        match slot.as_ref() {
            Slot::Guest(entry) if entry.expires > Instant::now() => Some(entry.value.clone()),
            _ => None,
        }
    }

    pub fn guest_insert(
        &self,
        namespace: &Arc<str>,
        key: &str,
        value: Bytes,
        ttl: Duration,
        surrogate_keys: Vec<String>,
    ) -> Result<(), TagsFull> {
        let key = CacheKey::guest(namespace, key);
        self.tags.index(&key, &surrogate_keys)?;
        let entry = GuestEntry {
            value,
            expires: Instant::now() + ttl,
            surrogate_keys,
        };
        let slot = Arc::new(Slot::Guest(entry));
        self.entries.insert(key.clone(), Arc::clone(&slot));
        self.index_written(&key, Some(&slot));
        Ok(())
    }

    pub fn guest_purge(&self, namespace: &Arc<str>, key: &str) -> bool {
        self.entries
            .remove(&CacheKey::guest(namespace, key))
            .is_some()
    }

    pub fn max_object_bytes(&self) -> usize {
        self.max_object_bytes
    }
}

/// What the cache's unit tests build their inputs from and read their
/// answers with, in one place for every file of the cache.
#[cfg(test)]
pub(crate) mod testing {
    use http::{HeaderMap, HeaderName, HeaderValue, Response};
    use http_body_util::BodyExt;

    /// A header map of `pairs`, in order, a repeated name kept as several
    /// fields (as they came from the origin).
    pub(crate) fn header_map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_str(value).expect("value"),
            );
        }
        map
    }

    /// The whole body of `response`.
    pub(crate) async fn body_bytes<B>(response: Response<B>) -> Vec<u8>
    where
        B: http_body::Body,
        B::Error: std::fmt::Debug,
    {
        response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(limits: CacheLimits) -> HttpCache {
        let metrics = Arc::new(Metrics::new(&edge_config::MetricsSection::default()));
        HttpCache::new(&limits, metrics)
    }

    fn tags(prefix: &str, count: usize) -> Vec<String> {
        (0..count).map(|i| format!("{prefix}-{i}")).collect()
    }

    const MINUTE: Duration = Duration::from_secs(60);

    /// A guest insert of the value `v`: these tests are about keys, tags
    /// and lifetimes, never values.
    fn put(
        cache: &HttpCache,
        tenant: &Arc<str>,
        key: &str,
        ttl: Duration,
        tags: Vec<String>,
    ) -> Result<(), TagsFull> {
        cache.guest_insert(tenant, key, Bytes::from_static(b"v"), ttl, tags)
    }

    #[test]
    fn replacing_an_entry_unindexes_the_tags_it_no_longer_has() {
        let cache = cache(CacheLimits::default());
        let tenant: Arc<str> = "alpha".into();
        for round in 0..10_000 {
            let round_tags = tags(&format!("round{round}"), 32);
            put(&cache, &tenant, "one-key", MINUTE, round_tags).expect("stored");
        }
        assert_eq!(cache.tags.len(), 32, "only the last insert's tags");
        // The last ones still purge it.
        assert_eq!(
            cache.purge_surrogate_key("alpha", "round9999-7", PurgeMode::Hard),
            1
        );
        assert!(cache.tags.is_empty());
        assert!(cache.guest_lookup(&tenant, "one-key").is_none());
    }

    #[test]
    fn an_entry_replaced_after_it_expired_leaves_no_tags_behind() {
        let cache = cache(CacheLimits::default());
        let tenant: Arc<str> = "alpha".into();
        let ttl = Duration::from_millis(1);
        for round in 0..50 {
            let round_tags = tags(&format!("round{round}"), 32);
            put(&cache, &tenant, "short-lived", ttl, round_tags).expect("stored");
            std::thread::sleep(Duration::from_millis(3));
        }
        cache.entries.run_pending_tasks();
        assert!(cache.tags.len() <= 32, "{} tags indexed", cache.tags.len());
    }

    #[test]
    fn evicted_entries_leave_the_index_and_tags_are_charged_to_the_weight() {
        let cache = cache(CacheLimits {
            max_bytes: 256 * 1024,
            ..CacheLimits::default()
        });
        let tenant: Arc<str> = "alpha".into();
        let insert = |key: &str, tags: Vec<String>| {
            put(&cache, &tenant, key, MINUTE, tags).expect("stored");
        };
        insert("untagged", Vec::new());
        let (_, untagged) = cache.usage();
        insert("tagged", tags("t", 32));
        let (_, both) = cache.usage();
        assert!(
            both - untagged > 32 * 100,
            "32 tags are charged: {untagged} then {both}"
        );
        for i in 0..5_000 {
            insert(&format!("k{i}"), tags(&format!("k{i}"), 4));
        }
        let (entries, bytes) = cache.usage();
        assert!(bytes <= 256 * 1024, "{bytes}");
        assert!(
            cache.tags.len() as u64 <= 4 * entries + 32,
            "{} tags for {entries} entries",
            cache.tags.len()
        );
    }

    #[test]
    fn a_tenant_at_its_surrogate_key_bound_stores_nothing_with_new_tags() {
        let cache = cache(CacheLimits {
            max_surrogate_keys_per_tenant: 10,
            ..CacheLimits::default()
        });
        let (alpha, beta): (Arc<str>, Arc<str>) = ("alpha".into(), "beta".into());
        let insert = |tenant: &Arc<str>, key: &str, tags: Vec<String>| {
            put(&cache, tenant, key, MINUTE, tags)
        };
        insert(&alpha, "a", tags("t", 8)).expect("8 of 10");
        assert_eq!(insert(&alpha, "b", tags("u", 3)), Err(TagsFull));
        assert!(cache.guest_lookup(&alpha, "b").is_none(), "not stored");
        // Tags it has already cost nothing more; another tenant has its own.
        insert(&alpha, "c", tags("t", 8)).expect("same tags");
        insert(&beta, "b", tags("u", 10)).expect("beta's own bound");
        // Purging frees them.
        for tag in tags("t", 8) {
            cache.purge_surrogate_key("alpha", &tag, PurgeMode::Hard);
        }
        insert(&alpha, "b", tags("u", 10)).expect("room again");
    }
}
