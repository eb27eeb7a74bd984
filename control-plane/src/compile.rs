//! Compiling uploads, in a child process.
//!
//! Compiling untrusted code is where a runtime can be pushed into using
//! unbounded time or memory, so it never happens in the API server: each
//! upload is compiled by `control-plane compile-worker`, a child process with
//! a data-memory cap it sets on itself (`RLIMIT_DATA`) and a wall-clock
//! timeout enforced by the parent, which kills it. The worker builds the same
//! engine as the nodes (so its artifacts carry their fingerprint), with the
//! instance pool's checks at the nodes' ceilings (so a component no node
//! could load is refused here, naming the limit), compiles, links the
//! component against what the platform provides (`edge_platform::guest`, the
//! node's linker too), and writes the artifact.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use edge_config::SandboxLimits;
use edge_platform::engine::build_validation_engine;
use wasmtime::component::Component;

/// How long one compile may take.
pub const DEFAULT_COMPILE_TIMEOUT: Duration = Duration::from_secs(60);
/// Memory a compile may allocate. Cranelift needs tens of MiB for typical
/// guests; this leaves room for large ones and stops a pathological one.
pub const DEFAULT_COMPILE_MEMORY_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// The worker's exit code for "the component is refused" (its reason on
/// stderr); any other failure is the worker's own.
const EXIT_REFUSED: u8 = 2;

/// How to run the worker.
#[derive(Debug, Clone)]
pub struct Compiler {
    /// The executable that has the `compile-worker` subcommand.
    pub program: PathBuf,
    pub timeout: Duration,
    pub memory_bytes: u64,
}

/// Why a compile did not produce an artifact.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// The component cannot run on the platform (a 400 for the tenant).
    #[error("{0}")]
    Refused(String),
    #[error("compiling took longer than {0:?}")]
    Timeout(Duration),
    #[error("compiling exceeded its memory cap of {0} bytes")]
    OutOfMemory(u64),
    #[error("the compile worker failed: {0}")]
    Worker(String),
}

impl Compiler {
    /// Compiles `component` (a file) to `artifact`, refusing it if a node
    /// with the sandbox ceilings `nodes` could not load it.
    pub async fn compile(
        &self,
        component: &Path,
        artifact: &Path,
        nodes: &SandboxLimits,
    ) -> Result<(), CompileError> {
        let child = tokio::process::Command::new(&self.program)
            .arg("compile-worker")
            .arg("--input")
            .arg(component)
            .arg("--output")
            .arg(artifact)
            .arg("--memory-bytes")
            .arg(self.memory_bytes.to_string())
            .arg("--max-memory-bytes")
            .arg(nodes.max_memory_bytes.to_string())
            .arg("--max-table-elements")
            .arg(nodes.max_table_elements.to_string())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                CompileError::Worker(format!("starting {}: {e}", self.program.display()))
            })?;
        let output = match tokio::time::timeout(self.timeout, child.wait_with_output()).await {
            Ok(output) => output.map_err(|e| CompileError::Worker(e.to_string()))?,
            // Dropping the future drops the child, which kills it.
            Err(_) => return Err(CompileError::Timeout(self.timeout)),
        };
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
        match output.status.code() {
            Some(0) => Ok(()),
            Some(code) if code == i32::from(EXIT_REFUSED) => Err(CompileError::Refused(stderr)),
            _ if stderr.contains("memory allocation") || stderr.contains("out of memory") => {
                Err(CompileError::OutOfMemory(self.memory_bytes))
            }
            _ => {
                use std::os::unix::process::ExitStatusExt;
                // An allocation failure under the cap aborts the worker.
                if output.status.signal() == Some(6) {
                    return Err(CompileError::OutOfMemory(self.memory_bytes));
                }
                Err(CompileError::Worker(format!("{}: {stderr}", output.status)))
            }
        }
    }
}

/// What the worker is asked to do.
#[derive(Debug)]
pub struct WorkerTask<'a> {
    pub input: &'a Path,
    pub output: &'a Path,
    /// Its own data-memory cap.
    pub memory_bytes: u64,
    /// The nodes' sandbox ceilings the component must fit.
    pub nodes: SandboxLimits,
}

/// The worker's body: `control-plane compile-worker --input --output`.
pub fn run_worker(task: &WorkerTask<'_>) -> ExitCode {
    let WorkerTask {
        input,
        output,
        memory_bytes,
        ref nodes,
    } = *task;
    use rustix::process::{Resource, Rlimit, setrlimit};
    let cap = Rlimit {
        current: Some(memory_bytes),
        maximum: Some(memory_bytes),
    };
    if let Err(e) = setrlimit(Resource::Data, cap) {
        eprintln!("setting the memory cap: {e}");
        return ExitCode::FAILURE;
    }
    let bytes = match std::fs::read(input) {
        Ok(bytes) => bytes,
        Err(e) => {
            eprintln!("reading {}: {e}", input.display());
            return ExitCode::FAILURE;
        }
    };
    let engine = match build_validation_engine(nodes) {
        Ok(engine) => engine,
        Err(e) => {
            eprintln!("building the engine: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let component = match Component::new(&engine, &bytes) {
        Ok(component) => component,
        Err(e) => {
            let error = format!("{e:#}");
            match exceeded_ceiling(&error, nodes) {
                Some(limit) => eprintln!("the component exceeds {limit} ({error})"),
                None => eprintln!("the component does not compile: {error}"),
            }
            return ExitCode::from(EXIT_REFUSED);
        }
    };
    if let Err(e) = edge_platform::guest::check_links(&engine, &component) {
        eprintln!("the component does not link against the platform: {e:#}");
        return ExitCode::from(EXIT_REFUSED);
    }
    let artifact = match component.serialize() {
        Ok(artifact) => artifact,
        Err(e) => {
            eprintln!("serializing the artifact: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = std::fs::write(output, artifact) {
        eprintln!("writing {}: {e}", output.display());
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// Which of the nodes' ceilings a compile error names, in the terms an
/// operator configures (`sandbox.*` in the node config) and a tenant can act
/// on. The texts are the instance pool's refusals in the wasmtime this is
/// built with; `control-plane/tests/api.rs` uploads one component for each.
fn exceeded_ceiling(error: &str, nodes: &SandboxLimits) -> Option<String> {
    let limit = if error.contains("memory has a minimum byte size") {
        format!(
            "the nodes' sandbox.max_memory_bytes ({}): its initial memory is larger",
            nodes.max_memory_bytes
        )
    } else if error.contains("minimum element size") {
        format!(
            "the nodes' sandbox.max_table_elements ({}): its initial table is larger",
            nodes.max_table_elements
        )
    } else if error.contains("defined memories count") {
        "one memory per core module".to_string()
    } else if error.contains("defined tables count") {
        "one table per core module".to_string()
    } else if error.contains("instance size does not fit") {
        // Before the count below: this error's text names core module
        // instances too.
        "the size of one instance's state".to_string()
    } else if error.contains("core module instances") {
        format!(
            "{} core instances per component",
            edge_platform::engine::MAX_CORE_INSTANCES_PER_COMPONENT
        )
    } else if error.contains("Wasm linear memories") || error.contains("tables, which exceeds") {
        "the memories or tables one component may define".to_string()
    } else {
        return None;
    };
    Some(limit)
}
