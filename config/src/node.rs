//! The edge node's config file.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::limits::{CacheLimits, HttpLimits, SandboxLimits};
use crate::observability::{LogsSection, MetricsSection};
use crate::service::ServiceConfig;
use crate::tls::{Http3Section, TlsSection};
use crate::validate::ConfigErrors;

/// Where the node listens by default: the public listener on all interfaces
/// would surprise a developer, so both default to loopback.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// The admin listener (`/metrics`) stays on loopback unless an operator moves it.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9090";
pub const DEFAULT_DATA_DIR: &str = "./edge-data";

/// Everything a node needs to start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[derive(Default)]
pub struct NodeConfig {
    pub node: NodeSection,
    pub http: HttpLimits,
    pub sandbox: SandboxLimits,
    pub cache: CacheLimits,
    pub tls: TlsSection,
    pub http3: Http3Section,
    pub metrics: MetricsSection,
    pub logs: LogsSection,
    /// Services served from this file. The control plane feeds the same
    /// routing table at run time.
    #[serde(rename = "service")]
    pub services: Vec<ServiceConfig>,
    /// Where to get services from at run time. Without it the node serves
    /// only the services in this file.
    pub control_plane: Option<ControlPlaneSection>,
}

/// The control plane this node follows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlPlaneSection {
    /// Base URL, e.g. `https://cp.example.net:7070`. `http://` only to a
    /// loopback address: the snapshot carries every tenant's private keys.
    pub url: String,
    /// Further replicas of the same control plane (one PostgreSQL
    /// database), in the order they are tried: when the one in use stops
    /// answering, the node moves to the next and carries on from the same
    /// snapshot, purge, KV and report positions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replica_urls: Vec<String>,
    /// The CA certificate(s) (PEM) the control plane's certificate must
    /// chain to; the public web roots without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// The cluster token every node of the cluster presents.
    pub cluster_token: String,
    /// How the node is listed by the control plane.
    #[serde(default = "default_node_name")]
    pub node_name: String,
    /// How often usage is reported (at least every
    /// [`CANARY_USAGE_REPORT_INTERVAL_MS`] while a canary is served).
    #[serde(default = "default_usage_report_interval_ms")]
    pub usage_report_interval_ms: u64,
}

impl ControlPlaneSection {
    /// An `https://` URL, or `http://` to a loopback host (`localhost`,
    /// `127.0.0.0/8`, `[::1]`): plaintext anywhere else would carry the
    /// cluster token, the node's credential and every tenant's private
    /// keys in the clear.
    pub fn check_url(&self) -> Result<(), String> {
        self.urls()
            .try_for_each(|url| check_one_url(url).map_err(|e| format!("{url:?}: {e}")))
    }

    /// `url`, then every one of `replica_urls`.
    pub fn urls(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.url.as_str()).chain(self.replica_urls.iter().map(String::as_str))
    }
}

fn check_one_url(url: &str) -> Result<(), String> {
    let Some((tls, rest)) = crate::backend::split_http_scheme(url) else {
        return Err("must be an https:// URL (or http:// to a loopback address)".into());
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = crate::authority::Authority::parse(authority)
        .map_err(|e| format!("{e}"))?
        .host()
        .to_string();
    if !tls && !is_loopback(&host) {
        return Err(format!(
            "http:// is refused for {host}, which is not a loopback address: use https://"
        ));
    }
    Ok(())
}

fn is_loopback(host: &str) -> bool {
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || literal
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Usage reports go out this often: fresh enough for a usage page, rare
/// enough to cost the control plane little per node.
pub const DEFAULT_USAGE_REPORT_INTERVAL_MS: u64 = 5_000;
/// While a node serves a canary, it reports at least this often: the
/// control plane judges the canary on each report, so a bad one is rolled
/// back within about a second of failing, whatever the interval.
pub const CANARY_USAGE_REPORT_INTERVAL_MS: u64 = 1_000;

fn default_usage_report_interval_ms() -> u64 {
    DEFAULT_USAGE_REPORT_INTERVAL_MS
}

fn default_node_name() -> String {
    "edge-node".to_string()
}

/// Listeners and storage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeSection {
    /// HTTP/1.1 and HTTP/2 (cleartext) listener.
    pub listen: SocketAddr,
    /// Admin listener: `/metrics`, `/healthz`.
    pub admin_listen: SocketAddr,
    /// Compiled artifacts and their manifests live here.
    pub data_dir: PathBuf,
    /// On SIGTERM, how long requests in flight get to finish before their
    /// connections are cut.
    pub drain_grace_ms: u64,
    /// The operator's key for tenants' secrets (64 hex digits in a file,
    /// the control plane's `--secrets-key-file`). Without it a service
    /// that lists a secret is not served.
    pub secrets_key_file: Option<PathBuf>,
}

/// Long enough for ordinary requests and streamed responses to finish;
/// short enough for a rolling restart.
pub const DEFAULT_DRAIN_GRACE_MS: u64 = 30_000;

impl Default for NodeSection {
    fn default() -> Self {
        Self {
            listen: parse_default_addr(DEFAULT_LISTEN),
            admin_listen: parse_default_addr(DEFAULT_ADMIN_LISTEN),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            drain_grace_ms: DEFAULT_DRAIN_GRACE_MS,
            secrets_key_file: None,
        }
    }
}

fn parse_default_addr(addr: &str) -> SocketAddr {
    match addr.parse() {
        Ok(addr) => addr,
        // The defaults are literals above; a typo there is caught by the tests.
        Err(_) => SocketAddr::from(([127, 0, 0, 1], 0)),
    }
}

impl NodeConfig {
    /// Parses and validates a TOML document. Syntax errors and unknown keys
    /// are reported as one error; otherwise every validation problem is.
    pub fn from_toml(text: &str) -> Result<Self, ConfigErrors> {
        let config: NodeConfig = toml::from_str(text).map_err(|e| {
            let mut errors = ConfigErrors::default();
            errors.push("<toml>", e.to_string().trim_end().to_string());
            errors
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Reports every problem at once.
    pub fn validate(&self) -> Result<(), ConfigErrors> {
        let mut errors = ConfigErrors::default();
        self.http.validate("http", &mut errors);
        self.sandbox.validate("sandbox", &mut errors);
        self.cache.validate("cache", &mut errors);
        self.tls.validate("tls", &mut errors);
        self.http3.validate("http3", &mut errors);
        self.metrics.validate("metrics", &mut errors);
        self.logs.validate("logs", &mut errors);
        errors.check_range(
            "node.drain_grace_ms",
            self.node.drain_grace_ms,
            0,
            3_600_000,
        );
        if let Some(tls) = self.tls.listen
            && tls.port() != 0
            && (tls == self.node.listen || tls == self.node.admin_listen)
        {
            errors.push(
                "tls.listen",
                "must differ from node.listen and node.admin_listen",
            );
        }
        if self.node.listen == self.node.admin_listen && self.node.listen.port() != 0 {
            errors.push("node.admin_listen", "must differ from node.listen");
        }
        if let Some(control_plane) = &self.control_plane {
            if let Err(e) = control_plane.check_url() {
                errors.push("control_plane.url", e);
            }
            errors.check_range(
                "control_plane.usage_report_interval_ms",
                control_plane.usage_report_interval_ms,
                100,
                3_600_000,
            );
            if control_plane.cluster_token.is_empty() {
                errors.push("control_plane.cluster_token", "must not be empty");
            }
        }
        let mut names: HashMap<&str, usize> = HashMap::new();
        let mut domains: HashMap<&str, &str> = HashMap::new();
        for (i, service) in self.services.iter().enumerate() {
            let path = format!("service[{i}]");
            service.validate(&path, &self.sandbox, &mut errors);
            if let Some(first) = names.insert(&service.name, i) {
                errors.push(
                    format!("{path}.name"),
                    format!("{:?} is already the name of service[{first}]", service.name),
                );
            }
            for domain in &service.spec.domains {
                if let Some(owner) = domains.insert(domain, &service.name)
                    && owner != service.name
                {
                    errors.push(
                        format!("{path}.domains"),
                        format!("{domain:?} is already served by service {owner:?}"),
                    );
                }
            }
        }
        errors.into_result()
    }
}

#[cfg(test)]
mod tests {
    use super::ControlPlaneSection;

    #[test]
    fn plaintext_to_the_control_plane_only_on_loopback() {
        let section = |url: &str| ControlPlaneSection {
            url: url.to_string(),
            replica_urls: Vec::new(),
            ca_file: None,
            cluster_token: "t".into(),
            node_name: "n".into(),
            usage_report_interval_ms: 1_000,
        };
        for ok in [
            "https://cp.example.net:7070",
            "https://10.0.0.5/",
            "http://127.0.0.1:7070",
            "http://127.8.9.10",
            "http://localhost:7070/",
            "http://[::1]:7070",
        ] {
            assert_eq!(section(ok).check_url(), Ok(()), "{ok}");
        }
        for refused in [
            "http://cp.example.net:7070",
            "http://10.0.0.5:7070",
            "http://[::ffff:127.0.0.1]:7070",
            "http://localhost.evil.example/",
            "http://0.0.0.0:7070",
            "ftp://127.0.0.1/",
            "127.0.0.1:7070",
            "https://cp.example.net:99999",
        ] {
            assert!(section(refused).check_url().is_err(), "{refused}");
            // A replica's URL is held to the same rule as the first one.
            let mut replicas = section("https://cp.example.net");
            replicas.replica_urls = vec!["http://127.0.0.1:7070".into(), refused.into()];
            let refusal = replicas.check_url().expect_err(refused);
            assert!(refusal.contains(refused), "{refusal}");
        }
    }

    use super::*;

    /// The problems of a config file holding one service, `a` on `domains`,
    /// with `rest` (more of its keys and tables, TOML lines).
    fn one_service_errors(domains: &[impl AsRef<str>], rest: &str) -> ConfigErrors {
        let domains: Vec<String> = domains
            .iter()
            .map(|domain| format!("{:?}", domain.as_ref()))
            .collect();
        let text = format!(
            "[[service]]\nname = \"a\"\ndomains = [{}]\nmodule = \"a.wasm\"\n{rest}",
            domains.join(", ")
        );
        NodeConfig::from_toml(&text).expect_err("the file is refused")
    }

    #[test]
    fn defaults_are_valid() {
        NodeConfig::default().validate().expect("defaults validate");
        assert_eq!(NodeSection::default().listen.port(), 8080);
        assert_eq!(NodeSection::default().admin_listen.port(), 9090);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = r#"
            [http]
            max_header_count = 0

            [[service]]
            name = "Bad Name"
            domains = ["UPPER.example.com", "ok.example.com"]
            module = "a.wasm"
            limits = { cpu_budget_ms = 0, memory_bytes = 999999999999 }

            [[service]]
            name = "other"
            domains = ["ok.example.com"]
            module = "b.wasm"
        "#;
        let errors = NodeConfig::from_toml(text).expect_err("invalid");
        let paths: Vec<&str> = errors.0.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "http.max_header_count",
                "service[0].name",
                "service[0].domains[0]",
                "service[0].limits.cpu_budget_ms",
                "service[0].limits.memory_bytes",
                "service[1].domains",
            ]
        );
        assert!(errors.to_string().starts_with("6 configuration errors:"));
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let errors = NodeConfig::from_toml("[node]\nlisten_addr = \"127.0.0.1:1\"\n")
            .expect_err("unknown key");
        assert!(
            errors.to_string().contains("unknown field `listen_addr`"),
            "{errors}"
        );
    }

    #[test]
    fn a_service_in_the_file_is_the_control_planes_spec_plus_a_module() {
        let text = r#"
            [[service]]
            name = "shop"
            domains = ["shop.example.com"]
            module = "shop.wasm"
            cache_responses = true
            config = { greeting = "hello" }

            [service.backend.origin]
            origin = "https://api.example.com"
        "#;
        let config = NodeConfig::from_toml(text).expect("valid");
        let spec = &config.services[0].spec;
        assert_eq!(spec.domains, ["shop.example.com"]);
        assert!(spec.cache_responses);
        assert_eq!(spec.config["greeting"], "hello");
        assert_eq!(spec.backends["origin"].origin, "https://api.example.com");

        // A misspelt key inside a service is refused, not ignored.
        let errors = one_service_errors(&["a.example"], "cache_response = true\n");
        assert!(errors.to_string().contains("cache_response"), "{errors}");
        // The spec's own rules hold in the file: a domain listed twice.
        let errors = one_service_errors(&["a.example", "a.example"], "");
        assert_eq!(errors.0[0].path, "service[0].domains[1]");
        // The spec's bounds hold in a file too: at most 100 domains.
        let domains: Vec<String> = (0..=crate::protocol::MAX_DOMAINS_PER_SERVICE)
            .map(|i| format!("d{i}.example"))
            .collect();
        let errors = one_service_errors(&domains, "");
        assert_eq!(errors.0[0].path, "service[0].domains");
        // A backend's problem is named by the file's key for it.
        let errors = one_service_errors(
            &["a.example"],
            "[service.backend.origin]\norigin = \"ftp://x\"\n",
        );
        assert!(
            errors.0[0].path.starts_with("service[0].backend.origin"),
            "{errors}"
        );
    }

    #[test]
    fn wall_time_must_cover_cpu_budget() {
        let errors = one_service_errors(
            &["*.example.com"],
            "limits = { cpu_budget_ms = 100, wall_time_ms = 50 }\n",
        );
        assert_eq!(errors.0.len(), 1);
        assert_eq!(errors.0[0].path, "service[0].limits.wall_time_ms");
    }

    #[test]
    fn the_default_stale_if_error_has_a_ceiling() {
        let at = |secs: u64| {
            NodeConfig::from_toml(&format!("[cache]\ndefault_stale_if_error_secs = {secs}\n"))
        };
        at(0).expect("off");
        at(crate::limits::CACHE_MAX_STALE_IF_ERROR_SECS).expect("at the ceiling");
        let errors = at(crate::limits::CACHE_MAX_STALE_IF_ERROR_SECS + 1).expect_err("above");
        assert_eq!(errors.0[0].path, "cache.default_stale_if_error_secs");
    }

    #[test]
    fn example_config_is_valid() {
        let text = include_str!("../examples/node.toml");
        let config = NodeConfig::from_toml(text).expect("example validates");
        assert!(!config.services.is_empty());
    }
}
