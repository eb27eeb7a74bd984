//! A tenant's project on disk: `edgectl init` writes one, and `edgectl dev`
//! and `edgectl deploy --build` build it into a component.
//!
//! - Rust: a crate on the platform's SDK, built by the tenant's cargo for
//!   wasm32-wasip2 ([`crate::guest_build`]).
//! - JavaScript: `app.js` on the web Fetch API, built by componentize-js
//!   (the project's `node_modules`, or `EDGE_COMPONENTIZE_JS`) against the
//!   platform's WIT, adapted to the WASI release of the JavaScript engine
//!   that componentize-js ships.
//! - Python: `app.py`, built by componentize-py (`EDGE_COMPONENTIZE_PY`, or
//!   the one on `PATH`) against the platform's WIT in `wit/`.

use std::path::{Path, PathBuf};
use std::process::Command as Process;

use anyhow::{Context, bail};

/// What a project is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Language {
    Rust,
    Js,
    Python,
}

/// The platform's WIT, as the SDK declares it: written into JavaScript and
/// Python projects, whose toolchains build against it.
const PLATFORM_WIT: &[(&str, &str)] = &[
    ("world.wit", include_str!("../../sdk/wit/world.wit")),
    ("cache.wit", include_str!("../../sdk/wit/cache.wit")),
    ("deps/cli.wit", include_str!("../../sdk/wit/deps/cli.wit")),
    (
        "deps/clocks.wit",
        include_str!("../../sdk/wit/deps/clocks.wit"),
    ),
    (
        "deps/filesystem.wit",
        include_str!("../../sdk/wit/deps/filesystem.wit"),
    ),
    ("deps/http.wit", include_str!("../../sdk/wit/deps/http.wit")),
    ("deps/io.wit", include_str!("../../sdk/wit/deps/io.wit")),
    (
        "deps/random.wit",
        include_str!("../../sdk/wit/deps/random.wit"),
    ),
    (
        "deps/sockets.wit",
        include_str!("../../sdk/wit/deps/sockets.wit"),
    ),
    (
        "deps/config/store.wit",
        include_str!("../../sdk/wit/deps/config/store.wit"),
    ),
    (
        "deps/config/world.wit",
        include_str!("../../sdk/wit/deps/config/world.wit"),
    ),
    (
        "deps/keyvalue/atomic.wit",
        include_str!("../../sdk/wit/deps/keyvalue/atomic.wit"),
    ),
    (
        "deps/keyvalue/batch.wit",
        include_str!("../../sdk/wit/deps/keyvalue/batch.wit"),
    ),
    (
        "deps/keyvalue/store.wit",
        include_str!("../../sdk/wit/deps/keyvalue/store.wit"),
    ),
    (
        "deps/keyvalue/world.wit",
        include_str!("../../sdk/wit/deps/keyvalue/world.wit"),
    ),
];

/// The WASI release the platform's WIT is written for.
const PLATFORM_WASI: &str = "0.2.12";

/// Where a built component is put for `edgectl dev` to serve.
pub fn dev_output(dir: &Path) -> PathBuf {
    dir.join("target").join("edge-dev").join("app.wasm")
}

/// Writes a new project called `name` in `dir/name` (which must not exist
/// yet), and returns its directory.
pub fn init(
    dir: &Path,
    name: &str,
    language: Language,
    sdk: Option<&Path>,
) -> anyhow::Result<PathBuf> {
    edge_config::validate::validate_service_name(name).map_err(anyhow::Error::msg)?;
    let root = dir.join(name);
    if root.exists() {
        bail!("{} already exists", root.display());
    }
    let fill = |template: &str| template.replace("{{name}}", name);
    let mut files: Vec<(PathBuf, String)> = vec![(
        ".gitignore".into(),
        "target/\nnode_modules/\n*.wasm\n".into(),
    )];
    match language {
        Language::Rust => {
            let sdk = match sdk.map(Path::to_path_buf).or_else(bundled_sdk) {
                Some(path) => format!("{{ path = {:?} }}", path.display().to_string()),
                None => "\"0.1\"".to_string(),
            };
            files.push((
                "Cargo.toml".into(),
                fill(include_str!("templates/rust_cargo.toml")).replace("{{sdk}}", &sdk),
            ));
            files.push((
                "src/lib.rs".into(),
                fill(include_str!("templates/rust_lib.rs")),
            ));
        }
        Language::Js => {
            files.push(("app.js".into(), fill(include_str!("templates/app.js"))));
            files.push((
                "package.json".into(),
                fill(include_str!("templates/package.json")),
            ));
            files.extend(platform_wit("wit"));
        }
        Language::Python => {
            files.push(("app.py".into(), fill(include_str!("templates/app.py"))));
            files.extend(platform_wit("wit"));
        }
    }
    for (path, text) in files {
        let path = root.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(root)
}

/// The SDK's source next to the platform this edgectl was built from, when
/// it is there (a checkout of the platform): `EDGE_SDK_PATH` first.
fn bundled_sdk() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("EDGE_SDK_PATH") {
        return Some(PathBuf::from(path));
    }
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk");
    sdk.join("Cargo.toml")
        .is_file()
        .then(|| sdk.canonicalize().unwrap_or(sdk))
}

fn platform_wit(under: &str) -> impl Iterator<Item = (PathBuf, String)> + '_ {
    PLATFORM_WIT
        .iter()
        .map(move |(path, text)| (Path::new(under).join(path), (*text).to_string()))
}

/// What the project in `dir` is written in, by its files.
pub fn detect(dir: &Path) -> anyhow::Result<Language> {
    if dir.join("Cargo.toml").is_file() {
        Ok(Language::Rust)
    } else if dir.join("app.js").is_file() {
        Ok(Language::Js)
    } else if dir.join("app.py").is_file() {
        Ok(Language::Python)
    } else {
        bail!(
            "{} holds no project: no Cargo.toml, app.js or app.py (edgectl init makes one)",
            dir.display()
        )
    }
}

/// The files a change to which means a rebuild.
pub fn sources(dir: &Path, language: Language) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let wanted = |path: &Path| {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        match language {
            Language::Rust => matches!(ext, "rs" | "toml") || path.ends_with("Cargo.lock"),
            Language::Js => matches!(ext, "js" | "mjs" | "json" | "wit"),
            Language::Python => matches!(ext, "py" | "wit"),
        }
    };
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&next) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            if path.is_dir() {
                let skipped = ["target", "node_modules", ".git", "__pycache__"];
                if !skipped.iter().any(|s| name == *s) {
                    pending.push(path);
                }
            } else if wanted(&path) {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// Builds the project in `dir` into a component; returns its path.
pub fn build(dir: &Path, language: Language) -> anyhow::Result<PathBuf> {
    match language {
        Language::Rust => crate::guest_build::build(dir),
        Language::Js => build_js(dir),
        Language::Python => build_python(dir),
    }
}

fn build_python(dir: &Path) -> anyhow::Result<PathBuf> {
    let tool = std::env::var_os("EDGE_COMPONENTIZE_PY").unwrap_or_else(|| "componentize-py".into());
    let out = dir.join("target").join("app.wasm");
    std::fs::create_dir_all(dir.join("target"))?;
    eprintln!("building app.py with componentize-py");
    let status = Process::new(&tool)
        .args([
            "-q",
            "-d",
            "wit",
            "-w",
            "service",
            "componentize",
            "-p",
            ".",
            "app",
            "-o",
        ])
        .arg(&out)
        .current_dir(dir)
        .status()
        .with_context(|| {
            format!(
                "running {} (pip install componentize-py)",
                Path::new(&tool).display()
            )
        })?;
    if !status.success() {
        bail!("componentize-py failed");
    }
    Ok(out)
}

fn build_js(dir: &Path) -> anyhow::Result<PathBuf> {
    let tool = match std::env::var_os("EDGE_COMPONENTIZE_JS") {
        Some(tool) => PathBuf::from(tool),
        None => dir.join("node_modules/.bin/componentize-js"),
    };
    if !tool.exists() {
        bail!(
            "{} is missing: run `npm install` in {}",
            tool.display(),
            dir.display()
        );
    }
    let engine = engine_wasm(&tool)?;
    let release = engine_wasi_release(&engine)?;
    // The platform's WIT, rewritten for the engine's WASI release.
    let work = dir.join("target").join("js-wit");
    let _ = std::fs::remove_dir_all(&work);
    for (path, text) in platform_wit("") {
        let path = work.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, for_wasi_release(&text, &release)?)?;
    }
    let out = dir.join("target").join("app.wasm");
    eprintln!("building app.js with componentize-js (WASI {release})");
    let status = Process::new(&tool)
        .arg("--wit")
        .arg(&work)
        .args(["--world-name", "service", "-o"])
        .arg(&out)
        .arg("app.js")
        .current_dir(dir)
        .status()
        .with_context(|| format!("running {}", tool.display()))?;
    if !status.success() {
        bail!("componentize-js failed");
    }
    Ok(out)
}

/// The engine componentize-js embeds, beside its launcher.
fn engine_wasm(tool: &Path) -> anyhow::Result<PathBuf> {
    let bin = tool.canonicalize().unwrap_or_else(|_| tool.to_path_buf());
    // node_modules/@bytecodealliance/componentize-js/{src/cli.js,lib/...}
    let package = bin
        .ancestors()
        .find(|dir| dir.join("lib/starlingmonkey_embedding.wasm").is_file())
        .map(Path::to_path_buf)
        .or_else(|| {
            let modules = tool.parent()?.parent()?;
            Some(modules.join("@bytecodealliance/componentize-js"))
        })
        .context("cannot find componentize-js's package")?;
    let engine = package.join("lib/starlingmonkey_embedding.wasm");
    if !engine.is_file() {
        bail!("{} is missing", engine.display());
    }
    Ok(engine)
}

/// The WASI release the engine's `wasi:http` imports name.
fn engine_wasi_release(engine: &Path) -> anyhow::Result<String> {
    let bytes = std::fs::read(engine).with_context(|| format!("reading {}", engine.display()))?;
    let needle = b"wasi:http/incoming-handler@0.2.";
    let at = bytes
        .windows(needle.len())
        .position(|window| window == needle)
        .context("cannot tell which WASI release the JavaScript engine is built for")?;
    let patch: String = bytes[at + needle.len()..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .map(|&b| char::from(b))
        .collect();
    if patch.is_empty() {
        bail!("cannot tell which WASI release the JavaScript engine is built for");
    }
    Ok(format!("0.2.{patch}"))
}

/// `wit` for an engine of WASI `release` (0.2.N): items gated
/// `@since(version = 0.2.M)` with M > N are dropped (each a one-line item),
/// and the platform's release is replaced by the engine's.
fn for_wasi_release(wit: &str, release: &str) -> anyhow::Result<String> {
    let patch = |version: &str| -> Option<u32> { version.strip_prefix("0.2.")?.parse().ok() };
    let engine = patch(release).context("not a WASI 0.2 release")?;
    let mut out = String::with_capacity(wit.len());
    let mut dropping = false;
    for line in wit.lines() {
        if dropping {
            if !line.trim_end().ends_with(';') {
                bail!("cannot drop a WIT item that spans lines: {line}");
            }
            dropping = false;
            continue;
        }
        if let Some(rest) = line.split("@since(version = ").nth(1)
            && let Some(gate) = rest.split(')').next().and_then(patch)
            && gate > engine
        {
            dropping = true;
            continue;
        }
        out.push_str(&line.replace(&format!("@{PLATFORM_WASI}"), &format!("@{release}")));
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wit_for_an_older_engine_drops_newer_items_and_names_its_release() {
        let wit = "package wasi:http@0.2.12;\n  @since(version = 0.2.0)\n  get: func();\n  @since(version = 0.2.9)\n  newer: func();\nuse wasi:io/streams@0.2.12.{x};\n";
        let adapted = for_wasi_release(wit, "0.2.3").expect("adapts");
        assert_eq!(
            adapted,
            "package wasi:http@0.2.3;\n  @since(version = 0.2.0)\n  get: func();\nuse wasi:io/streams@0.2.3.{x};\n"
        );
    }

    #[test]
    fn a_project_is_refused_a_name_no_service_could_have_or_a_directory_that_exists() {
        let dir = tempfile::tempdir().expect("dir");
        assert!(init(dir.path(), "Not A Name", Language::Rust, None).is_err());
        init(dir.path(), "shop", Language::Python, None).expect("init");
        assert!(dir.path().join("shop/wit/deps/http.wit").is_file());
        assert!(init(dir.path(), "shop", Language::Js, None).is_err());
        assert_eq!(
            detect(&dir.path().join("shop")).expect("detect"),
            Language::Python
        );
    }
}
