"""A wasi:http/proxy handler in Python, built with componentize-py.

Answers every request with a greeting, the method and the path, and prints
one log line. Python's runtime also imports wasi:cli/environment, exit,
filesystem and sockets, which the node links with nothing behind them.

Build: scripts/build-python-guest.sh (-> target/guests/python-hello.wasm)
"""

import os
import sys

from componentize_py_types import Ok
from wit_world import exports
from wit_world.imports.types import (
    Fields,
    IncomingRequest,
    OutgoingBody,
    OutgoingResponse,
    ResponseOutparam,
)


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        path = request.path_with_query() or "/"
        method = type(request.method()).__name__.removeprefix("Method_").upper()
        print(f"python-hello: {method} {path}", file=sys.stderr)
        body = (
            f"hello from python\nmethod: {method}\npath: {path}\n"
            f"env-vars: {len(os.environ)}\n"
        ).encode()
        response = OutgoingResponse(
            Fields.from_list(
                [
                    ("content-type", b"text/plain; charset=utf-8"),
                    ("content-length", str(len(body)).encode()),
                ]
            )
        )
        response_body = response.body()
        ResponseOutparam.set(response_out, Ok(response))
        with response_body.write() as stream:
            for i in range(0, len(body), 4096):
                stream.blocking_write_and_flush(body[i : i + 4096])
        OutgoingBody.finish(response_body, None)
