//! Per-service usage since the last report to the control plane, by
//! version (a service with a canary serves two): requests, status classes,
//! guest failures, guest CPU time and response bytes. Counters are atomics
//! behind a concurrent map, so recording costs no lock on the request path.
//! A report drains them; until the control plane has it, it is kept (and
//! sent again with its id) by `sync::deliveries`, so nothing is lost while
//! the control plane is away.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use edge_config::protocol::ServiceUsage;

#[derive(Debug, Default)]
pub struct ServiceCounters {
    requests: AtomicU64,
    status_2xx: AtomicU64,
    status_3xx: AtomicU64,
    status_4xx: AtomicU64,
    status_5xx: AtomicU64,
    guest_failures: AtomicU64,
    responses_cut: AtomicU64,
    guest_cpu_micros: AtomicU64,
    bytes_out: AtomicU64,
}

impl ServiceCounters {
    /// Counts one execution that trapped, ran out of a limit or gave no
    /// response.
    pub fn add_guest_failure(&self) {
        self.guest_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one response whose body ended in an error after its head
    /// was sent.
    pub fn add_cut_response(&self) {
        self.responses_cut.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add_bytes_out(&self, bytes: u64) {
        self.bytes_out.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts one answered request by its status class.
    pub fn record_status(&self, status: u16) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let class = match status {
            200..=299 => &self.status_2xx,
            300..=399 => &self.status_3xx,
            400..=499 => &self.status_4xx,
            _ => &self.status_5xx,
        };
        class.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add_cpu(&self, cpu: Duration) {
        let micros = u64::try_from(cpu.as_micros()).unwrap_or(u64::MAX);
        self.guest_cpu_micros.fetch_add(micros, Ordering::Relaxed);
    }
}

/// Usage by service name and version.
#[derive(Debug, Default)]
pub struct UsageMeter {
    services: DashMap<(Arc<str>, u64), Arc<ServiceCounters>>,
}

impl UsageMeter {
    pub fn counters(&self, service: &Arc<str>, version: u64) -> Arc<ServiceCounters> {
        let key = (Arc::clone(service), version);
        if let Some(counters) = self.services.get(&key) {
            return Arc::clone(&counters);
        }
        Arc::clone(self.services.entry(key).or_default().value())
    }

    /// Takes every counter, leaving zeros. Services with nothing to report
    /// are left out.
    pub fn drain(&self) -> Vec<ServiceUsage> {
        let take = |counter: &AtomicU64| counter.swap(0, Ordering::Relaxed);
        let mut usage: Vec<ServiceUsage> = self
            .services
            .iter()
            .map(|entry| {
                let c = entry.value();
                let (service, version) = entry.key();
                ServiceUsage {
                    service: service.to_string(),
                    version: *version,
                    guest_failures: take(&c.guest_failures),
                    responses_cut: take(&c.responses_cut),
                    requests: take(&c.requests),
                    status_2xx: take(&c.status_2xx),
                    status_3xx: take(&c.status_3xx),
                    status_4xx: take(&c.status_4xx),
                    status_5xx: take(&c.status_5xx),
                    guest_cpu_micros: take(&c.guest_cpu_micros),
                    bytes_out: take(&c.bytes_out),
                }
            })
            .filter(|u| u.requests > 0 || u.guest_cpu_micros > 0 || u.bytes_out > 0)
            .collect();
        usage.sort_by(|a, b| (&a.service, a.version).cmp(&(&b.service, b.version)));
        usage
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_takes_everything_once() {
        let meter = UsageMeter::default();
        let web: Arc<str> = Arc::from("acme/web");
        meter.counters(&web, 3).record_status(200);
        meter.counters(&web, 3).record_status(503);
        meter.counters(&web, 3).add_guest_failure();
        meter.counters(&web, 3).add_cpu(Duration::from_micros(1500));
        meter.counters(&web, 3).add_bytes_out(20);
        meter.counters(&web, 4).record_status(200);
        let usage = meter.drain();
        assert_eq!(usage.len(), 2, "one entry per version");
        assert_eq!((usage[0].version, usage[1].version), (3, 4));
        assert_eq!(usage[0].guest_failures, 1);
        assert_eq!(usage[0].requests, 2);
        assert_eq!((usage[0].status_2xx, usage[0].status_5xx), (1, 1));
        assert_eq!(usage[0].guest_cpu_micros, 1500);
        assert_eq!(usage[0].bytes_out, 20);
        assert!(meter.drain().is_empty(), "drained");
    }
}
