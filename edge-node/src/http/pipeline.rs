//! One request, from head to response.
//!
//! framing checks -> route -> admission -> module -> guest. Each stage that
//! refuses a request answers with its [`EdgeError`]; a guest's response is
//! passed through with the request id added.

use std::sync::Arc;
use std::time::{Duration, Instant};

use edge_config::authority::Authority;
use http::{HeaderValue, Request, Response, header};
use http_body::Body;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use super::body::{BodyCut, CutReason, LimitedBody, MeteredBody};
use crate::admission::Refusal;
use crate::error::EdgeError;
use crate::error::REQUEST_ID;
use crate::host::outbound::Chain;
use crate::metrics::{GuestRun, Metrics, UNKNOWN_SERVICE};
use crate::node_state::PipelineContext;
use crate::routing::Service;
use crate::sandbox::{GuestIdentity, GuestReport};
use crate::usage::ServiceCounters;

/// Handles one request. Never fails: every problem becomes a response.
///
/// The same for every protocol: `B` is hyper's body for HTTP/1.1 and
/// HTTP/2, and the QUIC stream's for HTTP/3.
///
/// `sni_tenant` is the tenant whose name the connection's TLS server name
/// (SNI) routed to, and whose certificate the handshake served: a request
/// on that connection for another tenant's host is misdirected (421).
pub async fn handle<B>(
    node: &PipelineContext,
    mut request: Request<B>,
    sni_tenant: Option<&Arc<str>>,
) -> Response<HyperOutgoingBody>
where
    B: Body<Data = bytes::Bytes> + Send + Unpin + 'static,
    B::Error: Into<wasmtime_wasi_http::Error>,
{
    let started = Instant::now();
    let request_id: Arc<str> = node.request_ids.next().into();
    let version = request.version();
    // Taken only when the event will be written: with the access log off,
    // or filtered out (`RUST_LOG=...,access=off`), nothing is copied.
    let access = (node.access_log && tracing::enabled!(target: "access", tracing::Level::INFO))
        .then(|| AccessFields::of(&request));
    // Usage is counted for routed requests only: a refused one belongs to
    // no tenant.
    let (service_name, metrics_label, result, usage) =
        match admit_and_route(node, &mut request, sni_tenant).await {
            Ok((service, permit)) => {
                let service = Arc::clone(service.version_for(&request));
                let usage = node.usage.counters(&service.name, service.version);
                let label = node.metrics.service_label(&service.name);
                let identity = service.identity(&request_id, &label);
                let result = run_guest(node, &service, request, &identity, permit, &usage).await;
                (Arc::clone(&service.name), label, result, Some(usage))
            }
            Err(refusal) => {
                let unknown: Arc<str> = Arc::from(UNKNOWN_SERVICE);
                (Arc::clone(&unknown), unknown, Err(refusal), None)
            }
        };
    let mut response = match result {
        Ok(response) => response,
        Err(error) => {
            if error.fault() == crate::error::Fault::Internal {
                tracing::error!(%request_id, service = %service_name, "{error}");
            }
            error.to_response(&request_id, node.http_limits.retry_after_seconds)
        }
    };
    if let Ok(mut id) = HeaderValue::from_str(&request_id) {
        // Unique per response: kept out of the HTTP/2 and HTTP/3 header
        // tables, where it would only evict the entries that do repeat.
        id.set_sensitive(true);
        response.headers_mut().insert(REQUEST_ID, id);
    }
    let status = response.status();
    if let Some(usage) = usage {
        usage.record_status(status.as_u16());
    }
    let elapsed = started.elapsed();
    node.metrics.record_request(
        &metrics_label,
        crate::metrics::protocol_label(version),
        status.as_u16(),
        elapsed,
    );
    if let Some(access) = access {
        access.emit(&request_id, &service_name, version, status, elapsed);
    }
    response
}

/// What the access log says about a request, taken from its head before the
/// request is handed on.
struct AccessFields {
    method: http::Method,
    host: String,
    path: String,
}

impl AccessFields {
    fn of<B>(request: &Request<B>) -> Self {
        let host = request
            .uri()
            .authority()
            .map(|a| a.as_str())
            .or_else(|| {
                request
                    .headers()
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
            })
            .unwrap_or("")
            .to_string();
        Self {
            method: request.method().clone(),
            host,
            path: request.uri().path().to_string(),
        }
    }

    /// One event, target `access`, at INFO: `--log-format json` makes it a
    /// JSON object with these fields.
    fn emit(
        self,
        request_id: &str,
        service: &str,
        version: http::Version,
        status: http::StatusCode,
        elapsed: Duration,
    ) {
        tracing::info!(
            target: "access",
            request_id,
            service,
            method = %self.method,
            host = %self.host,
            path = %self.path,
            protocol = crate::metrics::protocol_label(version),
            status = status.as_u16(),
            duration_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            "request"
        );
    }
}

/// The checks that need only the request head.
async fn admit_and_route<B>(
    node: &PipelineContext,
    request: &mut Request<B>,
    sni_tenant: Option<&Arc<str>>,
) -> Result<(Arc<Service>, crate::admission::AdmissionPermit), EdgeError> {
    let limits = &node.http_limits;
    let uri_bytes = request
        .uri()
        .path_and_query()
        .map_or(0, |pq| pq.as_str().len())
        + request.uri().authority().map_or(0, |a| a.as_str().len());
    if uri_bytes as u64 > limits.max_uri_bytes {
        return Err(refuse(
            &node.metrics,
            EdgeError::UriTooLong {
                limit: limits.max_uri_bytes,
            },
        ));
    }
    // HTTP/1.1 enforces the count while parsing; HTTP/2 hands us the block.
    if request.headers().len() as u64 > limits.max_header_count {
        return Err(refuse(
            &node.metrics,
            EdgeError::TooManyHeaders {
                limit: limits.max_header_count,
            },
        ));
    }
    let authority = normalize_authority(request).map_err(|e| refuse(&node.metrics, e))?;
    let service = node
        .router
        .route(authority.host())
        .ok_or(EdgeError::UnknownHost)?;
    if let Some(sni_tenant) = sni_tenant
        && *sni_tenant != service.tenant
    {
        return Err(refuse(&node.metrics, EdgeError::MisdirectedRequest));
    }
    let permit = node
        .admission
        .admit(&service.tenant)
        .await
        .map_err(|refusal| {
            let error = match refusal {
                Refusal::Node => EdgeError::Overloaded,
                Refusal::Tenant => EdgeError::TenantOverloaded,
            };
            refuse(&node.metrics, error)
        })?;
    Ok((service, permit))
}

/// The request's authority, parsed, and written back in its normal spelling
/// so that the router, every cache key and the guest see the same one.
///
/// - The request target's authority (`:authority` on HTTP/2 and HTTP/3, an
///   absolute-form target on HTTP/1.1) is used when there is one; otherwise
///   `Host`, which HTTP/1.1 requires (RFC 9112 section 3.2).
/// - Two `Host` fields, or one that is not a valid authority, are 400
///   (RFC 9112 section 3.2), even beside an absolute-form target.
/// - On HTTP/2 and HTTP/3, a `host` that names another authority than
///   `:authority` is 400 (RFC 9113 section 8.3.1, RFC 9114 section 4.3.1); on
///   HTTP/1.1 an absolute-form target wins over `Host` (RFC 9112 section
///   3.2.2).
fn normalize_authority<B>(request: &mut Request<B>) -> Result<Authority, EdgeError> {
    let mut hosts = request.headers().get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(EdgeError::InvalidAuthority);
    }
    let host = host
        .map(|value| {
            let text = value.to_str().map_err(|_| EdgeError::InvalidAuthority)?;
            Authority::parse(text).map_err(|_| EdgeError::InvalidAuthority)
        })
        .transpose()?;
    let target = request
        .uri()
        .authority()
        .map(|a| Authority::parse(a.as_str()).map_err(|_| EdgeError::InvalidAuthority))
        .transpose()?;
    let authority = match (target, host) {
        (Some(target), Some(host))
            if request.version() >= http::Version::HTTP_2
                && !same_authority(request.uri().scheme_str(), &target, &host) =>
        {
            return Err(EdgeError::HostMismatch);
        }
        (Some(target), _) => target,
        (None, Some(host)) => host,
        (None, None) => return Err(EdgeError::MissingHost),
    };
    let normal = authority.to_string();
    if request
        .uri()
        .authority()
        .is_some_and(|a| a.as_str() != normal)
    {
        let mut parts = request.uri().clone().into_parts();
        parts.authority = normal.parse().ok();
        *request.uri_mut() =
            http::Uri::from_parts(parts).map_err(|_| EdgeError::InvalidAuthority)?;
    }
    // Most clients already send the normal spelling: leave that header be.
    let host_is_normal = request
        .headers()
        .get(header::HOST)
        .is_some_and(|value| value.as_bytes() == normal.as_bytes());
    if !host_is_normal {
        let host_value = HeaderValue::from_str(&normal).map_err(|_| EdgeError::InvalidAuthority)?;
        request.headers_mut().insert(header::HOST, host_value);
    }
    Ok(authority)
}

/// Whether two authorities name the same origin under `scheme`, its default
/// port and no port being the same (RFC 3986 section 6.2.3).
fn same_authority(scheme: Option<&str>, a: &Authority, b: &Authority) -> bool {
    let default_port = match scheme {
        Some("http") => Some(80),
        Some("https") => Some(443),
        _ => None,
    };
    let port = |authority: &Authority| authority.port().filter(|&p| Some(p) != default_port);
    a.host() == b.host() && port(a) == port(b)
}

fn refuse(metrics: &Metrics, error: EdgeError) -> EdgeError {
    metrics
        .limit_refusals
        .with_label_values(&[error.code()])
        .inc();
    error
}

async fn run_guest<B>(
    node: &PipelineContext,
    service: &Arc<Service>,
    request: Request<B>,
    identity: &GuestIdentity,
    permit: crate::admission::AdmissionPermit,
    usage: &Arc<ServiceCounters>,
) -> Result<Response<HyperOutgoingBody>, EdgeError>
where
    B: Body<Data = bytes::Bytes> + Send + Unpin + 'static,
    B::Error: Into<wasmtime_wasi_http::Error>,
{
    let body_limit = service.limits.max_request_body_bytes;
    if super::body::declared_length(request.headers()).is_some_and(|length| length > body_limit) {
        return Err(refuse(
            &node.metrics,
            EdgeError::BodyTooLarge { limit: body_limit },
        ));
    }
    // The edge's own cache: a fresh stored response of this service for
    // this URL is served without running the guest.
    let front = service
        .capabilities
        .cache
        .as_ref()
        .filter(|_| service.cache_responses);
    let (parts, body) = request.into_parts();
    let url = front.and_then(|_| crate::cache::responses::public_url(&parts));
    if let (Some(front), Some(url)) = (front, &url) {
        let hit = front
            .cache
            .stored_guest_response(&front.namespace, url, &parts);
        node.metrics
            .record_response_cache(&identity.metrics_label, hit.is_some());
        if let Some(hit) = hit {
            drop(permit);
            return Ok(hit.map(|body| MeteredBody::boxed(body, Arc::clone(usage))));
        }
    }
    let stored_request = url.as_ref().map(|_| crate::cache::clone_parts(&parts));
    let purge_position = front.map(|front| front.cache.purge_position());
    let mut request = Request::from_parts(parts, body);
    if service
        .capabilities
        .outbound
        .as_ref()
        .is_some_and(|outbound| outbound.calls_services)
    {
        request.extensions_mut().insert(Chain::start(
            Arc::clone(&node.service_calls),
            Arc::clone(&service.tenant),
            Arc::clone(&identity.request_id),
            Arc::clone(&service.short_name),
        ));
    }

    let component = node.modules.get(service.module).await.map_err(|error| {
        tracing::error!(service = %service.name, module = %service.module, %error, "module unavailable");
        EdgeError::ModuleUnavailable
    })?;

    let body_cut = Arc::new(BodyCut::default());
    let stall_timeout = Duration::from_millis(node.http_limits.body_read_timeout_ms);
    let request = request
        .map(|body| LimitedBody::new(body, body_limit, stall_timeout, Arc::clone(&body_cut)));
    let metrics = Arc::clone(&node.metrics);
    let guest_usage = Arc::clone(usage);
    let metrics_label = Arc::clone(&identity.metrics_label);
    let finished = move |report: GuestReport| {
        record_guest(&metrics, &metrics_label, &report);
        guest_usage.add_cpu(report.cpu);
        if report.outcome.is_err() {
            guest_usage.add_guest_failure();
        }
        // The request leaves admission only when its guest is done.
        drop(permit);
    };
    // Boxed, like the store below: the guest's future is large, and a
    // request answered from the edge cache should not carry (and copy) it.
    let result = Box::pin(node.sandbox.handle(
        &component,
        identity,
        &service.capabilities,
        &service.limits,
        request,
        finished,
    ))
    .await;
    match result {
        Err(_) if body_cut.reason() == Some(CutReason::TooLarge) => Err(refuse(
            &node.metrics,
            EdgeError::BodyTooLarge { limit: body_limit },
        )),
        Err(_) if body_cut.reason() == Some(CutReason::Stalled) => Err(refuse(
            &node.metrics,
            EdgeError::BodyReadTimeout {
                limit_ms: node.http_limits.body_read_timeout_ms,
            },
        )),
        Ok(response) => {
            let response = check_response_head(&node.http_limits, response)?;
            let response = match (front, url, stored_request, purge_position) {
                (Some(front), Some(url), Some(request), Some(position)) => {
                    let kept = keep_cacheable(front, &url, &request, response, position);
                    Box::pin(kept).await?
                }
                _ => response,
            };
            Ok(response.map(|body| MeteredBody::boxed(body, Arc::clone(usage))))
        }
        Err(error) => Err(error),
    }
}

/// Stores a guest's response in the edge cache when its headers allow it
/// (collecting its body first, which is small and of known length), and
/// drops what is stored for the URL after a successful unsafe request.
/// `purge_position` is the purge log's, taken before the guest ran.
async fn keep_cacheable(
    front: &crate::host::cache::GuestCache,
    url: &str,
    request: &http::request::Parts,
    response: Response<HyperOutgoingBody>,
    purge_position: u64,
) -> Result<Response<HyperOutgoingBody>, EdgeError> {
    use crate::cache::CacheStatus;
    use http_body_util::BodyExt;
    let cache = &front.cache;
    let (mut parts, body) = response.into_parts();
    if !crate::cache::policy::is_safe(&request.method) {
        if parts.status.is_success() || parts.status.is_redirection() {
            cache.invalidate_guest_url(&front.namespace, url);
        }
        cache.mark_for_client(&mut parts.headers, &CacheStatus::forward("method"));
        return Ok(Response::from_parts(parts, body));
    }
    let max = cache.max_object_bytes();
    if !crate::cache::responses::worth_storing(&request.method, &parts.headers, max) {
        cache.mark_for_client(&mut parts.headers, &CacheStatus::forward("miss"));
        return Ok(Response::from_parts(parts, body));
    }
    // A guest that fails mid-body, or sends more than it declared, gets no
    // entry and its client no truncated body.
    let bytes = http_body_util::Limited::new(body, max)
        .collect()
        .await
        .map_err(|_| EdgeError::GuestTrap)?
        .to_bytes();
    let status = cache.store_guest_response(
        &front.namespace,
        url,
        request,
        parts.status,
        &parts.headers,
        bytes.clone(),
        purge_position,
    );
    cache.mark_for_client(&mut parts.headers, &status);
    let body = http_body_util::Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync();
    Ok(Response::from_parts(parts, body))
}

/// A guest's response head is held to the limits clients are held to, so
/// that one service cannot make the node emit a header block no client or
/// proxy would accept. Dropping the refused response ends its body stream,
/// and with it the guest.
fn check_response_head(
    limits: &edge_config::HttpLimits,
    response: Response<HyperOutgoingBody>,
) -> Result<Response<HyperOutgoingBody>, EdgeError> {
    let headers = response.headers();
    let header_bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if headers.len() as u64 > limits.max_header_count
        || header_bytes as u64 > limits.max_header_bytes
    {
        return Err(EdgeError::ResponseHeadersTooLarge {
            limit_count: limits.max_header_count,
            limit_bytes: limits.max_header_bytes,
        });
    }
    Ok(response)
}

pub(crate) fn record_guest(metrics: &Metrics, service: &str, report: &GuestReport) {
    let termination = match &report.outcome {
        Ok(()) => None,
        Err(EdgeError::CpuBudgetExceeded { .. }) => Some("cpu"),
        Err(EdgeError::WallTimeExceeded { .. }) => Some("wall"),
        Err(EdgeError::MemoryLimitExceeded { .. }) => Some("memory"),
        Err(EdgeError::NoResponse) => Some("no_response"),
        Err(EdgeError::Overloaded) => Some("overloaded"),
        Err(_) => Some("trap"),
    };
    metrics.record_guest(
        service,
        GuestRun {
            cpu: report.cpu,
            wall: report.wall,
            instantiation: report.instantiation,
            termination,
        },
    );
}
