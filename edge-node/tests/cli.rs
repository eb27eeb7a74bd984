//! The `edge-node` binary: `check-config` and local mode.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn edge_node() -> Command {
    Command::new(env!("CARGO_BIN_EXE_edge-node"))
}

/// Builds the example guests with the script users run.
fn built_guest(name: &str) -> PathBuf {
    let status = Command::new(repo_root().join("scripts/build-guests.sh"))
        .stdout(Stdio::null())
        .status()
        .expect("run scripts/build-guests.sh");
    assert!(status.success(), "scripts/build-guests.sh failed");
    repo_root().join(format!("target/guests/{name}.wasm"))
}

#[test]
fn check_config_accepts_the_example_config() {
    built_guest("hello");
    let output = edge_node()
        .args(["check-config", "--config"])
        .arg(repo_root().join("config/examples/node.toml"))
        .output()
        .expect("run edge-node");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("ok (3 services)"));
}

#[test]
fn check_config_reports_every_problem_and_fails() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        r#"
        [http]
        max_uri_bytes = 1

        [[service]]
        name = "Bad"
        domains = ["ok.test"]
        module = "x.wasm"
        "#,
    )
    .expect("write config");
    let output = edge_node()
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .expect("run edge-node");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("2 configuration errors"), "{stderr}");
    assert!(
        stderr.contains("http.max_uri_bytes: 1 is outside the allowed range"),
        "{stderr}"
    );
    assert!(stderr.contains("service[0].name"), "{stderr}");
}

#[test]
fn local_mode_serves_one_component_for_any_host() {
    let module = built_guest("hello");
    let data = tempfile::tempdir().expect("temp dir");
    let mut child = edge_node()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--module",
        ])
        .arg(&module)
        .arg("--data-dir")
        .arg(data.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start edge-node");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().expect("a line").expect("utf-8");
    let addr = first
        .strip_prefix("edge node listening on http://")
        .expect("listening line")
        .to_string();
    for host in ["localhost", "anything.example"] {
        let mut stream = TcpStream::connect(&addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        write!(
            stream,
            "GET / HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n"
        )
        .expect("send");
        let mut reply = String::new();
        stream.read_to_string(&mut reply).expect("read");
        assert!(reply.starts_with("HTTP/1.1 200 OK"), "{reply}");
        assert!(reply.ends_with("hello from the edge\n"), "{reply}");
    }
    child.kill().expect("stop edge-node");
    child.wait().expect("reap edge-node");
}
