//! Guest CPU accounting.
//!
//! The epoch deadline alone measures wall time while wasm runs. A guest
//! waiting on a slow client or origin is not using the CPU, so the budget is
//! charged with the thread CPU time actually spent polling the guest: the
//! [`CpuMetered`] future reads the thread's CPU clock around each poll, and the
//! epoch callback adds the time of the poll in progress.

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
    /// Thread CPU clock at the start of the poll in progress.
    poll_started_ns: AtomicU64,
}

impl CpuAccount {
    /// CPU used so far, including the poll in progress. Call it only from
    /// inside a poll (the epoch callback is).
    pub fn used_including_current_poll(&self) -> Duration {
        let in_poll = thread_cpu_ns().saturating_sub(self.poll_started_ns.load(Ordering::Relaxed));
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
        let start = thread_cpu_ns();
        self.account.poll_started_ns.store(start, Ordering::Relaxed);
        let result = self.inner.as_mut().poll(cx);
        let spent = thread_cpu_ns().saturating_sub(start);
        self.account.used_ns.fetch_add(spent, Ordering::Relaxed);
        result
    }
}

/// The calling thread's CPU clock in nanoseconds.
pub fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID is
    // supported on every Linux this node runs on. On failure `ts` stays zero.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}
