//! Host -> service.
//!
//! The table is swapped atomically as a whole ([`Router::replace`]), so a
//! request sees either the old set of services or the new one, and requests
//! already running keep the service (and module) they started with.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use edge_config::ServiceLimits;

use crate::modules::ModuleHash;
use crate::sandbox::GuestCapabilities;

/// A service as the request path needs it.
#[derive(Debug)]
pub struct Service {
    pub name: Arc<str>,
    /// Whose service it is: the per-tenant admission bound counts by it.
    pub tenant: Arc<str>,
    /// The control plane's version number (0: a service of the config file).
    pub version: u64,
    /// Whether the guest's cacheable responses are kept at the edge.
    pub cache_responses: bool,
    pub module: ModuleHash,
    pub limits: ServiceLimits,
    pub capabilities: GuestCapabilities,
}

/// Domains to services: exact names, `*.suffix` wildcards, and `*` (local
/// mode: every host).
#[derive(Debug, Default)]
pub struct RoutingTable {
    exact: HashMap<String, Arc<Service>>,
    wildcard: HashMap<String, Arc<Service>>,
    catch_all: Option<Arc<Service>>,
}

impl RoutingTable {
    /// Adds `domain` (already validated and lowercase) for `service`.
    /// Routes every one of a service's domains to it.
    pub fn insert_service(&mut self, service: Service, domains: &[String]) {
        let service = Arc::new(service);
        for domain in domains {
            self.insert(domain, Arc::clone(&service));
        }
    }

    pub fn insert(&mut self, domain: &str, service: Arc<Service>) {
        if domain == "*" {
            self.catch_all = Some(service);
        } else if let Some(suffix) = domain.strip_prefix("*.") {
            self.wildcard.insert(suffix.to_string(), service);
        } else {
            self.exact.insert(domain.to_string(), service);
        }
    }

    /// The service for `host` (a bare host name, normalized). An exact name
    /// wins over a wildcard, and a longer wildcard over a shorter one.
    pub fn lookup(&self, host: &str) -> Option<&Arc<Service>> {
        if let Some(service) = self.exact.get(host) {
            return Some(service);
        }
        let mut rest = host;
        while let Some(dot) = rest.find('.') {
            rest = &rest[dot + 1..];
            if let Some(service) = self.wildcard.get(rest) {
                return Some(service);
            }
        }
        self.catch_all.as_ref()
    }
}

#[derive(Debug, Default)]
pub struct Router {
    table: ArcSwap<RoutingTable>,
}

impl Router {
    /// The service for a request's authority (`Host` or `:authority`).
    pub fn route(&self, authority: &str) -> Option<Arc<Service>> {
        let host = normalize_host(authority)?;
        self.table.load().lookup(&host).cloned()
    }

    pub fn replace(&self, table: RoutingTable) {
        self.table.store(Arc::new(table));
    }
}

/// `Shop.Example.com.:8080` -> `shop.example.com`. `None` for an authority
/// that cannot name a service (empty, or with userinfo).
pub fn normalize_host(authority: &str) -> Option<Cow<'_, str>> {
    if authority.contains('@') {
        return None;
    }
    let host = if let Some(bracketed) = authority.strip_prefix('[') {
        // An IPv6 literal: keep the brackets, drop the port.
        let end = bracketed.find(']')?;
        &authority[..end + 2]
    } else {
        authority
            .rsplit_once(':')
            .map_or(authority, |(host, _port)| host)
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() {
        return None;
    }
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Some(Cow::Owned(host.to_ascii_lowercase()))
    } else {
        Some(Cow::Borrowed(host))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(name: &str) -> Arc<Service> {
        Arc::new(Service {
            name: name.into(),
            tenant: name.into(),
            version: 0,
            cache_responses: false,
            module: ModuleHash::of(name.as_bytes()),
            limits: ServiceLimits::default(),
            capabilities: GuestCapabilities::default(),
        })
    }

    #[test]
    fn host_spellings_normalize_to_one_name() {
        for spelling in [
            "shop.example.com",
            "SHOP.Example.COM",
            "shop.example.com.",
            "shop.example.com:8080",
            "Shop.Example.Com.:443",
        ] {
            assert_eq!(
                normalize_host(spelling).as_deref(),
                Some("shop.example.com"),
                "{spelling}"
            );
        }
        assert_eq!(normalize_host("[::1]:8080").as_deref(), Some("[::1]"));
        assert_eq!(normalize_host("user@shop.example.com"), None);
        assert_eq!(normalize_host(":80"), None);
    }

    #[test]
    fn exact_beats_wildcard_and_longer_wildcard_beats_shorter() {
        let mut table = RoutingTable::default();
        table.insert("*.example.com", service("wide"));
        table.insert("*.api.example.com", service("api"));
        table.insert("www.example.com", service("www"));
        let name = |host: &str| table.lookup(host).map(|s| s.name.to_string());
        assert_eq!(name("www.example.com").as_deref(), Some("www"));
        assert_eq!(name("v1.api.example.com").as_deref(), Some("api"));
        assert_eq!(name("a.b.example.com").as_deref(), Some("wide"));
        assert_eq!(
            name("example.com"),
            None,
            "a wildcard needs at least one label"
        );
        assert_eq!(name("example.org"), None);
    }

    #[test]
    fn catch_all_answers_any_host() {
        let mut table = RoutingTable::default();
        table.insert("*", service("local"));
        assert_eq!(
            table.lookup("anything.test").map(|s| &*s.name),
            Some("local")
        );
    }
}
