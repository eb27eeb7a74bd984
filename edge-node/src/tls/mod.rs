//! TLS termination with rustls.
//!
//! - [`certs`]: PEM to a checked certificate (key matches, domains covered).
//! - [`sni`]: the certificate for each handshake, by SNI, swapped whole when
//!   services change.
//!
//! TLS 1.2 and 1.3 only, ALPN `h2` and `http/1.1`, resumption by tickets
//! (TLS 1.3) and a bounded session cache (TLS 1.2).

pub mod certs;
pub mod sni;

use std::sync::Arc;

use edge_config::TlsSection;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::ServerSessionMemoryCache;

pub use certs::{CertificateError, ServingCertificate};
pub use sni::{SniResolver, SniTable};

/// The one crypto provider: ring, as the rest of the node uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// `client` made to trust the CA certificates of the PEM file at `ca_file`
/// and nothing else (no public roots): how a node, and edgectl, reach a
/// control plane whose certificate an operator's CA signed.
pub fn trust_only(
    client: reqwest::ClientBuilder,
    ca_file: &std::path::Path,
) -> Result<reqwest::ClientBuilder, String> {
    let unreadable = |e: &dyn std::fmt::Display| format!("ca_file {}: {e}", ca_file.display());
    let pem = std::fs::read(ca_file).map_err(|e| unreadable(&e))?;
    let roots = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| unreadable(&e))?;
    if roots.is_empty() {
        return Err(format!(
            "ca_file {} holds no certificate",
            ca_file.display()
        ));
    }
    Ok(roots
        .into_iter()
        .fold(client.tls_built_in_root_certs(false), |client, root| {
            client.add_root_certificate(root)
        }))
}

/// The rustls server config of the HTTPS listener (TCP).
pub fn server_config(
    section: &TlsSection,
    resolver: Arc<SniResolver>,
) -> anyhow::Result<Arc<ServerConfig>> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.session_storage = ServerSessionMemoryCache::new(
        usize::try_from(section.session_cache_entries).unwrap_or(usize::MAX),
    );
    config.ticketer = rustls::crypto::ring::Ticketer::new()?;
    Ok(Arc::new(config))
}

/// The rustls config of HTTP/3: QUIC is TLS 1.3 only, ALPN `h3`, the same
/// certificates. No 0-RTT: early data can be replayed, and a guest cannot
/// tell.
pub fn quic_server_config(
    section: &TlsSection,
    resolver: Arc<SniResolver>,
) -> anyhow::Result<Arc<ServerConfig>> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h3".to_vec()];
    config.max_early_data_size = 0;
    config.session_storage = ServerSessionMemoryCache::new(
        usize::try_from(section.session_cache_entries).unwrap_or(usize::MAX),
    );
    config.ticketer = rustls::crypto::ring::Ticketer::new()?;
    Ok(Arc::new(config))
}
