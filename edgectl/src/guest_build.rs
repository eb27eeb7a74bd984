//! `edgectl deploy --build`: a Rust crate built for wasm32-wasip2 with the
//! tenant's own cargo, found through `cargo metadata` so workspaces and
//! custom target directories work.

use std::path::{Path, PathBuf};
use std::process::Command as Process;

use anyhow::{Context, bail};
use serde_json::Value;

/// Builds the crate in `dir` for wasm32-wasip2 and returns its component.
pub fn build(dir: &Path) -> anyhow::Result<PathBuf> {
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
