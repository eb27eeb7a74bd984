//! TLS termination: the HTTPS listener, its handshake limits, and where
//! certificates come from.
//!
//! A certificate belongs to a service and is served for that service's
//! domains (chosen by SNI). From a config file it is a pair of PEM files;
//! from the control plane it arrives in the snapshot as PEM text.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::validate::{ConfigErrors, check_ranges};

/// A client that has not finished its handshake by then is disconnected.
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT_MS: u64 = 10_000;
/// TLS 1.2 sessions remembered for resumption (TLS 1.3 uses tickets, which
/// cost the server no memory).
pub const DEFAULT_TLS_SESSION_CACHE_ENTRIES: u64 = 4_096;
/// Largest certificate chain or key accepted, in PEM.
pub const MAX_CERTIFICATE_PEM_BYTES: usize = 64 * 1024;

/// Streams a client may have open on one HTTP/3 connection.
pub const DEFAULT_H3_MAX_CONCURRENT_STREAMS: u64 = 100;
/// A QUIC connection with no traffic for this long is closed.
pub const DEFAULT_H3_IDLE_TIMEOUT_MS: u64 = 30_000;
/// QUIC connections open at once; more are refused.
pub const DEFAULT_H3_MAX_CONNECTIONS: u64 = 10_000;
/// Beyond this many open QUIC connections, a new client must first prove
/// its address with a Retry round trip: spoofed floods cost us nothing.
pub const DEFAULT_H3_RETRY_ABOVE_CONNECTIONS: u64 = 1_000;

/// `[http3]` in the node's config: HTTP/3 over QUIC on the TLS listener's
/// port (UDP), with the same certificates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Http3Section {
    pub enabled: bool,
    pub max_concurrent_streams: u64,
    pub idle_timeout_ms: u64,
    pub max_connections: u64,
    pub retry_above_connections: u64,
}

impl Default for Http3Section {
    fn default() -> Self {
        Self {
            enabled: true,
            max_concurrent_streams: DEFAULT_H3_MAX_CONCURRENT_STREAMS,
            idle_timeout_ms: DEFAULT_H3_IDLE_TIMEOUT_MS,
            max_connections: DEFAULT_H3_MAX_CONNECTIONS,
            retry_above_connections: DEFAULT_H3_RETRY_ABOVE_CONNECTIONS,
        }
    }
}

impl Http3Section {
    pub fn validate(&self, path: &str, errors: &mut ConfigErrors) {
        check_ranges!(errors, path, self, {
            max_concurrent_streams: 1..=10_000,
            idle_timeout_ms: 1_000..=600_000,
            max_connections: 1..=10_000_000,
            retry_above_connections: 0..=self.max_connections,
        });
    }
}

/// `[tls]` in the node's config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSection {
    /// The HTTPS listener: HTTP/1.1 and HTTP/2 over TLS (TCP). No TLS
    /// listener when absent.
    pub listen: Option<SocketAddr>,
    pub handshake_timeout_ms: u64,
    pub session_cache_entries: u64,
    /// Served to clients that send no SNI, or a name no service has a
    /// certificate for. A self-signed certificate is made at start when
    /// absent, so such clients get a handshake and a clear name mismatch.
    pub default_certificate: Option<CertificateFiles>,
}

impl Default for TlsSection {
    fn default() -> Self {
        Self {
            listen: None,
            handshake_timeout_ms: DEFAULT_TLS_HANDSHAKE_TIMEOUT_MS,
            session_cache_entries: DEFAULT_TLS_SESSION_CACHE_ENTRIES,
            default_certificate: None,
        }
    }
}

impl TlsSection {
    pub fn validate(&self, path: &str, errors: &mut ConfigErrors) {
        check_ranges!(errors, path, self, {
            handshake_timeout_ms: 100..=120_000,
            session_cache_entries: 0..=10_000_000,
        });
        if let Some(files) = &self.default_certificate {
            files.validate(&format!("{path}.default_certificate"), errors);
        }
    }
}

/// A certificate chain and its private key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertificateFiles {
    pub fn validate(&self, path: &str, errors: &mut ConfigErrors) {
        if self.cert.as_os_str().is_empty() {
            errors.push(format!("{path}.cert"), "the path is empty");
        }
        if self.key.as_os_str().is_empty() {
            errors.push(format!("{path}.key"), "the path is empty");
        }
    }

    /// Reads both files, resolving relative paths against `base`.
    pub fn read(&self, base: &std::path::Path) -> Result<CertificatePem, String> {
        let read = |path: &PathBuf| {
            let path = base.join(path);
            std::fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))
        };
        Ok(CertificatePem {
            cert_pem: read(&self.cert)?,
            key_pem: SecretPem(read(&self.key)?),
        })
    }
}

/// A certificate chain and key as PEM text: what a tenant uploads and what a
/// snapshot carries. The key never appears in `Debug` output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificatePem {
    pub cert_pem: String,
    pub key_pem: SecretPem,
}

/// PEM text of a private key. Shown as `<redacted>` in logs and debug output.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretPem(pub String);

impl fmt::Debug for SecretPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_never_shows_in_debug_output() {
        let pem = CertificatePem {
            cert_pem: "CERT".into(),
            key_pem: SecretPem("-----BEGIN PRIVATE KEY-----secret".into()),
        };
        let shown = format!("{pem:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("<redacted>"));
    }
}
