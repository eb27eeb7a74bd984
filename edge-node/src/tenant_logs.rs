//! Tenants' guest log lines on their way to the control plane.
//!
//! Every line a guest prints (see [`crate::host::logs`]) is offered
//! here. Each service may have `logs.max_guest_lines_per_second` lines
//! accepted per second on this node; the rest are dropped and counted. The
//! accepted lines wait in one bounded buffer until the follower ships them
//! (`logs.guest_ship_interval_ms`); while the control plane is away they
//! stay, and when the buffer is full the oldest go first, counted. Without a
//! control plane nothing is buffered: the lines are in the node's own log.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use edge_config::LogsSection;
use edge_config::protocol::{GuestLogLine, bounded_log_line};

use crate::metrics::Metrics;

/// Which of a request's output streams a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    Stdout,
    Stderr,
}

impl LogStream {
    pub fn name(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
        }
    }
}

/// Who printed a line.
#[derive(Debug, Clone)]
pub struct LineSource {
    pub service: Arc<str>,
    pub version: u64,
    pub request_id: Arc<str>,
}

#[derive(Debug)]
pub struct TenantLogs {
    max_per_second: u64,
    max_buffered: usize,
    ship_interval: Duration,
    shipping: AtomicBool,
    buffer: Mutex<VecDeque<GuestLogLine>>,
    /// Per service: the current second and the lines accepted in it.
    rate: DashMap<Arc<str>, (u64, u64)>,
    metrics: Arc<Metrics>,
}

impl TenantLogs {
    pub fn new(config: &LogsSection, metrics: Arc<Metrics>) -> Self {
        Self {
            max_per_second: config.max_guest_lines_per_second,
            max_buffered: usize::try_from(config.max_buffered_guest_lines).unwrap_or(usize::MAX),
            ship_interval: Duration::from_millis(config.guest_ship_interval_ms),
            shipping: AtomicBool::new(false),
            buffer: Mutex::new(VecDeque::new()),
            rate: DashMap::new(),
            metrics,
        }
    }

    /// How often the follower ships lines (`logs.guest_ship_interval_ms`).
    pub fn ship_interval(&self) -> Duration {
        self.ship_interval
    }

    /// From now on lines are kept for shipping (a control plane is
    /// configured).
    pub fn start_shipping(&self) {
        self.shipping.store(true, Ordering::Release);
    }

    fn count(&self, outcome: &str, lines: u64) {
        self.metrics
            .guest_log_lines
            .with_label_values(&[outcome])
            .inc_by(lines);
    }

    /// Offers one complete line. Returns whether it was accepted.
    pub fn offer(&self, source: &LineSource, stream: LogStream, line: &str) -> bool {
        let admitted = self.admit(&source.service);
        if admitted {
            self.keep(source, stream, line);
        }
        admitted
    }

    /// Whether one more line of `service` is within
    /// `logs.max_guest_lines_per_second`; one that is not is counted as
    /// `dropped_rate`. Asked before a line goes anywhere, the node's own log
    /// included.
    pub fn admit(&self, service: &Arc<str>) -> bool {
        let second = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let within_rate = {
            let mut rate = self.rate.entry(Arc::clone(service)).or_insert((second, 0));
            if rate.0 != second {
                *rate = (second, 0);
            }
            rate.1 += 1;
            rate.1 <= self.max_per_second
        };
        if !within_rate {
            self.count("dropped_rate", 1);
        }
        within_rate
    }

    /// Keeps an admitted line for the control plane.
    pub fn keep(&self, source: &LineSource, stream: LogStream, line: &str) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        if !self.shipping.load(Ordering::Acquire) {
            self.count("not_shipped", 1);
            return;
        }
        let line = GuestLogLine {
            service: source.service.to_string(),
            version: source.version,
            request_id: source.request_id.to_string(),
            stream: stream.name().to_string(),
            timestamp_ms: u64::try_from(now.as_millis()).unwrap_or(u64::MAX),
            line: bounded_log_line(line).to_string(),
        };
        let evicted = {
            let mut buffer = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
            buffer.push_back(line);
            let excess = buffer.len().saturating_sub(self.max_buffered);
            buffer.drain(..excess);
            excess
        };
        self.count("buffered", 1);
        if evicted > 0 {
            self.count("dropped_buffer_full", evicted as u64);
        }
    }

    /// Takes up to `max` of the oldest lines, for one shipment.
    pub fn take(&self, max: usize) -> Vec<GuestLogLine> {
        let mut buffer = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        let n = buffer.len().min(max);
        buffer.drain(..n).collect()
    }

    /// Puts back a shipment that failed, ahead of newer lines. What does
    /// not fit goes, oldest first, counted.
    pub fn put_back(&self, lines: Vec<GuestLogLine>) {
        let evicted = {
            let mut buffer = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
            for line in lines.into_iter().rev() {
                buffer.push_front(line);
            }
            let excess = buffer.len().saturating_sub(self.max_buffered);
            buffer.drain(..excess);
            excess
        };
        if evicted > 0 {
            self.count("dropped_buffer_full", evicted as u64);
        }
    }

    /// A shipment the control plane refused as malformed: sending it again
    /// would fail again, so its lines are dropped, counted.
    pub fn rejected(&self, lines: usize) {
        self.count("dropped_rejected", lines as u64);
    }

    /// Lines shipped to the control plane.
    pub fn shipped(&self, lines: usize) {
        self.count("shipped", lines as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edge_config::protocol::MAX_GUEST_LOG_LINE_BYTES;

    fn logs(per_second: u64, buffered: u64) -> TenantLogs {
        let config = LogsSection {
            max_guest_lines_per_second: per_second,
            max_buffered_guest_lines: buffered,
            ..LogsSection::default()
        };
        let logs = TenantLogs::new(&config, Arc::new(Metrics::default()));
        logs.start_shipping();
        logs
    }

    fn source(service: &str) -> LineSource {
        LineSource {
            service: Arc::from(service),
            version: 3,
            request_id: Arc::from("req-1"),
        }
    }

    #[test]
    fn a_service_over_its_rate_loses_lines_and_others_do_not() {
        let logs = logs(5, 100);
        let noisy = source("a/noisy");
        let accepted = (0..20)
            .filter(|i| logs.offer(&noisy, LogStream::Stdout, &format!("line {i}")))
            .count();
        // A second boundary inside the loop could let through up to twice.
        assert!((5..=10).contains(&accepted), "{accepted}");
        assert!(logs.offer(&source("b/quiet"), LogStream::Stderr, "hello"));
        let lines = logs.take(100);
        assert_eq!(lines.len(), accepted + 1);
        assert_eq!(lines[0].line, "line 0");
        assert_eq!(lines[0].version, 3);
        assert_eq!(lines.last().map(|l| l.stream.as_str()), Some("stderr"));
    }

    #[test]
    fn long_lines_are_cut_to_the_shipped_bound() {
        let logs = logs(10, 10);
        let long = "é".repeat(MAX_GUEST_LOG_LINE_BYTES);
        logs.offer(&source("a/web"), LogStream::Stdout, &long);
        let line = &logs.take(1)[0].line;
        assert!(line.len() <= MAX_GUEST_LOG_LINE_BYTES);
        assert!(line.len() > MAX_GUEST_LOG_LINE_BYTES - 2);
    }

    #[test]
    fn a_full_buffer_drops_the_oldest_and_a_failed_shipment_goes_back_first() {
        let logs = logs(1000, 3);
        for i in 0..5 {
            logs.offer(&source("a/web"), LogStream::Stdout, &format!("{i}"));
        }
        let taken = logs.take(2);
        assert_eq!(
            taken.iter().map(|l| l.line.as_str()).collect::<Vec<_>>(),
            ["2", "3"]
        );
        logs.offer(&source("a/web"), LogStream::Stdout, "5");
        logs.put_back(taken);
        // 2, 3 went back ahead of 4, 5; the buffer holds 3, so 2 goes.
        let all = logs.take(10);
        assert_eq!(
            all.iter().map(|l| l.line.as_str()).collect::<Vec<_>>(),
            ["3", "4", "5"]
        );
    }
}
