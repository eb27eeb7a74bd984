//! Connections to one backend's origin: DNS, the address check, TCP with a
//! timeout, and TLS.
//!
//! The address check runs on the addresses DNS returned, right before
//! connecting to them, so a name that resolves to a private address (DNS
//! rebinding included) is refused like the address itself.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use edge_config::backend::Origin;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Why a connection to an origin was not made. Each maps to the wasi-http
/// `error-code` a guest sees.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("DNS lookup of {host} failed: {source}")]
    Dns { host: String, source: io::Error },
    #[error("{host} resolved to no address")]
    NoAddress { host: String },
    #[error("{address} is a private, loopback or otherwise non-public address")]
    Prohibited { address: IpAddr },
    #[error("connecting to {address} timed out")]
    Timeout { address: String },
    #[error("connecting to {address}: {source}")]
    Refused {
        address: SocketAddr,
        source: io::Error,
    },
    #[error("TLS with {host}: {source}")]
    Tls { host: String, source: io::Error },
}

/// Opens connections to one origin for the pooled client.
#[derive(Clone)]
pub struct OriginConnector {
    origin: Arc<Origin>,
    timeout: Duration,
    allow_private: bool,
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

debug_fields!(OriginConnector {
    origin,
    allow_private
});

impl OriginConnector {
    pub fn new(
        origin: Arc<Origin>,
        timeout: Duration,
        allow_private: bool,
        tls: Option<(TlsConnector, ServerName<'static>)>,
    ) -> Self {
        Self {
            origin,
            timeout,
            allow_private,
            tls,
        }
    }

    async fn connect(self) -> Result<OriginStream, ConnectError> {
        let host = self.origin.host.clone();
        let connect = async {
            let addresses: Vec<SocketAddr> = match host.parse::<IpAddr>() {
                Ok(ip) => vec![SocketAddr::new(ip, self.origin.port)],
                Err(_) => tokio::net::lookup_host((host.as_str(), self.origin.port))
                    .await
                    .map_err(|source| ConnectError::Dns {
                        host: host.clone(),
                        source,
                    })?
                    .collect(),
            };
            if addresses.is_empty() {
                return Err(ConnectError::NoAddress { host: host.clone() });
            }
            if !self.allow_private
                && let Some(address) = addresses.iter().find(|a| !is_public(a.ip()))
            {
                return Err(ConnectError::Prohibited {
                    address: address.ip(),
                });
            }
            let mut last_error = None;
            for address in addresses {
                match TcpStream::connect(address).await {
                    Ok(tcp) => {
                        let _ = tcp.set_nodelay(true);
                        return self.secure(tcp).await;
                    }
                    Err(source) => last_error = Some(ConnectError::Refused { address, source }),
                }
            }
            Err(last_error.unwrap_or(ConnectError::NoAddress { host: host.clone() }))
        };
        tokio::time::timeout(self.timeout, connect)
            .await
            .unwrap_or_else(|_| {
                Err(ConnectError::Timeout {
                    address: self.origin.authority(),
                })
            })
    }

    async fn secure(&self, tcp: TcpStream) -> Result<OriginStream, ConnectError> {
        let Some((connector, server_name)) = &self.tls else {
            return Ok(OriginStream::Plain(tcp));
        };
        connector
            .connect(server_name.clone(), tcp)
            .await
            .map(|tls| OriginStream::Tls(Box::new(tls)))
            .map_err(|source| ConnectError::Tls {
                host: self.origin.host.clone(),
                source,
            })
    }
}

impl tower_service::Service<http::Uri> for OriginConnector {
    type Response = TokioIo<OriginStream>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    /// The URI is ignored: this connector reaches its one origin only, so a
    /// request can never be steered elsewhere by what it carries.
    fn call(&mut self, _uri: http::Uri) -> Self::Future {
        let connector = self.clone();
        Box::pin(async move { connector.connect().await.map(TokioIo::new) })
    }
}

/// Whether `ip` is a globally routable address. Everything an origin on the
/// public internet could not have is refused by default: loopback, private
/// ranges, link-local (cloud metadata services live there), CGNAT,
/// unspecified, multicast, documentation and benchmarking ranges, and IPv6
/// forms that embed an IPv4 address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, _, _] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (b == 18 || b == 19))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || first == 0x2001 && v6.segments()[1] == 0x0db8
                || first == 0x0064 && v6.segments()[1] == 0xff9b
                || v6.segments()[..6] == [0; 6])
        }
    }
}

/// A connection to an origin, plain or TLS.
#[derive(Debug)]
pub enum OriginStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connection for OriginStream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl AsyncRead for OriginStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for OriginStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_public;

    #[test]
    fn non_public_addresses_are_recognised() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
        ] {
            assert!(!is_public(private.parse().expect("valid")), "{private}");
        }
        for public in ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111"] {
            assert!(is_public(public.parse().expect("valid")), "{public}");
        }
    }
}
