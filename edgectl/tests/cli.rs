//! The `edgectl` binary on its own: what a tenant sees before any control
//! plane answers. (The commands against a real control plane and real
//! nodes are the platform tests in `control-plane/tests`.)

use std::process::Output;

fn edgectl(config: &std::path::Path, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_edgectl"))
        .args(args)
        .env("EDGECTL_CONFIG", config)
        .env_remove("EDGECTL_TOKEN")
        .env_remove("EDGE_ADMIN_TOKEN")
        .output()
        .expect("edgectl runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_command_before_login_says_how_to_log_in() {
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("config.json");
    let output = edgectl(&config, &["service", "list"]);
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(message.contains("not logged in"), "{message}");
    assert!(message.contains("edgectl login"), "{message}");
}

#[test]
fn a_login_that_reaches_nothing_saves_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("config.json");
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("port")
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let output = edgectl(&config, &["login", "--url", &url, "--token", "t"]);
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(message.contains("checking the token"), "{message}");
    assert!(message.contains(&url), "{message}");
    assert!(!config.exists(), "no credentials saved");
}

#[test]
fn a_ca_file_that_holds_no_certificate_is_refused_by_name() {
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("config.json");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "not a certificate\n").expect("write");
    let ca = ca.to_str().expect("path");
    let output = edgectl(
        &config,
        &[
            "login",
            "--url",
            "https://127.0.0.1:1",
            "--token",
            "t",
            "--ca-file",
            ca,
        ],
    );
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(
        message.contains("ca_file") && message.contains(ca),
        "{message}"
    );
}

#[test]
fn a_purge_needs_exactly_one_target_and_a_backend_needs_a_name() {
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("config.json");
    let output = edgectl(&config, &["purge"]);
    assert_eq!(output.status.code(), Some(2), "a usage error");
    let output = edgectl(
        &config,
        &["purge", "--url", "http://a/", "--surrogate-key", "k"],
    );
    assert_eq!(output.status.code(), Some(2), "a usage error");
    let output = edgectl(
        &config,
        &[
            "service",
            "create",
            "web",
            "--backend",
            "=https://origin.example",
        ],
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("is not NAME=ORIGIN"),
        "{}",
        stderr(&output)
    );
}
