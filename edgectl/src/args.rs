//! What `edgectl` accepts on its command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(version, about = "Deploy and manage services on the edge platform")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Save the control plane's URL and your token.
    Login {
        #[arg(long)]
        url: String,
        #[arg(long, env = "EDGECTL_TOKEN", hide_env_values = true)]
        token: String,
        /// The CA certificate (PEM) the control plane's certificate chains
        /// to, if not a public one (`scripts/run.sh` makes a development CA).
        #[arg(long, env = "EDGECTL_CA_FILE")]
        ca_file: Option<PathBuf>,
    },
    /// Operators: create a tenant and print its token.
    TenantCreate {
        name: String,
        #[arg(long)]
        url: Option<String>,
        /// As for `login`.
        #[arg(long, env = "EDGECTL_CA_FILE")]
        ca_file: Option<PathBuf>,
        #[arg(long, env = "EDGE_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: String,
        /// Let the tenant's backends reach loopback and private addresses.
        #[arg(long)]
        allow_private_backends: bool,
    },
    /// Manage services.
    Service {
        #[command(subcommand)]
        command: ServiceCommand,
    },
    /// Manage a service's custom domains.
    Domain {
        #[command(subcommand)]
        command: DomainCommand,
    },
    /// Manage your API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Operators: suspend, resume a tenant, or revoke all its tokens.
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
        #[arg(long, env = "EDGE_ADMIN_TOKEN", hide_env_values = true, global = true)]
        admin_token: Option<String>,
    },
    /// Manage a service's TLS certificate.
    Certificate {
        #[command(subcommand)]
        command: CertificateCommand,
    },
    /// Build (or take) a component, upload it, activate it, print its URL.
    Deploy {
        service: String,
        /// A ready component.
        #[arg(long, conflicts_with = "build")]
        wasm: Option<PathBuf>,
        /// A project to build (Rust, JavaScript or Python, as `edgectl
        /// init` writes them; the current directory when neither --wasm
        /// nor --build is given).
        #[arg(long)]
        build: Option<PathBuf>,
        #[command(flatten)]
        canary: CanaryArgs,
    },
    /// Write a new project that builds and serves: `edgectl init --lang
    /// rust hello`, then `edgectl dev hello`.
    Init {
        name: String,
        #[arg(long, value_enum)]
        lang: crate::project::Language,
        /// Where to create it (a directory NAME inside).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Rust: the platform SDK's source, for the crate's path
        /// dependency (`EDGE_SDK_PATH`; by default the SDK of the platform
        /// checkout this edgectl was built from).
        #[arg(long)]
        sdk_path: Option<PathBuf>,
    },
    /// Build the project in DIR, serve it on loopback with the platform's
    /// node, and build and serve it again on every change.
    Dev {
        #[arg(default_value = ".")]
        dir: PathBuf,
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// The CPU budget per request; by default 50 ms for Rust and 1000 ms
        /// for JavaScript and Python, whose runtimes start in each fresh
        /// instance (deploy with the same in the service's limits).
        #[arg(long)]
        cpu_budget_ms: Option<u64>,
    },
    /// Make the running canary the active version.
    Promote { service: String },
    /// Stop the running canary: every request goes to the active version.
    Abort { service: String },
    /// List a service's versions, its canary, and who activated what and
    /// how each ended.
    Versions { service: String },
    /// Activate the version before the active one.
    Rollback { service: String },
    /// Your usage per service.
    Usage,
    /// Show what a service's guests printed (stdout and stderr), oldest
    /// first: time, version, request id, stream, line.
    Logs {
        service: String,
        /// Keep printing new lines as they arrive (Ctrl-C to stop).
        #[arg(long, short)]
        follow: bool,
        /// How many of the newest lines to start with.
        #[arg(long, default_value_t = 100)]
        lines: u64,
        /// Only the lines of one request (the `x-request-id` its client got).
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Remove cached responses on every node: one URL (as the origin is
    /// asked for it), or every entry tagged with a surrogate key.
    Purge {
        /// Mark the entries stale instead of removing them: the next
        /// request revalidates them with the origin, and they can be
        /// served stale while it fails.
        #[arg(long)]
        soft: bool,
        #[arg(
            long,
            conflicts_with = "surrogate_key",
            required_unless_present = "surrogate_key"
        )]
        url: Option<String>,
        #[arg(long)]
        surrogate_key: Option<String>,
        /// Wait until every healthy node has applied it, for at most this
        /// many seconds.
        #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "30")]
        wait: Option<u64>,
    },
    /// Manage KV stores and their keys.
    Kv {
        #[command(subcommand)]
        command: KvCommand,
    },
    /// Manage secrets (write-only: values are never shown).
    Secret {
        #[command(subcommand)]
        command: SecretCommand,
    },
    /// Operators: list nodes.
    Nodes {
        #[arg(long, env = "EDGE_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: String,
    },
}

/// `edgectl deploy --canary PERCENT`: the new version as a canary.
#[derive(Debug, clap::Args)]
pub struct CanaryArgs {
    /// Serve the new version to this share of requests (1-99) beside the
    /// active one, instead of activating it; then `edgectl promote` or
    /// `edgectl abort`.
    #[arg(long, value_name = "PERCENT", value_parser = clap::value_parser!(u8).range(1..=99))]
    pub canary: Option<u8>,
    /// What keeps a client on one version: `header:NAME`, `cookie:NAME`
    /// or `client-address`.
    #[arg(long, requires = "canary", default_value = "client-address", value_parser = parse_sticky)]
    pub sticky: edge_config::rollout::StickyKey,
    /// Roll the canary back when its error rate passes the active
    /// version's by more than this many percentage points...
    #[arg(long, requires = "canary", default_value_t = edge_config::rollout::DEFAULT_ROLLBACK_THRESHOLD_PCT)]
    pub rollback_threshold: u8,
    /// ...over this many seconds...
    #[arg(long, requires = "canary", default_value_t = edge_config::rollout::DEFAULT_ROLLBACK_WINDOW_SECS)]
    pub rollback_window: u64,
    /// ...once the window holds this many canary requests.
    #[arg(long, requires = "canary", default_value_t = edge_config::rollout::DEFAULT_ROLLBACK_MIN_REQUESTS)]
    pub rollback_min_requests: u64,
}

pub fn parse_sticky(value: &str) -> Result<edge_config::rollout::StickyKey, String> {
    edge_config::rollout::StickyKey::parse(value)
}

#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Create a service. It answers on `<name>.<tenant>.<platform domain>`,
    /// and on each custom `--domain` once that is approved.
    Create {
        name: String,
        #[arg(long = "domain")]
        domains: Vec<String>,
        /// A named backend the guest reaches as `http://NAME/...`:
        /// `NAME=ORIGIN`, e.g. `origin=https://api.example.com`.
        #[arg(long = "backend", value_name = "NAME=ORIGIN", value_parser = parse_backend)]
        backends: Vec<(String, String)>,
        /// Let these backends reach loopback and private addresses (only
        /// for tenants the operator allowed).
        #[arg(long, requires = "backends")]
        allow_private_addresses: bool,
        /// A backend that is another of your services, which the node runs
        /// in process for the guest's requests to `http://NAME/...`:
        /// `NAME=SERVICE`, e.g. `app=app`; repeatable.
        #[arg(long = "service-backend", value_name = "NAME=SERVICE", value_parser = parse_backend)]
        service_backends: Vec<(String, String)>,
        /// Keep the guest's own shareable responses at the edge (served
        /// without running the guest while fresh).
        #[arg(long)]
        cache_responses: bool,
        /// A KV store the guest may open (`wasi:keyvalue`); repeatable.
        #[arg(long = "kv-store", value_name = "STORE")]
        kv_stores: Vec<String>,
        /// A secret the guest reads through `wasi:config/store`; repeatable.
        #[arg(long = "secret", value_name = "NAME")]
        secrets: Vec<String>,
        /// A config entry the guest reads through `wasi:config/store`:
        /// `KEY=VALUE`; repeatable.
        #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_config)]
        config: Vec<(String, String)>,
        /// The CPU budget per request (`limits.cpu_budget_ms`): Python and
        /// JavaScript runtimes need more than the default 50 ms to start.
        #[arg(long)]
        cpu_budget_ms: Option<u64>,
    },
    /// List your services.
    List,
    /// Delete a service: every node stops serving it and its domains are
    /// released.
    Delete { name: String },
}

#[derive(Debug, Subcommand)]
pub enum DomainCommand {
    /// Claim a custom domain for a service; prints the TXT record that
    /// proves you control it.
    Add { service: String, domain: String },
    /// Check the domain's TXT record: once it holds the token, nodes route
    /// the domain.
    Verify { service: String, domain: String },
    /// The service's domains and their status.
    List { service: String },
    /// Release a domain: nodes stop routing it at once.
    Remove { service: String, domain: String },
    /// Operators: approve a pending domain without a TXT record.
    Approve {
        domain: String,
        #[arg(long, env = "EDGE_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make another token (printed once).
    Create {
        #[arg(long, default_value = "edgectl")]
        label: String,
    },
    /// List your tokens (ids and labels, never the secrets).
    List,
    /// Revoke a token by id: it gets 401 from then on.
    Revoke { id: String },
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Take every service of the tenant off every node; its tokens get 403.
    Suspend { name: String },
    /// Serve the tenant's services again.
    Resume { name: String },
    /// Revoke every token of the tenant.
    RevokeTokens { name: String },
}

#[derive(Debug, Subcommand)]
pub enum CertificateCommand {
    /// Upload a certificate chain and its key (PEM files); it replaces the
    /// service's certificate on every node.
    Upload {
        service: String,
        /// The certificate chain, leaf first.
        #[arg(long)]
        cert: PathBuf,
        #[arg(long)]
        key: PathBuf,
    },
    /// Show the service's certificate fingerprint.
    Show { service: String },
    /// Remove the service's certificate.
    Remove { service: String },
}

pub fn parse_backend(value: &str) -> Result<(String, String), String> {
    match value.split_once('=') {
        Some((name, origin)) if !name.is_empty() && !origin.is_empty() => {
            Ok((name.to_string(), origin.to_string()))
        }
        _ => Err(format!("{value:?} is not NAME=ORIGIN")),
    }
}

pub fn parse_config(value: &str) -> Result<(String, String), String> {
    match value.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("{value:?} is not KEY=VALUE")),
    }
}

#[derive(Debug, Subcommand)]
pub enum KvCommand {
    /// Create a store; list it in a service's `kv_stores` to open it.
    Create { store: String },
    /// List your stores.
    Stores,
    /// Delete a store and every key in it.
    DeleteStore { store: String },
    /// Set a key: to VALUE, or to the contents of --file.
    Put {
        store: String,
        key: String,
        #[arg(required_unless_present = "file", conflicts_with = "file")]
        value: Option<String>,
        #[arg(long)]
        file: Option<PathBuf>,
        /// Only if the key is still at this version (`kv get
        /// --print-version`): compare-and-swap.
        #[arg(long, conflicts_with = "if_absent")]
        if_version: Option<u64>,
        /// Only if the key does not exist yet.
        #[arg(long)]
        if_absent: bool,
    },
    /// Print a key's value (or, with --print-version, its version).
    Get {
        store: String,
        key: String,
        #[arg(long)]
        print_version: bool,
    },
    /// List keys, in order.
    List {
        store: String,
        #[arg(long, default_value = "")]
        prefix: String,
    },
    /// Delete a key.
    Delete {
        store: String,
        key: String,
        /// Only if the key is still at this version.
        #[arg(long)]
        if_version: Option<u64>,
    },
    /// Set every key of a JSON object file (`{"key": "value", ...}`) in
    /// transactions of up to 1000 keys.
    Import { store: String, file: PathBuf },
}

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Set a secret from standard input (so it stays out of shell history),
    /// or from --value.
    Set {
        name: String,
        #[arg(long, env = "EDGECTL_SECRET_VALUE", hide_env_values = true)]
        value: Option<String>,
    },
    /// List your secrets' names.
    List,
    /// Delete a secret.
    Delete { name: String },
}
