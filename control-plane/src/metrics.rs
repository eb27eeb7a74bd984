//! What the control plane's `/metrics` reports (served by `api`): API traffic, uploads and compile times
//! counted as they happen; nodes, their lag behind the snapshot, and usage
//! per tenant and service read from the database at scrape time, so every
//! replica reports the same totals.

use prometheus::proto::MetricFamily;
use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    pub api_requests: IntCounterVec,
    /// Time to answer, by route (long-polls included: they wait by design).
    pub api_duration: HistogramVec,
    pub uploads: IntCounterVec,
    pub compile_duration: Histogram,
    /// Guest log lines nodes shipped, by outcome (stored, skipped: of a
    /// service that no longer exists).
    pub guest_log_lines: IntCounterVec,
    /// Snapshots read from the database and serialized: once per version
    /// per replica, however many nodes poll.
    pub snapshot_builds: prometheus::IntCounter,
    /// Canaries ended, by outcome: `promoted`, `aborted`, `rolled_back`
    /// (by the control plane, on its error rate).
    pub canary_ends: IntCounterVec,
    /// Snapshot answers sent to nodes, by kind (`full`, `delta`), and
    /// their bytes.
    pub snapshots_sent: IntCounterVec,
    pub snapshot_bytes_sent: IntCounterVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn must<T>(metric: prometheus::Result<T>) -> T {
    match metric {
        Ok(metric) => metric,
        // The names and labels are literals below; a bad one is a bug the
        // tests catch.
        Err(e) => panic!("invalid metric definition: {e}"),
    }
}

impl Metrics {
    /// What was counted so far, for `/metrics`.
    pub fn gather(&self) -> Vec<MetricFamily> {
        self.registry.gather()
    }

    pub fn new() -> Self {
        let registry = Registry::new();
        let api_requests = must(IntCounterVec::new(
            Opts::new("cp_api_requests_total", "API requests by route and status"),
            &["route", "status"],
        ));
        let api_duration = must(HistogramVec::new(
            HistogramOpts::new(
                "cp_api_request_duration_seconds",
                "Time to answer an API request, by route",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                60.0,
            ]),
            &["route"],
        ));
        let uploads = must(IntCounterVec::new(
            Opts::new("cp_uploads_total", "Module uploads by outcome"),
            &["outcome"],
        ));
        let compile_duration = must(Histogram::with_opts(
            HistogramOpts::new(
                "cp_compile_duration_seconds",
                "Compile worker time per upload",
            )
            .buckets(vec![0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]),
        ));
        let guest_log_lines = must(IntCounterVec::new(
            Opts::new(
                "cp_guest_log_lines_total",
                "Guest log lines shipped by nodes, by outcome",
            ),
            &["outcome"],
        ));
        let snapshot_builds = must(prometheus::IntCounter::new(
            "cp_snapshot_builds_total",
            "Snapshots read and serialized (once per version, shared by every node's poll)",
        ));
        let snapshots_sent = must(IntCounterVec::new(
            Opts::new(
                "cp_snapshots_sent_total",
                "Snapshot answers sent to nodes, by kind: full, or the delta from the node's version",
            ),
            &["kind"],
        ));
        let snapshot_bytes_sent = must(IntCounterVec::new(
            Opts::new(
                "cp_snapshot_bytes_sent_total",
                "Bytes of snapshot answers sent to nodes, by kind (full, delta)",
            ),
            &["kind"],
        ));
        let canary_ends = must(IntCounterVec::new(
            Opts::new(
                "cp_canary_ends_total",
                "Canaries ended, by outcome (rolled_back: by the control plane, on the canary's error rate)",
            ),
            &["outcome"],
        ));
        for metric in [
            Box::new(api_requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(api_duration.clone()),
            Box::new(uploads.clone()),
            Box::new(compile_duration.clone()),
            Box::new(guest_log_lines.clone()),
            Box::new(snapshot_builds.clone()),
            Box::new(canary_ends.clone()),
            Box::new(snapshots_sent.clone()),
            Box::new(snapshot_bytes_sent.clone()),
        ] {
            must(registry.register(metric));
        }
        Self {
            registry,
            api_requests,
            api_duration,
            uploads,
            compile_duration,
            guest_log_lines,
            snapshot_builds,
            snapshots_sent,
            snapshot_bytes_sent,
            canary_ends,
        }
    }
}
