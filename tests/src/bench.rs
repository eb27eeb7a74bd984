//! What the in-process benchmarks share: a node with no listener and the two
//! hello guests they compare, both giving the same 20-byte answer.

use std::sync::Arc;

use edge_config::{NodeConfig, ServiceConfig, ServiceLimits};
use edge_node::Node;
use edge_node::routing::Service;
use edge_node::sandbox::{GuestIdentity, ReadyComponent};

use crate::guests::rust_guest;
use crate::hostile::minimal_hello;

/// The guests by service name, with how a report describes them.
pub const HELLO_GUESTS: [(&str, &str); 2] = [
    ("hello", "SDK hello (Rust std, wasm32-wasip2)"),
    ("minimal", "minimal WAT hello (wasi:http calls only)"),
];

/// The answer both guests give.
pub const HELLO_BODY: &str = "hello from the edge\n";

/// A node with [`HELLO_GUESTS`] installed, in a temp data dir removed on drop.
#[derive(Debug)]
pub struct HelloNode {
    pub node: Node,
    _data: tempfile::TempDir,
}

/// One guest, ready to run as its service.
pub struct ReadyGuest {
    pub service: Arc<Service>,
    pub component: ReadyComponent,
    pub identity: GuestIdentity,
}

impl std::fmt::Debug for ReadyGuest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadyGuest")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl HelloNode {
    pub async fn install() -> Self {
        let data = tempfile::tempdir().expect("bench data dir");
        let mut config = NodeConfig::default();
        config.node.data_dir = data.path().to_path_buf();
        let node = Node::new(&config).expect("node");
        let minimal = data.path().join("minimal-hello.wasm");
        std::fs::write(&minimal, minimal_hello()).expect("write the minimal guest");
        let services = HELLO_GUESTS.map(|(name, _)| ServiceConfig {
            name: name.into(),
            domains: vec![format!("{name}.bench")],
            module: if name == "minimal" {
                minimal.clone()
            } else {
                rust_guest(name)
            },
            limits: ServiceLimits::default(),
            tenant: None,
            backends: Default::default(),
        });
        node.install_services(&services, data.path())
            .await
            .expect("install the hello guests");
        Self { node, _data: data }
    }

    pub async fn guest(&self, name: &str) -> ReadyGuest {
        let service = self
            .node
            .router()
            .route(&format!("{name}.bench"))
            .expect("every hello guest is routed");
        let component = self
            .node
            .modules()
            .get(service.module)
            .await
            .expect("ready component");
        let identity = GuestIdentity {
            service: Arc::clone(&service.name),
            request_id: "bench".into(),
        };
        ReadyGuest {
            service,
            component,
            identity,
        }
    }
}
