//! An in-process HTTP/3 client: quinn + h3, trusting one certificate.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use edge_config::CertificatePem;
use h3::error::{Code, StreamError};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::client::Reply;

/// A QUIC client config for HTTP/3 (TLS 1.3, ALPN `h3`) trusting exactly
/// the certificates in `trusted_pem`.
pub fn client_config(trusted_pem: &[u8]) -> Result<quinn::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(trusted_pem) {
        roots
            .add(cert.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(Arc::new(tls))
        .map_err(|e| e.to_string())?;
    Ok(quinn::ClientConfig::new(Arc::new(crypto)))
}

/// One HTTP/3 request: the server (at `addr`, named `server_name`), the
/// one certificate to trust for it, and what to ask. Built once, it can be
/// sent in each of the ways below.
#[derive(Debug, Clone)]
pub struct H3Request<'a> {
    pub addr: SocketAddr,
    /// Sent as SNI and as `:authority`.
    pub server_name: &'a str,
    pub trusted: &'a CertificatePem,
    pub method: &'a str,
    pub path: &'a str,
    pub body: Bytes,
}

impl<'a> H3Request<'a> {
    /// `GET /` to `server_name` at `addr`, trusting only `trusted`.
    pub fn get(addr: SocketAddr, server_name: &'a str, trusted: &'a CertificatePem) -> Self {
        Self {
            addr,
            server_name,
            trusted,
            method: "GET",
            path: "/",
            body: Bytes::new(),
        }
    }

    /// The same destination, but `POST path` with `body`.
    pub fn post(self, path: &'a str, body: Bytes) -> Self {
        Self {
            method: "POST",
            path,
            body,
            ..self
        }
    }

    /// Sends the request over a new HTTP/3 connection and reads the whole
    /// response.
    ///
    /// A server that has answered in full may ask the client to stop sending
    /// its request with H3_NO_ERROR (RFC 9114 section 4.1); the response then
    /// still counts. Any other reset of the request is an error.
    pub async fn send(&self) -> Result<Reply, String> {
        let (reply, finish) = self.exchange(Duration::ZERO).await?;
        match finish {
            None | Some(Some(Code::H3_NO_ERROR)) => Ok(reply),
            Some(code) => Err(format!("finish: request stream reset: {code:?}")),
        }
    }

    /// Like [`H3Request::send`], but waits `fin_delay` between the request
    /// head and the end of the request stream, as a client still producing
    /// its request would; returns how ending the stream went instead of
    /// failing on it.
    pub async fn exchange(&self, fin_delay: Duration) -> Result<(Reply, FinishOutcome), String> {
        exchange_ending(self, Some(fin_delay)).await
    }

    /// Sends the body as the start of a request body that never ends (the
    /// stream is left open), and reads the response: what a client that
    /// stalls in the middle of its upload gets.
    pub async fn send_stalled(&self) -> Result<Reply, String> {
        let (reply, _) = exchange_ending(self, None).await?;
        Ok(reply)
    }
}

/// A QUIC connection (ALPN `h3`) to `addr`, with `server_name` as SNI,
/// trusting `trusted`: for tests that speak HTTP/3 frames themselves.
pub async fn connect(
    addr: SocketAddr,
    server_name: &str,
    trusted: &CertificatePem,
) -> Result<(quinn::Endpoint, quinn::Connection), String> {
    let mut endpoint = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0)))
        .map_err(|e| e.to_string())?;
    endpoint.set_default_client_config(client_config(trusted.cert_pem.as_bytes())?);
    let connection = endpoint
        .connect(addr, server_name)
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| format!("QUIC: {e}"))?;
    Ok((endpoint, connection))
}

/// How ending a request stream went: `None` when it ended cleanly, or the
/// code the server stopped it with (`Some(None)`: another error).
pub type FinishOutcome = Option<Option<Code>>;

/// Sends `request`, with the request stream finished `fin_delay` after the
/// body, or never (`None`).
async fn exchange_ending(
    request: &H3Request<'_>,
    fin_delay: Option<Duration>,
) -> Result<(Reply, FinishOutcome), String> {
    let H3Request {
        addr,
        server_name,
        trusted,
        method,
        path,
        ref body,
    } = *request;
    let (endpoint, connection) = connect(addr, server_name, trusted).await?;
    let (mut driver, mut sender) = h3::client::new(h3_quinn::Connection::new(connection))
        .await
        .map_err(|e| format!("h3: {e}"))?;
    let drive = tokio::spawn(async move { driver.wait_idle().await });
    let request = http::Request::builder()
        .method(method)
        .uri(format!("https://{server_name}{path}"))
        .body(())
        .map_err(|e| e.to_string())?;
    let mut stream = sender
        .send_request(request)
        .await
        .map_err(|e| format!("request: {e}"))?;
    if !body.is_empty() {
        stream
            .send_data(body.clone())
            .await
            .map_err(|e| format!("body: {e}"))?;
    }
    let finish = match fin_delay {
        Some(delay) => {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            match stream.finish().await {
                Ok(()) => None,
                Err(StreamError::RemoteTerminate { code, .. }) => Some(Some(code)),
                Err(_) => Some(None),
            }
        }
        None => None,
    };
    let response = stream
        .recv_response()
        .await
        .map_err(|e| format!("response: {e}"))?;
    let mut bytes = Vec::new();
    let mut body_error = None;
    loop {
        match stream.recv_data().await {
            Ok(Some(mut chunk)) => {
                let chunk = chunk.copy_to_bytes(chunk.remaining());
                bytes.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) => {
                body_error = Some(e.to_string());
                break;
            }
        }
    }
    drop(sender);
    drive.abort();
    endpoint.close(quinn::VarInt::from_u32(0), b"done");
    let reply = Reply {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: bytes,
        body_error,
    };
    Ok((reply, finish))
}
