//! `edgectl init` and `edgectl dev`: a new project, and the loop that
//! builds it, serves it on loopback and serves it again on every change.
//!
//! `dev` runs the platform's own node (`edge-node serve --module ...
//! --watch`: `EDGE_NODE_BIN`, else the `edge-node` beside this edgectl,
//! else the one on `PATH`), so the project is served exactly as the edge
//! serves it: the same sandbox, limits and host interfaces. It watches the
//! project's sources; on a change it rebuilds, and only a build that
//! succeeds replaces the served module, in one rename, which the node picks
//! up without dropping the requests it is serving.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context;

use crate::project::{self, Language};

/// How often the sources are looked at.
const SOURCE_POLL_INTERVAL: Duration = Duration::from_millis(300);

pub fn init(name: &str, language: Language, dir: &Path, sdk: Option<&Path>) -> anyhow::Result<()> {
    let root = project::init(dir, name, language, sdk)?;
    println!("created {} ({language:?})", root.display());
    if language == Language::Js {
        println!("  cd {} && npm install", root.display());
    }
    println!(
        "  edgectl dev {}      # serve it on loopback, again on every change",
        root.display()
    );
    println!("  edgectl deploy {name} --build {}", root.display());
    Ok(())
}

/// What a Python or JavaScript runtime needs to start in a fresh instance.
const INTERPRETER_CPU_BUDGET_MS: u64 = 1_000;

pub async fn dev(dir: &Path, listen: &str, cpu_budget_ms: Option<u64>) -> anyhow::Result<()> {
    let language = project::detect(dir)?;
    let cpu_budget_ms = cpu_budget_ms.unwrap_or(match language {
        Language::Rust => edge_config::limits::DEFAULT_CPU_BUDGET_MS,
        Language::Js | Language::Python => INTERPRETER_CPU_BUDGET_MS,
    });
    let served = project::dev_output(dir);
    let mut sources = project::sources(dir, language);
    let mut seen = fingerprint(&sources);
    build_into(dir, language, &served)?;
    let node_bin = node_binary();
    // The node stops with edgectl, however edgectl ends.
    let mut node = tokio::process::Command::new(&node_bin)
        .args(["serve", "--watch", "--exit-with-parent", "--module"])
        .arg(&served)
        .args(["--listen", listen, "--admin-listen", "127.0.0.1:0"])
        .arg(format!("--cpu-budget-ms={cpu_budget_ms}"))
        .arg("--data-dir")
        .arg(dir.join("target").join("edge-dev").join("node"))
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {} (set EDGE_NODE_BIN)", node_bin.display()))?;
    eprintln!("watching {} for changes (Ctrl-C stops)", dir.display());
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let outcome = loop {
        tokio::select! {
            _ = interrupt.recv() => break Ok(()),
            _ = terminate.recv() => break Ok(()),
            status = node.wait() => break Err(anyhow::anyhow!("the node stopped: {}", status?)),
            () = tokio::time::sleep(SOURCE_POLL_INTERVAL) => {}
        }
        sources = project::sources(dir, language);
        let now = fingerprint(&sources);
        if now == seen {
            continue;
        }
        seen = now;
        // Built off the runtime, so that a signal during a build is heard.
        let (dir_owned, served_owned) = (dir.to_path_buf(), served.clone());
        let build =
            tokio::task::spawn_blocking(move || build_into(&dir_owned, language, &served_owned));
        let built = tokio::select! {
            _ = interrupt.recv() => break Ok(()),
            _ = terminate.recv() => break Ok(()),
            built = build => built.context("the build task")?,
        };
        // A failed build leaves the last good module serving.
        match built {
            Ok(()) => eprintln!("rebuilt: the node serves it from the next request"),
            Err(error) => eprintln!("build failed, still serving the last good build: {error:#}"),
        }
    };
    node.kill().await.ok();
    outcome
}

/// Builds the project and puts the component at `served` in one rename.
fn build_into(dir: &Path, language: Language, served: &Path) -> anyhow::Result<()> {
    let built = project::build(dir, language)?;
    let parent = served
        .parent()
        .context("no directory for the served module")?;
    std::fs::create_dir_all(parent)?;
    let staged = served.with_extension("staged");
    std::fs::copy(&built, &staged).with_context(|| format!("copying {}", built.display()))?;
    std::fs::rename(&staged, served)?;
    Ok(())
}

fn node_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("EDGE_NODE_BIN") {
        return PathBuf::from(path);
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join("edge-node")));
    match beside {
        Some(path) if path.is_file() => path,
        _ => PathBuf::from("edge-node"),
    }
}

fn fingerprint(paths: &[PathBuf]) -> Vec<(PathBuf, Option<SystemTime>, u64)> {
    paths
        .iter()
        .map(|path| {
            let metadata = std::fs::metadata(path).ok();
            (
                path.clone(),
                metadata.as_ref().and_then(|m| m.modified().ok()),
                metadata.map_or(0, |m| m.len()),
            )
        })
        .collect()
}
