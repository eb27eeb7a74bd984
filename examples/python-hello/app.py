"""A wasi:http/proxy handler in Python, built with componentize-py.

Answers every request with a greeting, the method and the path, and prints
one log line. Python's runtime also imports wasi:cli/environment, exit,
filesystem and sockets, which the node links with nothing behind them.

Behind the `auth` gate (examples/auth), which calls it as a service backend,
the greeting also names how the gate authenticated the client
(`x-authenticated`).

Two routes use the standard state interfaces: `/visits` counts the visit in
the `counters` KV store (wasi:keyvalue/atomics), `/flag` reads `feature_x`
from the service's config (wasi:config/store).

Build: scripts/build-python-guest.sh (-> target/guests/python-hello.wasm)
"""

import os
import sys

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.imports import atomics, wasi_config_store, wasi_keyvalue_store
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
        status = 200
        if path == "/visits":
            status, text = visits()
        elif path == "/flag":
            flag = wasi_config_store.get("feature_x")
            text = f"feature_x is {'on' if flag == 'on' else 'off'}\n"
        else:
            text = (
                f"hello from python\nmethod: {method}\npath: {path}\n"
                f"env-vars: {len(os.environ)}\n"
            )
            authenticated = request.headers().get("x-authenticated")
            if authenticated:
                text += f"authenticated: {authenticated[0].decode(errors='replace')}\n"

        body = text.encode()
        response = OutgoingResponse(
            Fields.from_list(
                [
                    ("content-type", b"text/plain; charset=utf-8"),
                    ("content-length", str(len(body)).encode()),
                ]
            )
        )
        response.set_status_code(status)
        response_body = response.body()
        ResponseOutparam.set(response_out, Ok(response))
        with response_body.write() as stream:
            for i in range(0, len(body), 4096):
                stream.blocking_write_and_flush(body[i : i + 4096])
        OutgoingBody.finish(response_body, None)


def visits() -> tuple[int, str]:
    """Counts the visit in the `counters` store; the status and the text."""
    try:
        bucket = wasi_keyvalue_store.open("counters")
        return 200, f"visit {atomics.increment(bucket, 'visits', 1)}\n"
    except Err as error:
        if isinstance(error.value, wasi_keyvalue_store.Error_NoSuchStore):
            return 404, "no-such-store\n"
        return 503, f"{error.value}\n"
