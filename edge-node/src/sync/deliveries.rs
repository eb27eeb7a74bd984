//! Usage reports and guest log lines on their way to the control plane.
//!
//! Nothing a node has counted or kept is lost while the control plane is
//! away, and nothing is counted twice when it comes back:
//!
//! - A usage report gets an id when it is made, and is sent with that id
//!   until the control plane has it; only then is the next one made (the
//!   counters keep counting meanwhile). A report whose answer was lost is
//!   sent again with its id, and the control plane counts it once.
//! - At a stop, what is undelivered (reports with their ids, usage not yet
//!   in a report, guest log lines) is written to `undelivered.json`. The
//!   next start sends it, and removes the file only once all of it has been
//!   delivered: a node killed before that finds it again at its next start.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use edge_config::protocol::{GuestLogLine, ServiceUsage};
use serde::{Deserialize, Serialize};

use crate::tenant_logs::TenantLogs;
use crate::usage::UsageMeter;
use edge_platform::artifacts::write_atomically;

/// A usage report, with the id it is sent under until delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingReport {
    pub id: String,
    pub services: Vec<ServiceUsage>,
}

/// The file's contents.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Saved {
    #[serde(default)]
    reports: Vec<PendingReport>,
    /// Usage saved by nodes from before report ids: sent as a new report.
    #[serde(default)]
    usage: Vec<ServiceUsage>,
    #[serde(default)]
    guest_logs: Vec<GuestLogLine>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Debug)]
pub struct Deliveries {
    path: PathBuf,
    /// Oldest first; the first is sent until it is delivered.
    reports: Mutex<VecDeque<PendingReport>>,
    /// Guest log lines from the file, shipped before the node's own.
    saved_logs: Mutex<VecDeque<GuestLogLine>>,
    /// The file holds something not yet delivered.
    file_pending: AtomicBool,
    /// This run's start, in ns: report ids of different runs differ.
    run: u64,
    next_report: AtomicU64,
}

impl Deliveries {
    /// Reads what an earlier run could not deliver; the file stays until
    /// it has been.
    pub async fn load(data_dir: &Path) -> Self {
        let path = data_dir.join("undelivered.json");
        let run = u64::try_from(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos(),
        )
        .unwrap_or(u64::MAX);
        let deliveries = Self {
            path,
            reports: Mutex::default(),
            saved_logs: Mutex::default(),
            file_pending: AtomicBool::new(false),
            run,
            next_report: AtomicU64::new(0),
        };
        let Ok(text) = tokio::fs::read(&deliveries.path).await else {
            return deliveries;
        };
        let saved = match serde_json::from_slice::<Saved>(&text) {
            Ok(saved) => saved,
            Err(e) => {
                tracing::warn!(path = %deliveries.path.display(), error = %e, "undelivered usage unreadable; ignoring it");
                let _ = tokio::fs::remove_file(&deliveries.path).await;
                return deliveries;
            }
        };
        tracing::info!(
            reports = saved.reports.len(),
            guest_log_lines = saved.guest_logs.len(),
            "sending what the last run could not deliver"
        );
        let mut reports: VecDeque<_> = saved.reports.into();
        if !saved.usage.is_empty() {
            reports.push_back(deliveries.new_report(saved.usage));
        }
        *lock(&deliveries.reports) = reports;
        *lock(&deliveries.saved_logs) = saved.guest_logs.into();
        deliveries.file_pending.store(true, Ordering::Release);
        deliveries
    }

    fn new_report(&self, services: Vec<ServiceUsage>) -> PendingReport {
        let n = self.next_report.fetch_add(1, Ordering::Relaxed);
        PendingReport {
            id: format!("{:x}-{n}", self.run),
            services,
        }
    }

    /// The report to send now: the oldest undelivered one, or a new one of
    /// what `meter` has counted; `None` when there is nothing to report.
    pub fn next_report(&self, meter: &UsageMeter) -> Option<PendingReport> {
        let mut reports = lock(&self.reports);
        if reports.is_empty() {
            let usage = meter.drain();
            if usage.is_empty() {
                return None;
            }
            reports.push_back(self.new_report(usage));
        }
        reports.front().cloned()
    }

    /// The control plane has report `id` (or refused it for good).
    pub fn report_done(&self, id: &str) {
        let mut reports = lock(&self.reports);
        if reports.front().is_some_and(|report| report.id == id) {
            reports.pop_front();
        }
        drop(reports);
        self.forget_file_once_delivered();
    }

    /// Up to `max` of the saved log lines, to ship before the node's own.
    pub fn take_saved_logs(&self, max: usize) -> Vec<GuestLogLine> {
        let mut saved = lock(&self.saved_logs);
        let count = saved.len().min(max);
        saved.drain(..count).collect()
    }

    /// Saved lines a failed shipment took, back in front.
    pub fn put_back_saved_logs(&self, lines: Vec<GuestLogLine>) {
        let mut saved = lock(&self.saved_logs);
        for line in lines.into_iter().rev() {
            saved.push_front(line);
        }
    }

    /// Removes the file once every report and line it held is delivered.
    pub fn forget_file_once_delivered(&self) {
        let delivered = lock(&self.reports).is_empty() && lock(&self.saved_logs).is_empty();
        if delivered
            && self.file_pending.swap(false, Ordering::AcqRel)
            && let Err(e) = std::fs::remove_file(&self.path)
        {
            tracing::warn!(path = %self.path.display(), error = %e, "removing delivered leftovers");
        }
    }

    /// At a stop: keeps what is still undelivered for the next start.
    pub async fn save(&self, meter: &UsageMeter, logs: &TenantLogs) {
        let mut reports: Vec<_> = lock(&self.reports).drain(..).collect();
        let usage = meter.drain();
        if !usage.is_empty() {
            reports.push(self.new_report(usage));
        }
        let mut guest_logs: Vec<_> = lock(&self.saved_logs).drain(..).collect();
        guest_logs.extend(logs.take(usize::MAX));
        if reports.is_empty() && guest_logs.is_empty() {
            if self.file_pending.swap(false, Ordering::AcqRel) {
                let _ = tokio::fs::remove_file(&self.path).await;
            }
            return;
        }
        let saved = Saved {
            reports,
            usage: Vec::new(),
            guest_logs,
        };
        let text = serde_json::to_vec(&saved).unwrap_or_default();
        let path = self.path.clone();
        let written = tokio::task::spawn_blocking(move || write_atomically(&path, &text))
            .await
            .map_err(|e| e.to_string())
            .and_then(|written| written.map_err(|e| e.to_string()));
        match written {
            Ok(()) => tracing::warn!(
                reports = saved.reports.len(),
                guest_log_lines = saved.guest_logs.len(),
                path = %self.path.display(),
                "control plane unreachable at shutdown: usage and guest logs kept for the next start"
            ),
            Err(e) => tracing::error!(error = %e, "usage and guest logs lost: cannot save them"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn a_report_keeps_its_id_until_delivered_and_the_file_goes_only_then() {
        let dir = tempfile::tempdir().expect("dir");
        let meter = UsageMeter::default();
        let logs = TenantLogs::new(&Default::default(), Arc::default());
        let web: Arc<str> = "acme/web".into();
        meter.counters(&web, 1).record_status(200);

        let first = Deliveries::load(dir.path()).await;
        let report = first.next_report(&meter).expect("a report");
        // Not delivered: the same report, same id, however often asked.
        meter.counters(&web, 1).record_status(200);
        assert_eq!(first.next_report(&meter), Some(report.clone()));
        first.save(&meter, &logs).await;

        // The next run sends the saved reports with their ids; killed
        // before they are delivered, the file is still there.
        let second = Deliveries::load(dir.path()).await;
        assert_eq!(
            second.next_report(&UsageMeter::default()),
            Some(report.clone())
        );
        drop(second);
        let third = Deliveries::load(dir.path()).await;
        let again = third.next_report(&UsageMeter::default()).expect("saved");
        assert_eq!(again, report);
        third.report_done(&again.id);
        let later = third
            .next_report(&UsageMeter::default())
            .expect("the one made at the stop");
        assert_eq!(later.services[0].requests, 1);
        assert!(dir.path().join("undelivered.json").exists());
        third.report_done(&later.id);
        assert!(
            !dir.path().join("undelivered.json").exists(),
            "all delivered"
        );
    }
}
