//! Guest CPU accounting.
//!
//! A guest waiting on a slow client or origin is not using the CPU, so the
//! budget is charged only with the time the guest is actually being run: the
//! [`CpuMetered`] future measures each poll of the guest, and the epoch
//! callback adds the time of the poll in progress.
//!
//! Two clocks, because a worker thread can be preempted in the middle of a
//! poll, and on a loaded machine for tens of milliseconds: the thread's CPU
//! clock (a system call, ~0.2 µs) counts only the time the thread ran, so a
//! guest is never charged for the kernel running something else; the
//! monotonic clock (a vDSO read, ~20 ns) is enough for a poll that ends
//! within one epoch tick, where a preemption can add at most that tick.
//! So every poll reads the CPU clock once at its start, and again only when
//! it runs long or the epoch callback asks.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use edge_config::limits::EPOCH_TICK_MS;

/// A poll that ends within this much monotonic time is charged that time;
/// a longer one is charged the thread's CPU time over it.
const SHORT_POLL_NS: u64 = EPOCH_TICK_MS * 1_000_000;

/// CPU time charged to one request.
#[derive(Debug, Default)]
pub struct CpuAccount {
    /// Nanoseconds of completed polls.
    used_ns: AtomicU64,
    /// The thread's CPU clock at the start of the poll in progress.
    poll_started_cpu_ns: AtomicU64,
}

impl CpuAccount {
    /// CPU used so far, including the poll in progress. Call it only from
    /// inside a poll, on the polling thread (the epoch callback is).
    pub fn used_including_current_poll(&self) -> Duration {
        let started = self.poll_started_cpu_ns.load(Ordering::Relaxed);
        let in_poll = thread_cpu_ns().saturating_sub(started);
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
        let started = clock_ns();
        let started_cpu = thread_cpu_ns();
        self.account
            .poll_started_cpu_ns
            .store(started_cpu, Ordering::Relaxed);
        let result = self.inner.as_mut().poll(cx);
        let mut spent = clock_ns().saturating_sub(started);
        if spent > SHORT_POLL_NS {
            spent = thread_cpu_ns().saturating_sub(started_cpu);
        }
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

/// Nanoseconds of CPU the calling thread has run (`CLOCK_THREAD_CPUTIME_ID`).
fn thread_cpu_ns() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    u64::try_from(now.tv_sec)
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::try_from(now.tv_nsec).unwrap_or(0))
}
