//! Guest CPU accounting.
//!
//! A guest waiting on a slow client or origin is not using the CPU, so the
//! budget is charged only with the time the guest is actually being run: the
//! [`CpuMetered`] future reads the clock around each poll of the guest, and
//! the epoch callback adds the time of the poll in progress.
//!
//! The clock is the monotonic clock (a vDSO read, ~20 ns), not the thread's
//! CPU clock (a system call, ~0.5 µs, and several per request). The two
//! differ only while the worker thread is preempted in the middle of a poll;
//! the guest is then charged for the preemption too, which errs on the side
//! of protecting the node.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

/// CPU time charged to one request.
#[derive(Debug, Default)]
pub struct CpuAccount {
    /// Nanoseconds of completed polls.
    used_ns: AtomicU64,
    /// The monotonic clock at the start of the poll in progress.
    poll_started_ns: AtomicU64,
}

impl CpuAccount {
    /// CPU used so far, including the poll in progress. Call it only from
    /// inside a poll (the epoch callback is).
    pub fn used_including_current_poll(&self) -> Duration {
        let in_poll = clock_ns().saturating_sub(self.poll_started_ns.load(Ordering::Relaxed));
        Duration::from_nanos(self.used_ns.load(Ordering::Relaxed).saturating_add(in_poll))
    }

    /// CPU used by completed polls.
    pub fn used(&self) -> Duration {
        Duration::from_nanos(self.used_ns.load(Ordering::Relaxed))
    }
}

/// Charges the CPU time of every poll of `inner` to `account`.
#[derive(Debug)]
pub struct CpuMetered<F> {
    inner: Pin<Box<F>>,
    account: Arc<CpuAccount>,
}

impl<F> CpuMetered<F> {
    pub fn new(inner: F, account: Arc<CpuAccount>) -> Self {
        Self {
            inner: Box::pin(inner),
            account,
        }
    }
}

impl<F: Future> Future for CpuMetered<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let start = clock_ns();
        self.account.poll_started_ns.store(start, Ordering::Relaxed);
        let result = self.inner.as_mut().poll(cx);
        let spent = clock_ns().saturating_sub(start);
        self.account.used_ns.fetch_add(spent, Ordering::Relaxed);
        result
    }
}

/// Nanoseconds on the monotonic clock since the first call.
fn clock_ns() -> u64 {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let epoch = EPOCH.get_or_init(std::time::Instant::now);
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}
