//! The admin listener: `/metrics` (Prometheus text format) and `/healthz`
//! (the lifecycle phase; 200 only while serving).
//! It binds to loopback by default: metrics name every service on the node.

use std::convert::Infallible;
use std::sync::Arc;

use crate::lifecycle::Shutdown;
use crate::node_state::AdminContext;
use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

pub async fn serve(listener: TcpListener, node: Arc<AdminContext>, mut shutdown: Shutdown) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
            () = shutdown.stopped() => return,
        };
        let node = Arc::clone(&node);
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let node = Arc::clone(&node);
                async move { Ok::<_, Infallible>(route(&node, &request)) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn route(node: &AdminContext, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match request.uri().path() {
        "/metrics" => (
            StatusCode::OK,
            "text/plain; version=0.0.4",
            node.metrics.render(node.cache.usage()),
        ),
        // 200 only while serving: a draining node must get no new traffic.
        "/healthz" => {
            let phase = node.lifecycle.phase();
            let status = if phase == crate::lifecycle::Phase::Serving {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            (status, "text/plain", format!("{}\n", phase.as_str()))
        }
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_string(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    response
}
