//! The epoch ticker: one thread per engine advances its epoch every
//! [`EPOCH_TICK_MS`] while guests run. Guests check the epoch at function
//! entries and loop back-edges, so this single thread bounds every running
//! guest's CPU without a timer per request.
//!
//! With no guest running the thread sleeps until one starts: an idle node,
//! or one answering from its edge cache, is not woken a thousand times a
//! second for nothing. While guests wait for a turn on the CPU it ticks
//! every [`CONTENDED_EPOCH_TICK_US`] instead, since a turn lasts until the
//! next tick.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use edge_config::limits::{CONTENDED_EPOCH_TICK_US, EPOCH_TICK_MS};
use wasmtime::Engine;

#[derive(Debug, Default)]
struct Shared {
    stop: AtomicBool,
    running_guests: AtomicUsize,
    /// Set while guests wait for a turn (see [`Contention`]).
    contended: Arc<AtomicBool>,
    /// Held to check for work before parking, and to wake the thread.
    parked: Mutex<()>,
    wake: Condvar,
}

impl Shared {
    fn wake(&self) {
        let _parked = self.parked.lock().unwrap_or_else(|e| e.into_inner());
        self.wake.notify_one();
    }
}

/// Stops and joins the ticker thread when dropped.
#[derive(Debug)]
pub struct EpochTicker {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Whether guests are waiting for a turn on the CPU: told to the ticker by
/// the node's turns.
#[derive(Debug, Clone)]
pub struct Contention(pub(super) Arc<AtomicBool>);

impl Contention {
    pub fn set(&self, contended: bool) {
        if self.0.load(Ordering::Relaxed) != contended {
            self.0.store(contended, Ordering::Relaxed);
        }
    }
}

/// A running guest: the ticker ticks while at least one exists.
#[derive(Debug)]
pub struct RunningGuest {
    shared: Arc<Shared>,
}

impl Drop for RunningGuest {
    fn drop(&mut self) {
        self.shared.running_guests.fetch_sub(1, Ordering::AcqRel);
    }
}

impl EpochTicker {
    pub fn start(engine: Engine) -> std::io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let thread = std::thread::Builder::new()
            .name("epoch-ticker".into())
            .spawn({
                let shared = Arc::clone(&shared);
                move || tick(&engine, &shared)
            })?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// Where the node's turns say whether guests are waiting for one.
    pub fn contention(&self) -> Contention {
        Contention(Arc::clone(&self.shared.contended))
    }

    /// Counts a guest as running until the returned guard is dropped.
    pub fn guest_started(&self) -> RunningGuest {
        if self.shared.running_guests.fetch_add(1, Ordering::AcqRel) == 0 {
            self.shared.wake();
        }
        RunningGuest {
            shared: Arc::clone(&self.shared),
        }
    }
}

fn tick(engine: &Engine, shared: &Shared) {
    while !shared.stop.load(Ordering::Acquire) {
        {
            let mut parked = shared.parked.lock().unwrap_or_else(|e| e.into_inner());
            while shared.running_guests.load(Ordering::Acquire) == 0
                && !shared.stop.load(Ordering::Acquire)
            {
                parked = shared.wake.wait(parked).unwrap_or_else(|e| e.into_inner());
            }
        }
        std::thread::sleep(if shared.contended.load(Ordering::Relaxed) {
            Duration::from_micros(CONTENDED_EPOCH_TICK_US)
        } else {
            Duration::from_millis(EPOCH_TICK_MS)
        });
        engine.increment_epoch();
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.wake();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guests_are_counted_and_a_parked_ticker_stops_when_dropped() {
        let engine = Engine::new(wasmtime::Config::new().epoch_interruption(true)).expect("engine");
        let ticker = EpochTicker::start(engine).expect("ticker");
        let running = || ticker.shared.running_guests.load(Ordering::Acquire);
        let (first, second) = (ticker.guest_started(), ticker.guest_started());
        assert_eq!(running(), 2);
        drop(first);
        drop(second);
        assert_eq!(running(), 0);
        // The thread parks again; dropping the ticker must wake and join it.
        std::thread::sleep(Duration::from_millis(10));
        drop(ticker);
    }
}
