//! Fair turns on the guest CPU between tenants.
//!
//! Guests run on the runtime's worker threads, and a busy guest yields at
//! every epoch tick. Left to the runtime, every yielded guest goes to the
//! back of one queue: with 200 of one tenant's guests spinning, another
//! tenant's hello waits behind all 200 ticks, on every poll. Here a guest
//! may run, or be ready to run, only while it holds a turn, and there are as
//! many turns as worker threads. A guest that wants one while all are taken
//! waits in its tenant's queue, away from the runtime's run queue. A turn
//! ends at the next epoch tick at the latest (the epoch callback gives it
//! back and waits for the next, see [`Turn::next`]), or sooner when the
//! guest waits on I/O or finishes.
//!
//! A freed turn goes to the waiting tenant that has had the least CPU
//! (start-time fair queueing over the CPU each turn actually used; within a
//! tenant, first come, first served). So each tenant with work gets an equal
//! share of the CPU whatever its number of guests, and a tenant whose
//! requests are short is not made to wait behind another's long turns: its
//! guest runs as soon as one turn ends. A tenant with nothing running and
//! nothing waiting is forgotten; when it comes back it starts level with
//! the tenant served last, so idling banks no credit.
//!
//! With a turn free and nobody waiting, taking one is a lock, a lookup and
//! a count: an unsaturated node pays no more than that.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use prometheus::IntGauge;

use super::epoch::Contention;

/// The turns of one node's guests.
#[derive(Debug)]
pub struct CpuTurns {
    turns: usize,
    state: Mutex<State>,
    /// Guests waiting for a turn (`edge_guests_waiting_for_cpu`).
    waiting_gauge: IntGauge,
    /// Tells the epoch ticker to tick faster while guests wait.
    contention: Contention,
}

#[derive(Debug, Default)]
struct State {
    running: usize,
    /// The CPU time, in ns, of the tenant served last: where a tenant that
    /// comes back starts.
    clock: u64,
    /// Tenants with a guest running or waiting.
    tenants: HashMap<Arc<str>, TenantTurns>,
    /// The tenants with a guest waiting.
    ready: Vec<Arc<str>>,
}

#[derive(Debug, Default)]
struct TenantTurns {
    /// CPU its turns have used, in ns, counted from `State::clock` when it
    /// last came back.
    used_ns: u64,
    running: usize,
    /// Its waiting guests, oldest first.
    waiters: VecDeque<Arc<Waiter>>,
}

/// One guest waiting for a turn.
#[derive(Debug, Default)]
struct Waiter {
    /// Set, under the lock, when a turn has been handed to this guest.
    granted: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Waiter {
    fn wake(&self) {
        if let Some(waker) = lock(&self.waker).take() {
            waker.wake();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl CpuTurns {
    /// `turns`: how many guests may run at once (at least one).
    pub fn new(turns: usize, waiting_gauge: IntGauge, contention: Contention) -> Self {
        Self {
            turns: turns.max(1),
            state: Mutex::new(State::default()),
            waiting_gauge,
            contention,
        }
    }

    /// The number of turns: the runtime's worker threads, where there is a
    /// runtime, else the machine's cores.
    pub fn for_this_runtime(waiting_gauge: IntGauge, contention: Contention) -> Self {
        let turns = tokio::runtime::Handle::try_current()
            .map(|runtime| runtime.metrics().num_workers())
            .unwrap_or_else(|_| std::thread::available_parallelism().map_or(1, usize::from));
        Self::new(turns, waiting_gauge, contention)
    }

    /// A turn at once when one is free and nobody waits for one; else a
    /// place at the back of `tenant`'s queue.
    fn take(&self, tenant: &Arc<str>, waker: &Waker) -> Result<(), Arc<Waiter>> {
        let mut state = lock(&self.state);
        let state = &mut *state;
        let free = state.running < self.turns && state.ready.is_empty();
        let clock = state.clock;
        let turns = state
            .tenants
            .entry(Arc::clone(tenant))
            .or_insert_with(|| TenantTurns {
                used_ns: clock,
                ..TenantTurns::default()
            });
        if free {
            state.running += 1;
            turns.running += 1;
            return Ok(());
        }
        let waiter = Arc::new(Waiter {
            granted: AtomicBool::new(false),
            waker: Mutex::new(Some(waker.clone())),
        });
        turns.waiters.push_back(Arc::clone(&waiter));
        if turns.waiters.len() == 1 {
            state.ready.push(Arc::clone(tenant));
            self.contention.set(true);
        }
        self.waiting_gauge.inc();
        Err(waiter)
    }

    /// Adds `used_ns` of CPU to what `tenant`'s turns have used. The
    /// clock moves with the busiest tenant, so that one that comes back,
    /// or comes for the first time, starts level with it rather than with
    /// credit for all the CPU others used before anyone waited.
    fn charge(state: &mut State, tenant: &Arc<str>, used_ns: u64) {
        if let Some(turns) = state.tenants.get_mut(tenant) {
            turns.used_ns = turns.used_ns.saturating_add(used_ns);
            state.clock = state.clock.max(turns.used_ns);
        }
    }

    /// After one of `tenant`'s polls that used `used_ns`: charges it, and
    /// gives the turn back if `release` (one lock for both).
    fn end_poll(&self, tenant: &Arc<str>, used_ns: u64, release: bool) {
        let next = {
            let mut state = lock(&self.state);
            Self::charge(&mut state, tenant, used_ns);
            if !release {
                return;
            }
            self.end_turn(&mut state, tenant)
        };
        if let Some(next) = next {
            next.wake();
        }
    }

    /// Ends one of `tenant`'s turns: it goes on to the next guest in line.
    fn give_back(&self, tenant: &Arc<str>) {
        let next = {
            let mut state = lock(&self.state);
            self.end_turn(&mut state, tenant)
        };
        if let Some(next) = next {
            next.wake();
        }
    }

    /// Ends one of `tenant`'s turns under the lock; returns the guest to
    /// wake, which the turn went to.
    fn end_turn(&self, state: &mut State, tenant: &Arc<str>) -> Option<Arc<Waiter>> {
        state.running -= 1;
        if let Some(turns) = state.tenants.get_mut(tenant) {
            turns.running -= 1;
            if turns.running == 0 && turns.waiters.is_empty() {
                state.tenants.remove(tenant);
            }
        }
        self.hand_on(state)
    }

    /// Hands a free turn to the first guest of the waiting tenant that has
    /// used the least CPU; returns the guest to wake.
    fn hand_on(&self, state: &mut State) -> Option<Arc<Waiter>> {
        if state.running >= self.turns {
            return None;
        }
        let used = |tenant: &Arc<str>| state.tenants.get(tenant).map_or(0, |t| t.used_ns);
        let (index, _) = state
            .ready
            .iter()
            .enumerate()
            .min_by_key(|(_, tenant)| used(tenant))?;
        let tenant = Arc::clone(&state.ready[index]);
        let turns = state.tenants.get_mut(&tenant)?;
        let waiter = turns.waiters.pop_front()?;
        if turns.waiters.is_empty() {
            state.ready.swap_remove(index);
            self.contention.set(!state.ready.is_empty());
        }
        turns.running += 1;
        state.clock = state.clock.max(turns.used_ns);
        state.running += 1;
        waiter.granted.store(true, Ordering::Release);
        self.waiting_gauge.dec();
        Some(waiter)
    }

    /// A guest that stopped waiting: its place is removed, or the turn it
    /// was handed but never used goes on.
    fn leave(&self, tenant: &Arc<str>, waiter: &Arc<Waiter>) {
        let mut state = lock(&self.state);
        if waiter.granted.load(Ordering::Acquire) {
            drop(state);
            self.give_back(tenant);
            return;
        }
        let Some(turns) = state.tenants.get_mut(tenant) else {
            return;
        };
        let before = turns.waiters.len();
        turns.waiters.retain(|other| !Arc::ptr_eq(other, waiter));
        if turns.waiters.len() < before {
            self.waiting_gauge.dec();
        }
        if turns.waiters.is_empty() {
            let idle = turns.running == 0;
            state.ready.retain(|other| other != tenant);
            self.contention.set(!state.ready.is_empty());
            if idle {
                state.tenants.remove(tenant);
            }
        }
    }
}

/// Yields to the runtime the way that lets it look for I/O first: tokio
/// runs a task that yields with `yield_now` again only after it has polled
/// its I/O driver (or run the tasks already queued), where a task that
/// wakes itself may run again at once. A guest yields at every epoch tick,
/// so on a node whose cores all run guests this is what keeps network
/// events seen within a tick.
pub fn yield_to_runtime() -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(tokio::task::yield_now())
}

/// One guest's place in the turns: shared by its execution
/// ([`TakesTurns`]) and its store's epoch callback ([`Turn::next`]).
#[derive(Debug)]
pub struct Turn {
    turns: Arc<CpuTurns>,
    tenant: Arc<str>,
    state: Mutex<TurnState>,
    /// Set by the epoch callback when the guest yields at a tick keeping
    /// its turn: it is still ready to run, so it still counts.
    yielded: AtomicBool,
}

#[derive(Debug)]
enum TurnState {
    Idle,
    Holding,
    Waiting(Arc<Waiter>),
}

impl Turn {
    pub fn new(turns: Arc<CpuTurns>, tenant: Arc<str>) -> Arc<Self> {
        Arc::new(Self {
            turns,
            tenant,
            state: Mutex::new(TurnState::Idle),
            yielded: AtomicBool::new(false),
        })
    }

    /// Ready once this guest holds a turn.
    fn poll_hold(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = lock(&self.state);
        match &*state {
            TurnState::Holding => return Poll::Ready(()),
            TurnState::Idle => match self.turns.take(&self.tenant, cx.waker()) {
                Ok(()) => *state = TurnState::Holding,
                Err(waiter) => {
                    *state = TurnState::Waiting(waiter);
                    return Poll::Pending;
                }
            },
            TurnState::Waiting(waiter) => {
                if !waiter.granted.load(Ordering::Acquire) {
                    *lock(&waiter.waker) = Some(cx.waker().clone());
                    // Granted in between: the grant's wake found no waker.
                    if !waiter.granted.load(Ordering::Acquire) {
                        return Poll::Pending;
                    }
                }
                *state = TurnState::Holding;
            }
        }
        Poll::Ready(())
    }

    /// Charges a poll's CPU, and gives the turn back if `release` and this
    /// guest holds one.
    fn end_poll(&self, used_ns: u64, release: bool) {
        let mut state = lock(&self.state);
        let holding = matches!(*state, TurnState::Holding);
        if release && holding {
            *state = TurnState::Idle;
        }
        drop(state);
        self.turns
            .end_poll(&self.tenant, used_ns, release && holding);
    }

    /// Gives the turn back, if this guest holds one.
    fn release(&self) {
        let mut state = lock(&self.state);
        if matches!(*state, TurnState::Holding) {
            *state = TurnState::Idle;
            drop(state);
            self.turns.give_back(&self.tenant);
        }
    }

    /// Whether some guest is waiting for a turn.
    pub fn others_waiting(&self) -> bool {
        !lock(&self.turns.state).ready.is_empty()
    }

    /// At an epoch tick with nobody waiting: the guest yields to the
    /// runtime ([`yield_to_runtime`]) but keeps its turn, since it is ready
    /// to run on.
    pub fn yield_keeping_turn(&self) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        self.yielded.store(true, Ordering::Relaxed);
        yield_to_runtime()
    }

    /// At an epoch tick: ends this guest's turn and waits for its next one,
    /// so that the guest is not even ready to run until then.
    ///
    /// Once its turn comes it still yields to the runtime once more
    /// ([`yield_to_runtime`]): the guest handed its turn to was woken on
    /// this worker thread and would run right after it, and so on, and the
    /// runtime would look for I/O only every few dozen polls, a few dozen
    /// milliseconds with guests running a tick at a time.
    pub fn next(self: &Arc<Self>) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let turn = Arc::clone(self);
        turn.release();
        Box::pin(async move {
            std::future::poll_fn(|cx| turn.poll_hold(cx)).await;
            turn.yield_keeping_turn().await;
        })
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        match std::mem::replace(&mut *lock(&self.state), TurnState::Idle) {
            TurnState::Idle => {}
            TurnState::Holding => self.turns.give_back(&self.tenant),
            TurnState::Waiting(waiter) => self.turns.leave(&self.tenant, &waiter),
        }
    }
}

/// Runs `inner` (a guest's execution) only while its [`Turn`] is held:
/// each poll takes one or waits for one, a poll that ends with the guest
/// waiting on I/O (or finished) gives it back, and the CPU of every poll is
/// charged to the tenant.
pub struct TakesTurns<F> {
    inner: Pin<Box<F>>,
    turn: Arc<Turn>,
}

debug_fields!(TakesTurns<F> { turn });

impl<F> TakesTurns<F> {
    pub fn new(inner: F, turn: Arc<Turn>) -> Self {
        Self {
            inner: Box::pin(inner),
            turn,
        }
    }
}

impl<F: Future> Future for TakesTurns<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        if this.turn.poll_hold(cx).is_pending() {
            return Poll::Pending;
        }
        let started = Instant::now();
        let polled = this.inner.as_mut().poll(cx);
        let used_ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        // A guest that yielded at a tick keeps its turn; one that waits on
        // I/O, or has finished, gives it back. (One waiting for its next
        // turn gave it back in `Turn::next`.)
        let yielded = this.turn.yielded.swap(false, Ordering::Relaxed);
        this.turn.end_poll(used_ns, polled.is_ready() || !yielded);
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Wake;

    struct NoWake;

    impl Wake for NoWake {
        fn wake(self: Arc<Self>) {}
    }

    /// What each test starts from: one turn to share, a waker that does
    /// nothing (the tests look at `granted` instead), and two tenants.
    fn one_turn() -> (Arc<CpuTurns>, Waker, Arc<str>, Arc<str>) {
        let contention = Contention(Arc::new(AtomicBool::new(false)));
        let gauge = IntGauge::new("w", "w").expect("gauge");
        let turns = Arc::new(CpuTurns::new(1, gauge, contention));
        (turns, Waker::from(Arc::new(NoWake)), "a".into(), "b".into())
    }

    fn granted(waiter: &Waiter) -> bool {
        waiter.granted.load(Ordering::Acquire)
    }

    #[test]
    fn a_freed_turn_goes_to_the_tenant_that_has_used_least_not_first_come() {
        let (turns, waker, a, b) = one_turn();
        turns.take(&a, &waker).expect("the one turn");
        // Three of a's guests wait, then one of b's.
        let a_waiting: Vec<_> = (0..3)
            .map(|_| turns.take(&a, &waker).expect_err("taken"))
            .collect();
        let b_waiting = turns.take(&b, &waker).expect_err("taken");
        assert_eq!(turns.waiting_gauge.get(), 4);
        // a's running guest used a whole tick: b, which used nothing, is next.
        turns.end_poll(&a, 1_000_000, true);
        assert!(granted(&b_waiting));
        assert!(!granted(&a_waiting[0]));
        // b used little, but has no one else waiting: a's guests follow in
        // their order.
        turns.end_poll(&b, 30_000, true);
        assert!(granted(&a_waiting[0]));
        turns.end_poll(&a, 1_000_000, true);
        assert!(granted(&a_waiting[1]));
        assert_eq!(turns.waiting_gauge.get(), 1);
        // b comes back: it starts level with a, so it is next again.
        let b_again = turns.take(&b, &waker).expect_err("taken");
        turns.end_poll(&a, 1_000_000, true);
        assert!(granted(&b_again));
        assert!(!granted(&a_waiting[2]));
    }

    #[test]
    fn a_tenant_busy_before_anyone_waited_is_not_starved_by_a_newcomer() {
        let (turns, waker, a, b) = one_turn();
        // a alone for ten minutes of CPU, never contended.
        for _ in 0..600 {
            turns.take(&a, &waker).expect("free");
            turns.end_poll(&a, 1_000_000_000, true);
        }
        turns.take(&a, &waker).expect("free");
        let a_next = turns.take(&a, &waker).expect_err("taken");
        let b_first = turns.take(&b, &waker).expect_err("taken");
        let b_second = turns.take(&b, &waker).expect_err("taken");
        turns.end_poll(&a, 1_000_000, true);
        // b starts level with a, not ten minutes behind: after one turn
        // each, a is served again.
        assert!(granted(&b_first));
        turns.end_poll(&b, 2_000_000, true);
        assert!(granted(&a_next), "a waits one turn, not ten minutes");
        assert!(!granted(&b_second));
    }

    #[test]
    fn a_guest_that_stops_waiting_passes_on_its_turn() {
        let (turns, waker, a, b) = one_turn();
        turns.take(&a, &waker).expect("the one turn");
        let cancelled = turns.take(&b, &waker).expect_err("taken");
        let next = turns.take(&a, &waker).expect_err("taken");
        // Handed a turn it will never use, then dropped.
        turns.end_poll(&a, 1_000_000, true);
        assert!(granted(&cancelled));
        turns.leave(&b, &cancelled);
        assert!(granted(&next));
        // One that leaves before its turn comes is just removed.
        let gone = turns.take(&b, &waker).expect_err("taken");
        turns.leave(&b, &gone);
        turns.end_poll(&a, 10, true);
        let state = lock(&turns.state);
        assert_eq!(state.running, 0);
        assert!(state.tenants.is_empty() && state.ready.is_empty());
        drop(state);
        assert_eq!(turns.waiting_gauge.get(), 0);
        assert!(turns.take(&b, &waker).is_ok());
    }
}
