//! `control-plane serve` runs the API; `control-plane compile-worker` is the
//! child process that compiles one upload.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use control_plane::api::{ApiConfig, DEFAULT_MAX_UPLOAD_BYTES, DEFAULT_SNAPSHOT_WAIT};
use control_plane::compile::{
    Compiler, DEFAULT_COMPILE_MEMORY_BYTES, DEFAULT_COMPILE_TIMEOUT, WorkerTask, run_worker,
};
use edge_config::SandboxLimits;

#[derive(Debug, Parser)]
#[command(version, about = "The edge platform's control plane")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the API.
    Serve(Box<ServeArgs>),
    /// Write a development CA (`ca.pem`) and a certificate it signed for
    /// `--name` (`cert.pem`, `key.pem`) into `--out-dir`: for --tls-cert,
    /// --tls-key, and the nodes' and edgectl's CA file.
    DevCertificates {
        #[arg(long)]
        out_dir: PathBuf,
        /// Host names or IP addresses the certificate is for.
        #[arg(long = "name", default_values = ["localhost", "127.0.0.1", "::1"])]
        names: Vec<String>,
    },
    /// Compile one component (run by `serve`, not by hand).
    #[command(hide = true)]
    CompileWorker {
        #[arg(long)]
        input: PathBuf,
        #[arg(long)]
        output: PathBuf,
        #[arg(long)]
        memory_bytes: u64,
        #[arg(long)]
        max_memory_bytes: u64,
        #[arg(long)]
        max_table_elements: u64,
    },
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    #[arg(long, default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// Where the database (SQLite by default) and modules live.
    #[arg(long, default_value = "control-plane-data")]
    data_dir: PathBuf,
    /// `sqlite://<path>` or `postgres://...`; SQLite in the data
    /// directory by default.
    #[arg(long, env = "EDGE_DATABASE_URL")]
    database_url: Option<String>,
    /// The operator's token (creates tenants, lists nodes).
    #[arg(long, env = "EDGE_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: String,
    /// The token nodes present.
    #[arg(long, env = "EDGE_CLUSTER_TOKEN", hide_env_values = true)]
    cluster_token: String,
    #[arg(long, default_value_t = DEFAULT_MAX_UPLOAD_BYTES)]
    max_upload_bytes: usize,
    #[arg(long, default_value_t = DEFAULT_COMPILE_TIMEOUT.as_secs())]
    compile_timeout_secs: u64,
    #[arg(long, default_value_t = DEFAULT_COMPILE_MEMORY_BYTES)]
    compile_memory_bytes: u64,
    /// The smallest `sandbox.max_memory_bytes` of the nodes: an upload
    /// whose initial memory is larger is refused (a node could not
    /// load it), and so is a service limit above it.
    #[arg(long, default_value_t = edge_config::limits::DEFAULT_SANDBOX_MAX_MEMORY_BYTES)]
    node_max_memory_bytes: u64,
    /// The smallest `sandbox.max_table_elements` of the nodes.
    #[arg(long, default_value_t = edge_config::limits::DEFAULT_SANDBOX_MAX_TABLE_ELEMENTS)]
    node_max_table_elements: u64,
    /// The most CPU a tenant may give its service's requests
    /// (`cpu_budget_ms`): a spec above it is refused, naming it. Set it to
    /// the nodes' `sandbox.max_cpu_budget_ms`.
    #[arg(long, default_value_t = edge_config::limits::DEFAULT_SANDBOX_MAX_CPU_BUDGET_MS)]
    node_max_cpu_budget_ms: u64,
    /// The most wall time a tenant may give its requests (`wall_time_ms`).
    #[arg(long, default_value_t = edge_config::limits::DEFAULT_SANDBOX_MAX_WALL_TIME_MS)]
    node_max_wall_time_ms: u64,
    /// The most log bytes a tenant may let one request write
    /// (`max_log_bytes_per_request`).
    #[arg(long, default_value_t = edge_config::limits::DEFAULT_SANDBOX_MAX_LOG_BYTES_PER_REQUEST)]
    node_max_log_bytes_per_request: u64,
    #[command(flatten)]
    quotas: control_plane::quotas::QuotaConfig,
    /// Every service is served as `<service>.<tenant>.<this>` with no
    /// proof of ownership; point a wildcard DNS record for it at the
    /// nodes. Custom domains need their tenant to prove control.
    #[arg(long, default_value = control_plane::store::DEFAULT_PLATFORM_DOMAIN)]
    platform_domain: String,
    /// The DNS server (`ip:port`) that custom domains' TXT challenges
    /// are read from. Without it, the operator approves each custom
    /// domain by hand.
    #[arg(long)]
    dns_resolver: Option<SocketAddr>,
    /// How long a custom-domain claim nobody has proved blocks other
    /// tenants' claims on the names it overlaps.
    #[arg(long, default_value_t = control_plane::store::DEFAULT_PENDING_CLAIM_TTL.as_secs() / 3600)]
    pending_domain_ttl_hours: u64,
    /// Serve HTTPS with this certificate chain (PEM); give --tls-key
    /// with it. Without both, the API is plaintext HTTP, which nodes
    /// accept only on loopback.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The operator's key for tenants' secrets: 64 hex digits (32 random
    /// bytes) in a file, the same file every node is given. Without it,
    /// setting a secret is refused (503).
    #[arg(long, env = "EDGE_SECRETS_KEY_FILE")]
    secrets_key_file: Option<PathBuf>,
    /// Log lines as JSON instead of text.
    #[arg(long)]
    log_json: bool,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::DevCertificates { out_dir, names } => write_dev_certificates(&out_dir, &names),
        Command::CompileWorker {
            input,
            output,
            memory_bytes,
            max_memory_bytes,
            max_table_elements,
        } => run_worker(&WorkerTask {
            input: &input,
            output: &output,
            memory_bytes,
            nodes: SandboxLimits {
                max_memory_bytes,
                max_table_elements,
                ..SandboxLimits::default()
            },
        }),
        Command::Serve(serve) => {
            let ServeArgs {
                listen,
                data_dir,
                database_url,
                admin_token,
                cluster_token,
                max_upload_bytes,
                compile_timeout_secs,
                compile_memory_bytes,
                node_max_memory_bytes,
                node_max_table_elements,
                node_max_cpu_budget_ms,
                node_max_wall_time_ms,
                node_max_log_bytes_per_request,
                quotas,
                platform_domain,
                dns_resolver,
                pending_domain_ttl_hours,
                tls_cert,
                tls_key,
                secrets_key_file,
                log_json,
            } = *serve;
            let filter = tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info".into());
            let logs = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr);
            if log_json {
                logs.json().init();
            } else {
                logs.init();
            }
            if admin_token.len() < 16 || cluster_token.len() < 16 {
                eprintln!("error: the admin and cluster tokens must be at least 16 characters");
                return ExitCode::from(2);
            }
            if let Err(e) = edge_config::domain::validate_domain(&platform_domain) {
                eprintln!("error: --platform-domain: {e}");
                return ExitCode::from(2);
            }
            if let Err(e) = std::fs::create_dir_all(&data_dir) {
                eprintln!("error: creating {}: {e}", data_dir.display());
                return ExitCode::FAILURE;
            }
            let secrets_key = match secrets_key_file
                .map(|path| edge_platform::secrets::SecretsKey::from_file(&path))
                .transpose()
            {
                Ok(key) => key.map(std::sync::Arc::new),
                Err(e) => {
                    eprintln!("error: --secrets-key-file: {e}");
                    return ExitCode::from(2);
                }
            };
            let database_url = database_url.unwrap_or_else(|| {
                format!("sqlite://{}", data_dir.join("control-plane.db").display())
            });
            let program = match std::env::current_exe() {
                Ok(program) => program,
                Err(e) => {
                    eprintln!("error: locating this executable for the compile worker: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let config = ApiConfig {
                data_dir,
                admin_token,
                cluster_token,
                max_upload_bytes,
                snapshot_wait: DEFAULT_SNAPSHOT_WAIT,
                sandbox: SandboxLimits {
                    max_memory_bytes: node_max_memory_bytes,
                    max_table_elements: node_max_table_elements,
                    max_cpu_budget_ms: node_max_cpu_budget_ms,
                    max_wall_time_ms: node_max_wall_time_ms,
                    max_log_bytes_per_request: node_max_log_bytes_per_request,
                    ..SandboxLimits::default()
                },
                platform_domain,
                dns_resolver: dns_resolver
                    .map(|addr| control_plane::dns::ChallengeResolver { addr }),
                pending_claim_ttl: Duration::from_secs(
                    pending_domain_ttl_hours.saturating_mul(3600),
                ),
                tls: tls_cert
                    .zip(tls_key)
                    .map(|(cert, key)| control_plane::tls::TlsFiles { cert, key }),
                quotas,
                secrets_key,
                // Longer than the longest request, a compile included.
                idle_read_timeout: control_plane::idle::DEFAULT_IDLE_READ_TIMEOUT
                    .max(Duration::from_secs(compile_timeout_secs) + DEFAULT_SNAPSHOT_WAIT),
            };
            let scheme = if config.tls.is_some() {
                "https"
            } else {
                "http"
            };
            let compiler = Compiler {
                program,
                timeout: Duration::from_secs(compile_timeout_secs),
                memory_bytes: compile_memory_bytes,
            };
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(runtime) => runtime,
                Err(e) => {
                    eprintln!("error: starting the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            runtime.block_on(async {
                let running =
                    match control_plane::start(config, &database_url, compiler, listen).await {
                        Ok(running) => running,
                        Err(e) => {
                            eprintln!("error: {e:#}");
                            return ExitCode::FAILURE;
                        }
                    };
                println!("control plane listening on {scheme}://{}", running.addr);
                stop_signal().await;
                running.shutdown().await;
                ExitCode::SUCCESS
            })
        }
    }
}

/// Ctrl-C, or SIGTERM (what an init system or container runtime sends):
/// either stops the control plane gracefully.
async fn stop_signal() {
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(terminate) => terminate,
            Err(e) => {
                eprintln!("warning: SIGTERM will not stop gracefully: {e}");
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

fn write_dev_certificates(dir: &std::path::Path, names: &[String]) -> ExitCode {
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let (ca, server) = match edge_platform::certificates::development_ca(&names) {
        Ok(made) => made,
        Err(e) => {
            eprintln!("error: making the certificates: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let written = std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(dir.join("ca.pem"), ca))
        .and_then(|()| std::fs::write(dir.join("cert.pem"), &server.cert_pem))
        .and_then(|()| {
            use std::os::unix::fs::OpenOptionsExt;
            let mut key = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(dir.join("key.pem"))?;
            std::io::Write::write_all(&mut key, server.key_pem.0.as_bytes())
        });
    match written {
        Ok(()) => {
            println!("{}", dir.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: writing to {}: {e}", dir.display());
            ExitCode::FAILURE
        }
    }
}
