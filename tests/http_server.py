"""A local HTTP server on 127.0.0.1 that serves one body at every path, with Range support,
and misbehaves on request: the download tests of every dataset use it."""

from __future__ import annotations

import contextlib
import http.server
import re
import threading
from collections.abc import Iterator


class Server(http.server.ThreadingHTTPServer):
    """Serves ``body`` at every path. ``cut``: bytes sent per response before the connection is
    closed (the headers still announce the whole rest); ``honour_range``: False answers every
    request with the whole file; ``status``: answer every request with this error."""

    daemon_threads = True

    def __init__(self, body: bytes):
        super().__init__(("127.0.0.1", 0), Handler)
        self.body = body
        self.cut: int | None = None
        self.honour_range = True
        self.status: int | None = None
        self.ranges: list[str | None] = []

    def url(self, name: str = "file.zip") -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{name}"


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        srv = self.server
        body = srv.body
        asked = self.headers.get("Range")
        srv.ranges.append(asked)
        if srv.status:
            self.send_error(srv.status)
            return
        start = int(re.fullmatch(r"bytes=(\d+)-", asked)[1]) if asked else 0
        if asked and srv.honour_range:
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            start = 0
            self.send_response(200)
        piece = body[start:]
        self.send_header("Content-Length", str(len(piece)))
        self.end_headers()
        if srv.cut is not None:
            piece = piece[:srv.cut]
            self.close_connection = True
        self.wfile.write(piece)

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serving(body: bytes) -> Iterator[Server]:
    srv = Server(body)
    thread = threading.Thread(target=srv.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
