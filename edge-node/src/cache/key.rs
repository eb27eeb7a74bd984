//! Cache keys: every one starts with the tenant's namespace, taken from the
//! routed service, never from anything in the request.

use std::sync::Arc;

use edge_platform::urls::normalize_url;

/// A key in one tenant's namespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    pub(super) namespace: Arc<str>,
    pub(super) kind: KeyKind,
    pub(super) key: Box<str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum KeyKind {
    /// A backend response, by the URL the origin sees.
    Http,
    /// A guest's own response, by its public URL. Apart from `Http`, so an
    /// origin's answer for the same URL (a backend whose `host_header` is
    /// the public domain) is never served as the guest's, nor the other
    /// way round.
    Front,
    /// A guest's own entry, by its key.
    Guest,
}

impl CacheKey {
    /// The key of a URL already in its normal spelling: an origin client's
    /// base URL and a request's path.
    pub(super) fn http(namespace: &Arc<str>, url: &str) -> Self {
        Self {
            namespace: Arc::clone(namespace),
            kind: KeyKind::Http,
            key: url.into(),
        }
    }

    /// The key of a URL in any spelling (from a purge, or a `Location`).
    pub(super) fn http_normalizing(namespace: &Arc<str>, url: &str) -> Self {
        match normalize_url(url) {
            Some(normal) => Self::http(namespace, &normal),
            None => Self::http(namespace, url),
        }
    }

    /// The key of a guest's own response: its public URL, normalized.
    pub(super) fn front(namespace: &Arc<str>, url: &str) -> Self {
        Self {
            namespace: Arc::clone(namespace),
            kind: KeyKind::Front,
            key: url.into(),
        }
    }

    pub(super) fn guest(namespace: &Arc<str>, key: &str) -> Self {
        Self {
            namespace: Arc::clone(namespace),
            kind: KeyKind::Guest,
            key: key.into(),
        }
    }
}
