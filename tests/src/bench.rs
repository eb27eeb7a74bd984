//! What the in-process benchmarks share: a node with no listener and the
//! guests they compare, all giving the same 20-byte answer: two hello guests,
//! and a caching proxy whose answer comes from the HTTP cache; and, when
//! asked for, the JavaScript and Python examples, whose greetings differ.

use std::sync::Arc;

use edge_config::{BackendSpec, NodeConfig, ServiceConfig};
use edge_node::Node;
use edge_node::routing::Service;
use edge_node::sandbox::{GuestIdentity, ReadyComponent};

use crate::guests::{javascript_guest, python_guest, rust_guest};
use crate::hostile::minimal_hello;
use crate::origin::{Answer, TestOrigin};

/// The guests by service name, with how a report describes them.
pub const HELLO_GUESTS: [(&str, &str); 3] = [
    ("hello", "SDK hello (Rust std, wasm32-wasip2)"),
    ("minimal", "minimal WAT hello (wasi:http calls only)"),
    (
        "cache-hit",
        "caching-proxy guest, answer from the HTTP cache",
    ),
];

/// Guests with a language runtime inside (megabytes of code and heap
/// image), by service name: installed by [`HelloNode::install_with_languages`].
pub const LANGUAGE_GUESTS: [(&str, &str); 2] = [
    ("javascript", "JavaScript example (componentize-js)"),
    ("python", "Python example (componentize-py)"),
];

/// The answer both guests give.
pub const HELLO_BODY: &str = "hello from the edge\n";

/// A node with [`HELLO_GUESTS`] installed, in a temp data dir removed on drop.
#[derive(Debug)]
pub struct HelloNode {
    pub node: Node,
    _data: tempfile::TempDir,
    /// The cache-hit guest's origin, asked once: its answer may be cached
    /// for an hour.
    _origin: TestOrigin,
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
    /// A node with the [`HELLO_GUESTS`].
    pub async fn install() -> Self {
        Self::install_guests(false).await
    }

    /// A node with the [`HELLO_GUESTS`] and the [`LANGUAGE_GUESTS`] (each
    /// built and compiled first: tens of seconds).
    pub async fn install_with_languages() -> Self {
        Self::install_guests(true).await
    }

    async fn install_guests(languages: bool) -> Self {
        let data = tempfile::tempdir().expect("bench data dir");
        let mut config = NodeConfig::default();
        config.node.data_dir = data.path().to_path_buf();
        let node = Node::new(&config).expect("node");
        let minimal = data.path().join("minimal-hello.wasm");
        std::fs::write(&minimal, minimal_hello()).expect("write the minimal guest");
        let origin = TestOrigin::start(|_, _| {
            Answer::ok(HELLO_BODY).header("cache-control", "max-age=3600")
        })
        .await;
        let mut backend = BackendSpec::new(origin.url());
        backend.allow_private_addresses = true;
        let mut services: Vec<ServiceConfig> = HELLO_GUESTS
            .iter()
            .map(|&(name, _)| {
                let module = match name {
                    "minimal" => minimal.clone(),
                    "cache-hit" => rust_guest("caching-proxy"),
                    _ => rust_guest(name),
                };
                let mut service = ServiceConfig::new(name, &[&format!("{name}.bench")], module);
                if name == "cache-hit" {
                    service.spec.backends = [("origin".to_string(), backend.clone())].into();
                }
                service
            })
            .collect();
        if languages {
            for (name, module) in [
                ("javascript", javascript_guest()),
                ("python", python_guest()),
            ] {
                let mut service = ServiceConfig::new(name, &[&format!("{name}.bench")], module);
                // A fresh language runtime takes more than the default
                // budget to start.
                service.spec.limits.cpu_budget_ms = 1_000;
                services.push(service);
            }
        }
        node.install_services(&services, data.path())
            .await
            .expect("install the hello guests");
        Self {
            node,
            _data: data,
            _origin: origin,
        }
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
            tenant: Arc::clone(&service.tenant),
            version: service.version,
            request_id: "bench".into(),
            metrics_label: Arc::clone(&service.name),
        };
        ReadyGuest {
            service,
            component,
            identity,
        }
    }
}
