//! Admission: bounds on requests in flight, across the node and per tenant,
//! and on connections per tenant and per client address.
//!
//! A request beyond a bound is refused at once with 503 and `Retry-After`
//! rather than queued: a queue without a deadline turns overload into
//! timeouts for everyone. The per-tenant bound keeps one tenant's burst
//! from taking every instance on the node. The permit lives until the guest
//! has finished, including a body it is still streaming.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use prometheus::IntGauge;

/// Which bound refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Node,
    Tenant,
}

#[derive(Debug)]
pub struct Admission {
    in_flight: Arc<AtomicU64>,
    max_in_flight: u64,
    per_tenant: DashMap<Arc<str>, Arc<AtomicU64>>,
    max_per_tenant: u64,
    connections_per_tenant: DashMap<Arc<str>, Arc<AtomicU64>>,
    max_connections_per_tenant: u64,
    /// Only addresses with a connection open: an entry goes with its last.
    connections_per_client: Arc<DashMap<ClientKey, u64>>,
    max_connections_per_client: u64,
    gauge: IntGauge,
}

/// Who a client is for the per-client bound: its IPv4 address, or the /64
/// of its IPv6 address (a host usually has a whole /64, and could take a
/// new address from it per connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientKey(u128);

impl ClientKey {
    pub fn of(address: IpAddr) -> Self {
        match address {
            IpAddr::V4(v4) => Self(u128::from(u32::from(v4))),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self(u128::from(u32::from(v4))),
                // The low bit marks IPv6, so no /64 equals an IPv4 address.
                None => Self((u128::from(v6) & !((1u128 << 64) - 1)) | 1),
            },
        }
    }
}

/// One of a client address's open connections; the count drops with it.
#[derive(Debug)]
pub struct ClientConnection {
    counts: Arc<DashMap<ClientKey, u64>>,
    key: ClientKey,
}

impl Drop for ClientConnection {
    fn drop(&mut self) {
        // The entry goes with the address's last connection, so the map
        // holds only the addresses connected now.
        self.counts.remove_if_mut(&self.key, |_, count| {
            *count -= 1;
            *count == 0
        });
    }
}

/// One of a tenant's open connections; the count drops with it.
#[derive(Debug)]
pub struct TenantConnection {
    count: Arc<AtomicU64>,
    tenant: Arc<str>,
}

impl TenantConnection {
    /// The tenant whose name the connection's SNI carried, and whose
    /// certificate it was served.
    pub fn tenant(&self) -> &Arc<str> {
        &self.tenant
    }
}

impl Drop for TenantConnection {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The counter of `tenant` in `map`, made on first use.
fn counter(map: &DashMap<Arc<str>, Arc<AtomicU64>>, tenant: &Arc<str>) -> Arc<AtomicU64> {
    match map.get(tenant) {
        Some(counter) => Arc::clone(&counter),
        None => Arc::clone(map.entry(Arc::clone(tenant)).or_default().value()),
    }
}

/// Held for as long as a request is in flight.
#[derive(Debug)]
pub struct AdmissionPermit {
    in_flight: Arc<AtomicU64>,
    tenant: Arc<AtomicU64>,
    gauge: IntGauge,
}

/// Takes one slot of `counter` if it is under `max`.
fn take(counter: &AtomicU64, max: u64) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .is_ok()
}

impl Admission {
    pub fn new(limits: &edge_config::HttpLimits, gauge: IntGauge) -> Self {
        Self {
            in_flight: Arc::new(AtomicU64::new(0)),
            max_in_flight: limits.max_in_flight_requests,
            per_tenant: DashMap::new(),
            max_per_tenant: limits.max_in_flight_requests_per_tenant,
            connections_per_tenant: DashMap::new(),
            max_connections_per_tenant: limits.max_connections_per_tenant,
            connections_per_client: Arc::new(DashMap::new()),
            max_connections_per_client: limits.max_connections_per_client,
            gauge,
        }
    }

    /// Counts a connection for `tenant`, or `None` when the tenant is at
    /// `http.max_connections_per_tenant`.
    pub fn try_connect(&self, tenant: &Arc<str>) -> Option<TenantConnection> {
        let count = counter(&self.connections_per_tenant, tenant);
        // Built only once the slot is taken: dropping one gives a slot back.
        if take(&count, self.max_connections_per_tenant) {
            Some(TenantConnection {
                count,
                tenant: Arc::clone(tenant),
            })
        } else {
            None
        }
    }

    /// Counts a connection from `address`, or `None` when the address (see
    /// [`ClientKey`]) is at `http.max_connections_per_client`.
    pub fn try_connect_client(&self, address: IpAddr) -> Option<ClientConnection> {
        let key = ClientKey::of(address);
        let mut count = self.connections_per_client.entry(key).or_insert(0);
        if *count >= self.max_connections_per_client {
            return None;
        }
        *count += 1;
        drop(count);
        Some(ClientConnection {
            counts: Arc::clone(&self.connections_per_client),
            key,
        })
    }

    /// A permit for one of `tenant`'s requests, or which bound is full.
    pub fn try_admit(&self, tenant: &Arc<str>) -> Result<AdmissionPermit, Refusal> {
        let counter = counter(&self.per_tenant, tenant);
        if !take(&counter, self.max_per_tenant) {
            return Err(Refusal::Tenant);
        }
        if !take(&self.in_flight, self.max_in_flight) {
            counter.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::Node);
        }
        self.gauge.inc();
        Ok(AdmissionPermit {
            in_flight: Arc::clone(&self.in_flight),
            tenant: counter,
            gauge: self.gauge.clone(),
        })
    }
}

impl Drop for AdmissionPermit {
    fn drop(&mut self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.tenant.fetch_sub(1, Ordering::AcqRel);
        self.gauge.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_beyond_either_limit_and_frees_on_drop() {
        let limits = edge_config::HttpLimits {
            max_in_flight_requests: 3,
            max_in_flight_requests_per_tenant: 2,
            ..Default::default()
        };
        let admission = Admission::new(&limits, IntGauge::new("g", "g").expect("gauge"));
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        let first = admission.try_admit(&a).expect("first");
        let _second = admission.try_admit(&a).expect("second");
        assert_eq!(admission.try_admit(&a).err(), Some(Refusal::Tenant));
        let _third = admission.try_admit(&b).expect("another tenant still fits");
        assert_eq!(admission.try_admit(&b).err(), Some(Refusal::Node));
        drop(first);
        assert!(admission.try_admit(&a).is_ok());
    }

    #[test]
    fn tenant_connections_are_bounded_and_a_refusal_takes_nothing() {
        let limits = edge_config::HttpLimits {
            max_connections_per_tenant: 1,
            ..Default::default()
        };
        let admission = Admission::new(&limits, IntGauge::new("g", "g").expect("gauge"));
        let tenant: Arc<str> = "a".into();
        let first = admission.try_connect(&tenant).expect("first");
        for _ in 0..3 {
            assert!(admission.try_connect(&tenant).is_none());
        }
        drop(first);
        assert!(admission.try_connect(&tenant).is_some());
    }

    #[test]
    fn client_connections_are_bounded_per_address_and_forgotten_with_the_last() {
        let limits = edge_config::HttpLimits {
            max_connections_per_client: 2,
            ..Default::default()
        };
        let admission = Admission::new(&limits, IntGauge::new("g", "g").expect("gauge"));
        let ip = |s: &str| s.parse::<IpAddr>().expect("address");
        let first = admission.try_connect_client(ip("192.0.2.1"));
        let _second = admission.try_connect_client(ip("::ffff:192.0.2.1"));
        assert!(first.is_some() && _second.is_some());
        assert!(admission.try_connect_client(ip("192.0.2.1")).is_none());
        assert!(admission.try_connect_client(ip("192.0.2.2")).is_some());
        // One IPv6 /64 is one client, whatever its low bits.
        let v6: Vec<_> = ["2001:db8::1", "2001:db8::ffff:2"]
            .iter()
            .map(|a| {
                admission
                    .try_connect_client(ip(a))
                    .expect("under the bound")
            })
            .collect();
        assert!(admission.try_connect_client(ip("2001:db8::3")).is_none());
        assert!(
            admission
                .try_connect_client(ip("2001:db8:0:1::1"))
                .is_some()
        );
        drop(first);
        assert!(admission.try_connect_client(ip("192.0.2.1")).is_some());
        drop(v6);
        drop(_second);
        // Only addresses with connections open are kept.
        assert!(admission.connections_per_client.is_empty());
    }
}
