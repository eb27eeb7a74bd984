//! `edgectl`, the tenant CLI: log in once, create and delete services,
//! claim and verify custom domains, deploy a guest (built from source or a
//! ready .wasm), list versions, roll back, read usage, upload TLS
//! certificates, purge the edge cache, manage API tokens; operators also
//! create, suspend and resume tenants, approve domains and list nodes.
//!
//! Credentials live in `$EDGECTL_CONFIG`, or `~/.config/edgectl/config.json`
//! (mode 0600).

use std::path::{Path, PathBuf};
use std::process::{Command as Process, ExitCode};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(Debug, Parser)]
#[command(version, about = "Deploy and manage services on the edge platform")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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
        /// A Rust crate to build for wasm32-wasip2 (the current directory
        /// when neither --wasm nor --build is given).
        #[arg(long)]
        build: Option<PathBuf>,
    },
    /// List a service's versions.
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
    /// Operators: list nodes.
    Nodes {
        #[arg(long, env = "EDGE_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: String,
    },
}

#[derive(Debug, Subcommand)]
enum ServiceCommand {
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
        /// Keep the guest's own shareable responses at the edge (served
        /// without running the guest while fresh).
        #[arg(long)]
        cache_responses: bool,
    },
    /// List your services.
    List,
    /// Delete a service: every node stops serving it and its domains are
    /// released.
    Delete { name: String },
}

#[derive(Debug, Subcommand)]
enum DomainCommand {
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
enum TokenCommand {
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
enum TenantCommand {
    /// Take every service of the tenant off every node; its tokens get 403.
    Suspend { name: String },
    /// Serve the tenant's services again.
    Resume { name: String },
    /// Revoke every token of the tenant.
    RevokeTokens { name: String },
}

#[derive(Debug, Subcommand)]
enum CertificateCommand {
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

fn parse_backend(value: &str) -> Result<(String, String), String> {
    match value.split_once('=') {
        Some((name, origin)) if !name.is_empty() && !origin.is_empty() => {
            Ok((name.to_string(), origin.to_string()))
        }
        _ => Err(format!("{value:?} is not NAME=ORIGIN")),
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Credentials {
    url: String,
    token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ca_file: Option<PathBuf>,
}

fn config_path() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("EDGECTL_CONFIG") {
        return Ok(PathBuf::from(path));
    }
    let home = std::env::var_os("HOME").context("HOME is not set; set EDGECTL_CONFIG")?;
    Ok(PathBuf::from(home).join(".config/edgectl/config.json"))
}

fn load_credentials() -> anyhow::Result<Credentials> {
    let path = config_path()?;
    let text = std::fs::read(&path).with_context(|| {
        format!(
            "not logged in ({} missing); run `edgectl login`",
            path.display()
        )
    })?;
    serde_json::from_slice(&text).with_context(|| format!("{} is unreadable", path.display()))
}

fn save_credentials(credentials: &Credentials) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = config_path()?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    std::io::Write::write_all(&mut file, &serde_json::to_vec_pretty(credentials)?)?;
    Ok(())
}

/// A client of the control plane with one token.
struct Api {
    url: String,
    token: String,
    http: reqwest::Client,
}

impl Api {
    /// A client for `url`; with `ca_file`, only that CA vouches for it.
    fn new(url: &str, token: &str, ca_file: Option<&Path>) -> anyhow::Result<Self> {
        let mut http = reqwest::Client::builder();
        if let Some(path) = ca_file {
            http =
                edge_platform::certificates::trust_only(http, path).map_err(anyhow::Error::msg)?;
        }
        Ok(Self {
            url: url.trim_end_matches('/').to_string(),
            token: token.to_string(),
            http: http.build().context("building the HTTP client")?,
        })
    }

    fn logged_in() -> anyhow::Result<Self> {
        let credentials = load_credentials()?;
        Self::new(
            &credentials.url,
            &credentials.token,
            credentials.ca_file.as_deref(),
        )
    }

    /// The logged-in control plane, with the operator's token.
    fn operator(admin_token: &str) -> anyhow::Result<Self> {
        let credentials = load_credentials()?;
        Self::new(
            &credentials.url,
            admin_token,
            credentials.ca_file.as_deref(),
        )
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let response = request
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("reaching the control plane at {}", self.url))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if !status.is_success() {
            let message = body["error"]["message"].as_str().unwrap_or("no details");
            let code = body["error"]["code"].as_str().unwrap_or("error");
            bail!("{status}: {message} ({code})");
        }
        Ok(body)
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(self.http.get(format!("{}{path}", self.url)))
            .await
    }

    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.send(self.http.post(format!("{}{path}", self.url)).json(&body))
            .await
    }

    async fn put(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.send(self.http.put(format!("{}{path}", self.url)).json(&body))
            .await
    }

    async fn delete(&self, path: &str) -> anyhow::Result<Value> {
        self.send(self.http.delete(format!("{}{path}", self.url)))
            .await
    }

    /// Uploads with a progress bar on stderr.
    async fn upload(&self, service: &str, bytes: Vec<u8>) -> anyhow::Result<Value> {
        const CHUNK: usize = 64 * 1024;
        let bar = ProgressBar::new(bytes.len() as u64);
        bar.set_style(
            ProgressStyle::with_template("uploading {bytes}/{total_bytes} {wide_bar} {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        let length = bytes.len();
        let progress = bar.clone();
        let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = bytes
            .chunks(CHUNK)
            .map(|chunk| Ok(bytes::Bytes::copy_from_slice(chunk)))
            .collect();
        let stream =
            futures::stream::iter(chunks).inspect_ok(move |chunk| progress.inc(chunk.len() as u64));
        let request = self
            .http
            .post(format!("{}/v1/services/{service}/modules", self.url))
            .header(reqwest::header::CONTENT_LENGTH, length)
            .body(reqwest::Body::wrap_stream(stream));
        let result = self.send(request).await;
        bar.finish_and_clear();
        result
    }
}

use futures::TryStreamExt as _;

/// Builds the crate in `dir` for wasm32-wasip2 and returns its component.
fn build(dir: &Path) -> anyhow::Result<PathBuf> {
    let metadata = Process::new("cargo")
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(dir)
        .output()
        .with_context(|| format!("running cargo metadata in {}", dir.display()))?;
    if !metadata.status.success() {
        bail!(
            "cargo metadata failed in {}: {}",
            dir.display(),
            String::from_utf8_lossy(&metadata.stderr)
        );
    }
    let metadata: Value = serde_json::from_slice(&metadata.stdout)?;
    let manifest = std::fs::canonicalize(dir.join("Cargo.toml"))
        .with_context(|| format!("{} has no Cargo.toml", dir.display()))?;
    let package = metadata["packages"]
        .as_array()
        .and_then(|packages| {
            packages.iter().find(|p| {
                p["manifest_path"].as_str().map(PathBuf::from).as_deref()
                    == Some(manifest.as_path())
            })
        })
        .context("no package in this directory")?;
    let name = package["name"].as_str().context("package without a name")?;
    let target_dir = metadata["target_directory"]
        .as_str()
        .context("no target directory")?;
    eprintln!("building {name} for wasm32-wasip2");
    let status = Process::new("cargo")
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--package",
            name,
        ])
        .current_dir(dir)
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build failed");
    }
    Ok(PathBuf::from(target_dir)
        .join("wasm32-wasip2/release")
        .join(format!("{}.wasm", name.replace('-', "_"))))
}

async fn deploy(
    service: &str,
    wasm: Option<PathBuf>,
    build_dir: Option<PathBuf>,
) -> anyhow::Result<()> {
    let api = Api::logged_in()?;
    let path = match wasm {
        Some(path) => path,
        None => build(&build_dir.unwrap_or_else(|| PathBuf::from(".")))?,
    };
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let uploaded = api.upload(service, bytes).await?;
    let hash = uploaded["module_sha256"]
        .as_str()
        .context("no module hash in the answer")?;
    let version = api
        .post(
            &format!("/v1/services/{service}/versions"),
            json!({"module_sha256": hash, "activate": true}),
        )
        .await?;
    let domains = api.get(&format!("/v1/services/{service}/domains")).await?;
    println!(
        "deployed {service} version {} (module {})",
        version["version"],
        &hash[..12.min(hash.len())]
    );
    for claim in domains.as_array().into_iter().flatten() {
        let (Some(domain), Some(status)) = (claim["domain"].as_str(), claim["status"].as_str())
        else {
            continue;
        };
        match status {
            "pending" => println!(
                "  http://{domain}/  (pending: TXT {} = {}, or the operator's approval)",
                claim["challenge"]["name"].as_str().unwrap_or(""),
                claim["challenge"]["value"].as_str().unwrap_or("")
            ),
            _ => println!("  http://{domain}/"),
        }
    }
    Ok(())
}

/// Prints a claim: the domain, its status and, while pending, the TXT
/// record to publish.
fn print_claim(claim: &Value) {
    let domain = claim["domain"].as_str().unwrap_or("?");
    match claim["status"].as_str().unwrap_or("?") {
        "pending" => println!(
            "{domain}\tpending\tTXT {} \"{}\"",
            claim["challenge"]["name"].as_str().unwrap_or(""),
            claim["challenge"]["value"].as_str().unwrap_or("")
        ),
        status => println!("{domain}\t{status}"),
    }
}

async fn domain(command: DomainCommand) -> anyhow::Result<()> {
    match command {
        DomainCommand::Add { service, domain } => {
            let claim = Api::logged_in()?
                .post(
                    &format!("/v1/services/{service}/domains"),
                    json!({ "domain": domain }),
                )
                .await?;
            print_claim(&claim);
            println!(
                "publish the TXT record, then run `edgectl domain verify {service} {}`",
                claim["domain"].as_str().unwrap_or(&domain)
            );
        }
        DomainCommand::Verify { service, domain } => {
            let claim = Api::logged_in()?
                .post(
                    &format!("/v1/services/{service}/domains/{domain}/verify"),
                    json!({}),
                )
                .await?;
            print_claim(&claim);
        }
        DomainCommand::List { service } => {
            let claims = Api::logged_in()?
                .get(&format!("/v1/services/{service}/domains"))
                .await?;
            claims
                .as_array()
                .into_iter()
                .flatten()
                .for_each(print_claim);
        }
        DomainCommand::Remove { service, domain } => {
            Api::logged_in()?
                .delete(&format!("/v1/services/{service}/domains/{domain}"))
                .await?;
            println!("{domain} released");
        }
        DomainCommand::Approve {
            domain,
            admin_token,
        } => {
            let done = Api::operator(&admin_token)?
                .post(&format!("/v1/domains/{domain}/approve"), json!({}))
                .await?;
            println!("{} approved", done["domain"].as_str().unwrap_or(&domain));
        }
    }
    Ok(())
}

async fn token(command: TokenCommand) -> anyhow::Result<()> {
    let api = Api::logged_in()?;
    match command {
        TokenCommand::Create { label } => {
            let created = api.post("/v1/tokens", json!({ "label": label })).await?;
            println!("{}", created["token"].as_str().unwrap_or_default());
        }
        TokenCommand::List => {
            let tokens = api.get("/v1/tokens").await?;
            print_table(&tokens, &["id", "label", "created_at"]);
        }
        TokenCommand::Revoke { id } => {
            api.delete(&format!("/v1/tokens/{id}")).await?;
            println!("token {id} revoked");
        }
    }
    Ok(())
}

async fn tenant(command: TenantCommand, admin_token: Option<String>) -> anyhow::Result<()> {
    let admin_token = admin_token.context("give --admin-token or set EDGE_ADMIN_TOKEN")?;
    let api = Api::operator(&admin_token)?;
    match command {
        TenantCommand::Suspend { name } => {
            api.post(&format!("/v1/tenants/{name}/suspend"), json!({}))
                .await?;
            println!("tenant {name} suspended");
        }
        TenantCommand::Resume { name } => {
            api.post(&format!("/v1/tenants/{name}/resume"), json!({}))
                .await?;
            println!("tenant {name} resumed");
        }
        TenantCommand::RevokeTokens { name } => {
            api.delete(&format!("/v1/tenants/{name}/tokens")).await?;
            println!("every token of {name} revoked");
        }
    }
    Ok(())
}

/// Prints a service's versions, then what nodes said about the ones they
/// could not load.
fn print_versions(versions: &Value) {
    print_table(
        versions,
        &["number", "module_sha256", "author", "created_at"],
    );
    for version in versions.as_array().into_iter().flatten() {
        for failure in version["node_failures"].as_array().into_iter().flatten() {
            println!(
                "version {} does not load on node {}: {}",
                version["number"],
                failure["node"].as_str().unwrap_or("?"),
                failure["error"].as_str().unwrap_or("?")
            );
        }
    }
}

async fn certificate(command: CertificateCommand) -> anyhow::Result<()> {
    let api = Api::logged_in()?;
    match command {
        CertificateCommand::Upload { service, cert, key } => {
            let read = |path: &PathBuf| {
                std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
            };
            let body = json!({"cert_pem": read(&cert)?, "key_pem": read(&key)?});
            let info = api
                .put(&format!("/v1/services/{service}/certificate"), body)
                .await?;
            println!(
                "certificate {} uploaded for {service}",
                info["fingerprint_sha256"].as_str().unwrap_or("?")
            );
        }
        CertificateCommand::Show { service } => {
            let info = api
                .get(&format!("/v1/services/{service}/certificate"))
                .await?;
            println!("{}", info["fingerprint_sha256"].as_str().unwrap_or("?"));
        }
        CertificateCommand::Remove { service } => {
            api.delete(&format!("/v1/services/{service}/certificate"))
                .await?;
            println!("certificate of {service} removed");
        }
    }
    Ok(())
}

async fn purge(
    url: Option<String>,
    surrogate_key: Option<String>,
    soft: bool,
    wait: Option<u64>,
) -> anyhow::Result<()> {
    let api = Api::logged_in()?;
    let target = match (url, surrogate_key) {
        (Some(url), _) => json!({ "url": url, "soft": soft }),
        (None, Some(key)) => json!({ "surrogate_key": key, "soft": soft }),
        (None, None) => bail!("give --url or --surrogate-key"),
    };
    let accepted = api.post("/v1/purge", target).await?;
    let seq = accepted["seq"]
        .as_u64()
        .context("no purge number in the answer")?;
    let Some(wait) = wait else {
        println!("purge {seq} accepted");
        return Ok(());
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(wait);
    loop {
        let status = api.get(&format!("/v1/purge/{seq}")).await?;
        let (done, nodes) = (&status["acknowledged"], &status["nodes"]);
        if done.as_u64() >= nodes.as_u64() {
            println!("purge {seq} applied on {done} of {nodes} nodes");
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            bail!("purge {seq} applied on {done} of {nodes} nodes after {wait} s");
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// How often `edgectl logs --follow` asks for new lines.
const LOGS_FOLLOW_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

async fn logs(
    service: &str,
    follow: bool,
    lines: u64,
    request_id: Option<&str>,
) -> anyhow::Result<()> {
    let api = Api::logged_in()?;
    if let Some(id) = request_id
        && !id.chars().all(|c| c.is_ascii_alphanumeric())
    {
        anyhow::bail!("--request-id {id:?}: a request id is letters and digits");
    }
    let only = request_id.map_or(String::new(), |id| format!("&request_id={id}"));
    let mut query = format!("limit={lines}{only}");
    loop {
        let page = api
            .get(&format!("/v1/services/{service}/logs?{query}"))
            .await?;
        for line in page["lines"].as_array().into_iter().flatten() {
            println!(
                "{} v{} {} {}: {}",
                rfc3339_millis(line["timestamp_ms"].as_i64().unwrap_or(0)),
                line["version"].as_i64().unwrap_or(0),
                line["request_id"].as_str().unwrap_or("-"),
                line["stream"].as_str().unwrap_or("-"),
                line["line"].as_str().unwrap_or_default(),
            );
        }
        if !follow {
            return Ok(());
        }
        if let Some(after) = page["next_after"].as_i64() {
            query = format!("after={after}&limit=1000{only}");
        }
        tokio::time::sleep(LOGS_FOLLOW_INTERVAL).await;
    }
}

/// `2026-12-01T04:30:00.123Z` for Unix milliseconds (UTC).
fn rfc3339_millis(unix_ms: i64) -> String {
    let (days, ms_of_day) = (
        unix_ms.div_euclid(86_400_000),
        unix_ms.rem_euclid(86_400_000),
    );
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    let seconds = ms_of_day / 1000;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60,
        ms_of_day % 1000
    )
}

fn print_table(rows: &Value, columns: &[&str]) {
    println!("{}", columns.join("\t"));
    for row in rows.as_array().into_iter().flatten() {
        let cells: Vec<String> = columns
            .iter()
            .map(|c| match &row[*c] {
                Value::String(s) => s.clone(),
                Value::Null => "-".into(),
                other => other.to_string(),
            })
            .collect();
        println!("{}", cells.join("\t"));
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Login {
            url,
            token,
            ca_file,
        } => {
            // Kept absolute: edgectl runs from any directory.
            let ca_file = ca_file
                .map(|path| {
                    std::fs::canonicalize(&path).with_context(|| path.display().to_string())
                })
                .transpose()?;
            let api = Api::new(&url, &token, ca_file.as_deref())?;
            api.get("/v1/services")
                .await
                .context("checking the token")?;
            save_credentials(&Credentials {
                url,
                token,
                ca_file,
            })?;
            println!(
                "logged in; credentials saved to {}",
                config_path()?.display()
            );
        }
        Command::TenantCreate {
            name,
            url,
            ca_file,
            admin_token,
            allow_private_backends,
        } => {
            let api = match url {
                Some(url) => Api::new(&url, &admin_token, ca_file.as_deref())?,
                None => Api::operator(&admin_token)?,
            };
            let created = api
                .post(
                    "/v1/tenants",
                    json!({"name": name, "allow_private_backends": allow_private_backends}),
                )
                .await?;
            println!("{}", created["token"].as_str().unwrap_or_default());
        }
        Command::Service {
            command:
                ServiceCommand::Create {
                    name,
                    domains,
                    backends,
                    allow_private_addresses,
                    cache_responses,
                },
        } => {
            let backends: serde_json::Map<String, Value> = backends
                .into_iter()
                .map(|(name, origin)| {
                    let spec = json!({
                        "origin": origin,
                        "allow_private_addresses": allow_private_addresses,
                    });
                    (name, spec)
                })
                .collect();
            Api::logged_in()?
                .post(
                    "/v1/services",
                    json!({"name": name, "spec": {
                        "domains": domains,
                        "backends": backends,
                        "cache_responses": cache_responses,
                    }}),
                )
                .await?;
            println!("created service {name}");
        }
        Command::Service {
            command: ServiceCommand::List,
        } => {
            let services = Api::logged_in()?.get("/v1/services").await?;
            print_table(&services, &["name", "active_version"]);
        }
        Command::Service {
            command: ServiceCommand::Delete { name },
        } => {
            Api::logged_in()?
                .delete(&format!("/v1/services/{name}"))
                .await?;
            println!("deleted service {name}");
        }
        Command::Domain { command } => domain(command).await?,
        Command::Token { command } => token(command).await?,
        Command::Tenant {
            command,
            admin_token,
        } => tenant(command, admin_token).await?,
        Command::Deploy {
            service,
            wasm,
            build,
        } => deploy(&service, wasm, build).await?,
        Command::Versions { service } => {
            let api = Api::logged_in()?;
            let versions = api.get(&format!("/v1/services/{service}/versions")).await?;
            print_versions(&versions);
        }
        Command::Rollback { service } => {
            let done = Api::logged_in()?
                .post(&format!("/v1/services/{service}/rollback"), json!({}))
                .await?;
            println!("{service} now serves version {}", done["active_version"]);
        }
        Command::Usage => {
            let usage = Api::logged_in()?.get("/v1/usage").await?;
            print_table(
                &usage,
                &[
                    "service",
                    "requests",
                    "status_2xx",
                    "status_4xx",
                    "status_5xx",
                    "guest_cpu_micros",
                    "bytes_out",
                ],
            );
        }
        Command::Logs {
            service,
            follow,
            lines,
            request_id,
        } => logs(&service, follow, lines, request_id.as_deref()).await?,
        Command::Certificate { command } => certificate(command).await?,
        Command::Purge {
            soft,
            url,
            surrogate_key,
            wait,
        } => purge(url, surrogate_key, soft, wait).await?,
        Command::Nodes { admin_token } => {
            let nodes = Api::operator(&admin_token)?.get("/v1/nodes").await?;
            print_table(
                &nodes,
                &["name", "id", "healthy", "snapshot_version", "last_seen_at"],
            );
        }
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run(Cli::parse().command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_print_as_rfc3339_utc() {
        assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_millis(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(
            rfc3339_millis(1_796_100_000_000),
            "2026-12-01T04:40:00.000Z"
        );
    }
}
