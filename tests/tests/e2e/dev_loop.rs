//! The dev loop's node: `edge-node serve --module app.wasm --watch` serves
//! a rebuilt module from the next request on, and a response that started
//! before the swap finishes whole on the module it started with.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use edge_tests::client::{Protocol, get, request, send};
use edge_tests::guests::rust_guest;
use edge_tests::platform::{HELLO, workspace_binary};
use tokio::io::AsyncBufReadExt;

/// Replaces `to` with a copy of `from` in one rename, as a build's last
/// step does.
fn replace_module(from: &Path, to: &Path) {
    let staged = to.with_extension("staged");
    std::fs::copy(from, &staged).expect("copying the module");
    std::fs::rename(&staged, to).expect("replacing the module");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_module_is_swapped_while_a_streaming_response_from_the_old_one_finishes_whole() {
    let dir = tempfile::tempdir().expect("dir");
    let module = dir.path().join("app.wasm");
    std::fs::copy(rust_guest("streaming"), &module).expect("module");
    let mut node = tokio::process::Command::new(workspace_binary("edge-node"))
        .args(["serve", "--watch", "--module"])
        .arg(&module)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("edge-node starts");
    let mut lines = tokio::io::BufReader::new(node.stdout.take().expect("stdout")).lines();
    let addr = loop {
        let line = lines
            .next_line()
            .await
            .expect("read")
            .expect("the node's address");
        if let Some(addr) = line.strip_prefix("edge node listening on http://") {
            break addr.parse().expect("an address");
        }
    };

    // 80 chunks, 100 ms apart: eight seconds of streaming from the old
    // module, for the new one to be compiled and served meanwhile.
    let streaming = tokio::spawn(send(
        addr,
        Protocol::Http1,
        request(
            "GET",
            "app.test",
            "/?chunks=80&size=1000&delay_ms=100",
            Bytes::new(),
        ),
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    replace_module(&rust_guest("hello"), &module);

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reply = get(addr, "app.test", "/").await;
        if reply.status == 200 && reply.text() == HELLO {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the rebuilt module is not served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !streaming.is_finished(),
        "the swap came after the stream had finished: the test shows nothing"
    );

    let reply = streaming.await.expect("stream task");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body_error, None, "the old module's stream was cut");
    assert_eq!(reply.body.len(), 80_000);
    for (i, chunk) in reply.body.chunks(1000).enumerate() {
        let letter = b'a' + (i % 26) as u8;
        assert!(
            chunk.iter().all(|&b| b == letter),
            "chunk {i} is not all {}",
            letter as char
        );
    }

    // A module that does not compile is refused, and the last good one
    // keeps serving.
    std::fs::write(dir.path().join("broken.wasm"), b"\0asm not really").expect("write");
    replace_module(&dir.path().join("broken.wasm"), &module);
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let reply = get(addr, "app.test", "/").await;
    assert_eq!((reply.status, reply.text().as_str()), (200, HELLO));
    node.kill().await.expect("kill");
}

/// `edgectl dev` on the project in `dir`, until stopped: its node's address.
struct DevLoop {
    edgectl: tokio::process::Child,
    addr: std::net::SocketAddr,
}

impl DevLoop {
    async fn start(dir: &Path, env: &[(&str, std::path::PathBuf)]) -> Self {
        let mut command = tokio::process::Command::new(workspace_binary("edgectl"));
        command
            .arg("dev")
            .arg(dir)
            .args(["--listen", "127.0.0.1:0"])
            .env("EDGE_NODE_BIN", workspace_binary("edge-node"))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true);
        for (key, value) in env {
            command.env(key, value);
        }
        let mut edgectl = command.spawn().expect("edgectl dev starts");
        let mut lines = tokio::io::BufReader::new(edgectl.stdout.take().expect("stdout")).lines();
        let addr = tokio::time::timeout(Duration::from_secs(300), async {
            loop {
                let line = lines
                    .next_line()
                    .await
                    .expect("read")
                    .expect("the node's address");
                if let Some(addr) = line.strip_prefix("edge node listening on http://") {
                    break addr.parse().expect("an address");
                }
            }
        })
        .await
        .expect("the project built and the node started");
        Self { edgectl, addr }
    }

    async fn until_serves(&self, expected: &str) {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let reply = get(self.addr, "dev.test", "/").await;
            if reply.status == 200 && reply.text() == expected {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "still {} {:?}, not {expected:?}",
                reply.status,
                reply.text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Ctrl-C, as a developer stops it: edgectl stops its node too.
    async fn stop(mut self) {
        let pid = self.edgectl.id().expect("running").to_string();
        let _ = std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status();
        let stopped = tokio::time::timeout(Duration::from_secs(20), self.edgectl.wait()).await;
        assert!(stopped.is_ok(), "edgectl dev did not stop on SIGINT");
    }
}

/// `edgectl init --lang LANG NAME` in `dir`; the project's directory.
fn init(dir: &Path, lang: &str, name: &str) -> std::path::PathBuf {
    let output = std::process::Command::new(workspace_binary("edgectl"))
        .args(["init", "--lang", lang, "--dir"])
        .arg(dir)
        .arg(name)
        .output()
        .expect("edgectl init");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    dir.join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edgectl_init_writes_a_rust_project_that_edgectl_dev_serves_and_serves_again_after_an_edit()
{
    let dir = tempfile::tempdir().expect("dir");
    let project = init(dir.path(), "rust", "hello-dev");
    // The crate's dependencies are built once for every run of this test.
    let target = edge_tests::guests::repo_root().join("target/dev-loop-crates");
    let dev = DevLoop::start(&project, &[("CARGO_TARGET_DIR", target)]).await;
    dev.until_serves("hello from hello-dev\npath: /\n").await;

    let lib = project.join("src/lib.rs");
    let source = std::fs::read_to_string(&lib).expect("lib.rs");
    std::fs::write(&lib, source.replace("hello from", "hello again from")).expect("edit");
    dev.until_serves("hello again from hello-dev\npath: /\n")
        .await;

    // A change that does not build leaves the last good build serving.
    std::fs::write(&lib, "this is not rust").expect("edit");
    tokio::time::sleep(Duration::from_secs(3)).await;
    dev.until_serves("hello again from hello-dev\npath: /\n")
        .await;
    dev.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edgectl_init_writes_python_and_javascript_projects_that_build_and_serve() {
    let root = edge_tests::guests::repo_root();
    // The toolchains scripts/install-toolchain.sh installs for the
    // examples, as a tenant's `pip install` and `npm install` would.
    edge_tests::guests::python_guest();
    edge_tests::guests::javascript_guest();
    let dir = tempfile::tempdir().expect("dir");
    let python = init(dir.path(), "python", "hello-py");
    let dev = DevLoop::start(
        &python,
        &[(
            "EDGE_COMPONENTIZE_PY",
            root.join("target/py-venv/bin/componentize-py"),
        )],
    )
    .await;
    dev.until_serves("hello from hello-py\npath: /\n").await;
    dev.stop().await;

    let js = init(dir.path(), "js", "hello-js");
    let dev = DevLoop::start(
        &js,
        &[(
            "EDGE_COMPONENTIZE_JS",
            root.join("target/js-toolchain/node_modules/.bin/componentize-js"),
        )],
    )
    .await;
    dev.until_serves("hello from hello-js\npath: /\n").await;

    // However edgectl ends, its node ends with it.
    let addr = dev.addr;
    let mut edgectl = dev.edgectl;
    edgectl.kill().await.expect("SIGKILL");
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < deadline, "the node outlived edgectl dev");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn watch_is_refused_for_a_node_that_follows_a_control_plane() {
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        "[node]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\n[control_plane]\nurl = \"http://127.0.0.1:9\"\ncluster_token = \"t\"\nnode_name = \"n\"\n",
    )
    .expect("config");
    let output = std::process::Command::new(workspace_binary("edge-node"))
        .args(["serve", "--watch", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .expect("edge-node runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot follow a control plane"), "{stderr}");
}
