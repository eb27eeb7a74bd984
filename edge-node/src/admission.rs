//! Admission: a bound on requests in flight across the node.
//!
//! A request beyond the bound is refused at once with 503 and `Retry-After`
//! rather than queued: a queue without a deadline turns overload into
//! timeouts for everyone. The permit lives until the guest has finished,
//! including a body it is still streaming.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus::IntGauge;

#[derive(Debug)]
pub struct Admission {
    in_flight: Arc<AtomicU64>,
    max_in_flight: u64,
    gauge: IntGauge,
}

/// Held for as long as a request is in flight.
#[derive(Debug)]
pub struct AdmissionPermit {
    in_flight: Arc<AtomicU64>,
    gauge: IntGauge,
}

impl Admission {
    pub fn new(max_in_flight: u64, gauge: IntGauge) -> Self {
        Self {
            in_flight: Arc::new(AtomicU64::new(0)),
            max_in_flight,
            gauge,
        }
    }

    /// A permit, or `None` when the node is at its limit.
    pub fn try_admit(&self) -> Option<AdmissionPermit> {
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_in_flight).then_some(n + 1)
            })
            .ok()?;
        self.gauge.inc();
        Some(AdmissionPermit {
            in_flight: Arc::clone(&self.in_flight),
            gauge: self.gauge.clone(),
        })
    }
}

impl Drop for AdmissionPermit {
    fn drop(&mut self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.gauge.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_beyond_the_limit_and_frees_on_drop() {
        let admission = Admission::new(2, IntGauge::new("g", "g").expect("gauge"));
        let first = admission.try_admit().expect("first");
        let _second = admission.try_admit().expect("second");
        assert!(admission.try_admit().is_none());
        drop(first);
        assert!(admission.try_admit().is_some());
    }
}
