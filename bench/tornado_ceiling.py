"""The ceiling of Tornado's HTTP/1 server alone: no Django, no threads, a delegate
that answers every request with "Hello, world!" as Hurricane answers /plain.

    python bench/tornado_ceiling.py 8821 &
    wrk -t2 -c64 -d10s http://127.0.0.1:8821/plain

What it serves per second on one core bounds what any Tornado-based server can do
before Django runs (bench/results/profile-plain.md).
"""

import asyncio
import sys

from tornado import httputil
from tornado.httpserver import HTTPServer

BODY = b"Hello, world!"
HEADERS = {"Content-Type": "text/plain", "Content-Length": str(len(BODY))}


class Hello(httputil.HTTPMessageDelegate):
    def __init__(self, connection: httputil.HTTPConnection) -> None:
        self.connection = connection

    def finish(self) -> None:
        self.connection.write_headers(
            httputil.ResponseStartLine("HTTP/1.1", 200, "OK"), httputil.HTTPHeaders(HEADERS), BODY
        )
        self.connection.finish()


class Router(httputil.HTTPServerConnectionDelegate):
    def start_request(self, server_conn: object, request_conn: httputil.HTTPConnection) -> Hello:
        return Hello(request_conn)


async def main(port: int) -> None:
    server = HTTPServer(Router())
    server.listen(port, "127.0.0.1")
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 8821))
