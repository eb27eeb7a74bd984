//! Picking a certificate by SNI. The server name is looked up the way the
//! router looks up a Host (exact name, then wildcards with the longest
//! suffix first), which finds the service, and so the tenant, the name
//! routes to. Only that tenant's certificates may answer: its service's own,
//! or another of its services' wildcard that covers the name. A name whose
//! tenant has none gets the operator's default certificate, never another
//! tenant's. The table is swapped whole when the services change, like the
//! routing table, so a rotated certificate is served to the next handshake
//! without a restart.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// One routed domain: whose it is, and its certificate if it has one.
#[derive(Debug)]
struct SniEntry {
    tenant: Arc<str>,
    key: Option<Arc<CertifiedKey>>,
}

/// Certificates by server name.
#[derive(Debug, Default)]
pub struct SniTable {
    exact: HashMap<String, SniEntry>,
    /// `example.com` for a `*.example.com` domain.
    wildcard: HashMap<String, SniEntry>,
}

impl SniTable {
    /// Records that `domain` (`shop.example` or `*.shop.example`) routes to
    /// `tenant`, with `key` as its certificate if it has one. The first
    /// entry for a domain stays, as the router keeps the first route.
    pub fn insert(&mut self, domain: &str, tenant: &Arc<str>, key: Option<Arc<CertifiedKey>>) {
        let domain = domain.to_ascii_lowercase();
        let (map, name) = match domain.strip_prefix("*.") {
            Some(suffix) => (&mut self.wildcard, suffix.to_string()),
            None => (&mut self.exact, domain),
        };
        if let Entry::Vacant(vacant) = map.entry(name) {
            vacant.insert(SniEntry {
                tenant: Arc::clone(tenant),
                key,
            });
        }
    }

    /// The entries matching `name`, in the router's order of precedence.
    fn candidates<'a, 'n>(&'a self, name: &'n str) -> impl Iterator<Item = &'a SniEntry> + 'n
    where
        'a: 'n,
    {
        let wildcards = std::iter::successors(name.split_once('.').map(|(_, s)| s), |rest| {
            rest.split_once('.').map(|(_, s)| s)
        })
        .filter_map(|suffix| self.wildcard.get(suffix));
        self.exact.get(name).into_iter().chain(wildcards)
    }

    /// The certificate for `name`: one of the tenant the name routes to.
    fn find(&self, name: &str) -> Option<&Arc<CertifiedKey>> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let mut candidates = self.candidates(&name);
        let routed = candidates.next()?;
        if let Some(key) = &routed.key {
            return Some(key);
        }
        candidates
            .filter(|entry| entry.tenant == routed.tenant)
            .find_map(|entry| entry.key.as_ref())
    }

    /// Names with a certificate.
    pub fn len(&self) -> usize {
        self.exact
            .values()
            .chain(self.wildcard.values())
            .filter(|entry| entry.key.is_some())
            .count()
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
    use edge_platform::ServingCertificate;
    use edge_platform::certificates::self_signed;

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
        let tenant: Arc<str> = "t".into();
        let mut table = SniTable::default();
        table.insert("a.example", &tenant, Some(Arc::clone(&exact)));
        table.insert("*.example", &tenant, Some(Arc::clone(&wildcard)));
        table.insert("*.B.example", &tenant, Some(Arc::clone(&deep)));
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

    #[test]
    fn a_name_routed_to_one_tenant_never_gets_another_tenants_certificate() {
        let (default, alpha_wildcard) = (key("default"), key("*.alpha.test"));
        let (alpha, beta): (Arc<str>, Arc<str>) = ("alpha".into(), "beta".into());
        let mut table = SniTable::default();
        table.insert("*.alpha.test", &alpha, Some(Arc::clone(&alpha_wildcard)));
        // Beta's route for a name under alpha's wildcard, without a
        // certificate (the control plane refuses such a claim; the node
        // does not rely on it).
        table.insert("www.alpha.test", &beta, None);
        table.insert("*.x.alpha.test", &beta, None);
        // Alpha's own service without a certificate of its own is covered
        // by alpha's wildcard.
        table.insert("api.alpha.test", &alpha, None);
        let resolver = SniResolver::new(Arc::clone(&default));
        resolver.replace(table);
        let pick = |name: &str| resolver.certificate_for(Some(name));
        assert!(Arc::ptr_eq(&pick("www.alpha.test"), &default));
        assert!(Arc::ptr_eq(&pick("y.x.alpha.test"), &default));
        assert!(Arc::ptr_eq(&pick("api.alpha.test"), &alpha_wildcard));
        assert!(Arc::ptr_eq(&pick("shop.alpha.test"), &alpha_wildcard));
    }
}
