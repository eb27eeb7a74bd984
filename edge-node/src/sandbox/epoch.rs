//! The epoch ticker: one thread per engine advances its epoch every
//! [`EPOCH_TICK_MS`] while guests run. Guests check the epoch at function
//! entries and loop back-edges, so this single thread bounds every running
//! guest's CPU without a timer per request.
//!
//! With no guest running for [`IDLE_TICKS_BEFORE_PARKING`] ticks the
//! thread sleeps until one starts: an idle node, or one answering from its
//! edge cache, is not woken a thousand times a second for nothing. Under
//! load the count of running guests touches zero between requests all the
//! time; parking only after a run of idle ticks, and waking the thread only
//! when it is parked, keeps a lock and a futex call off every request.
//! While guests wait for a turn on the CPU it ticks every
//! [`CONTENDED_EPOCH_TICK_US`] instead, since a turn lasts until the next
//! tick.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use edge_config::limits::{CONTENDED_EPOCH_TICK_US, EPOCH_TICK_MS};
use wasmtime::Engine;

/// How many ticks in a row must find no guest running before the ticker
/// parks: 50 ms of idleness, so a busy node never parks between requests.
pub const IDLE_TICKS_BEFORE_PARKING: u32 = 50;

#[derive(Debug, Default)]
struct Shared {
    stop: AtomicBool,
    running_guests: AtomicUsize,
    /// Set while guests wait for a turn (see [`Contention`]).
    contended: Arc<AtomicBool>,
    /// Whether the thread is parked, or about to: only then does a guest
    /// that starts wake it.
    parked: AtomicBool,
    /// Held to check for work before parking, and to wake the thread.
    parking: Mutex<()>,
    wake: Condvar,
}

impl Shared {
    fn wake(&self) {
        let _parking = self.parking.lock().unwrap_or_else(|e| e.into_inner());
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
        // SeqCst with the ticker's store of `parked` and load of the count:
        // either it sees this guest and does not park, or this sees it
        // parking and wakes it (under its lock, so not before it waits).
        if self.shared.running_guests.fetch_add(1, Ordering::SeqCst) == 0
            && self.shared.parked.load(Ordering::SeqCst)
        {
            self.shared.wake();
        }
        RunningGuest {
            shared: Arc::clone(&self.shared),
        }
    }
}

fn tick(engine: &Engine, shared: &Shared) {
    let mut idle_ticks = 0;
    while !shared.stop.load(Ordering::Acquire) {
        if shared.running_guests.load(Ordering::Acquire) == 0 {
            idle_ticks += 1;
        } else {
            idle_ticks = 0;
        }
        if idle_ticks >= IDLE_TICKS_BEFORE_PARKING {
            let mut parking = shared.parking.lock().unwrap_or_else(|e| e.into_inner());
            shared.parked.store(true, Ordering::SeqCst);
            while shared.running_guests.load(Ordering::SeqCst) == 0
                && !shared.stop.load(Ordering::Acquire)
            {
                parking = shared.wake.wait(parking).unwrap_or_else(|e| e.into_inner());
            }
            shared.parked.store(false, Ordering::SeqCst);
            idle_ticks = 0;
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
        self.shared.stop.store(true, Ordering::SeqCst);
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

    #[test]
    fn the_ticker_parks_only_after_its_idle_ticks_and_a_guest_wakes_it() {
        let engine = Engine::new(wasmtime::Config::new().epoch_interruption(true)).expect("engine");
        let ticker = EpochTicker::start(engine).expect("ticker");
        let parked = || ticker.shared.parked.load(Ordering::SeqCst);
        let until = |want: bool| {
            let started = std::time::Instant::now();
            while parked() != want {
                assert!(
                    started.elapsed() < Duration::from_secs(5),
                    "parked never became {want}"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
        };
        // Idle from the start: it parks once its idle ticks have passed.
        until(true);
        // A guest that starts wakes it, and it stays awake while one runs.
        let guest = ticker.guest_started();
        until(false);
        std::thread::sleep(Duration::from_millis(
            2 * u64::from(IDLE_TICKS_BEFORE_PARKING) * EPOCH_TICK_MS,
        ));
        assert!(!parked(), "parked while a guest ran");
        drop(guest);
        until(true);
        drop(ticker);
    }
}
