"""{{name}}: a request handler for the edge platform, in Python.

`edgectl dev` builds it with componentize-py (against the platform's WIT in
wit/) and serves it on loopback, again on every change; `edgectl deploy
{{name}}` builds it and deploys it.
"""

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
        body = f"hello from {{name}}\npath: {path.split('?')[0]}\n".encode()
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
            stream.blocking_write_and_flush(body)
        OutgoingBody.finish(response_body, None)
