//! TLS termination with rustls.
//!
//! - PEM to a checked certificate (key matches, domains covered) is the
//!   platform contract's (`edge_platform::certificates`): the control plane
//!   checks uploads with the same code.
//! - [`sni`]: the certificate for each handshake, by SNI, swapped whole when
//!   services change.
//!
//! TLS 1.2 and 1.3 only, ALPN `h2` and `http/1.1`, resumption by tickets
//! (TLS 1.3) and a bounded session cache (TLS 1.2).

pub mod sni;

use std::sync::Arc;

use edge_config::TlsSection;
use edge_platform::certificates::provider;
use rustls::ServerConfig;
use rustls::server::ServerSessionMemoryCache;

pub use sni::{SniResolver, SniTable};

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
