#!/usr/bin/env python3
"""An HTTP/3 client independent of the node's own stack (aioquic).

    h3_get.py HOST PORT SERVER_NAME PATH CA_FILE [EXTRA_FIELDS]

Connects to HOST:PORT over QUIC with SERVER_NAME as SNI and :authority,
verifies the certificate against CA_FILE, sends GET PATH, and prints the
answer as one JSON object: {"status", "headers", "body"}. Exits non-zero on
any failure. With EXTRA_FIELDS, the request carries that many more header
fields (`x-extra-N`, 10 bytes each).
"""

import asyncio
import json
import sys

from aioquic.asyncio import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration


class Client(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.http = H3Connection(self._quic)
        self.done = asyncio.get_running_loop().create_future()
        self.status = None
        self.headers = {}
        self.body = b""

    def get(self, authority, path, extra_fields=0):
        stream_id = self._quic.get_next_available_stream_id()
        headers = [
            (b":method", b"GET"),
            (b":scheme", b"https"),
            (b":authority", authority.encode()),
            (b":path", path.encode()),
            (b"user-agent", b"aioquic"),
        ]
        for i in range(extra_fields):
            headers.append((f"x-extra-{i}".encode(), b"x" * 10))
        self.http.send_headers(stream_id, headers, end_stream=True)
        self.transmit()

    def quic_event_received(self, event):
        for http_event in self.http.handle_event(event):
            if isinstance(http_event, HeadersReceived):
                for name, value in http_event.headers:
                    if name == b":status":
                        self.status = int(value)
                    else:
                        self.headers[name.decode()] = value.decode()
            elif isinstance(http_event, DataReceived):
                self.body += http_event.data
            if getattr(http_event, "stream_ended", False) and not self.done.done():
                self.done.set_result(None)


async def main(host, port, server_name, path, ca_file, extra_fields):
    configuration = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN)
    configuration.server_name = server_name
    configuration.load_verify_locations(ca_file)
    async with connect(host, port, configuration=configuration, create_protocol=Client) as client:
        client.get(server_name, path, extra_fields)
        await asyncio.wait_for(client.done, timeout=10)
        print(json.dumps({
            "status": client.status,
            "headers": client.headers,
            "body": client.body.decode(errors="replace"),
        }))


if __name__ == "__main__":
    host, port, server_name, path, ca_file = sys.argv[1:6]
    extra = int(sys.argv[6]) if len(sys.argv) > 6 else 0
    asyncio.run(asyncio.wait_for(main(host, int(port), server_name, path, ca_file, extra), timeout=20))
