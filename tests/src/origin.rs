//! A test origin on 127.0.0.1 that counts what it receives and answers as
//! the test says.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// What the origin answers.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// Wait this long before sending the response head.
    pub delay: Duration,
    /// Send the head, then stall this long before the body.
    pub body_stall: Duration,
}

impl Answer {
    pub fn ok(body: impl Into<String>) -> Self {
        Self {
            status: 200,
            headers: Vec::new(),
            body: body.into(),
            delay: Duration::ZERO,
            body_stall: Duration::ZERO,
        }
    }

    pub fn status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    pub fn body_stall(mut self, stall: Duration) -> Self {
        self.body_stall = stall;
        self
    }
}

/// One request as the origin saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
}

impl Seen {
    /// A request header's value, as the origin's handler reads it.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[derive(Debug, Default)]
struct Concurrency {
    now: AtomicUsize,
    max: AtomicUsize,
}

type Handler = dyn Fn(&Seen, usize) -> Answer + Send + Sync;

/// A running test origin.
pub struct TestOrigin {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    concurrency: Arc<Concurrency>,
    task: tokio::task::JoinHandle<()>,
    /// Turned true by [`TestOrigin::stop`]: every open connection closes.
    stopped: tokio::sync::watch::Sender<bool>,
}

impl std::fmt::Debug for TestOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestOrigin")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl TestOrigin {
    /// Starts an origin that answers with `handler(request, n)`, where `n`
    /// counts the requests for that path so far (1 for the first).
    pub async fn start(handler: impl Fn(&Seen, usize) -> Answer + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
        let addr = listener.local_addr().expect("origin address");
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let handler: Arc<Handler> = Arc::new(handler);
        let log = Arc::clone(&seen);
        let concurrency: Arc<Concurrency> = Arc::default();
        let gauge = Arc::clone(&concurrency);
        let (stopped, stop) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let handler = Arc::clone(&handler);
                let log = Arc::clone(&log);
                let gauge = Arc::clone(&gauge);
                let mut stop = stop.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                        let handler = Arc::clone(&handler);
                        let log = Arc::clone(&log);
                        let gauge = Arc::clone(&gauge);
                        async move {
                            let now = gauge.now.fetch_add(1, Ordering::SeqCst) + 1;
                            gauge.max.fetch_max(now, Ordering::SeqCst);
                            let response = answer(request, handler.as_ref(), &log).await;
                            gauge.now.fetch_sub(1, Ordering::SeqCst);
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    tokio::select! {
                        _ = connection => {}
                        _ = stop.wait_for(|stopped| *stopped) => {}
                    }
                });
            }
        });
        Self {
            addr,
            seen,
            concurrency,
            task,
            stopped,
        }
    }

    /// Stops listening and closes every connection: from now on the
    /// origin's address refuses connections.
    pub async fn stop(&mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
        self.stopped.send_replace(true);
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("origin log").clone()
    }

    /// Requests received for `path` (path and query).
    pub fn count(&self, path: &str) -> usize {
        self.seen().iter().filter(|s| s.path == path).count()
    }

    pub fn total(&self) -> usize {
        self.seen().len()
    }

    /// The most requests the origin was answering at once.
    pub fn max_concurrent(&self) -> usize {
        self.concurrency.max.load(Ordering::SeqCst)
    }
}

impl Drop for TestOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type OriginBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn answer(
    request: Request<Incoming>,
    handler: &Handler,
    log: &Mutex<Vec<Seen>>,
) -> Response<OriginBody> {
    let seen = Seen {
        method: request.method().to_string(),
        path: request
            .uri()
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_string(),
        headers: request.headers().clone(),
    };
    let _ = request.into_body().collect().await;
    let n = {
        let mut log = log.lock().expect("origin log");
        log.push(seen.clone());
        log.iter().filter(|s| s.path == seen.path).count()
    };
    let answer = handler(&seen, n);
    tokio::time::sleep(answer.delay).await;
    let body: OriginBody = if answer.body_stall.is_zero() {
        Full::new(Bytes::from(answer.body)).boxed()
    } else {
        let stall = answer.body_stall;
        let text = Bytes::from(answer.body);
        let stream = futures_stream(stall, text);
        StreamBody::new(stream).boxed()
    };
    let mut response = Response::new(body);
    *response.status_mut() = http::StatusCode::from_u16(answer.status).expect("status");
    for (name, value) in &answer.headers {
        response.headers_mut().append(
            http::HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            http::HeaderValue::from_str(value).expect("header value"),
        );
    }
    response
}

/// One chunk after `stall`, then the end.
fn futures_stream(
    stall: Duration,
    text: Bytes,
) -> impl futures::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send {
    let (sender, receiver) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        let _ = sender
            .send(Ok(Frame::data(Bytes::from_static(b"start "))))
            .await;
        tokio::time::sleep(stall).await;
        let _ = sender.send(Ok(Frame::data(text))).await;
    });
    tokio_stream_from(receiver)
}

fn tokio_stream_from<T>(
    mut receiver: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> {
    futures::stream::poll_fn(move |cx| receiver.poll_recv(cx))
}
