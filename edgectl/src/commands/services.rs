//! Services, their modules and versions, and their usage.

use std::path::PathBuf;

use anyhow::Context;
use edge_config::api::NewCanary;
use edge_config::protocol::ServiceSpec;
use edge_config::rollout::RollbackPolicy;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::args::{CanaryArgs, ServiceCommand};
use crate::credentials;
use crate::output::{print_rollout, print_table, print_versions};
use crate::project;

pub async fn service(command: ServiceCommand) -> anyhow::Result<()> {
    let api = credentials::logged_in()?;
    match command {
        ServiceCommand::Create {
            name,
            domains,
            backends,
            allow_private_addresses,
            service_backends,
            cache_responses,
            kv_stores,
            secrets,
            config,
            cpu_budget_ms,
        } => {
            let backends =
                backends
                    .into_iter()
                    .map(|(name, origin)| {
                        let backend = json!({
                            "origin": origin,
                            "allow_private_addresses": allow_private_addresses,
                        });
                        serde_json::from_value(backend)
                            .map(|backend| (name.clone(), backend))
                            .with_context(|| format!("backend {name}"))
                    })
                    .chain(service_backends.into_iter().map(|(name, service)| {
                        Ok((name, edge_config::BackendSpec::service(service)))
                    }))
                    .collect::<anyhow::Result<_>>()?;
            let mut spec = ServiceSpec {
                domains,
                backends,
                cache_responses,
                kv_stores,
                secrets,
                config: config.into_iter().collect(),
                ..ServiceSpec::default()
            };
            if let Some(budget) = cpu_budget_ms {
                spec.limits.cpu_budget_ms = budget;
            }
            api.create_service(&name, &spec).await?;
            println!("created service {name}");
        }
        ServiceCommand::List => {
            print_table(&api.services().await?, &["name", "active_version"]);
        }
        ServiceCommand::Delete { name } => {
            api.delete_service(&name).await?;
            println!("deleted service {name}");
        }
    }
    Ok(())
}

/// Builds (or takes) a component, uploads it with a progress bar on
/// stderr, activates it (or starts it as a canary) and prints where it
/// answers.
pub async fn deploy(
    service: &str,
    wasm: Option<PathBuf>,
    build_dir: Option<PathBuf>,
    canary: CanaryArgs,
) -> anyhow::Result<()> {
    let api = credentials::logged_in()?;
    let path = match wasm {
        Some(path) => path,
        None => {
            let dir = build_dir.unwrap_or_else(|| PathBuf::from("."));
            project::build(&dir, project::detect(&dir)?)?
        }
    };
    let component = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let bar = ProgressBar::new(component.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("uploading {bytes}/{total_bytes} {wide_bar} {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let progress = bar.clone();
    let uploaded = api
        .upload_module_with_progress(service, component, move |sent| progress.inc(sent as u64))
        .await;
    bar.finish_and_clear();
    let hash = uploaded?.module_sha256;
    let version = api
        .create_version(service, &hash, canary.canary.is_none())
        .await?;
    let domains = api.domains(service).await?;
    match canary.canary {
        None => println!(
            "deployed {service} version {} (module {})",
            version.version,
            &hash[..12.min(hash.len())]
        ),
        Some(percent) => {
            let new = NewCanary {
                version: version.version,
                percent,
                sticky: canary.sticky,
                rollback: RollbackPolicy {
                    threshold_pct: canary.rollback_threshold,
                    window_secs: canary.rollback_window,
                    min_requests: canary.rollback_min_requests,
                },
            };
            let started = api.start_canary(service, &new).await?;
            let policy = &started.canary.rollback;
            println!(
                "{service} version {} is a canary for {percent} % of requests (sticky by {}); rolled back if its error rate passes the active version's by {} points over {} s",
                version.version, started.canary.sticky, policy.threshold_pct, policy.window_secs
            );
            println!("  edgectl promote {service}   |   edgectl abort {service}");
        }
    }
    for claim in domains {
        match (claim.status.as_str(), &claim.challenge) {
            ("pending", Some(challenge)) => println!(
                "  http://{}/  (pending: TXT {} = {}, or the operator's approval)",
                claim.domain, challenge.name, challenge.value
            ),
            _ => println!("  http://{}/", claim.domain),
        }
    }
    Ok(())
}

pub async fn versions(service: &str) -> anyhow::Result<()> {
    let api = credentials::logged_in()?;
    print_versions(&api.versions(service).await?);
    print_rollout(&api.rollout(service).await?);
    Ok(())
}

/// `step`: `promote` or `abort`.
pub async fn end_canary(service: &str, step: &str) -> anyhow::Result<()> {
    let api = credentials::logged_in()?;
    let ended = api.end_canary(service, step).await?;
    let active = ended
        .active_version
        .map_or_else(|| "no version".to_string(), |v| format!("version {v}"));
    println!(
        "canary version {} {}; {service} serves {active}",
        ended.version, ended.outcome
    );
    Ok(())
}

pub async fn rollback(service: &str) -> anyhow::Result<()> {
    let done = credentials::logged_in()?.rollback(service).await?;
    println!("{service} now serves version {}", done.active_version);
    Ok(())
}

pub async fn usage() -> anyhow::Result<()> {
    print_table(
        &credentials::logged_in()?.usage().await?,
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
    Ok(())
}
