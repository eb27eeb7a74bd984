//! The lifecycle of the `edge-node` process: SIGTERM drains (stop
//! accepting, let requests in flight finish), a second signal or the end of
//! the grace period cuts what is left and says how many.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// Requests in flight when the signal arrives.
const STREAMS: usize = 50;
/// Each response: 20 chunks of 16 KiB, 50 ms apart (about a second), so
/// every body is still streaming when the signal comes.
const CHUNKS: usize = 20;
const CHUNK_BYTES: usize = 16 * 1024;
const STREAM: &str = "/?chunks=20&size=16384&delay_ms=50";
/// The same, for about 10 s: still streaming when a drain is cut.
const LONG_STREAM: &str = "/?chunks=200&size=16384&delay_ms=50";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn streaming_guest() -> PathBuf {
    let status = std::process::Command::new(repo_root().join("scripts/build-guests.sh"))
        .stdout(Stdio::null())
        .status()
        .expect("run scripts/build-guests.sh");
    assert!(status.success(), "scripts/build-guests.sh failed");
    repo_root().join("target/guests/streaming.wasm")
}

/// The node as a child process, its public and admin addresses read from
/// what it prints.
struct NodeProcess {
    child: Child,
    addr: SocketAddr,
    admin: SocketAddr,
    _data: tempfile::TempDir,
}

impl NodeProcess {
    async fn start(drain_grace_ms: u64) -> Self {
        let data = tempfile::tempdir().expect("dir");
        let config = data.path().join("node.toml");
        let module = streaming_guest();
        std::fs::write(
            &config,
            format!(
                "[node]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
                 data_dir = {:?}\ndrain_grace_ms = {drain_grace_ms}\n\n\
                 [[service]]\nname = \"stream\"\ndomains = [\"stream.test\"]\nmodule = {:?}\n",
                data.path().join("data"),
                module,
            ),
        )
        .expect("config");
        let mut child = Command::new(env!("CARGO_BIN_EXE_edge-node"))
            .args(["serve", "--config"])
            .arg(&config)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("edge-node starts");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut addr = None;
        let mut admin = None;
        while addr.is_none() || admin.is_none() {
            let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
                .await
                .expect("the node starts in time")
                .expect("stdout")
                .expect("the node prints its addresses");
            let found = |prefix: &str| {
                line.strip_prefix(prefix)
                    .and_then(|rest| rest.trim_end_matches("/metrics").parse().ok())
            };
            addr = addr.or(found("edge node listening on http://"));
            admin = admin.or(found("metrics on http://"));
        }
        Self {
            child,
            addr: addr.expect("addr"),
            admin: admin.expect("admin"),
            _data: data,
        }
    }

    fn signal(&self, name: &str) {
        let pid = self.child.id().expect("running").to_string();
        let status = std::process::Command::new("kill")
            .args([format!("-{name}"), pid])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Waits for the process to exit; returns its stderr.
    async fn exit(self) -> (std::process::ExitStatus, String) {
        let output = tokio::time::timeout(Duration::from_secs(30), self.child.wait_with_output())
            .await
            .expect("the node exits in time")
            .expect("exit status");
        (
            output.status,
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }
}

/// `GET path` on a new HTTP/1.1 connection; returns the response with its
/// body not yet read.
async fn open_stream(addr: SocketAddr, path: &str) -> hyper::Response<hyper::body::Incoming> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    let request = hyper::Request::get(path)
        .header("host", "stream.test")
        .body(Empty::<Bytes>::new())
        .expect("request");
    sender.send_request(request).await.expect("response head")
}

/// The admin page at `path`: (status, body).
async fn admin(addr: SocketAddr, path: &str) -> (u16, String) {
    let response = open_stream(addr, path).await;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Reads a streaming guest's body to the end and checks every byte: chunk
/// `i` is `CHUNK_BYTES` of the letter `a + i % 26`.
async fn read_and_check(response: hyper::Response<hyper::body::Incoming>) -> Result<(), String> {
    let mut body = response.into_body();
    let mut offset = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("body error after {offset} bytes: {e}"))?;
        let Some(data) = frame.data_ref() else {
            continue;
        };
        for byte in data.iter() {
            let expected = b'a' + ((offset / CHUNK_BYTES) % 26) as u8;
            if *byte != expected {
                return Err(format!("byte {offset} is {byte}, expected {expected}"));
            }
            offset += 1;
        }
    }
    if offset != CHUNKS * CHUNK_BYTES {
        return Err(format!("body ended after {offset} bytes"));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_every_streaming_request_finish_and_refuses_new_connections() {
    let node = NodeProcess::start(30_000).await;
    assert_eq!(
        admin(node.admin, "/healthz").await,
        (200, "serving\n".into())
    );
    let mut streams = Vec::new();
    for _ in 0..STREAMS {
        let response = open_stream(node.addr, STREAM).await;
        assert_eq!(response.status(), 200);
        streams.push(response);
    }

    node.signal("TERM");
    let started = Instant::now();
    loop {
        let (status, phase) = admin(node.admin, "/healthz").await;
        if status == 503 {
            assert_eq!(phase, "draining\n");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "never drained");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (_, metrics) = admin(node.admin, "/metrics").await;
    assert!(
        metrics.contains(&format!("edge_in_flight_requests {STREAMS}")),
        "every body still streaming when the drain began"
    );
    assert!(metrics.contains("edge_node_phase{phase=\"draining\"} 1"));
    assert!(
        TcpStream::connect(node.addr).await.is_err(),
        "new connections are refused while draining"
    );

    let results = futures::future::join_all(streams.into_iter().map(read_and_check)).await;
    let failed: Vec<_> = results.into_iter().filter_map(Result::err).collect();
    assert!(
        failed.is_empty(),
        "{} of {STREAMS} broken: {failed:?}",
        failed.len()
    );
    let (status, stderr) = node.exit().await;
    assert!(status.success(), "{status}: {stderr}");
    assert!(!stderr.contains("cutting connections"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_cuts_what_is_left_and_says_how_many() {
    let node = NodeProcess::start(30_000).await;
    let mut streams = Vec::new();
    for _ in 0..3 {
        streams.push(open_stream(node.addr, LONG_STREAM).await);
    }
    node.signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    node.signal("INT");
    let (status, stderr) = node.exit().await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(status.success(), "{status}: {stderr}");
    assert!(stderr.contains("cut_connections=3"), "{stderr}");
    for stream in streams {
        assert!(
            read_and_check(stream).await.is_err(),
            "a cut body must not look complete"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grace_period_bounds_the_drain() {
    let node = NodeProcess::start(500).await;
    let stream = open_stream(node.addr, LONG_STREAM).await;
    let started = Instant::now();
    node.signal("TERM");
    let (status, stderr) = node.exit().await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(5),
        "stopped after {took:?}"
    );
    assert!(status.success(), "{status}: {stderr}");
    assert!(stderr.contains("drain grace period over"), "{stderr}");
    assert!(stderr.contains("cut_connections=1"), "{stderr}");
    assert!(read_and_check(stream).await.is_err());
}

/// A worker thread the kernel does not run for a while (on a loaded
/// machine, preempted; here the whole process, stopped by SIGSTOP while a
/// guest computes) charges the guest for the CPU it used, not for the time
/// it was stopped: the guest (busy 30 ms of its 50 ms budget) sends its
/// whole body after a 300 ms stop, instead of being cut at the budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_is_not_charged_for_time_the_node_was_not_running() {
    let node = NodeProcess::start(30_000).await;
    let response = open_stream(node.addr, "/?chunks=2&size=16384&busy_ms=30").await;
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut received = Vec::new();
    let mut stopped = false;
    while let Some(frame) = body.frame().await {
        let frame =
            frame.unwrap_or_else(|e| panic!("body cut after {} bytes: {e}", received.len()));
        let Some(data) = frame.data_ref() else {
            continue;
        };
        received.extend_from_slice(data);
        // The first chunk is out: the guest is now computing the second.
        if !stopped {
            stopped = true;
            node.signal("STOP");
            tokio::time::sleep(Duration::from_millis(300)).await;
            node.signal("CONT");
        }
    }
    let expected: Vec<u8> = [vec![b'a'; 16384], vec![b'b'; 16384]].concat();
    assert!(
        received == expected,
        "the body ended after {} of {} bytes",
        received.len(),
        expected.len()
    );
    let (_, metrics) = admin(node.admin, "/metrics").await;
    assert!(
        !metrics.contains("edge_guest_terminations_total{"),
        "no guest was stopped"
    );
}
