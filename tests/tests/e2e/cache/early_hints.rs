//! 103 Early Hints from an origin, passed on to HTTP/1.1 clients.

use super::*;

/// An origin that answers `/hinted*` with `103 Early Hints`, then the page
/// (for `/hinted` itself, once `release` is notified); other paths with the
/// page alone. Written by hand: hyper's server cannot send a 1xx.
async fn hinting_origin(
    release: Arc<tokio::sync::Notify>,
) -> (std::net::SocketAddr, Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let log = Arc::clone(&log);
            let release = Arc::clone(&release);
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
                    buffer.drain(..end + 4);
                    let path = head.split(' ').nth(1).unwrap_or("/").to_string();
                    log.lock().expect("log").push(path.clone());
                    if path.starts_with("/hinted") {
                        let hints = "HTTP/1.1 103 Early Hints\r\n\
                                     link: </style.css>; rel=preload; as=style\r\n\
                                     connection: x-hop\r\nx-hop: 1\r\n\
                                     content-length: 0\r\n\r\n";
                        if stream.write_all(hints.as_bytes()).await.is_err() {
                            return;
                        }
                        if path == "/hinted" {
                            let wait = Duration::from_secs(10);
                            let _ = tokio::time::timeout(wait, release.notified()).await;
                        }
                    }
                    let page = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\ncache-control: max-age=60\r\n\r\n{path}",
                        path.len()
                    );
                    if stream.write_all(page.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// Reads from `stream` onto `text` until `done(text)`.
async fn read_until(
    stream: &mut tokio::net::TcpStream,
    mut text: String,
    done: impl Fn(&str) -> bool,
) -> String {
    use tokio::io::AsyncReadExt;
    let mut chunk = [0u8; 4096];
    while !done(&text) {
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .expect("an answer in time")
            .expect("read");
        assert!(read > 0, "closed early after {text:?}");
        text.push_str(&String::from_utf8_lossy(&chunk[..read]));
    }
    text
}

/// Whether `text` holds a whole final response (a 200 with its
/// Content-Length bytes), after any interim ones.
fn has_whole_response(text: &str) -> bool {
    let Some(start) = text.rfind("HTTP/1.1 200") else {
        return false;
    };
    let Some(head_end) = text[start..].find("\r\n\r\n").map(|i| start + i + 4) else {
        return false;
    };
    let length: usize = text[start..head_end]
        .lines()
        .find_map(|line| {
            let line = line.to_ascii_lowercase();
            line.strip_prefix("content-length: ")?.trim().parse().ok()
        })
        .expect("content-length");
    text.len() >= head_end + length
}

/// RFC 9110 15.2 and RFC 8297: a proxy passes on the 1xx responses it did
/// not ask for. An origin's `103 Early Hints` reaches an HTTP/1.1 client
/// when the origin sends it, before the response (without hop-by-hop
/// fields), on a connection that keeps working; a stored response is
/// served without them; HTTP/1.0 and HTTP/2 clients get the response alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origins_early_hints_reach_an_http11_client_before_the_response() {
    use tokio::io::AsyncWriteExt;
    let release = Arc::new(tokio::sync::Notify::new());
    let (origin, seen) = hinting_origin(Arc::clone(&release)).await;
    let mut backend = edge_config::BackendSpec::new(format!("http://{origin}"));
    backend.allow_private_addresses = true;
    let mut quiet = backend.clone();
    quiet.forward_interim_responses = false;
    let node = TestNode::start(vec![
        TestService::example("proxy", "caching-proxy").backend("origin", backend),
        TestService::example("quiet", "caching-proxy").backend("origin", quiet),
    ])
    .await;

    let mut client = tokio::net::TcpStream::connect(node.addr)
        .await
        .expect("connect");
    let ask = |path: &str| format!("GET {path} HTTP/1.1\r\nhost: proxy.test\r\n\r\n");
    client
        .write_all(ask("/hinted").as_bytes())
        .await
        .expect("write");
    // The hints arrive while the origin still holds the page back.
    let hints = read_until(&mut client, String::new(), |t| t.contains("\r\n\r\n")).await;
    assert!(hints.starts_with("HTTP/1.1 103 Early Hints\r\n"), "{hints}");
    assert!(
        hints.contains("\r\nlink: </style.css>; rel=preload; as=style\r\n"),
        "{hints}"
    );
    assert!(!hints.contains("x-hop"), "hop-by-hop fields stay: {hints}");
    assert!(!hints.contains("content-length"), "a 1xx has none: {hints}");
    release.notify_one();
    let text = read_until(&mut client, hints, has_whole_response).await;
    let page = text.find("HTTP/1.1 200 OK\r\n").expect(&text);
    assert_eq!(text.matches(" 103 ").count(), 1, "{text}");
    assert!(!text[page..].contains("link:"), "{text}");
    assert!(text.ends_with("/hinted"), "{text}");

    // The same connection goes on: a page without hints, then the stored
    // hinted one, served without its hints or their fields.
    client
        .write_all(ask("/plain").as_bytes())
        .await
        .expect("write");
    let text = read_until(&mut client, String::new(), has_whole_response).await;
    assert!(
        text.starts_with("HTTP/1.1 200 OK\r\n") && text.ends_with("/plain"),
        "{text}"
    );
    client
        .write_all(ask("/hinted").as_bytes())
        .await
        .expect("write");
    let text = read_until(&mut client, String::new(), has_whole_response).await;
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(
        !text.contains("link:") && text.ends_with("/hinted"),
        "{text}"
    );
    assert_eq!(
        seen.lock()
            .expect("log")
            .iter()
            .filter(|p| *p == "/hinted")
            .count(),
        1,
        "the second was a hit"
    );

    // HTTP/1.0: no 1xx (RFC 9110 15.2); nor from a backend whose hints are
    // not for clients: the response alone.
    let unhinted: [(&[u8], &str); 2] = [
        (
            b"GET /hinted-1.0 HTTP/1.0\r\nhost: proxy.test\r\n\r\n",
            "HTTP/1.0 200 OK\r\n",
        ),
        (
            b"GET /hinted-quiet HTTP/1.1\r\nhost: quiet.test\r\nconnection: close\r\n\r\n",
            "HTTP/1.1 200 OK\r\n",
        ),
    ];
    for (ask, status_line) in unhinted {
        let (text, _) = edge_tests::client::raw(node.addr, ask, Duration::from_secs(5)).await;
        assert!(text.starts_with(status_line), "{text}");
        assert!(!text.contains(" 103 "), "{text}");
    }
    // HTTP/2 cannot carry one: the response alone.
    let reply = send(
        node.addr,
        Protocol::Http2,
        request("GET", "proxy.test", "/hinted-h2", Bytes::new()),
    )
    .await;
    assert_eq!((reply.status, reply.text().as_str()), (200, "/hinted-h2"));
    node.shutdown().await;
}
