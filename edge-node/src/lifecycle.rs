//! The node's lifecycle: starting → serving → draining → stopped, and the
//! one owner of everything that runs until the node stops.
//!
//! The phase is visible on the admin listener (`/healthz` answers 503 once
//! the node drains, so load balancers stop sending it traffic) and as the
//! `edge_node_phase` gauge. Every task learns when to stop from one
//! [`Shutdown`]: listeners stop accepting and connections finish their
//! requests once the node drains, connections still open are cut when the
//! drain's grace is over, and background tasks (the control-plane follower,
//! the metrics reranker, the admin listener) end once it has stopped. The
//! lifecycle holds the background tasks and waits for them at the stop, so
//! nothing outlives the node. Open connections are counted here so that a
//! drain that runs out of time can say how many it cut.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use prometheus::IntGaugeVec;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// In order: a node only moves forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Starting,
    Serving,
    Draining,
    Stopped,
}

impl Phase {
    pub const ALL: [Phase; 4] = [
        Phase::Starting,
        Phase::Serving,
        Phase::Draining,
        Phase::Stopped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Serving => "serving",
            Phase::Draining => "draining",
            Phase::Stopped => "stopped",
        }
    }
}

/// The phase, the open connections, the signal that cuts them, and the
/// background tasks the node waits for when it stops.
#[derive(Debug)]
pub struct Lifecycle {
    phase: watch::Sender<Phase>,
    gauge: IntGaugeVec,
    open_connections: Arc<AtomicUsize>,
    cut: watch::Sender<bool>,
    background: Mutex<Vec<JoinHandle<()>>>,
}

impl Lifecycle {
    pub fn new(gauge: IntGaugeVec) -> Self {
        let lifecycle = Self {
            phase: watch::Sender::new(Phase::Starting),
            gauge,
            open_connections: Arc::new(AtomicUsize::new(0)),
            cut: watch::Sender::new(false),
            background: Mutex::new(Vec::new()),
        };
        lifecycle.enter(Phase::Starting);
        lifecycle
    }

    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    /// Every phase from now on, starting with the current one.
    pub fn phases(&self) -> watch::Receiver<Phase> {
        self.phase.subscribe()
    }

    /// What a task watches to know when to stop.
    pub fn shutdown(&self) -> Shutdown {
        Shutdown {
            phase: self.phase.subscribe(),
            cut: self.cut.subscribe(),
        }
    }

    /// Runs `task` until the node stops: it should end once
    /// [`Shutdown::stopped`] resolves, and the stop waits for it.
    pub fn own(&self, task: JoinHandle<()>) {
        let mut background = self.background.lock().unwrap_or_else(|e| e.into_inner());
        background.retain(|task| !task.is_finished());
        background.push(task);
    }

    /// Enters [`Phase::Stopped`] and waits for every background task.
    pub async fn stop(&self) {
        self.enter(Phase::Stopped);
        let tasks = std::mem::take(&mut *self.background.lock().unwrap_or_else(|e| e.into_inner()));
        for task in tasks {
            let _ = task.await;
        }
    }

    pub fn enter(&self, phase: Phase) {
        // The gauge first: whoever sees the new phase (`/healthz`, a task)
        // then finds `edge_node_phase` saying it too.
        for each in Phase::ALL {
            self.gauge
                .with_label_values(&[each.as_str()])
                .set(i64::from(each == phase));
        }
        self.phase.send_replace(phase);
        tracing::info!(phase = phase.as_str(), "node phase");
    }

    /// Counts a connection as open until the guard drops.
    pub fn connection_opened(&self) -> ConnectionGuard {
        self.open_connections.fetch_add(1, Ordering::AcqRel);
        ConnectionGuard {
            open: Arc::clone(&self.open_connections),
        }
    }

    pub fn open_connections(&self) -> usize {
        self.open_connections.load(Ordering::Acquire)
    }

    /// Ends every connection still open; returns how many there were.
    pub fn cut_connections(&self) -> usize {
        let open = self.open_connections();
        self.cut.send_replace(true);
        open
    }
}

/// One open connection.
#[derive(Debug)]
pub struct ConnectionGuard {
    open: Arc<AtomicUsize>,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// When to stop, as every task of the node sees it. A lifecycle that is
/// gone counts as stopped.
#[derive(Debug, Clone)]
pub struct Shutdown {
    phase: watch::Receiver<Phase>,
    cut: watch::Receiver<bool>,
}

impl Shutdown {
    /// Once the node drains: stop accepting, let what is open finish.
    pub async fn draining(&mut self) {
        let _ = self.phase.wait_for(|phase| *phase >= Phase::Draining).await;
    }

    /// Once the node has stopped serving: background tasks end.
    pub async fn stopped(&mut self) {
        let _ = self.phase.wait_for(|phase| *phase == Phase::Stopped).await;
    }

    /// Once the drain's grace is over: cut what is still open.
    pub async fn cut(&mut self) {
        let _ = self.cut.wait_for(|cut| *cut).await;
    }
}
