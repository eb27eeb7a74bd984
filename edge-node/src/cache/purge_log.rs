//! The purges a node applied lately, so that a fill that went to the origin
//! before a purge does not store what it brought back after it: the purge
//! was asked for because that answer may be out of date.
//!
//! Every purge is numbered as it is applied, and recorded before it is
//! applied. A fill notes the number when it sends its request; when it
//! comes to store, any purge recorded since that names its key or one of
//! its tags decides: a hard purge keeps the response out of the cache (the
//! client still gets it), a soft one stores it already stale. When more
//! purges came by than the log keeps, the response is not stored.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::key::CacheKey;

/// How a purge treats what it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurgeMode {
    /// Removed: the next request is a miss.
    Hard,
    /// Marked stale (Fastly's soft purge): the next request revalidates it
    /// with the origin, and it may be served stale meanwhile or while the
    /// origin fails, as far as its directives and the platform's default
    /// `stale-if-error` allow.
    Soft,
}

/// Purges remembered; a fill that saw more go by stores nothing.
pub const PURGE_LOG_ENTRIES: usize = 1024;

#[derive(Debug)]
enum Target {
    /// The URL of an origin's and a guest's responses.
    Url(CacheKey),
    Tag {
        namespace: String,
        tag: String,
    },
    Everything,
}

#[derive(Debug)]
struct Applied {
    number: u64,
    target: Target,
    mode: PurgeMode,
}

#[derive(Debug, Default)]
pub struct PurgeLog {
    /// Purges recorded so far.
    count: AtomicU64,
    recent: Mutex<VecDeque<Applied>>,
}

impl PurgeLog {
    /// Where a fill starting now stands.
    pub fn position(&self) -> u64 {
        self.count.load(Ordering::Acquire)
    }

    pub fn record_url(&self, key: &CacheKey, mode: PurgeMode) {
        self.record(Target::Url(key.clone()), mode);
    }

    pub fn record_tag(&self, namespace: &str, tag: &str, mode: PurgeMode) {
        let target = Target::Tag {
            namespace: namespace.to_string(),
            tag: tag.to_string(),
        };
        self.record(target, mode);
    }

    pub fn record_everything(&self) {
        self.record(Target::Everything, PurgeMode::Hard);
    }

    fn record(&self, target: Target, mode: PurgeMode) {
        let mut recent = self.lock();
        let number = self.count.load(Ordering::Acquire) + 1;
        if recent.len() == PURGE_LOG_ENTRIES {
            recent.pop_front();
        }
        recent.push_back(Applied {
            number,
            target,
            mode,
        });
        self.count.store(number, Ordering::Release);
    }

    /// The strongest purge since `position` that reaches `key` or one of
    /// `tags`, if any.
    pub fn since(&self, position: u64, key: &CacheKey, tags: &[String]) -> Option<PurgeMode> {
        if self.count.load(Ordering::Acquire) == position {
            return None;
        }
        let recent = self.lock();
        if recent
            .front()
            .is_none_or(|oldest| oldest.number > position + 1)
        {
            return Some(PurgeMode::Hard);
        }
        let reaches = |target: &Target| match target {
            Target::Url(url) => url.namespace == key.namespace && url.key == key.key,
            Target::Tag { namespace, tag } => {
                **namespace == *key.namespace && tags.iter().any(|t| t == tag)
            }
            Target::Everything => true,
        };
        let mut strongest = None;
        for applied in recent.iter().filter(|a| a.number > position) {
            if reaches(&applied.target) {
                match applied.mode {
                    PurgeMode::Hard => return Some(PurgeMode::Hard),
                    PurgeMode::Soft => strongest = Some(PurgeMode::Soft),
                }
            }
        }
        strongest
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Applied>> {
        self.recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn key(namespace: &str, url: &str) -> CacheKey {
        CacheKey::http(&Arc::from(namespace), url)
    }

    #[test]
    fn only_purges_after_the_position_that_reach_the_entry_count() {
        let log = PurgeLog::default();
        let page = key("a", "http://o/page");
        log.record_url(&page, PurgeMode::Hard);
        let start = log.position();
        assert_eq!(log.since(start, &page, &[]), None, "before the fill");
        log.record_url(&key("b", "http://o/page"), PurgeMode::Hard);
        log.record_tag("b", "red", PurgeMode::Hard);
        assert_eq!(
            log.since(start, &page, &["red".into()]),
            None,
            "another tenant's"
        );
        log.record_tag("a", "red", PurgeMode::Soft);
        assert_eq!(
            log.since(start, &page, &["red".into()]),
            Some(PurgeMode::Soft)
        );
        assert_eq!(log.since(start, &page, &[]), None, "untagged");
        log.record_url(&page, PurgeMode::Hard);
        assert_eq!(log.since(start, &page, &[]), Some(PurgeMode::Hard));
    }

    #[test]
    fn a_fill_that_outlived_the_log_stores_nothing() {
        let log = PurgeLog::default();
        let start = log.position();
        for i in 0..=PURGE_LOG_ENTRIES {
            log.record_url(&key("other", &format!("http://o/{i}")), PurgeMode::Hard);
        }
        assert_eq!(
            log.since(start, &key("a", "http://o/x"), &[]),
            Some(PurgeMode::Hard)
        );
    }
}
