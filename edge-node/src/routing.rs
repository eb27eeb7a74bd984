//! Host -> service.
//!
//! The table is swapped atomically as a whole ([`Router::replace`]), so a
//! request sees either the old set of services or the new one, and requests
//! already running keep the service (and module) they started with.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use edge_config::ServiceLimits;
use edge_config::authority::Authority;
use edge_config::rollout::StickyKey;

use crate::admission::ClientKey;
use crate::host::Capabilities;
use crate::modules::ModuleHash;
use crate::sandbox::GuestIdentity;

/// A service as the request path needs it.
#[derive(Debug)]
pub struct Service {
    /// Unique on the node: `<tenant>/<service>` for a control plane's
    /// service, the configured name for one of the config file.
    pub name: Arc<str>,
    /// Its name among its tenant's services (`app` for `acme/app`): what
    /// another service of the tenant names it by in a service backend.
    pub short_name: Arc<str>,
    /// Whose service it is: the per-tenant admission bound counts by it.
    pub tenant: Arc<str>,
    /// The control plane's version number (0: a service of the config file).
    pub version: u64,
    /// Whether the guest's cacheable responses are kept at the edge.
    pub cache_responses: bool,
    pub module: ModuleHash,
    pub limits: ServiceLimits,
    pub capabilities: Capabilities,
    /// A canary version serving a share of this service's requests.
    pub canary: Option<Canary>,
}

/// A service's canary: another version of it, for `percent` of the
/// requests, chosen by a hash of the request's sticky key.
#[derive(Debug)]
pub struct Canary {
    pub percent: u8,
    pub sticky: StickyKey,
    pub service: Arc<Service>,
}

/// The client's address, as the listener accepted it: a request extension,
/// read by a canary sticky on `client_address`.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddress(pub IpAddr);

impl Service {
    /// The version of this service that serves `request`: the canary for
    /// its share of sticky keys, this one for the rest. The same key picks
    /// the same version on every node (a fixed hash of the service's name
    /// and the key), and a request without the key (no such header or
    /// cookie, no client address) gets the stable version.
    pub fn version_for<B>(self: &Arc<Self>, request: &http::Request<B>) -> &Arc<Self> {
        let Some(canary) = &self.canary else {
            return self;
        };
        let in_canary = sticky_value(&canary.sticky, request)
            .is_some_and(|key| bucket(&self.name, &key) < u64::from(canary.percent));
        if in_canary { &canary.service } else { self }
    }

    /// Who this service's guest runs for in the request `request_id`.
    pub fn identity(&self, request_id: &Arc<str>, metrics_label: &Arc<str>) -> GuestIdentity {
        GuestIdentity {
            service: Arc::clone(&self.name),
            tenant: Arc::clone(&self.tenant),
            version: self.version,
            request_id: Arc::clone(request_id),
            metrics_label: Arc::clone(metrics_label),
        }
    }
}

/// The bytes of `request`'s sticky key, if it has one.
fn sticky_value<B>(sticky: &StickyKey, request: &http::Request<B>) -> Option<Vec<u8>> {
    match sticky {
        StickyKey::Header(name) => request
            .headers()
            .get(name.as_str())
            .map(|value| value.as_bytes().to_vec()),
        StickyKey::Cookie(name) => request
            .headers()
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(cookie, _)| *cookie == name)
            .map(|(_, value)| value.as_bytes().to_vec()),
        StickyKey::ClientAddress => request
            .extensions()
            .get::<ClientAddress>()
            .map(|ClientAddress(address)| ClientKey::of(*address).to_bytes().to_vec()),
    }
}

/// `key`'s place among 100 buckets for `service`: FNV-1a over both, so that
/// every node places a key alike, and two services split their clients
/// independently.
fn bucket(service: &str, key: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0100_0000_01b3;
    let hash = service
        .as_bytes()
        .iter()
        .chain(&[0])
        .chain(key)
        .fold(OFFSET, |hash, &byte| {
            (hash ^ u64::from(byte)).wrapping_mul(PRIME)
        });
    hash % 100
}

/// Domains to services: exact names, `*.suffix` wildcards, and `*` (local
/// mode: every host); and each tenant's services by name, for the calls one
/// service makes to another.
#[derive(Debug, Default)]
pub struct RoutingTable {
    exact: HashMap<String, Arc<Service>>,
    wildcard: HashMap<String, Arc<Service>>,
    catch_all: Option<Arc<Service>>,
    by_tenant: HashMap<Arc<str>, HashMap<Arc<str>, Arc<Service>>>,
    /// Services with a canary.
    canaries: usize,
}

impl RoutingTable {
    /// Adds `domain` (already validated and lowercase) for `service`.
    /// Routes every one of a service's domains to it.
    pub fn insert_service(&mut self, service: Service, domains: &[String]) {
        let service = Arc::new(service);
        for domain in domains {
            self.insert(domain, Arc::clone(&service));
        }
        if service.canary.is_some() {
            self.canaries += 1;
        }
        self.by_tenant
            .entry(Arc::clone(&service.tenant))
            .or_default()
            .insert(Arc::clone(&service.short_name), service);
    }

    /// `tenant`'s service `name` (its short name): the only services a
    /// service of `tenant` may call.
    pub fn service_of(&self, tenant: &str, name: &str) -> Option<&Arc<Service>> {
        self.by_tenant.get(tenant)?.get(name)
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

    /// The modules of every service in the table.
    pub fn modules(&self) -> HashSet<ModuleHash> {
        self.exact
            .values()
            .chain(self.wildcard.values())
            .chain(&self.catch_all)
            .flat_map(|service| {
                let canary = service.canary.as_ref().map(|canary| canary.service.module);
                std::iter::once(service.module).chain(canary)
            })
            .collect()
    }
}

#[derive(Debug, Default)]
pub struct Router {
    table: ArcSwap<RoutingTable>,
}

impl Router {
    /// The service for a host already in its normal spelling (see
    /// [`Authority`]).
    pub fn route(&self, host: &str) -> Option<Arc<Service>> {
        self.table.load().lookup(host).cloned()
    }

    /// The service for a TLS server name (SNI), in any case and with or
    /// without a trailing dot. `None` for a name no authority could carry.
    pub fn route_server_name(&self, server_name: &str) -> Option<Arc<Service>> {
        let authority = Authority::parse(server_name).ok()?;
        if authority.port().is_some() {
            return None;
        }
        self.route(authority.host())
    }

    /// The modules of every service served now.
    pub fn modules(&self) -> HashSet<ModuleHash> {
        self.table.load().modules()
    }

    /// Whether any service served now has a canary.
    pub fn serves_canary(&self) -> bool {
        self.table.load().canaries > 0
    }

    /// See [`RoutingTable::service_of`].
    pub fn service_of(&self, tenant: &str, name: &str) -> Option<Arc<Service>> {
        self.table.load().service_of(tenant, name).cloned()
    }

    pub fn replace(&self, table: RoutingTable) {
        self.table.store(Arc::new(table));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(name: &str) -> Arc<Service> {
        Arc::new(owned_by(name, name))
    }

    fn owned_by(name: &str, tenant: &str) -> Service {
        Service {
            name: name.into(),
            short_name: name.into(),
            tenant: tenant.into(),
            version: 0,
            cache_responses: false,
            module: ModuleHash::of(name.as_bytes()),
            limits: ServiceLimits::default(),
            capabilities: Capabilities::default(),
            canary: None,
        }
    }

    #[test]
    fn server_names_route_in_any_case_and_never_with_a_port() {
        let router = Router::default();
        let mut table = RoutingTable::default();
        table.insert("shop.example.com", service("shop"));
        router.replace(table);
        let name = |sni: &str| router.route_server_name(sni).map(|s| s.name.to_string());
        assert_eq!(name("SHOP.example.com.").as_deref(), Some("shop"));
        assert_eq!(name("shop.example.com:443"), None);
        assert_eq!(name("shop.example.com/x"), None);
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
    fn a_tenant_names_only_its_own_services() {
        let mut table = RoutingTable::default();
        table.insert_service(owned_by("auth", "acme"), &["auth.example.com".to_string()]);
        assert_eq!(
            table.service_of("acme", "auth").map(|s| &*s.name),
            Some("auth")
        );
        assert!(table.service_of("globex", "auth").is_none());
        assert!(table.service_of("acme", "app").is_none());
    }

    #[test]
    fn a_canary_takes_its_share_of_sticky_keys_and_each_key_keeps_its_version() {
        let mut stable = owned_by("shop", "acme");
        stable.version = 1;
        let mut canary = owned_by("shop", "acme");
        canary.version = 2;
        stable.canary = Some(Canary {
            percent: 10,
            sticky: StickyKey::Header("x-user".into()),
            service: Arc::new(canary),
        });
        let stable = Arc::new(stable);
        let version = |user: &str| {
            let request = http::Request::builder()
                .header("x-user", user)
                .body(())
                .expect("request");
            stable.version_for(&request).version
        };
        let canaries = (0..2_000)
            .filter(|i| version(&format!("user-{i}")) == 2)
            .count();
        assert!(
            (150..=250).contains(&canaries),
            "{canaries} of 2000 in a 10 % canary"
        );
        for i in 0..50 {
            let user = format!("user-{i}");
            assert_eq!(version(&user), version(&user), "{user} moved");
        }
        let keyless = http::Request::builder().body(()).expect("request");
        assert_eq!(stable.version_for(&keyless).version, 1);
    }

    #[test]
    fn an_ipv6_client_keeps_its_version_across_its_64() {
        let key = |address: &str| {
            let mut request = http::Request::builder().body(()).expect("request");
            request
                .extensions_mut()
                .insert(ClientAddress(address.parse().expect("address")));
            sticky_value(&StickyKey::ClientAddress, &request)
        };
        assert_eq!(key("2001:db8::1"), key("2001:db8::ffff:1234"));
        assert_ne!(key("2001:db8::1"), key("2001:db8:0:1::1"));
        assert_ne!(key("192.0.2.1"), key("192.0.2.2"));
    }

    #[test]
    fn a_cookie_key_is_read_among_the_others() {
        let sticky = StickyKey::Cookie("session".into());
        let request = http::Request::builder()
            .header("cookie", "theme=dark; session=abc123")
            .header("cookie", "other=1")
            .body(())
            .expect("request");
        assert_eq!(sticky_value(&sticky, &request), Some(b"abc123".to_vec()));
        let request = http::Request::builder()
            .header("cookie", "sessionx=no")
            .body(())
            .expect("request");
        assert_eq!(sticky_value(&sticky, &request), None);
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
