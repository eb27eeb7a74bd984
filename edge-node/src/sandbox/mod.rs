//! The sandbox: one engine for the node and a fresh `Store` per request.
//!
//! A request runs with a CPU budget (thread CPU time, checked on every epoch
//! tick), a wall-clock deadline, and memory, table, instance and resource
//! handle limits from its service's config. The full WASI 0.2 interface set
//! is linked, because standard toolchains import it, but with nothing behind
//! it: no environment, no files, no sockets; `exit` ends only that request.
//!
//! - [`engine`]: engine configuration (pooling allocator, copy-on-write
//!   images) and the fingerprint compiled artifacts are checked against.
//! - [`epoch`]: the one ticker thread.
//! - [`cpu`]: CPU accounting per request.
//! - [`turns`]: fair turns on the CPU between tenants.
//! - [`state`], [`limiter`]: what a request's store holds (the host
//!   interfaces it links are in [`crate::host`]).

pub mod cpu;
pub mod epoch;
pub mod limiter;
pub mod state;
pub mod turns;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use edge_config::limits::EPOCH_TICK_MS;
use edge_config::{SandboxLimits, ServiceLimits};
use http_body::Body;
use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, PoolConcurrencyLimitError, Store, UpdateDeadline};
use wasmtime_wasi::I32Exit;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use edge_platform::engine;

use crate::error::EdgeError;
use cpu::{CpuAccount, CpuMetered};
use epoch::EpochTicker;
pub use state::{GuestIdentity, GuestState};
use turns::{CpuTurns, TakesTurns, Turn};

/// A component ready to instantiate for a request.
pub type ReadyComponent = ProxyPre<GuestState>;

/// The engine, the linker every component is linked with, and the ticker.
pub struct Sandbox {
    engine: Engine,
    linker: Linker<GuestState>,
    fingerprint: String,
    ticker: EpochTicker,
    /// `None`: guests run as the runtime schedules them (validation only).
    turns: Option<Arc<CpuTurns>>,
}

debug_fields!(Sandbox { fingerprint });

/// How one guest execution ended, for metrics.
#[derive(Debug, Clone)]
pub struct GuestReport {
    /// `Ok` when the handler returned normally.
    pub outcome: Result<(), EdgeError>,
    /// CPU time charged to the request (instantiation included).
    pub cpu: Duration,
    /// Time to instantiate, when instantiation finished.
    pub instantiation: Option<Duration>,
    /// Time from the start of instantiation to the guest's end.
    pub wall: Duration,
}

/// The error the epoch callback raises when a guest used its CPU budget.
#[derive(Debug)]
struct CpuBudgetExceeded;

impl fmt::Display for CpuBudgetExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "guest CPU budget exceeded")
    }
}

impl std::error::Error for CpuBudgetExceeded {}

impl Sandbox {
    pub fn new(limits: &SandboxLimits) -> anyhow::Result<Self> {
        let engine = engine::build_engine(limits).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        Self::with_engine(engine)
    }

    fn with_engine(engine: Engine) -> anyhow::Result<Self> {
        let mut linker = Linker::new(&engine);
        edge_platform::guest::add_to_linker(&mut linker)
            .map_err(|e| anyhow::anyhow!("linking WASI and edge:platform: {e:?}"))?;
        let fingerprint = engine::engine_fingerprint(&engine);
        let ticker = EpochTicker::start(engine.clone())?;
        Ok(Self {
            engine,
            linker,
            fingerprint,
            ticker,
            turns: None,
        })
    }

    /// Guests take fair turns on the CPU by tenant ([`turns`]), as many at
    /// once as the runtime has worker threads.
    #[must_use]
    pub fn with_turns(mut self, waiting_gauge: prometheus::IntGauge) -> Self {
        self.turns = Some(Arc::new(CpuTurns::for_this_runtime(
            waiting_gauge,
            self.ticker.contention(),
        )));
        self
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// See [`engine::engine_fingerprint`].
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Type-checks a component against the platform's imports and the
    /// `wasi:http/proxy` export, and pre-instantiates it.
    pub fn prepare(&self, component: &Component) -> wasmtime::Result<ReadyComponent> {
        ProxyPre::new(self.linker.instantiate_pre(component)?)
    }

    /// Runs `request` through a fresh instance of `component`. Returns the
    /// response head as soon as the guest sets it; the guest keeps running
    /// (streaming the body) in its own task, and `finished` is called when it
    /// ends, with whatever it captured dropped then.
    pub async fn handle<B>(
        &self,
        component: &ReadyComponent,
        identity: &GuestIdentity,
        capabilities: &crate::host::Capabilities,
        limits: &ServiceLimits,
        request: http::Request<B>,
        finished: impl FnOnce(GuestReport) + Send + 'static,
    ) -> Result<http::Response<HyperOutgoingBody>, EdgeError>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let cpu = Arc::new(CpuAccount::default());
        let mut store = Store::new(
            &self.engine,
            GuestState::new(identity, capabilities, limits, Arc::clone(&cpu)),
        );
        store.limiter(|state| &mut state.limiter);
        if let Some(sink) = request.extensions().get::<crate::interim::InterimSink>() {
            store.data_mut().outbound.forward_interim_to(sink.clone());
        }
        if let Some(chain) = request.extensions().get::<crate::host::outbound::Chain>() {
            store.data_mut().outbound.join_chain(chain.clone());
        }
        let turn = self
            .turns
            .as_ref()
            .map(|turns| Turn::new(Arc::clone(turns), Arc::clone(&identity.tenant)));
        store.data_mut().turn = turn.clone();
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|context| {
            let state = context.data();
            let used = state.cpu.used_including_current_poll();
            if used > state.cpu_budget {
                return Err(wasmtime::Error::new(CpuBudgetExceeded));
            }
            let Some(turn) = &state.turn else {
                return Ok(UpdateDeadline::YieldCustom(1, turns::yield_to_runtime()));
            };
            // A guest that has not used a tick of CPU yet is most likely
            // about to finish (a tick came by in the middle of a short
            // request): it runs on, and takes turns only once it is busy.
            if used < Duration::from_millis(EPOCH_TICK_MS) {
                return Ok(UpdateDeadline::Continue(1));
            }
            // A busy guest's turn ends at each tick: with guests waiting it
            // waits for its next in its tenant's queue; without, it yields to
            // the runtime, keeping its turn, so that other requests' work
            // gets the worker thread.
            let yielding = if turn.others_waiting() {
                turn.next()
            } else {
                turn.yield_keeping_turn()
            };
            Ok(UpdateDeadline::YieldCustom(1, yielding))
        });

        let incoming = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, request)
            .map_err(|_| EdgeError::MissingHost)?;
        let (response_tx, response_rx) = tokio::sync::oneshot::channel();
        let outparam = store
            .data_mut()
            .http()
            .new_response_outparam(response_tx)
            .map_err(|e| internal("creating the response outparam", &e))?;

        // Tells the response body how the guest ended (see `GuestBody`).
        let (outcome_tx, outcome_rx) = tokio::sync::oneshot::channel();
        let component = component.clone();
        let wall_time = Duration::from_millis(limits.wall_time_ms);
        let limits = limits.clone();
        // The epoch ticks while this guest runs, streaming included.
        let running = self.ticker.guest_started();
        let guest = async move {
            let _running = running;
            let started = Instant::now();
            let mut instantiation = None;
            let run = async {
                let proxy = component.instantiate_async(&mut store).await?;
                instantiation = Some(started.elapsed());
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, incoming, outparam)
                    .await
            };
            let metered = CpuMetered::new(run, Arc::clone(&cpu));
            // A guest waiting for its turn is charged no CPU: the turn is
            // taken outside the meter.
            let result = match turn {
                Some(turn) => tokio::time::timeout(wall_time, TakesTurns::new(metered, turn)).await,
                None => tokio::time::timeout(wall_time, metered).await,
            };
            let outcome = match result {
                Ok(Ok(())) => Ok(()),
                Ok(Err(error)) => Err(classify(&error, store.data().limiter.limit_hit, &limits)),
                Err(_elapsed) => Err(EdgeError::WallTimeExceeded {
                    limit_ms: limits.wall_time_ms,
                }),
            };
            // Sent before the store (and with it the body's sender) is
            // dropped, so that the body sees the outcome when it ends.
            let _ = outcome_tx.send(outcome.clone());
            // Return the instance's slot to the pool before reporting.
            drop(store);
            finished(GuestReport {
                outcome: outcome.clone(),
                cpu: cpu.used(),
                instantiation,
                wall: started.elapsed(),
            });
            outcome
        };

        // The guest runs on this request's task until it sets its response
        // (a small handler finishes entirely in that time, with no task
        // spawned and no cross-thread wakeup). If it is still running then,
        // typically streaming its body, it continues in a task of its own.
        let mut guest = Box::pin(guest);
        let mut response_rx = response_rx;
        let mut ended = None;
        let response = std::future::poll_fn(|cx| {
            if ended.is_none()
                && let std::task::Poll::Ready(outcome) = guest.as_mut().poll(cx)
            {
                ended = Some(outcome);
            }
            // Once the guest has ended its store is gone, and with it the
            // response sender: the receiver is then always ready.
            std::pin::Pin::new(&mut response_rx).poll(cx)
        })
        .await;
        if ended.is_none() {
            tokio::spawn(guest);
        }

        match response {
            Ok(Ok(response)) => Ok(response.map(|body| GuestBody::boxed(body, outcome_rx))),
            Ok(Err(code)) => {
                tracing::debug!(request_id = %identity.request_id, ?code, "guest answered with an error code");
                Err(EdgeError::GuestError)
            }
            // The guest ended without setting a response.
            Err(_) => match ended {
                Some(Err(error)) => Err(error),
                Some(Ok(())) => Err(EdgeError::NoResponse),
                None => {
                    tracing::error!(request_id = %identity.request_id, "response sender dropped by a running guest");
                    Err(EdgeError::Internal)
                }
            },
        }
    }
}

/// A guest's response body. wasmtime ends the body stream cleanly when the
/// guest's store is dropped, even when the guest trapped or was stopped in
/// the middle of it; a client would then take a truncated body for a
/// complete one. This wrapper ends the body with an error instead when the
/// guest's execution failed, so HTTP/1.1 gets no final chunk and HTTP/2 a
/// reset stream.
struct GuestBody {
    inner: HyperOutgoingBody,
    outcome: tokio::sync::oneshot::Receiver<Result<(), EdgeError>>,
}

impl GuestBody {
    fn boxed(
        inner: HyperOutgoingBody,
        outcome: tokio::sync::oneshot::Receiver<Result<(), EdgeError>>,
    ) -> HyperOutgoingBody {
        use http_body_util::BodyExt;
        Self { inner, outcome }.boxed_unsync()
    }
}

impl Body for GuestBody {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        use std::task::Poll;
        match std::pin::Pin::new(&mut self.inner).poll_frame(cx) {
            // The stream ended. If the guest has already failed, the end came
            // from its store being dropped; if it is still running, the end
            // came from the guest finishing the body.
            Poll::Ready(None) => match self.outcome.try_recv() {
                Ok(Err(error)) => Poll::Ready(Some(Err(wasmtime_wasi_http::Error::InternalError(
                    Some(format!("response body cut: {}", error.code())),
                )))),
                _ => Poll::Ready(None),
            },
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        // Never claim the end early: the end must go through `poll_frame`.
        false
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Names why a guest failed. The CPU budget, the instance pool and exit are
/// recognised by their error types; any other failure after a refused memory
/// or table grow is the guest running out of memory.
fn classify(error: &wasmtime::Error, limit_hit: bool, limits: &ServiceLimits) -> EdgeError {
    if caused_by::<CpuBudgetExceeded>(error) {
        EdgeError::CpuBudgetExceeded {
            budget_ms: limits.cpu_budget_ms,
        }
    } else if caused_by::<PoolConcurrencyLimitError>(error) {
        EdgeError::Overloaded
    } else if limit_hit {
        EdgeError::MemoryLimitExceeded {
            limit_bytes: limits.memory_bytes,
        }
    } else if caused_by::<I32Exit>(error) {
        EdgeError::NoResponse
    } else {
        tracing::debug!(error = ?error, "guest trapped");
        EdgeError::GuestTrap
    }
}

/// Whether `E` is the error itself or anywhere in its chain of causes.
fn caused_by<E: std::error::Error + Send + Sync + 'static>(error: &wasmtime::Error) -> bool {
    error.is::<E>() || error.chain().any(|cause| cause.is::<E>())
}

fn internal(what: &str, error: &wasmtime::Error) -> EdgeError {
    tracing::error!(error = ?error, "{what}");
    EdgeError::Internal
}
