//! Records the wasmtime version this node is built with, so that compiled
//! artifacts can say which engine made them (see artifacts.rs).

fn main() {
    let lock_path = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.lock");
    println!("cargo:rerun-if-changed={lock_path}");
    let lock = std::fs::read_to_string(lock_path).unwrap_or_default();
    let version = lock
        .split("[[package]]")
        .find(|block| block.contains("\nname = \"wasmtime\"\n"))
        .and_then(|block| block.lines().find_map(|l| l.strip_prefix("version = \"")))
        .map(|v| v.trim_end_matches('"').to_string())
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=EDGE_WASMTIME_VERSION={version}");
}
