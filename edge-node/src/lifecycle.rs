//! The node's lifecycle: starting → serving → draining → stopped.
//!
//! The phase is visible on the admin listener (`/healthz` answers 503 once
//! the node drains, so load balancers stop sending it traffic) and as the
//! `edge_node_phase` gauge. Open connections are counted here so that a
//! drain that runs out of time can say how many it cut.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use prometheus::IntGaugeVec;
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// The phase, the open connections, and the signal that cuts them.
#[derive(Debug)]
pub struct Lifecycle {
    phase: watch::Sender<Phase>,
    gauge: IntGaugeVec,
    open_connections: Arc<AtomicUsize>,
    cut: watch::Sender<bool>,
}

impl Lifecycle {
    pub fn new(gauge: IntGaugeVec) -> Self {
        let lifecycle = Self {
            phase: watch::Sender::new(Phase::Starting),
            gauge,
            open_connections: Arc::new(AtomicUsize::new(0)),
            cut: watch::Sender::new(false),
        };
        lifecycle.enter(Phase::Starting);
        lifecycle
    }

    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    pub fn enter(&self, phase: Phase) {
        self.phase.send_replace(phase);
        for each in Phase::ALL {
            self.gauge
                .with_label_values(&[each.as_str()])
                .set(i64::from(each == phase));
        }
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

    /// Resolves once the drain's grace is over and connections are cut.
    pub fn cut_signal(&self) -> watch::Receiver<bool> {
        self.cut.subscribe()
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

/// Resolves once `shutdown` is true (or its sender is gone).
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
