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

/// `edge-node check-config --config PATH`, run to its end.
fn check_config(path: &Path) -> std::process::Output {
    edge_node()
        .args(["check-config", "--config"])
        .arg(path)
        .output()
        .expect("run edge-node")
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
    let output = check_config(&repo_root().join("config/examples/node.toml"));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("ok (3 services, every module compiled)")
    );
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
    let output = check_config(&path);
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
fn check_config_runs_start_ups_plan_modules_and_certificates_included() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("not-a-component.wasm"), b"\0asm garbage").expect("write");
    std::fs::write(dir.path().join("cert.pem"), "not a certificate\n").expect("write");
    std::fs::write(dir.path().join("key.pem"), "not a key\n").expect("write");
    let hello = built_guest("hello");
    let path = dir.path().join("node.toml");
    std::fs::write(
        &path,
        format!(
            r#"
            [[service]]
            name = "broken"
            domains = ["broken.test"]
            module = "not-a-component.wasm"

            [[service]]
            name = "badcert"
            domains = ["badcert.test"]
            module = "{}"
            certificate = {{ cert = "cert.pem", key = "key.pem" }}

            [[service]]
            name = "fine"
            domains = ["fine.test"]
            module = "{}"
            "#,
            hello.display(),
            hello.display()
        ),
    )
    .expect("write config");
    let output = check_config(&path);
    // Valid as a file; start-up would fail on both services, so the check
    // does too, naming each.
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(r#"service "broken""#), "{stderr}");
    assert!(
        stderr.contains(r#"service "badcert": certificate"#),
        "{stderr}"
    );
    assert!(!stderr.contains(r#"service "fine""#), "{stderr}");
    // Nothing is left in the config's own data dir.
    assert!(!dir.path().join("edge-data").exists());
}

/// Starts `edge-node serve --module` on free loopback ports with `args`
/// (global flags) first; returns the child and its listening address.
fn start_local_mode(args: &[&str], data: &Path, stderr: Stdio) -> (std::process::Child, String) {
    let mut child = edge_node()
        .args(args)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .arg("--module")
        .arg(built_guest("hello"))
        .arg("--data-dir")
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("start edge-node");
    let stdout = child.stdout.take().expect("stdout");
    let first = BufReader::new(stdout)
        .lines()
        .next()
        .expect("a line")
        .expect("utf-8");
    let addr = first
        .strip_prefix("edge node listening on http://")
        .expect("listening line")
        .to_string();
    (child, addr)
}

/// Sends one HTTP/1.1 GET and returns the whole reply as text.
fn get(addr: &str, host: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n"
    )
    .expect("send");
    let mut reply = String::new();
    stream.read_to_string(&mut reply).expect("read");
    reply
}

#[test]
fn local_mode_serves_one_component_for_any_host() {
    let data = tempfile::tempdir().expect("temp dir");
    let (mut child, addr) = start_local_mode(&[], data.path(), Stdio::null());
    for host in ["localhost", "anything.example"] {
        let reply = get(&addr, host, "/");
        assert!(reply.starts_with("HTTP/1.1 200 OK"), "{reply}");
        assert!(reply.ends_with("hello from the edge\n"), "{reply}");
    }
    child.kill().expect("stop edge-node");
    child.wait().expect("reap edge-node");
}

#[test]
fn json_logs_carry_one_access_event_per_request_with_the_clients_request_id() {
    let data = tempfile::tempdir().expect("temp dir");
    let (mut child, addr) =
        start_local_mode(&["--log-format", "json"], data.path(), Stdio::piped());
    let reply = get(&addr, "shop.example", "/some/path?q=1");
    let request_id = reply
        .lines()
        .find_map(|line| line.strip_prefix("x-request-id: "))
        .expect("x-request-id in the response")
        .trim()
        .to_string();
    child.kill().expect("stop edge-node");
    let output = child.wait_with_output().expect("reap edge-node");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let events: Vec<serde_json::Value> = stderr
        .lines()
        .map(|line| serde_json::from_str(line).expect("every log line is JSON"))
        .collect();
    let access: Vec<&serde_json::Value> = events
        .iter()
        .filter(|event| event["target"] == "access")
        .collect();
    assert_eq!(access.len(), 1, "{stderr}");
    let fields = &access[0]["fields"];
    assert_eq!(fields["request_id"], request_id.as_str());
    assert_eq!(fields["status"], 200);
    assert_eq!(fields["method"], "GET");
    assert_eq!(fields["host"], "shop.example");
    assert_eq!(fields["path"], "/some/path");
    assert_eq!(fields["protocol"], "http1");
    assert!(fields["duration_us"].as_u64().is_some(), "{fields}");
}
