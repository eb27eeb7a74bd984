//! What one request's `Store` holds: WASI contexts with nothing granted, the
//! outbound policy, the limiter and the CPU account.

use std::sync::Arc;
use std::time::Duration;

use edge_config::ServiceLimits;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use super::cpu::CpuAccount;
use super::guest_log::{GuestLog, GuestLogStream, LogStream};
use super::limiter::GuestLimiter;

/// Who a guest runs for: used in its log lines.
#[derive(Debug, Clone)]
pub struct GuestIdentity {
    pub service: Arc<str>,
    pub request_id: Arc<str>,
}

/// The data of one request's `Store`.
pub struct GuestState {
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    outbound: OutboundPolicy,
    pub(crate) limiter: GuestLimiter,
    pub(crate) cpu: Arc<CpuAccount>,
    pub(crate) cpu_budget: Duration,
}

impl GuestState {
    pub fn new(identity: &GuestIdentity, limits: &ServiceLimits, cpu: Arc<CpuAccount>) -> Self {
        let log = GuestLog::new(
            Arc::clone(&identity.service),
            Arc::clone(&identity.request_id),
            limits.max_log_bytes_per_request,
        );
        // Nothing is granted: no environment, arguments or preopened
        // directories (the builder's defaults), and no network.
        let wasi = WasiCtx::builder()
            .stdout(GuestLogStream::new(Arc::clone(&log), LogStream::Stdout))
            .stderr(GuestLogStream::new(log, LogStream::Stderr))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let mut table = ResourceTable::new();
        table.set_max_capacity(usize::try_from(limits.max_resource_handles).unwrap_or(usize::MAX));
        Self {
            table,
            wasi,
            http: WasiHttpCtx::new(),
            outbound: OutboundPolicy,
            limiter: GuestLimiter::new(limits),
            cpu,
            cpu_budget: Duration::from_millis(limits.cpu_budget_ms),
        }
    }
}

impl std::fmt::Debug for GuestState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestState")
            .field("limiter", &self.limiter)
            .field("cpu", &self.cpu)
            .finish_non_exhaustive()
    }
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for GuestState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound,
        }
    }
}

/// Outgoing HTTP from a guest. A service with no backends may reach nothing:
/// every request is refused with `HTTP-request-denied` before any DNS lookup
/// or connection.
#[derive(Debug, Default)]
pub struct OutboundPolicy;

impl WasiHttpHooks for OutboundPolicy {
    fn send_request(
        &mut self,
        _request: http::Request<wasmtime_wasi_http::WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> Box<
        dyn Future<
                Output = wasmtime_wasi_http::Result<(
                    http::Response<wasmtime_wasi_http::WasiBody>,
                    Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
                )>,
            > + Send,
    > {
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}
