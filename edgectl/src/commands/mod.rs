//! One module per part of the API, as the control plane's routers are
//! split: each turns a parsed command into calls and prints the answers.

mod access;
mod cache;
mod certificates;
mod dev;
mod domains;
mod kv;
mod logs;
mod services;

use crate::args::Command;

pub async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Login {
            url,
            token,
            ca_file,
        } => access::login(url, token, ca_file).await,
        Command::TenantCreate {
            name,
            url,
            ca_file,
            admin_token,
            allow_private_backends,
        } => {
            access::create_tenant(
                &name,
                url.as_deref(),
                ca_file.as_deref(),
                &admin_token,
                allow_private_backends,
            )
            .await
        }
        Command::Service { command } => services::service(command).await,
        Command::Domain { command } => domains::domain(command).await,
        Command::Token { command } => access::token(command).await,
        Command::Tenant {
            command,
            admin_token,
        } => access::tenant(command, admin_token).await,
        Command::Deploy {
            service,
            wasm,
            build,
            canary,
        } => services::deploy(&service, wasm, build, canary).await,
        Command::Init {
            name,
            lang,
            dir,
            sdk_path,
        } => dev::init(&name, lang, &dir, sdk_path.as_deref()),
        Command::Dev {
            dir,
            listen,
            cpu_budget_ms,
        } => dev::dev(&dir, &listen, cpu_budget_ms).await,
        Command::Promote { service } => services::end_canary(&service, "promote").await,
        Command::Abort { service } => services::end_canary(&service, "abort").await,
        Command::Versions { service } => services::versions(&service).await,
        Command::Rollback { service } => services::rollback(&service).await,
        Command::Usage => services::usage().await,
        Command::Logs {
            service,
            follow,
            lines,
            request_id,
        } => logs::logs(&service, follow, lines, request_id.as_deref()).await,
        Command::Certificate { command } => certificates::certificate(command).await,
        Command::Purge {
            soft,
            url,
            surrogate_key,
            wait,
        } => cache::purge(url, surrogate_key, soft, wait).await,
        Command::Kv { command } => kv::kv(command).await,
        Command::Secret { command } => kv::secret(command).await,
        Command::Nodes { admin_token } => access::nodes(&admin_token).await,
    }
}
