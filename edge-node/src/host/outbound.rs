//! What a guest may send out: requests to its service's backends, at most
//! `max_backend_requests` per execution and `max_concurrent_backend_requests`
//! at once, through the tenant's HTTP cache.
//!
//! A backend is an origin server or another service of the same tenant
//! (`service = "auth"`). A service backend's requests run that service in
//! process ([`CallService`]), in a fresh instance with its own limits; the
//! [`Chain`] each execution carries bounds how deep and how many such calls
//! one client request makes, and refuses a call back into a service already
//! on its path.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use edge_config::ServiceLimits;
use edge_config::limits::{MAX_SERVICE_CALL_DEPTH, MAX_SERVICE_CALLS_PER_REQUEST};
use edge_platform::guest::SendFuture;
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime_wasi_http::{Error as WasiHttpError, RequestOptions, WasiBody, WasiHttpHooks};

use crate::backend::{BackendSet, BackendTarget, Origin, Timeouts};
use crate::cache::HttpCache;
use crate::cache::upstream::Upstream;
use crate::interim::InterimSink;
use crate::metrics::Metrics;

/// Everything a guest's outgoing requests need, shared by the service's
/// requests.
#[derive(Debug, Clone)]
pub struct OutboundContext {
    /// Cache namespace: the tenant.
    pub namespace: Arc<str>,
    pub backends: Arc<BackendSet>,
    pub cache: Arc<HttpCache>,
    pub metrics: Arc<Metrics>,
    /// Whether any backend is a service: only then does a request carry a
    /// [`Chain`].
    pub calls_services: bool,
}

/// Runs a service of the caller's tenant on a request the caller's guest
/// sent. The node's implementation sits above the sandbox
/// (`crate::service_calls`), which this layer cannot name.
pub trait CallService: Send + Sync + fmt::Debug {
    /// The callee's response head, its body streaming on; an error is what
    /// the caller's guest sees as the request's error code.
    fn call(self: Arc<Self>, call: ServiceCall) -> CallFuture;
}

/// The response of a call to a service.
pub type CallFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<WasiBody>, WasiHttpError>> + Send>>;

/// One call to a service: the callee, its place in the chain, the request.
#[derive(Debug)]
pub struct ServiceCall {
    pub callee: Arc<str>,
    /// The chain as the callee sees it: the callee last on its path.
    pub chain: Chain,
    pub request: http::Request<WasiBody>,
}

/// Where one execution stands in its client request's chain of service
/// calls. The first execution starts it; each call hands the callee a copy
/// with the callee added, as an extension of the callee's request.
#[derive(Debug, Clone)]
pub struct Chain {
    calls: Arc<dyn CallService>,
    /// The tenant every service of the chain belongs to: a callee is looked
    /// up among its services only.
    pub tenant: Arc<str>,
    /// The client request's id, in every callee's logs.
    pub request_id: Arc<str>,
    /// The services from the one the client reached to this one.
    path: Arc<[Arc<str>]>,
    /// Service calls made so far by every execution of the client request.
    made: Arc<AtomicU64>,
}

impl Chain {
    /// The chain of a client request that reached `service`.
    pub fn start(
        calls: Arc<dyn CallService>,
        tenant: Arc<str>,
        request_id: Arc<str>,
        service: Arc<str>,
    ) -> Self {
        Self {
            calls,
            tenant,
            request_id,
            path: Arc::from(vec![service]),
            made: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The services from the one the client reached to this one.
    pub fn path(&self) -> &[Arc<str>] {
        &self.path
    }

    /// The chain as `callee` sees it, or why this call is refused: a
    /// callee already on the path (a loop), a chain at
    /// [`MAX_SERVICE_CALL_DEPTH`], or a request that has made
    /// [`MAX_SERVICE_CALLS_PER_REQUEST`] calls.
    fn enter(&self, callee: &Arc<str>) -> Result<Chain, WasiHttpError> {
        if self.path.contains(callee) {
            return Err(WasiHttpError::LoopDetected);
        }
        if self.path.len() >= MAX_SERVICE_CALL_DEPTH {
            return Err(WasiHttpError::InternalError(Some(format!(
                "service call depth limit reached: {MAX_SERVICE_CALL_DEPTH} services in one chain"
            ))));
        }
        if self.made.fetch_add(1, Ordering::Relaxed) >= MAX_SERVICE_CALLS_PER_REQUEST {
            return Err(WasiHttpError::InternalError(Some(format!(
                "service call limit reached: {MAX_SERVICE_CALLS_PER_REQUEST} per client request"
            ))));
        }
        let mut path = self.path.to_vec();
        path.push(Arc::clone(callee));
        Ok(Chain {
            path: path.into(),
            ..self.clone()
        })
    }
}

/// A service backend with one request's place in the chain. Its calls pass
/// the cache straight through: each runs the callee, whose version may
/// differ per request (a canary), and which keeps what it likes in the
/// cache API itself. No timeout is put on a call: the callee's own wall
/// time bounds it, and a call cut short would leave its execution
/// unaccounted.
#[derive(Debug, Clone)]
struct ServiceUpstream {
    /// `service://<name>`: how the callee's URLs are written, a scheme no
    /// origin has.
    base_url: Arc<str>,
    callee: Arc<str>,
    chain: Chain,
    /// The caller's metrics label and backend name.
    service: Arc<str>,
    backend: Arc<str>,
    metrics: Arc<Metrics>,
}

impl Upstream for ServiceUpstream {
    fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Never asked: nothing waits on another call's fill.
    fn head_deadline(&self) -> Duration {
        Duration::ZERO
    }

    async fn send(
        &self,
        request: http::Request<WasiBody>,
    ) -> Result<http::Response<WasiBody>, WasiHttpError> {
        let started = Instant::now();
        let call = ServiceCall {
            callee: Arc::clone(&self.callee),
            chain: self.chain.clone(),
            request,
        };
        let result = Arc::clone(&self.chain.calls).call(call).await;
        let outcome = match &result {
            Ok(response) => crate::metrics::status_class(response.status().as_u16()).to_string(),
            Err(error) => crate::backend::error_label(error),
        };
        self.metrics
            .record_backend(&self.service, &self.backend, &outcome, started.elapsed());
        result
    }
}

/// A backend's origin with one request's timeouts: what the cache reads
/// through.
#[derive(Debug, Clone)]
struct TimedOrigin {
    origin: Origin,
    timeouts: Timeouts,
}

impl Upstream for TimedOrigin {
    fn base_url(&self) -> &str {
        self.origin.base_url()
    }

    fn head_deadline(&self) -> Duration {
        self.timeouts.connect + self.timeouts.first_byte
    }

    async fn send(
        &self,
        request: http::Request<WasiBody>,
    ) -> Result<http::Response<WasiBody>, WasiHttpError> {
        self.origin.send(request, self.timeouts).await
    }
}

/// The outgoing-request hook of one guest execution.
#[derive(Debug)]
pub struct Outbound {
    context: Option<OutboundContext>,
    /// The service's metrics label for this request.
    metrics_label: Arc<str>,
    requests_left: u64,
    limit: u64,
    in_flight: Arc<Semaphore>,
    /// Where the origins' interim responses go: the client's connection.
    interim: Option<InterimSink>,
    /// This execution's place in its request's chain of service calls;
    /// `None` refuses every service backend.
    chain: Option<Chain>,
}

impl Outbound {
    /// `context` is `None` for a service with no backends: every request is
    /// then refused.
    pub fn new(
        context: Option<OutboundContext>,
        metrics_label: Arc<str>,
        limits: &ServiceLimits,
    ) -> Self {
        Self {
            context,
            metrics_label,
            requests_left: limits.max_backend_requests,
            limit: limits.max_backend_requests,
            in_flight: Arc::new(Semaphore::new(
                usize::try_from(limits.max_concurrent_backend_requests).unwrap_or(1),
            )),
            interim: None,
            chain: None,
        }
    }

    /// Places this execution in its request's chain of service calls.
    pub fn join_chain(&mut self, chain: Chain) {
        self.chain = Some(chain);
    }

    /// Passes the origins' interim (1xx) responses on to `sink`.
    pub fn forward_interim_to(&mut self, sink: InterimSink) {
        self.interim = Some(sink);
    }

    fn refuse(error: WasiHttpError) -> SendFuture {
        Box::new(async move { Err(error) })
    }
}

impl WasiHttpHooks for Outbound {
    /// The Host header is the backend's, set when the request is sent; the
    /// guest's authority is only the backend's name.
    fn set_host_header(&mut self) -> bool {
        false
    }

    /// `http://` is what a guest writes for a backend; the backend decides
    /// whether the origin is reached over TLS.
    fn default_scheme(&mut self) -> Option<http::uri::Scheme> {
        Some(http::uri::Scheme::HTTP)
    }

    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> SendFuture {
        let Some(context) = &self.context else {
            return Self::refuse(WasiHttpError::HttpRequestDenied);
        };
        // Only a declared backend's bare name: a port, user info or any
        // other spelling is not a backend and never reaches DNS.
        let backend = request
            .uri()
            .authority()
            .filter(|authority| authority.port().is_none())
            .and_then(|authority| context.backends.get(authority.as_str()));
        let Some(backend) = backend.cloned() else {
            return Self::refuse(WasiHttpError::HttpRequestDenied);
        };
        if self.requests_left == 0 {
            return Self::refuse(WasiHttpError::InternalError(Some(format!(
                "backend request limit reached: {} per execution (limits.max_backend_requests)",
                self.limit
            ))));
        }
        self.requests_left -= 1;
        let client = match &backend.target {
            BackendTarget::Origin(Ok(client)) => Arc::clone(client),
            BackendTarget::Origin(Err(_)) => {
                return Self::refuse(WasiHttpError::ConfigurationError);
            }
            BackendTarget::Service(callee) => {
                let Some(chain) = &self.chain else {
                    return Self::refuse(WasiHttpError::HttpRequestDenied);
                };
                let chain = match chain.enter(callee) {
                    Ok(chain) => chain,
                    Err(error) => return Self::refuse(error),
                };
                let upstream = ServiceUpstream {
                    base_url: format!("service://{callee}").into(),
                    callee: Arc::clone(callee),
                    chain,
                    service: Arc::clone(&self.metrics_label),
                    backend: Arc::clone(&backend.name),
                    metrics: Arc::clone(&context.metrics),
                };
                let uncached = edge_config::BackendCache::Off;
                return self.fetch(context.clone(), uncached, upstream, request);
            }
        };
        let origin = Origin {
            client,
            service: Arc::clone(&self.metrics_label),
            backend: Arc::clone(&backend.name),
            metrics: Arc::clone(&context.metrics),
        };
        if let Some(sink) = &self.interim
            && backend.spec.forward_interim_responses
        {
            request.extensions_mut().insert(sink.clone());
        }
        let origin = TimedOrigin {
            origin,
            timeouts: Timeouts::new(&backend.spec, options),
        };
        self.fetch(context.clone(), backend.spec.cache, origin, request)
    }
}

impl Outbound {
    /// Sends `request` to `upstream` through the tenant's HTTP cache, once
    /// the execution has a free slot for it.
    fn fetch(
        &self,
        context: OutboundContext,
        mode: edge_config::BackendCache,
        upstream: impl Upstream,
        request: http::Request<WasiBody>,
    ) -> SendFuture {
        let in_flight = Arc::clone(&self.in_flight);
        Box::new(async move {
            // Waits for a slot: the guest's own requests queue, never
            // anyone else's.
            let permit = in_flight
                .acquire_owned()
                .await
                .map_err(|_| WasiHttpError::InternalError(None))?;
            let response = context
                .cache
                .fetch(&context.namespace, mode, &upstream, request)
                .await?;
            // The slot is held until the body is read or dropped.
            let response = response.map(|body| PermitBody::boxed(body, permit));
            Ok((
                response,
                Box::new(async { Ok(()) }) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

/// A response body that holds its request's concurrency slot.
struct PermitBody {
    inner: WasiBody,
    _permit: OwnedSemaphorePermit,
}

impl PermitBody {
    fn boxed(inner: WasiBody, permit: OwnedSemaphorePermit) -> WasiBody {
        Self {
            inner,
            _permit: permit,
        }
        .boxed_unsync()
    }
}

impl http_body::Body for PermitBody {
    type Data = bytes::Bytes;
    type Error = WasiHttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct NoCallee;

    impl CallService for NoCallee {
        fn call(self: Arc<Self>, _call: ServiceCall) -> CallFuture {
            Box::pin(async { Err(WasiHttpError::DestinationNotFound) })
        }
    }

    fn chain() -> Chain {
        Chain::start(Arc::new(NoCallee), "acme".into(), "id".into(), "s0".into())
    }

    #[test]
    fn a_call_to_a_service_already_on_the_path_is_a_loop() {
        let first = chain().enter(&"s1".into()).expect("s0 -> s1");
        let second = first.enter(&"s2".into()).expect("s1 -> s2");
        for callee in ["s0", "s1", "s2"] {
            assert!(matches!(
                second.enter(&callee.into()),
                Err(WasiHttpError::LoopDetected)
            ));
        }
        assert_eq!(second.path().len(), 3);
    }

    #[test]
    fn a_chain_goes_no_deeper_than_its_limit() {
        let mut chain = chain();
        for depth in 1..MAX_SERVICE_CALL_DEPTH {
            chain = chain
                .enter(&format!("s{depth}").into())
                .expect("within the depth");
        }
        assert_eq!(chain.path().len(), MAX_SERVICE_CALL_DEPTH);
        let Err(WasiHttpError::InternalError(Some(message))) = chain.enter(&"deeper".into()) else {
            panic!("a chain went past its depth");
        };
        assert!(message.contains("depth"), "{message}");
    }

    #[test]
    fn every_execution_of_a_request_shares_one_count_of_calls() {
        let root = chain();
        let child = root.enter(&"child".into()).expect("first call");
        // The count is the request's: calls from the child and from the
        // root use the same allowance.
        for i in 1..MAX_SERVICE_CALLS_PER_REQUEST {
            let from = if i % 2 == 0 { &root } else { &child };
            from.enter(&format!("leaf{i}").into())
                .expect("within the count");
        }
        let Err(WasiHttpError::InternalError(Some(message))) = root.enter(&"one-more".into())
        else {
            panic!("a request made more calls than its limit");
        };
        assert!(message.contains("per client request"), "{message}");
    }
}
