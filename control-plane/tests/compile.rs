//! The compile worker's limits hold: a compile past its timeout is killed,
//! one past its memory cap fails, and an ordinary one produces an artifact.

use std::path::PathBuf;
use std::time::Duration;

use control_plane::compile::{CompileError, Compiler};
use edge_config::SandboxLimits;

fn compiler(timeout: Duration, memory_bytes: u64) -> Compiler {
    Compiler {
        program: PathBuf::from(env!("CARGO_BIN_EXE_control-plane")),
        timeout,
        memory_bytes,
    }
}

#[tokio::test]
async fn the_compile_worker_honours_its_timeout_and_memory_cap() {
    let hello = edge_tests::guests::rust_guest("hello");
    let dir = tempfile::tempdir().expect("dir");
    let output = dir.path().join("hello.cwasm");

    let ok = compiler(Duration::from_secs(60), 2 * 1024 * 1024 * 1024);
    ok.compile(&hello, &output, &SandboxLimits::default())
        .await
        .expect("compiles");
    assert!(std::fs::metadata(&output).expect("artifact").len() > 0);

    let slow = compiler(Duration::from_millis(1), 2 * 1024 * 1024 * 1024);
    let error = slow
        .compile(&hello, &output, &SandboxLimits::default())
        .await
        .expect_err("times out");
    assert!(matches!(error, CompileError::Timeout(_)), "{error}");

    let small = compiler(Duration::from_secs(60), 16 * 1024 * 1024);
    let error = small
        .compile(&hello, &output, &SandboxLimits::default())
        .await
        .expect_err("runs out of memory");
    assert!(matches!(error, CompileError::OutOfMemory(_)), "{error}");
}

#[tokio::test]
async fn a_component_that_does_not_link_is_refused_by_the_worker() {
    // Valid and exporting nothing the node needs: the type check in the
    // worker refuses it even though it is a well-formed component.
    let empty = wat::parse_str("(component)").expect("component");
    let dir = tempfile::tempdir().expect("dir");
    let input = dir.path().join("empty.wasm");
    std::fs::write(&input, empty).expect("write");
    let error = compiler(Duration::from_secs(60), 2 * 1024 * 1024 * 1024)
        .compile(
            &input,
            &dir.path().join("out.cwasm"),
            &SandboxLimits::default(),
        )
        .await
        .expect_err("refused");
    match error {
        CompileError::Refused(message) => {
            assert!(message.contains("does not link"), "{message}")
        }
        other => panic!("expected a refusal, got {other}"),
    }
}
