//! A pooled HTTP/1.1 client for one origin.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use edge_config::BackendSpec;
use edge_config::backend::Origin;
use http::{HeaderMap, HeaderValue, Request, Response, header};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::time::Sleep;
use wasmtime_wasi_http::{Error as WasiHttpError, RequestOptions, WasiBody};

use super::connect::{ConnectError, OriginConnector};
use crate::interim::InterimSink;

/// Idle connections to one origin kept open for reuse.
pub const MAX_IDLE_CONNECTIONS_PER_ORIGIN: usize = 64;
/// How long an idle pooled connection is kept.
pub const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);

/// The timeouts of one backend request: the backend's, or the guest's own
/// where it asked for shorter ones.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub first_byte: Duration,
    pub between_bytes: Duration,
}

impl Timeouts {
    pub fn new(spec: &BackendSpec, guest: Option<RequestOptions>) -> Self {
        let shorter = |backend_ms: u64, guest: Option<Duration>| {
            let backend = Duration::from_millis(backend_ms);
            guest.map_or(backend, |guest| guest.min(backend))
        };
        Self {
            connect: shorter(
                spec.connect_timeout_ms,
                guest.and_then(|o| o.connect_timeout),
            ),
            first_byte: shorter(
                spec.first_byte_timeout_ms,
                guest.and_then(|o| o.first_byte_timeout),
            ),
            between_bytes: shorter(
                spec.between_bytes_timeout_ms,
                guest.and_then(|o| o.between_bytes_timeout),
            ),
        }
    }
}

/// Sends requests to one origin over a shared connection pool.
pub struct OriginClient {
    origin: Arc<Origin>,
    host: HeaderValue,
    /// `scheme://host`: how cached URLs from this origin are written.
    base_url: String,
    connect_timeout: Duration,
    client: Client<OriginConnector, WasiBody>,
}

debug_fields!(OriginClient { origin, host });

impl OriginClient {
    pub fn new(spec: &BackendSpec) -> Result<Self, String> {
        let origin = Arc::new(spec.parsed_origin()?);
        let host_text = spec
            .host_header
            .clone()
            .unwrap_or_else(|| origin.authority());
        let host = HeaderValue::from_str(&host_text).map_err(|e| format!("host header: {e}"))?;
        let tls = if origin.tls {
            Some(tls_connector(spec, &origin)?)
        } else {
            None
        };
        let connect_timeout = Duration::from_millis(spec.connect_timeout_ms);
        let connector = OriginConnector::new(
            Arc::clone(&origin),
            connect_timeout,
            spec.allow_private_addresses,
            tls,
        );
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(MAX_IDLE_CONNECTIONS_PER_ORIGIN)
            .pool_idle_timeout(IDLE_CONNECTION_TIMEOUT)
            .build(connector);
        Ok(Self {
            base_url: base_url(origin.scheme(), &host_text),
            origin,
            host,
            connect_timeout,
            client,
        })
    }

    /// `scheme://host` of the URLs this origin serves, as the cache keys and
    /// purges write them.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Sends `request` (whose URI carries the path and query to ask for) to
    /// the origin. The Host header is the backend's; hop-by-hop headers are
    /// dropped. The response head must arrive within the first-byte timeout,
    /// and each body chunk within the between-bytes timeout.
    pub async fn send(
        &self,
        request: Request<WasiBody>,
        timeouts: Timeouts,
    ) -> Result<Response<WasiBody>, WasiHttpError> {
        let (mut parts, body) = request.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_string();
        parts.uri = http::Uri::builder()
            .scheme(self.origin.scheme())
            .authority(self.origin.authority())
            .path_and_query(path)
            .build()
            .map_err(|_| WasiHttpError::HttpRequestUriInvalid)?;
        remove_hop_by_hop(&mut parts.headers);
        parts.headers.insert(header::HOST, self.host.clone());
        let interim = parts.extensions.remove::<InterimSink>();
        let mut request = Request::from_parts(parts, body);
        // The origin's 1xx responses (HTTP/1.1 origins) go on to the client.
        if let Some(sink) = interim {
            hyper::ext::on_informational(&mut request, move |head| {
                let mut headers = head.headers().clone();
                remove_hop_by_hop(&mut headers);
                sink.forward(head.status(), &headers);
            });
        }

        // The pool's connect step has its own (the backend's) timeout; the
        // first-byte clock covers the connection too when a shorter one was
        // asked for.
        let budget = timeouts.first_byte + timeouts.connect.min(self.connect_timeout);
        let response = match tokio::time::timeout(budget, self.client.request(request)).await {
            Err(_) => return Err(WasiHttpError::HttpResponseTimeout),
            Ok(Err(error)) => return Err(client_error(&error)),
            Ok(Ok(response)) => response,
        };
        let (mut parts, body) = response.into_parts();
        remove_hop_by_hop(&mut parts.headers);
        let body = TimedBody::new(body, timeouts.between_bytes).boxed_unsync();
        Ok(Response::from_parts(parts, body))
    }
}

/// `scheme://host[:port]` in the spelling of
/// [`edge_platform::urls::normalize_url`], so that a base plus a request's
/// path is already a cache key.
fn base_url(scheme: &str, host: &str) -> String {
    let raw = format!("{scheme}://{host}/");
    let normalized = edge_platform::urls::normalize_url(&raw).unwrap_or(raw);
    normalized.trim_end_matches('/').to_string()
}

/// The wasi-http error code for a failed request.
fn client_error(error: &hyper_util::client::legacy::Error) -> WasiHttpError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cause) = source {
        if let Some(connect) = cause.downcast_ref::<ConnectError>() {
            tracing::debug!(error = %connect, "backend connection failed");
            return match connect {
                ConnectError::Dns { source, .. } => WasiHttpError::DnsError {
                    rcode: Some(source.to_string()),
                    info_code: None,
                },
                ConnectError::NoAddress { .. } => WasiHttpError::DestinationNotFound,
                ConnectError::Prohibited { .. } => WasiHttpError::DestinationIpProhibited,
                ConnectError::Timeout { .. } => WasiHttpError::ConnectionTimeout,
                ConnectError::Refused { .. } => WasiHttpError::ConnectionRefused,
                ConnectError::Tls { source, .. } => {
                    let certificate = source
                        .get_ref()
                        .and_then(|e| e.downcast_ref::<rustls::Error>())
                        .is_some_and(|e| matches!(e, rustls::Error::InvalidCertificate(_)));
                    if certificate {
                        WasiHttpError::TlsCertificateError
                    } else {
                        WasiHttpError::TlsProtocolError
                    }
                }
            };
        }
        if let Some(hyper) = cause.downcast_ref::<hyper::Error>() {
            return if hyper.is_incomplete_message() || hyper.is_closed() {
                WasiHttpError::ConnectionTerminated
            } else {
                WasiHttpError::HttpProtocolError
            };
        }
        source = cause.source();
    }
    WasiHttpError::InternalError(Some(error.to_string()))
}

/// The public web roots plus the backend's own CA certificates.
fn tls_connector(
    spec: &BackendSpec,
    origin: &Origin,
) -> Result<(tokio_rustls::TlsConnector, ServerName<'static>), String> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(pem) = &spec.tls.ca_pem {
        for certificate in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let certificate = certificate.map_err(|e| format!("tls.ca_pem: {e}"))?;
            roots
                .add(certificate)
                .map_err(|e| format!("tls.ca_pem: {e}"))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = spec.tls.server_name.clone().unwrap_or(origin.host.clone());
    let server_name = ServerName::try_from(name).map_err(|e| format!("TLS server name: {e}"))?;
    Ok((
        tokio_rustls::TlsConnector::from(Arc::new(config)),
        server_name,
    ))
}

/// Headers that describe one connection, not the message (RFC 9110 7.6.1),
/// plus any the `Connection` header names.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| !name.is_empty())
        .collect();
    for name in named {
        headers.remove(name.as_str());
    }
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ] {
        headers.remove(name);
    }
}

/// A response body whose chunks must each arrive within `gap` of the last.
struct TimedBody {
    inner: hyper::body::Incoming,
    gap: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl TimedBody {
    fn new(inner: hyper::body::Incoming, gap: Duration) -> Self {
        Self {
            inner,
            gap,
            deadline: Box::pin(tokio::time::sleep(gap)),
        }
    }
}

impl Body for TimedBody {
    type Data = Bytes;
    type Error = WasiHttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                let next = tokio::time::Instant::now() + self.gap;
                self.deadline.as_mut().reset(next);
                Poll::Ready(frame.map(|f| {
                    f.map_err(|e| {
                        if e.is_incomplete_message() {
                            WasiHttpError::HttpResponseIncomplete
                        } else {
                            WasiHttpError::ConnectionTerminated
                        }
                    })
                }))
            }
            Poll::Pending => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(WasiHttpError::ConnectionReadTimeout))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
