//! Admission: bounds on requests in flight, across the node and per tenant,
//! and on connections per tenant and per client address.
//!
//! A request over its tenant's bound is refused at once with 503 and
//! `Retry-After`. One that finds the node's bound reached waits, in its
//! tenant's queue, for at most `http.admission_queue_timeout_ms`, then gets
//! 503: a queue without a deadline turns overload into timeouts for
//! everyone. A freed slot goes to the tenants with requests waiting in
//! turn (round-robin), not to whoever asked first, so a tenant that keeps
//! the node full cannot keep another out. The per-tenant bound keeps one
//! tenant's burst from taking every instance on the node. The permit lives
//! until the guest has finished, including a body it is still streaming.

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
    requests: Arc<Requests>,
    connections_per_tenant: DashMap<Arc<str>, Arc<AtomicU64>>,
    max_connections_per_tenant: u64,
    /// Only addresses with a connection open: an entry goes with its last.
    connections_per_client: Arc<DashMap<ClientKey, u64>>,
    max_connections_per_client: u64,
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

    /// The key as bytes: what a canary sticky on the client's address
    /// hashes, so that a host moving within its /64 keeps its version.
    pub fn to_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
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

/// The request bounds, their counts and the waiting requests: all under one
/// lock, so that a freed slot and a waiting request always meet.
#[derive(Debug)]
struct Requests {
    max_in_flight: u64,
    max_per_tenant: u64,
    queue_timeout: std::time::Duration,
    state: std::sync::Mutex<RequestState>,
    gauge: IntGauge,
}

#[derive(Debug, Default)]
struct RequestState {
    in_flight: u64,
    /// Per tenant: its requests in flight or waiting. Absent at zero.
    per_tenant: std::collections::HashMap<Arc<str>, u64>,
    /// Each tenant's waiting requests, oldest first; a tenant is here only
    /// while it has one.
    queues: std::collections::HashMap<Arc<str>, std::collections::VecDeque<Arc<Waiting>>>,
    /// The tenants in `queues`, in the order their turns come.
    order: std::collections::VecDeque<Arc<str>>,
}

/// One request waiting for a slot of the node.
#[derive(Debug)]
struct Waiting {
    /// Set under the lock when a slot is handed to it.
    granted: std::sync::atomic::AtomicBool,
    wake: tokio::sync::Notify,
}

impl Requests {
    fn lock(&self) -> std::sync::MutexGuard<'_, RequestState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Gives back one of `tenant`'s slots and the node's slot, which goes to
    /// the next tenant waiting, if any.
    fn release(&self, tenant: &Arc<str>) {
        let mut state = self.lock();
        forget_one(&mut state.per_tenant, tenant);
        state.in_flight -= 1;
        self.gauge.dec();
        self.hand_on(&mut state);
    }

    /// Hands free node slots to waiting requests, tenant by tenant.
    fn hand_on(&self, state: &mut RequestState) {
        while state.in_flight < self.max_in_flight {
            let Some(tenant) = state.order.pop_front() else {
                return;
            };
            let Some(queue) = state.queues.get_mut(&tenant) else {
                continue;
            };
            let Some(waiting) = queue.pop_front() else {
                continue;
            };
            if queue.is_empty() {
                state.queues.remove(&tenant);
            } else {
                state.order.push_back(tenant);
            }
            state.in_flight += 1;
            self.gauge.inc();
            waiting.granted.store(true, Ordering::Release);
            waiting.wake.notify_one();
        }
    }

    /// A waiting request that stops waiting (its deadline, or the client
    /// went): `true` if it was handed a slot meanwhile, which it now owns;
    /// else it leaves its queue and gives back its tenant slot.
    fn stop_waiting(&self, tenant: &Arc<str>, waiting: &Arc<Waiting>) -> bool {
        let mut state = self.lock();
        if waiting.granted.load(Ordering::Acquire) {
            return true;
        }
        if let Some(queue) = state.queues.get_mut(tenant) {
            queue.retain(|other| !Arc::ptr_eq(other, waiting));
            if queue.is_empty() {
                state.queues.remove(tenant);
                state.order.retain(|other| other != tenant);
            }
        }
        forget_one(&mut state.per_tenant, tenant);
        false
    }
}

fn forget_one(counts: &mut std::collections::HashMap<Arc<str>, u64>, tenant: &Arc<str>) {
    if let Some(count) = counts.get_mut(tenant) {
        *count -= 1;
        if *count == 0 {
            counts.remove(tenant);
        }
    }
}

/// Held for as long as a request is in flight.
#[derive(Debug)]
pub struct AdmissionPermit {
    requests: Arc<Requests>,
    tenant: Arc<str>,
}

impl Drop for AdmissionPermit {
    fn drop(&mut self) {
        self.requests.release(&self.tenant);
    }
}

/// Forgets a waiting request whose future is dropped (the client went).
struct WaitGuard<'a> {
    requests: &'a Arc<Requests>,
    tenant: &'a Arc<str>,
    waiting: Option<Arc<Waiting>>,
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        if let Some(waiting) = self.waiting.take()
            && self.requests.stop_waiting(self.tenant, &waiting)
        {
            // Handed a slot it will not use: it goes on.
            self.requests.release(self.tenant);
        }
    }
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
            requests: Arc::new(Requests {
                max_in_flight: limits.max_in_flight_requests,
                max_per_tenant: limits.max_in_flight_requests_per_tenant,
                queue_timeout: std::time::Duration::from_millis(limits.admission_queue_timeout_ms),
                state: std::sync::Mutex::default(),
                gauge,
            }),
            connections_per_tenant: DashMap::new(),
            max_connections_per_tenant: limits.max_connections_per_tenant,
            connections_per_client: Arc::new(DashMap::new()),
            max_connections_per_client: limits.max_connections_per_client,
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

    /// A permit for one of `tenant`'s requests: at once when the node has a
    /// slot free and nobody waits for one, else after waiting in the
    /// tenant's queue for at most `http.admission_queue_timeout_ms`; or
    /// which bound refused it.
    pub async fn admit(&self, tenant: &Arc<str>) -> Result<AdmissionPermit, Refusal> {
        let requests = &self.requests;
        let waiting = {
            let mut state = requests.lock();
            let state = &mut *state;
            let count = state.per_tenant.entry(Arc::clone(tenant)).or_insert(0);
            if *count >= requests.max_per_tenant {
                return Err(Refusal::Tenant);
            }
            *count += 1;
            if state.in_flight < requests.max_in_flight && state.order.is_empty() {
                state.in_flight += 1;
                requests.gauge.inc();
                return Ok(self.permit(tenant));
            }
            if requests.queue_timeout.is_zero() {
                forget_one(&mut state.per_tenant, tenant);
                return Err(Refusal::Node);
            }
            let waiting = Arc::new(Waiting {
                granted: std::sync::atomic::AtomicBool::new(false),
                wake: tokio::sync::Notify::new(),
            });
            match state.queues.get_mut(tenant) {
                Some(queue) => queue.push_back(Arc::clone(&waiting)),
                None => {
                    state.queues.insert(
                        Arc::clone(tenant),
                        std::collections::VecDeque::from([Arc::clone(&waiting)]),
                    );
                    state.order.push_back(Arc::clone(tenant));
                }
            }
            waiting
        };
        let mut guard = WaitGuard {
            requests,
            tenant,
            waiting: Some(Arc::clone(&waiting)),
        };
        let granted = tokio::time::timeout(requests.queue_timeout, async {
            // `notify_one` stores a permit if it comes before this waits.
            while !waiting.granted.load(Ordering::Acquire) {
                waiting.wake.notified().await;
            }
        })
        .await
        .is_ok();
        guard.waiting = None;
        if granted || requests.stop_waiting(tenant, &waiting) {
            Ok(self.permit(tenant))
        } else {
            Err(Refusal::Node)
        }
    }

    /// A permit for one of `tenant`'s requests only if one is free now:
    /// what a service called by another of the tenant's services takes. It
    /// never queues, since its caller holds a permit while it waits, and a
    /// tenant whose requests all wait on callees would wait on itself.
    pub fn try_admit(&self, tenant: &Arc<str>) -> Result<AdmissionPermit, Refusal> {
        let requests = &self.requests;
        let mut state = requests.lock();
        let state = &mut *state;
        if state.per_tenant.get(tenant).copied().unwrap_or(0) >= requests.max_per_tenant {
            return Err(Refusal::Tenant);
        }
        if state.in_flight >= requests.max_in_flight || !state.order.is_empty() {
            return Err(Refusal::Node);
        }
        *state.per_tenant.entry(Arc::clone(tenant)).or_insert(0) += 1;
        state.in_flight += 1;
        requests.gauge.inc();
        Ok(self.permit(tenant))
    }

    fn permit(&self, tenant: &Arc<str>) -> AdmissionPermit {
        AdmissionPermit {
            requests: Arc::clone(&self.requests),
            tenant: Arc::clone(tenant),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Admission under `limits`, its in-flight gauge a throwaway one.
    fn admission_under(limits: edge_config::HttpLimits) -> Admission {
        Admission::new(&limits, IntGauge::new("g", "g").expect("gauge"))
    }

    #[tokio::test]
    async fn refuses_beyond_either_limit_and_frees_on_drop() {
        let admission = admission_under(edge_config::HttpLimits {
            max_in_flight_requests: 3,
            max_in_flight_requests_per_tenant: 2,
            admission_queue_timeout_ms: 0,
            ..Default::default()
        });
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        let first = admission.admit(&a).await.expect("first");
        let _second = admission.admit(&a).await.expect("second");
        assert_eq!(admission.admit(&a).await.err(), Some(Refusal::Tenant));
        let _third = admission
            .admit(&b)
            .await
            .expect("another tenant still fits");
        assert_eq!(admission.admit(&b).await.err(), Some(Refusal::Node));
        drop(first);
        assert!(admission.admit(&a).await.is_ok());
    }

    #[tokio::test]
    async fn a_freed_slot_goes_to_the_tenants_waiting_in_turn_and_a_wait_ends_at_its_deadline() {
        let admission = Arc::new(admission_under(edge_config::HttpLimits {
            max_in_flight_requests: 1,
            max_in_flight_requests_per_tenant: 10,
            admission_queue_timeout_ms: 2_000,
            ..Default::default()
        }));
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        let held = admission.admit(&a).await.expect("the one slot");
        let wait = |tenant: &Arc<str>| {
            let (admission, tenant) = (Arc::clone(&admission), Arc::clone(tenant));
            tokio::spawn(async move {
                let permit = admission.admit(&tenant).await;
                let admitted_at = std::time::Instant::now();
                // Held briefly, so the next waiter's turn is after it.
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                drop(permit);
                admitted_at
            })
        };
        // Two of a's requests wait, then one of b's.
        let a1 = wait(&a);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let a2 = wait(&a);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let b1 = wait(&b);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        drop(held);
        let (a1, a2, b1) = (
            a1.await.expect("a1"),
            a2.await.expect("a2"),
            b1.await.expect("b1"),
        );
        assert!(a1 < b1 && b1 < a2, "b's request came before a's second");

        // A full node's queue has a deadline.
        let admission = admission_under(edge_config::HttpLimits {
            max_in_flight_requests: 1,
            admission_queue_timeout_ms: 100,
            ..Default::default()
        });
        let _held = admission.admit(&a).await.expect("the one slot");
        let started = std::time::Instant::now();
        assert_eq!(admission.admit(&b).await.err(), Some(Refusal::Node));
        assert!(started.elapsed() >= std::time::Duration::from_millis(100));
        assert!(
            admission.requests.lock().queues.is_empty(),
            "nothing left queued"
        );
    }

    #[test]
    fn tenant_connections_are_bounded_and_a_refusal_takes_nothing() {
        let admission = admission_under(edge_config::HttpLimits {
            max_connections_per_tenant: 1,
            ..Default::default()
        });
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
        let admission = admission_under(edge_config::HttpLimits {
            max_connections_per_client: 2,
            ..Default::default()
        });
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
