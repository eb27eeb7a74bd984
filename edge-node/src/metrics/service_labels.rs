//! The cardinality guard: which services get a `service` label value of
//! their own.
//!
//! A node may serve 10,000 services; one series per service and metric
//! would swamp Prometheus. At most `max` services, the busiest, are labelled
//! by name; the others are counted under [`OTHER_SERVICES`]. Until `max`
//! services have been seen, every service gets its own label at once. Every
//! `rerank` period the services with the most requests in that period are
//! chosen again; a service that stays among the busiest keeps its label.
//!
//! Every series only ever grows: a service that loses its label stops being
//! exported (its series is hidden, not reset) and its new requests count
//! under `_other`; if it wins its label back, its series returns with the
//! value it had.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use dashmap::DashMap;

/// The label value of the services folded together.
pub const OTHER_SERVICES: &str = "_other";

#[derive(Debug)]
pub struct ServiceLabels {
    max: usize,
    labelled: ArcSwap<HashSet<Arc<str>>>,
    /// Requests per service since the last rerank.
    traffic: DashMap<Arc<str>, AtomicU64>,
    /// Serialises admissions while there is room, so `max` holds.
    admitting: Mutex<()>,
    other: Arc<str>,
}

impl ServiceLabels {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            labelled: ArcSwap::default(),
            traffic: DashMap::new(),
            admitting: Mutex::new(()),
            other: Arc::from(OTHER_SERVICES),
        }
    }

    /// The label value for one request of `service`, counting the request
    /// towards the next rerank.
    pub fn label(&self, service: &Arc<str>) -> Arc<str> {
        match self.traffic.get(service) {
            Some(count) => {
                count.fetch_add(1, Ordering::Relaxed);
            }
            None => {
                self.traffic
                    .entry(Arc::clone(service))
                    .or_insert_with(|| AtomicU64::new(0))
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
        let labelled = self.labelled.load();
        if labelled.contains(service) {
            return Arc::clone(service);
        }
        if labelled.len() < self.max && self.admit(service) {
            return Arc::clone(service);
        }
        Arc::clone(&self.other)
    }

    fn admit(&self, service: &Arc<str>) -> bool {
        let _admitting = self.admitting.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.labelled.load();
        if current.contains(service) {
            return true;
        }
        if current.len() >= self.max {
            return false;
        }
        let mut next = HashSet::clone(&current);
        next.insert(Arc::clone(service));
        self.labelled.store(Arc::new(next));
        true
    }

    /// Whether `value` is a label value to export: a labelled service, or a
    /// value that is not a service name (`_other`, `_unknown`).
    pub fn is_exported(&self, value: &str) -> bool {
        value.starts_with('_') || self.labelled.load().contains(value)
    }

    /// How many services have a label of their own.
    pub fn labelled_count(&self) -> usize {
        self.labelled.load().len()
    }

    /// Chooses the labelled services again: the busiest since the last
    /// rerank, then, while there is room, those that had a label before.
    /// Services with no requests in the period are forgotten.
    pub fn rerank(&self) {
        let _admitting = self.admitting.lock().unwrap_or_else(|e| e.into_inner());
        let mut recent: Vec<(Arc<str>, u64)> = self
            .traffic
            .iter()
            .map(|entry| {
                (
                    Arc::clone(entry.key()),
                    entry.value().swap(0, Ordering::Relaxed),
                )
            })
            .collect();
        self.traffic
            .retain(|_, count| count.load(Ordering::Relaxed) > 0);
        recent.retain(|(_, count)| *count > 0);
        let previous = self.labelled.load_full();
        // Busiest first; among equals, a service that had its label keeps
        // it, so that ties do not make labels flap.
        recent.sort_by(|a, b| {
            b.1.cmp(&a.1)
                .then_with(|| previous.contains(&b.0).cmp(&previous.contains(&a.0)))
                .then_with(|| a.0.cmp(&b.0))
        });
        let mut next: HashSet<Arc<str>> = recent
            .into_iter()
            .take(self.max)
            .map(|(service, _)| service)
            .collect();
        for service in previous.iter() {
            if next.len() >= self.max {
                break;
            }
            next.insert(Arc::clone(service));
        }
        self.labelled.store(Arc::new(next));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    #[test]
    fn services_beyond_the_limit_share_one_label() {
        let labels = ServiceLabels::new(2);
        assert_eq!(&*labels.label(&name("a")), "a");
        assert_eq!(&*labels.label(&name("b")), "b");
        assert_eq!(&*labels.label(&name("c")), OTHER_SERVICES);
        assert_eq!(&*labels.label(&name("a")), "a");
        assert_eq!(labels.labelled_count(), 2);
        assert!(labels.is_exported("a"));
        assert!(!labels.is_exported("c"));
        assert!(labels.is_exported(OTHER_SERVICES));
    }

    #[test]
    fn a_rerank_gives_the_busiest_services_their_own_label() {
        let labels = ServiceLabels::new(2);
        for service in ["quiet-1", "quiet-2"] {
            labels.label(&name(service));
        }
        labels.rerank();
        for _ in 0..10 {
            labels.label(&name("busy"));
        }
        labels.label(&name("quiet-2"));
        labels.rerank();
        assert!(labels.is_exported("busy"));
        assert!(labels.is_exported("quiet-2"));
        assert!(!labels.is_exported("quiet-1"));
        // An idle period keeps the labels there are.
        labels.rerank();
        assert_eq!(labels.labelled_count(), 2);
        assert!(labels.is_exported("busy"));
    }

    #[test]
    fn ten_thousand_services_make_at_most_the_limit_of_labels() {
        let labels = ServiceLabels::new(100);
        let mut values = HashSet::new();
        for i in 0..10_000 {
            values.insert(labels.label(&name(&format!("tenant-{i}/web"))));
        }
        labels.rerank();
        assert_eq!(values.len(), 101);
        assert_eq!(labels.labelled_count(), 100);
    }
}
