//! Guests for tests.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The component built from `examples/<name>`. The examples are built once
/// per test process (cargo's own lock serializes parallel test processes).
pub fn rust_guest(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let examples = repo_root().join("examples");
        let output = Command::new("cargo")
            .args(["build", "--release", "--quiet"])
            .current_dir(&examples)
            // The test's own cargo environment must not leak into the
            // guests' build (target dir, profile, rustflags).
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .output()
            .map_err(|e| format!("running cargo in {}: {e}", examples.display()))?;
        if !output.status.success() {
            return Err(format!(
                "building the example guests failed (is the wasm32-wasip2 target installed? \
                 run scripts/install-toolchain.sh):\n{}",
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        Ok(examples.join("target/wasm32-wasip2/release"))
    });
    match dir {
        Ok(dir) => dir.join(format!("{}.wasm", name.replace('-', "_"))),
        Err(e) => panic!("{e}"),
    }
}

/// The export every guest defines.
pub const HANDLE_EXPORT: &str = "wasi:http/incoming-handler@0.2.12#handle";

/// Turns a core module in WAT into a component of the platform's
/// `service-with-runtime-imports` world. The module imports the canonical
/// ABI names (`wasi:http/types@0.2.12` / `[constructor]fields`, ...) and
/// exports [`HANDLE_EXPORT`].
pub fn hostile_component(core_wat: &str) -> Vec<u8> {
    let mut resolve = wit_parser::Resolve::default();
    let (package, _) = resolve
        .push_dir(repo_root().join("sdk/wit"))
        .expect("sdk/wit parses");
    let world = resolve
        .select_world(&[package], Some("service-with-runtime-imports"))
        .expect("world exists");
    let mut module = wat::parse_str(core_wat).expect("hostile WAT parses");
    wit_component::embed_component_metadata(
        &mut module,
        &resolve,
        world,
        wit_component::StringEncoding::UTF8,
    )
    .expect("embedding component metadata");
    wit_component::ComponentEncoder::default()
        .module(&module)
        .and_then(|encoder| encoder.validate(true).encode())
        .unwrap_or_else(|e| panic!("encoding hostile component: {e:?}"))
}

/// The Python example (`examples/python-hello`), built once per test process
/// with componentize-py by `scripts/build-python-guest.sh`.
pub fn python_guest() -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    built_once(&BUILT, "scripts/build-python-guest.sh")
}

/// The JavaScript example (`examples/javascript`), built once per test
/// process with componentize-js by `scripts/build-js-guest.sh`.
pub fn javascript_guest() -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    built_once(&BUILT, "scripts/build-js-guest.sh")
}

/// The component `script` builds, built the first time `built` is asked
/// for; a failed build fails every test that asks, with its output.
fn built_once(built: &OnceLock<Result<PathBuf, String>>, script: &str) -> PathBuf {
    built
        .get_or_init(|| run_build_script(script))
        .clone()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Runs a guest build script of the repository, which prints the path of
/// the component it built.
fn run_build_script(script: &str) -> Result<PathBuf, String> {
    let script = repo_root().join(script);
    let output = Command::new(&script)
        .output()
        .map_err(|e| format!("running {}: {e}", script.display()))?;
    if !output.status.success() {
        return Err(format!(
            "{} failed:\n{}",
            script.display(),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(PathBuf::from(
        String::from_utf8_lossy(&output.stdout).trim(),
    ))
}
