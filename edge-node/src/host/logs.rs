//! Guest stdout and stderr become the tenant's log lines.
//!
//! Each complete line within its service's rate
//! (`logs.max_guest_lines_per_second`, asked first, so that a guest cannot
//! flood the node's own log either) is emitted as a `tracing` event (target
//! `guest`) with the service and request id, and kept by the node's
//! [`TenantLogs`] for the control plane, where the tenant reads it
//! (`edgectl logs`). A request may log up to its service's
//! `max_log_bytes_per_request`; the rest is counted and dropped, and one
//! warning says how much. Writes never fail, so a guest that logs too much
//! keeps running (Rust's `println!` panics when stdout returns an error).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;

pub use crate::tenant_logs::LogStream;
use crate::tenant_logs::{LineSource, TenantLogs};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// What a guest may write in one call; bounds the host-side copy.
const MAX_WRITE_BYTES: usize = 64 * 1024;
/// A partial line is emitted once it reaches this length.
const MAX_LINE_BYTES: usize = 8 * 1024;

/// The log of one request, shared by its stdout and stderr.
#[derive(Debug)]
pub struct GuestLog {
    source: LineSource,
    sink: Option<Arc<TenantLogs>>,
    remaining_bytes: usize,
    dropped_bytes: u64,
    partial: [Vec<u8>; 2],
}

impl GuestLog {
    pub fn new(
        source: LineSource,
        sink: Option<Arc<TenantLogs>>,
        max_bytes: u64,
    ) -> Arc<Mutex<Self>> {
        Arc::new(Mutex::new(Self {
            source,
            sink,
            remaining_bytes: usize::try_from(max_bytes).unwrap_or(usize::MAX),
            dropped_bytes: 0,
            partial: [Vec::new(), Vec::new()],
        }))
    }

    fn append(&mut self, stream: LogStream, mut bytes: &[u8]) {
        if bytes.len() > self.remaining_bytes {
            self.dropped_bytes += (bytes.len() - self.remaining_bytes) as u64;
            bytes = &bytes[..self.remaining_bytes];
        }
        self.remaining_bytes -= bytes.len();
        let index = stream as usize;
        for piece in bytes.split_inclusive(|&b| b == b'\n') {
            let partial = &mut self.partial[index];
            partial.extend_from_slice(piece);
            if piece.ends_with(b"\n") || partial.len() >= MAX_LINE_BYTES {
                let line = std::mem::take(partial);
                self.emit(stream, &line);
            }
        }
    }

    /// Whether one more line of this service may go out now.
    fn admitted(&self) -> bool {
        self.sink
            .as_ref()
            .is_none_or(|sink| sink.admit(&self.source.service))
    }

    fn emit(&self, stream: LogStream, line: &[u8]) {
        let line = String::from_utf8_lossy(line);
        let line = line.trim_end_matches(['\n', '\r']);
        if line.is_empty() || !self.admitted() {
            return;
        }
        tracing::info!(
            target: "guest",
            service = %self.source.service,
            version = self.source.version,
            request_id = %self.source.request_id,
            stream = stream.name(),
            "{line}"
        );
        if let Some(sink) = &self.sink {
            sink.keep(&self.source, stream, line);
        }
    }
}

impl Drop for GuestLog {
    fn drop(&mut self) {
        for stream in [LogStream::Stdout, LogStream::Stderr] {
            let line = std::mem::take(&mut self.partial[stream as usize]);
            if !line.is_empty() {
                self.emit(stream, &line);
            }
        }
        // The warning is a line of the node's log the guest causes: it is
        // within the service's rate too.
        if self.dropped_bytes > 0 && self.admitted() {
            tracing::warn!(
                target: "guest",
                service = %self.source.service,
                request_id = %self.source.request_id,
                dropped_bytes = self.dropped_bytes,
                "guest log truncated at max_log_bytes_per_request"
            );
        }
    }
}

/// One of a request's output streams, handed to WASI as stdout or stderr.
#[derive(Debug, Clone)]
pub struct GuestLogStream {
    log: Arc<Mutex<GuestLog>>,
    stream: LogStream,
}

impl GuestLogStream {
    pub fn new(log: Arc<Mutex<GuestLog>>, stream: LogStream) -> Self {
        Self { log, stream }
    }

    fn append(&self, bytes: &[u8]) {
        // A poisoned lock means a log line panicked; dropping further lines
        // is better than failing the guest.
        if let Ok(mut log) = self.log.lock() {
            log.append(self.stream, bytes);
        }
    }
}

impl IsTerminal for GuestLogStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestLogStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestLogStream {
    async fn ready(&mut self) {}
}

impl OutputStream for GuestLogStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(MAX_WRITE_BYTES)
    }
}

impl AsyncWrite for GuestLogStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(max_bytes: u64) -> Arc<Mutex<GuestLog>> {
        let source = LineSource {
            service: "svc".into(),
            version: 1,
            request_id: "req".into(),
        };
        GuestLog::new(source, None, max_bytes)
    }

    #[test]
    fn bytes_beyond_the_per_request_limit_are_counted_and_dropped() {
        let log = log(10);
        let mut stdout = GuestLogStream::new(Arc::clone(&log), LogStream::Stdout);
        let mut stderr = GuestLogStream::new(Arc::clone(&log), LogStream::Stderr);
        // Writes never fail, even past the limit: a guest keeps running.
        assert!(
            stdout
                .write(Bytes::from_static(b"0123456789abcdef"))
                .is_ok()
        );
        assert!(stderr.write(Bytes::from_static(b"more\n")).is_ok());
        assert_eq!(stdout.check_write().ok(), Some(MAX_WRITE_BYTES));
        let state = log.lock().expect("lock");
        assert_eq!(state.remaining_bytes, 0);
        assert_eq!(state.dropped_bytes, 6 + 5);
        // The kept 10 bytes wait, as a partial line, for their newline.
        assert_eq!(state.partial[LogStream::Stdout as usize], b"0123456789");
        assert!(state.partial[LogStream::Stderr as usize].is_empty());
    }

    /// Counts the events of target `guest` that reach the node's log.
    struct GuestEvents(Arc<std::sync::atomic::AtomicUsize>);

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for GuestEvents {
        fn on_event(
            &self,
            event: &tracing::Event<'_>,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            if event.metadata().target() == "guest" {
                self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }

    #[test]
    fn a_guest_printing_10_000_lines_reaches_the_node_log_at_most_at_its_rate() {
        use tracing_subscriber::layer::SubscriberExt;
        let metrics = Arc::new(crate::metrics::Metrics::default());
        let config = edge_config::LogsSection {
            max_guest_lines_per_second: 100,
            ..Default::default()
        };
        let sink = Arc::new(TenantLogs::new(&config, Arc::clone(&metrics)));
        let events = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let subscriber = tracing_subscriber::registry().with(GuestEvents(Arc::clone(&events)));
        tracing::subscriber::with_default(subscriber, || {
            let source = LineSource {
                service: "noisy".into(),
                version: 1,
                request_id: "req".into(),
            };
            let log = GuestLog::new(source, Some(sink), 1024 * 1024);
            let mut stdout = GuestLogStream::new(Arc::clone(&log), LogStream::Stdout);
            for i in 0..10_000 {
                assert!(stdout.write(Bytes::from(format!("line {i}\n"))).is_ok());
            }
            drop(stdout);
            drop(log);
        });
        let written = events.load(std::sync::atomic::Ordering::Relaxed);
        // A second boundary inside the loop lets through up to twice.
        assert!(
            (100..=200).contains(&written),
            "{written} lines in the node's log"
        );
        let dropped = metrics
            .guest_log_lines
            .with_label_values(&["dropped_rate"])
            .get();
        assert_eq!(dropped as usize, 10_000 - written);
    }

    #[test]
    fn complete_lines_are_emitted_and_long_partial_lines_do_not_wait() {
        let log = log(1024 * 1024);
        let mut stdout = GuestLogStream::new(Arc::clone(&log), LogStream::Stdout);
        assert!(stdout.write(Bytes::from_static(b"one\ntwo\nthr")).is_ok());
        assert_eq!(log.lock().expect("lock").partial[0], b"thr");
        let long = vec![b'x'; MAX_LINE_BYTES + 10];
        assert!(stdout.write(Bytes::from(long)).is_ok());
        // A partial line that reaches MAX_LINE_BYTES goes out without
        // waiting for its newline, so a guest cannot grow it without bound.
        assert!(log.lock().expect("lock").partial[0].is_empty());
    }
}
