//! Picking a certificate by SNI: exact names first, then wildcards (the
//! longest suffix wins), then the default. The table is swapped whole when
//! the services change, like the routing table, so a rotated certificate is
//! served to the next handshake without a restart.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Certificates by server name.
#[derive(Debug, Default)]
pub struct SniTable {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `example.com` for a `*.example.com` domain.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
}

impl SniTable {
    /// Serves `key` for `domain` (`shop.example` or `*.shop.example`).
    pub fn insert(&mut self, domain: &str, key: Arc<CertifiedKey>) {
        let domain = domain.to_ascii_lowercase();
        match domain.strip_prefix("*.") {
            Some(suffix) => self.wildcard.insert(suffix.to_string(), key),
            None => self.exact.insert(domain, key),
        };
    }

    fn find(&self, name: &str) -> Option<&Arc<CertifiedKey>> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(key) = self.exact.get(&name) {
            return Some(key);
        }
        // Longest suffix first: a.b.example.com tries b.example.com, then
        // example.com, then com.
        let mut rest = name.as_str();
        while let Some((_, suffix)) = rest.split_once('.') {
            if let Some(key) = self.wildcard.get(suffix) {
                return Some(key);
            }
            rest = suffix;
        }
        None
    }

    pub fn len(&self) -> usize {
        self.exact.len() + self.wildcard.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The resolver rustls asks on every handshake.
#[derive(Debug)]
pub struct SniResolver {
    table: ArcSwap<SniTable>,
    default: Arc<CertifiedKey>,
}

impl SniResolver {
    pub fn new(default: Arc<CertifiedKey>) -> Self {
        Self {
            table: ArcSwap::from_pointee(SniTable::default()),
            default,
        }
    }

    pub fn replace(&self, table: SniTable) {
        self.table.store(Arc::new(table));
    }

    /// The certificate a client asking for `server_name` gets.
    pub fn certificate_for(&self, server_name: Option<&str>) -> Arc<CertifiedKey> {
        server_name
            .and_then(|name| self.table.load().find(name).cloned())
            .unwrap_or_else(|| Arc::clone(&self.default))
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.certificate_for(client_hello.server_name()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::certs::{ServingCertificate, self_signed};

    fn key(name: &str) -> Arc<CertifiedKey> {
        let pem = self_signed(&[name]).expect("cert");
        let provider = rustls::crypto::ring::default_provider();
        ServingCertificate::from_pem(&pem, &[], &provider)
            .expect("cert")
            .key
    }

    #[test]
    fn exact_beats_wildcard_and_unknown_names_get_the_default() {
        let (default, exact, wildcard, deep) = (
            key("default"),
            key("a.example"),
            key("*.example"),
            key("*.b.example"),
        );
        let mut table = SniTable::default();
        table.insert("a.example", Arc::clone(&exact));
        table.insert("*.example", Arc::clone(&wildcard));
        table.insert("*.B.example", Arc::clone(&deep));
        let resolver = SniResolver::new(Arc::clone(&default));
        resolver.replace(table);
        let pick = |name: Option<&str>| resolver.certificate_for(name);
        assert!(Arc::ptr_eq(&pick(Some("A.example.")), &exact));
        assert!(Arc::ptr_eq(&pick(Some("c.example")), &wildcard));
        assert!(Arc::ptr_eq(&pick(Some("x.b.example")), &deep));
        assert!(Arc::ptr_eq(&pick(Some("example")), &default));
        assert!(Arc::ptr_eq(&pick(Some("other.test")), &default));
        assert!(Arc::ptr_eq(&pick(None), &default));
    }
}
