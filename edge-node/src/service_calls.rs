//! Calls from one service to another of the same tenant, run in process.
//!
//! A guest's request to a service backend (`http://auth/...` with
//! `auth = { service = "auth" }`) reaches [`ServiceCalls::call`] through
//! `host::outbound`, which has already checked the call against its chain
//! (depth, count, loops). Here the callee is looked up among the caller's
//! tenant's services only, and run in a fresh instance of its own: its own
//! CPU budget, wall time, memory and backend limits, its own metrics, usage
//! and log lines under its own name, with the client request's id. No
//! socket, TLS or HTTP framing is involved: the request and the response
//! stream between the two instances as they are.
//!
//! A callee that fails answers its caller as it would answer a client (the
//! same status and `edge-error` code), so a caller handles a chained
//! service as it handles any origin.

use std::sync::Arc;
use std::time::{Duration, Instant};

use edge_config::HttpLimits;
use wasmtime_wasi_http::Error as WasiHttpError;

use crate::error::EdgeError;
use crate::host::outbound::{CallFuture, CallService, ServiceCall};
use crate::http::body::{BodyCut, CutReason, LimitedBody, declared_length};
use crate::metrics::Metrics;
use crate::modules::ModuleCache;
use crate::routing::Router;
use crate::sandbox::{GuestReport, Sandbox};
use crate::usage::UsageMeter;

/// The `protocol` label of a request that came from another service.
pub const SERVICE_CALL_PROTOCOL: &str = "service";

/// What running a callee needs: the same parts as a client's request.
#[derive(Debug)]
pub struct ServiceCalls {
    pub(crate) router: Arc<Router>,
    /// Each callee takes a slot of its tenant's in-flight bound, without
    /// queuing: the instances a tenant's chains hold are its requests.
    pub(crate) admission: Arc<crate::admission::Admission>,
    pub(crate) modules: ModuleCache,
    pub(crate) sandbox: Arc<Sandbox>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) usage: Arc<UsageMeter>,
    pub(crate) http_limits: HttpLimits,
}

impl CallService for ServiceCalls {
    fn call(self: Arc<Self>, call: ServiceCall) -> CallFuture {
        Box::pin(async move { self.run(call).await })
    }
}

impl ServiceCalls {
    async fn run(
        &self,
        call: ServiceCall,
    ) -> Result<http::Response<wasmtime_wasi_http::WasiBody>, WasiHttpError> {
        let started = Instant::now();
        let ServiceCall {
            callee,
            chain,
            mut request,
        } = call;
        // Only the caller's tenant's services: another tenant's service of
        // the same name is not there to be found.
        let service = self
            .router
            .service_of(&chain.tenant, &callee)
            .ok_or(WasiHttpError::DestinationNotFound)?;
        // A callee with a canary splits its calls by the caller's request
        // (a sticky header or cookie the caller passed on); there is no
        // client address here, so a canary sticky on it gets none.
        let service = Arc::clone(service.version_for(&request));
        let label = self.metrics.service_label(&service.name);
        let usage = self.usage.counters(&service.name, service.version);
        let identity = service.identity(&chain.request_id, &label);
        let body_limit = service.limits.max_request_body_bytes;
        let admitted = self.admission.try_admit(&service.tenant);
        let result = if declared_length(request.headers()).is_some_and(|length| length > body_limit)
        {
            Err(EdgeError::BodyTooLarge { limit: body_limit })
        } else if let Err(refusal) = &admitted {
            Err(match refusal {
                crate::admission::Refusal::Node => EdgeError::Overloaded,
                crate::admission::Refusal::Tenant => EdgeError::TenantOverloaded,
            })
        } else {
            request.extensions_mut().insert(chain);
            let component = self.modules.get(service.module).await.map_err(|error| {
                tracing::error!(service = %service.name, module = %service.module, %error, "module unavailable");
                EdgeError::ModuleUnavailable
            });
            match component {
                Ok(component) => {
                    let cut = Arc::new(BodyCut::default());
                    let stall = Duration::from_millis(self.http_limits.body_read_timeout_ms);
                    let request = request
                        .map(|body| LimitedBody::new(body, body_limit, stall, Arc::clone(&cut)));
                    let metrics = Arc::clone(&self.metrics);
                    let guest_usage = Arc::clone(&usage);
                    let guest_label = Arc::clone(&label);
                    let permit = admitted.ok();
                    let finished = move |report: GuestReport| {
                        // The slot is the callee's until its guest is done.
                        let _permit = permit;
                        crate::http::pipeline::record_guest(&metrics, &guest_label, &report);
                        guest_usage.add_cpu(report.cpu);
                        if report.outcome.is_err() {
                            guest_usage.add_guest_failure();
                        }
                    };
                    let handled = Box::pin(self.sandbox.handle(
                        &component,
                        &identity,
                        &service.capabilities,
                        &service.limits,
                        request,
                        finished,
                    ))
                    .await;
                    match handled {
                        Err(_) if cut.reason() == Some(CutReason::TooLarge) => {
                            Err(EdgeError::BodyTooLarge { limit: body_limit })
                        }
                        other => other,
                    }
                }
                Err(error) => Err(error),
            }
        };
        let response = result.unwrap_or_else(|error| {
            if error.fault() == crate::error::Fault::Internal {
                tracing::error!(request_id = %identity.request_id, service = %service.name, "{error}");
            }
            error.to_response(&identity.request_id, self.http_limits.retry_after_seconds)
        });
        let status = response.status().as_u16();
        usage.record_status(status);
        self.metrics
            .record_request(&label, SERVICE_CALL_PROTOCOL, status, started.elapsed());
        Ok(response)
    }
}
