//! A real authoritative DNS server on loopback (hickory-server), for the
//! control plane to read custom domains' TXT challenges from. Records are
//! published while it runs, as a tenant would publish them at its DNS host.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use hickory_server::Server;
use hickory_server::proto::rr::rdata::{SOA, TXT};
use hickory_server::proto::rr::{LowerName, Name, RData, Record};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneType};

pub struct DnsServer {
    pub addr: SocketAddr,
    zone: Arc<InMemoryZoneHandler>,
    serial: AtomicU32,
    server: Server<Catalog>,
}

impl DnsServer {
    /// Serves the zone `origin` (e.g. `shop.example`) over UDP and TCP on
    /// one loopback port.
    pub async fn start(origin: &str) -> Self {
        let origin = Name::from_ascii(format!("{origin}.")).expect("zone name");
        let mut zone =
            InMemoryZoneHandler::empty(origin.clone(), ZoneType::Primary, AxfrPolicy::Deny);
        let soa = SOA::new(
            Name::from_ascii(format!("ns.{origin}")).expect("ns"),
            Name::from_ascii(format!("hostmaster.{origin}")).expect("rname"),
            1,
            3600,
            600,
            86400,
            // Negative answers may be cached for a second at most.
            1,
        );
        zone.upsert_mut(Record::from_rdata(origin.clone(), 60, RData::SOA(soa)), 1);
        let zone = Arc::new(zone);
        let mut catalog = Catalog::new();
        catalog.upsert(LowerName::new(&origin), vec![zone.clone()]);
        let (udp, tcp, addr) = bind_udp_and_tcp_on_one_port().await;
        let mut server = Server::new(catalog);
        server.register_socket(udp);
        server.register_listener(tcp, std::time::Duration::from_secs(5), 4096);
        Self {
            addr,
            zone,
            serial: AtomicU32::new(1),
            server,
        }
    }

    /// Publishes a TXT record (one string) at `name`.
    pub async fn publish_txt(&self, name: &str, text: &str) {
        let name = Name::from_ascii(format!("{}.", name.trim_end_matches('.'))).expect("name");
        let serial = self.serial.fetch_add(1, Ordering::Relaxed) + 1;
        let record = Record::from_rdata(name, 1, RData::TXT(TXT::new(vec![text.to_string()])));
        assert!(self.zone.upsert(record, serial).await, "record published");
    }

    pub async fn stop(mut self) {
        let _ = self.server.shutdown_gracefully().await;
    }
}

/// A free UDP port is not always free for TCP: other tests' connections may
/// hold it. So the pair is bound again on a fresh port until both succeed.
async fn bind_udp_and_tcp_on_one_port()
-> (tokio::net::UdpSocket, tokio::net::TcpListener, SocketAddr) {
    const ATTEMPTS: usize = 50;
    for _ in 0..ATTEMPTS {
        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("udp");
        let addr = udp.local_addr().expect("addr");
        match tokio::net::TcpListener::bind(addr).await {
            Ok(tcp) => return (udp, tcp, addr),
            Err(error) if error.kind() == std::io::ErrorKind::AddrInUse => continue,
            Err(error) => panic!("tcp on {addr}: {error}"),
        }
    }
    panic!("no loopback port was free for both UDP and TCP in {ATTEMPTS} attempts");
}
