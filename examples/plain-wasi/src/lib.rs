//! A standard `wasi:http/proxy` component written against the `wasi` crate's
//! generated bindings alone, the way any toolchain would produce one. The
//! platform must run it unchanged.

use std::io::Write as _;

use wasi::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

struct Handler;

impl wasi::exports::http::incoming_handler::Guest for Handler {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let body = format!("plain wasi component at {path}\n");
        let headers = Fields::from_list(&[("content-type".to_string(), b"text/plain".to_vec())])
            .expect("static header is valid");
        let response = OutgoingResponse::new(headers);
        let outgoing = response.body().expect("body is taken once");
        ResponseOutparam::set(response_out, Ok(response));
        let mut stream = outgoing.write().expect("stream is taken once");
        stream.write_all(body.as_bytes()).expect("write body");
        stream.flush().expect("flush body");
        drop(stream);
        OutgoingBody::finish(outgoing, None).expect("finish body");
    }
}

wasi::http::proxy::export!(Handler);
