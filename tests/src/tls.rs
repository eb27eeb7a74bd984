//! TLS for tests: self-signed certificates written to PEM files, and an
//! in-process rustls client that reports what the handshake did.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use edge_config::{CertificateFiles, CertificatePem};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

use crate::client::{Protocol, Reply, request, send_over};

/// A self-signed certificate, as PEM text and as files.
#[derive(Debug)]
pub struct TestCertificate {
    pub pem: CertificatePem,
    pub files: CertificateFiles,
    _dir: tempfile::TempDir,
}

impl TestCertificate {
    pub fn generate(names: &[&str]) -> Self {
        let pem = edge_platform::certificates::self_signed(names).expect("certificate");
        let dir = tempfile::tempdir().expect("dir");
        let files = CertificateFiles {
            cert: dir.path().join("cert.pem"),
            key: dir.path().join("key.pem"),
        };
        std::fs::write(&files.cert, &pem.cert_pem).expect("write cert");
        std::fs::write(&files.key, &pem.key_pem.0).expect("write key");
        Self {
            pem,
            files,
            _dir: dir,
        }
    }
}

/// What a TLS connection turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    pub alpn: Option<Vec<u8>>,
    pub resumed: bool,
    pub version: Option<rustls::ProtocolVersion>,
}

/// A rustls client trusting exactly one certificate. It keeps sessions,
/// so a second connection to the same name resumes.
#[derive(Debug, Clone)]
pub struct TlsClient {
    config: Arc<rustls::ClientConfig>,
}

impl TlsClient {
    pub fn trusting(certificate: &CertificatePem) -> Self {
        Self::with(certificate, rustls::DEFAULT_VERSIONS, |_| {})
    }

    /// A client offering only `protocol` by ALPN: for tests that need one
    /// protocol whatever the server would prefer.
    pub fn only(certificate: &CertificatePem, protocol: Protocol) -> Self {
        Self::with(certificate, rustls::DEFAULT_VERSIONS, |c| {
            c.alpn_protocols = match protocol {
                Protocol::Http1 => vec![b"http/1.1".to_vec()],
                Protocol::Http2 => vec![b"h2".to_vec()],
            };
        })
    }

    /// A client offering only `versions`; `change` adjusts the rest.
    pub fn with(
        certificate: &CertificatePem,
        versions: &[&'static rustls::SupportedProtocolVersion],
        change: impl FnOnce(&mut rustls::ClientConfig),
    ) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(certificate.cert_pem.as_bytes()) {
            roots.add(cert.expect("PEM")).expect("root");
        }
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        change(&mut config);
        Self {
            config: Arc::new(config),
        }
    }

    /// Connects with `server_name` as SNI (and as the name verified).
    pub async fn connect(
        &self,
        addr: SocketAddr,
        server_name: &str,
    ) -> Result<(tokio_rustls::client::TlsStream<TcpStream>, Handshake), std::io::Error> {
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::try_from(server_name.to_string()).expect("server name");
        let connector = tokio_rustls::TlsConnector::from(Arc::clone(&self.config));
        let stream = connector.connect(name, tcp).await?;
        let (_, connection) = stream.get_ref();
        let handshake = Handshake {
            alpn: connection.alpn_protocol().map(<[u8]>::to_vec),
            resumed: connection.handshake_kind() == Some(rustls::HandshakeKind::Resumed),
            version: connection.protocol_version(),
        };
        Ok((stream, handshake))
    }

    /// `GET https://server_name/path`, on the protocol ALPN chose.
    pub async fn get(&self, addr: SocketAddr, server_name: &str, path: &str) -> (Reply, Handshake) {
        let (stream, handshake) = self.connect(addr, server_name).await.expect("TLS connect");
        let protocol = match handshake.alpn.as_deref() {
            Some(b"h2") => Protocol::Http2,
            _ => Protocol::Http1,
        };
        let uri = format!("https://{server_name}{path}");
        let reply = send_over(
            stream,
            protocol,
            request("GET", server_name, &uri, Bytes::new()),
        )
        .await;
        (reply, handshake)
    }
}
