//! What a guest may send out: requests to its service's backends, at most
//! `max_backend_requests` per execution and `max_concurrent_backend_requests`
//! at once, through the tenant's HTTP cache.

use std::sync::Arc;

use edge_config::ServiceLimits;
use edge_platform::guest::SendFuture;
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime_wasi_http::{Error as WasiHttpError, RequestOptions, WasiBody, WasiHttpHooks};

use crate::backend::{BackendSet, Origin, Timeouts};
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

    fn head_deadline(&self) -> std::time::Duration {
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
        }
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
        let client = match &backend.client {
            Ok(client) => Arc::clone(client),
            Err(_) => return Self::refuse(WasiHttpError::ConfigurationError),
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
        let context = context.clone();
        let in_flight = Arc::clone(&self.in_flight);
        let origin = TimedOrigin {
            origin,
            timeouts: Timeouts::new(&backend.spec, options),
        };
        let mode = backend.spec.cache;
        Box::new(async move {
            // Waits for a slot: the guest's own requests queue, never
            // anyone else's.
            let permit = in_flight
                .acquire_owned()
                .await
                .map_err(|_| WasiHttpError::InternalError(None))?;
            let response = context
                .cache
                .fetch(&context.namespace, mode, &origin, request)
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
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
