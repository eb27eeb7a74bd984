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
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("edge-node starts");
    let mut lines = tokio::io::BufReader::new(node.stdout.take().expect("stdout")).lines();
    let addr = loop {
        let line = lines.next_line().await.expect("read").expect("the node's address");
        if let Some(addr) = line.strip_prefix("edge node listening on http://") {
            break addr.parse().expect("an address");
        }
    };

    // 30 chunks, 100 ms apart: three seconds of streaming from the old
    // module.
    let streaming = tokio::spawn(send(
        addr,
        Protocol::Http1,
        request("GET", "app.test", "/?chunks=30&size=1000&delay_ms=100", Bytes::new()),
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    replace_module(&rust_guest("hello"), &module);

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reply = get(addr, "app.test", "/").await;
        if reply.status == 200 && reply.text() == HELLO {
            break;
        }
        assert!(Instant::now() < deadline, "the rebuilt module is not served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !streaming.is_finished(),
        "the swap came after the stream had finished: the test shows nothing"
    );

    let reply = streaming.await.expect("stream task");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body_error, None, "the old module's stream was cut");
    assert_eq!(reply.body.len(), 30_000);
    for (i, chunk) in reply.body.chunks(1000).enumerate() {
        let letter = b'a' + (i % 26) as u8;
        assert!(chunk.iter().all(|&b| b == letter), "chunk {i} is not all {}", letter as char);
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
