//! `edge-node`: serve tenants' components.
//!
//! ```text
//! edge-node serve --config node.toml      serve the services in a config file
//! edge-node serve --module app.wasm       local mode: one component, any Host
//! edge-node serve --module app.wasm --watch   ... served again on every rebuild
//! edge-node serve --module app.wasm --tls-listen 127.0.0.1:8443
//!                                         ... and over TLS, with a development certificate
//! edge-node check-config --config node.toml
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use edge_config::{NodeConfig, ServiceConfig};
use edge_node::Node;

/// Every request allocates and frees a few dozen small objects across two
/// worker threads; mimalloc's thread-local free lists do that with less
/// work and less contention than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "edge-node",
    version,
    about = "Serve tenants' WebAssembly components at the edge"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format: human-readable text or one JSON object per line.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the services of a config file, or one component for any Host.
    Serve(ServeArgs),
    /// Validate a config file and report every problem.
    CheckConfig {
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// Node config file (TOML).
    #[arg(long, conflicts_with = "module")]
    config: Option<PathBuf>,
    /// Local mode: serve this component for every Host.
    #[arg(long)]
    module: Option<PathBuf>,
    /// Local mode: a backend the component may fetch from, as
    /// `NAME=ORIGIN` (e.g. `origin=http://127.0.0.1:9000`). Repeatable.
    /// Private and loopback addresses are allowed: you are the operator.
    #[arg(long = "backend", requires = "module", value_name = "NAME=ORIGIN")]
    backends: Vec<String>,
    /// Local mode: the component's CPU budget per request (`limits.
    /// cpu_budget_ms`); an interpreter's runtime (Python, JavaScript) needs
    /// more than the default to start in a fresh instance.
    #[arg(long, requires = "module")]
    cpu_budget_ms: Option<u64>,
    /// Overrides `node.listen`.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Overrides `node.admin_listen`.
    #[arg(long)]
    admin_listen: Option<SocketAddr>,
    /// Overrides `tls.listen`: HTTPS (HTTP/1.1 and HTTP/2 over TLS). In local
    /// mode without a default certificate, a development certificate for
    /// `localhost`, 127.0.0.1 and ::1 is made and saved in the data dir.
    #[arg(long)]
    tls_listen: Option<SocketAddr>,
    /// Overrides `node.data_dir`.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The dev loop: serve again whenever a module file (or the config
    /// file's services) changes, without dropping requests in flight.
    #[arg(long)]
    watch: bool,
    /// Drain and stop when the process that started this one ends (what
    /// `edgectl dev` asks, so that no node outlives it).
    #[arg(long)]
    exit_with_parent: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let result = match cli.command {
        Command::CheckConfig { config } => {
            runtime().and_then(|rt| rt.block_on(check_config(&config)))
        }
        Command::Serve(args) => runtime().and_then(|rt| rt.block_on(serve(args))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in log files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn load_config(path: &Path) -> anyhow::Result<NodeConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    NodeConfig::from_toml(&text).map_err(|errors| anyhow::anyhow!("{}:\n{errors}", path.display()))
}

fn config_dir(path: &Path) -> PathBuf {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Runs start-up's own install plan without listening: the config
/// validated, the default certificate and every service's certificate read
/// and checked, every module compiled and type-checked. The data dir is a
/// temporary one, so a check leaves nothing behind and needs no write
/// access to the real one.
async fn check_config(path: &Path) -> anyhow::Result<()> {
    let mut config = load_config(path)?;
    let base = config_dir(path);
    resolve_certificate_paths(&mut config, &base);
    let scratch = tempfile::tempdir().context("making a scratch data dir")?;
    config.node.data_dir = scratch.path().to_path_buf();
    let node = Node::new(&config).map_err(|e| anyhow::anyhow!("{}: {e:#}", path.display()))?;
    node.plan_services(&config.services, &base)
        .await
        .map_err(|e| anyhow::anyhow!("{}:\n{e}", path.display()))?;
    println!(
        "{}: ok ({} service{}, every module compiled)",
        path.display(),
        config.services.len(),
        if config.services.len() == 1 { "" } else { "s" }
    );
    Ok(())
}

/// The default certificate's files, relative to the config file's
/// directory as every other path in it.
fn resolve_certificate_paths(config: &mut NodeConfig, base_dir: &Path) {
    if let Some(files) = &mut config.tls.default_certificate {
        files.cert = base_dir.join(&files.cert);
        files.key = base_dir.join(&files.key);
    }
}

/// `NAME=ORIGIN` arguments as backends. Local mode runs on the operator's
/// own machine, so private addresses (a dev server on localhost) are allowed.
fn local_backends(
    arguments: &[String],
) -> anyhow::Result<std::collections::BTreeMap<String, edge_config::BackendSpec>> {
    let mut backends = std::collections::BTreeMap::new();
    let mut errors = edge_config::ConfigErrors::default();
    for argument in arguments {
        let Some((name, origin)) = argument.split_once('=') else {
            anyhow::bail!("--backend {argument:?}: expected NAME=ORIGIN");
        };
        let mut backend = edge_config::BackendSpec::new(origin);
        backend.allow_private_addresses = true;
        backend.validate(&format!("--backend {name}"), name, &mut errors);
        backends.insert(name.to_string(), backend);
    }
    errors.into_result()?;
    Ok(backends)
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // Before anything listens: a signal during start-up drains too.
    let mut signals = Signals::new()?;
    if args.exit_with_parent {
        use rustix::process::{getppid, set_parent_process_death_signal};
        set_parent_process_death_signal(Some(rustix::process::Signal::TERM))
            .context("asking for a signal when the parent ends")?;
        // The parent may have ended before the signal was asked for.
        if getppid().is_none_or(|parent| parent.as_raw_nonzero().get() == 1) {
            anyhow::bail!("the process that started this node has ended");
        }
    }
    let (mut config, base_dir) = match &args.config {
        Some(path) => (load_config(path)?, config_dir(path)),
        None => (NodeConfig::default(), PathBuf::from(".")),
    };
    let local = args.module.is_some();
    if let Some(module) = args.module {
        // Local mode: the production path with one service for every Host.
        let mut service = ServiceConfig::new("local", &["*"], module);
        service.spec.backends = local_backends(&args.backends)?;
        if let Some(budget) = args.cpu_budget_ms {
            service.spec.limits.cpu_budget_ms = budget;
        }
        config.services = vec![service];
    } else if args.config.is_none() {
        anyhow::bail!("give --config FILE, or --module APP.wasm for local mode");
    }
    config.node.listen = args.listen.unwrap_or(config.node.listen);
    config.node.admin_listen = args.admin_listen.unwrap_or(config.node.admin_listen);
    config.node.data_dir = args.data_dir.unwrap_or(config.node.data_dir);
    config.tls.listen = args.tls_listen.or(config.tls.listen);
    resolve_certificate_paths(&mut config, &base_dir);
    if config.tls.default_certificate.is_none() && local && config.tls.listen.is_some() {
        config.tls.default_certificate = Some(development_certificate(&config.node.data_dir)?);
    }

    let node = Node::new(&config)?;
    node.install_services(&config.services, &base_dir).await?;
    if args.watch && config.control_plane.is_some() {
        // The file's services would replace the snapshot's on every change.
        anyhow::bail!(
            "--watch serves a config file's own services: it cannot follow a control plane too"
        );
    }
    if args.watch {
        use edge_node::watch;
        let paths = watch::watched_files(&config.services, &base_dir, args.config.as_deref());
        let reload: watch::Reload = match args.config.clone() {
            Some(path) => Box::new(move || Ok((load_config(&path)?.services, config_dir(&path)))),
            None => {
                let (services, base_dir) = (config.services.clone(), base_dir.clone());
                Box::new(move || Ok((services.clone(), base_dir.clone())))
            }
        };
        tokio::spawn(watch::serve_changes(
            node.clone(),
            paths,
            args.config.clone(),
            reload,
        ));
        announce("watching the module for changes");
    }
    // The node's lifecycle owns the follower: the drain ends with its last
    // report.
    if let Some(control_plane) = &config.control_plane {
        edge_node::sync::Follower::start(&node, control_plane.clone(), &config.node.data_dir)
            .await?;
    }
    let running = node
        .start(config.node.listen, config.node.admin_listen)
        .await?;
    announce(&format!("edge node listening on http://{}", running.addr));
    if let Some(tls_addr) = running.tls_addr {
        announce(&format!("and on https://{tls_addr}"));
    }
    announce(&format!("metrics on http://{}/metrics", running.admin_addr));
    signals.next().await;
    tracing::info!("draining; a second signal cuts what is still open");
    let grace = std::time::Duration::from_millis(config.node.drain_grace_ms);
    let report = running.drain(grace, signals.next()).await;
    if report.cut_connections > 0 {
        tracing::warn!(
            cut_connections = report.cut_connections,
            "stopped with connections cut"
        );
    }
    Ok(())
}

/// Prints a line for whoever started the node. A closed stdout (the reader
/// went away) must not stop a serving node, as `println!` would by
/// panicking, so write errors are ignored.
fn announce(line: &str) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
}

/// SIGTERM and SIGINT (Ctrl-C), one after the other.
struct Signals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            terminate: signal(SignalKind::terminate()).context("listening for SIGTERM")?,
            interrupt: signal(SignalKind::interrupt()).context("listening for SIGINT")?,
        })
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
    }
}

/// A self-signed certificate for `localhost`, 127.0.0.1 and ::1, saved in
/// the data dir (the key readable by this user only) so a client can trust
/// it: `curl --cacert <data_dir>/tls/dev-cert.pem https://localhost:8443/`.
fn development_certificate(data_dir: &Path) -> anyhow::Result<edge_config::CertificateFiles> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = data_dir.join("tls");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let files = edge_config::CertificateFiles {
        cert: dir.join("dev-cert.pem"),
        key: dir.join("dev-key.pem"),
    };
    if files.cert.is_file() && files.key.is_file() {
        return Ok(files);
    }
    let pem = edge_platform::certificates::self_signed(&["localhost", "127.0.0.1", "::1"])?;
    let mut key = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&files.key)
        .with_context(|| format!("writing {}", files.key.display()))?;
    key.write_all(pem.key_pem.0.as_bytes())?;
    std::fs::write(&files.cert, &pem.cert_pem)
        .with_context(|| format!("writing {}", files.cert.display()))?;
    tracing::info!(cert = %files.cert.display(), "made a development certificate");
    Ok(files)
}
