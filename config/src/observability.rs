//! What a node tells its operators and tenants: Prometheus metrics (and how
//! many series they may make), the access log, and the tenant log lines
//! shipped to the control plane.

use serde::{Deserialize, Serialize};

use crate::validate::{ConfigErrors, check_ranges};

/// Services with their own `service` label value. The rest of a node's
/// services share the value `_other`, so 10,000 services export at most
/// this many series per metric and label set (plus one).
pub const DEFAULT_MAX_SERVICE_LABELS: u64 = 100;
/// How often the busiest services are chosen for their own label.
pub const DEFAULT_SERVICE_LABEL_RERANK_MS: u64 = 60_000;

/// `[metrics]`: the node's Prometheus metrics on the admin listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSection {
    /// `false` leaves `/metrics` answering with the node's gauges only and
    /// takes the per-request counting off the request path (for measuring
    /// what metrics cost).
    pub enabled: bool,
    /// The cardinality guard: at most this many services get a label value
    /// of their own, chosen by traffic; the others are folded into `_other`.
    pub max_service_labels: u64,
    /// How often the services with their own label are chosen again.
    pub service_label_rerank_ms: u64,
}

impl Default for MetricsSection {
    fn default() -> Self {
        Self {
            enabled: true,
            max_service_labels: DEFAULT_MAX_SERVICE_LABELS,
            service_label_rerank_ms: DEFAULT_SERVICE_LABEL_RERANK_MS,
        }
    }
}

impl MetricsSection {
    pub fn validate(&self, path: &str, errors: &mut ConfigErrors) {
        check_ranges!(errors, path, self, {
            max_service_labels: 0..=100_000,
            service_label_rerank_ms: 1_000..=86_400_000,
        });
    }
}

/// Guest log lines one service may have shipped per second, across all its
/// requests on a node; the rest are counted and dropped.
pub const DEFAULT_MAX_GUEST_LOG_LINES_PER_SECOND: u64 = 100;
/// Guest log lines a node holds while the control plane is away. When full,
/// the oldest go first, counted.
pub const DEFAULT_MAX_BUFFERED_GUEST_LOG_LINES: u64 = 10_000;
/// How often guest log lines go to the control plane: `edgectl logs
/// --follow` shows a line about this long after the guest printed it.
pub const DEFAULT_GUEST_LOG_SHIP_INTERVAL_MS: u64 = 1_000;

/// `[logs]`: the operator's access log and the tenants' guest logs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogsSection {
    /// One event per request (target `access`), in the node's log format.
    pub access_log: bool,
    pub max_guest_lines_per_second: u64,
    pub max_buffered_guest_lines: u64,
    pub guest_ship_interval_ms: u64,
}

impl Default for LogsSection {
    fn default() -> Self {
        Self {
            access_log: true,
            max_guest_lines_per_second: DEFAULT_MAX_GUEST_LOG_LINES_PER_SECOND,
            max_buffered_guest_lines: DEFAULT_MAX_BUFFERED_GUEST_LOG_LINES,
            guest_ship_interval_ms: DEFAULT_GUEST_LOG_SHIP_INTERVAL_MS,
        }
    }
}

impl LogsSection {
    pub fn validate(&self, path: &str, errors: &mut ConfigErrors) {
        check_ranges!(errors, path, self, {
            max_guest_lines_per_second: 0..=1_000_000,
            max_buffered_guest_lines: 0..=10_000_000,
            guest_ship_interval_ms: 100..=3_600_000,
        });
    }
}
