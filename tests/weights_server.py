"""A loopback HTTP server for the weights tests: serves files by name from memory, counts the requests,
and can trickle its bytes (to kill a download half way) or stop early (a broken-off download)."""

from __future__ import annotations

import collections
import http.server
import socket
import threading
import time


class WeightsServer:
    """http.server on 127.0.0.1 in a thread. `files` maps a URL path (no leading /) to its bytes."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: collections.Counter[str] = collections.Counter()
        self.chunk = 1 << 16
        self.trickle_s = 0.0  # pause after each chunk
        self.stop_after: int | None = None  # send only this many bytes, then close (Content-Length stays)
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                name = self.path.lstrip("/")
                server.requests[name] += 1
                data = server.files.get(name)
                if data is None:
                    self.send_error(404, "no such file")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                end = len(data) if server.stop_after is None else server.stop_after
                try:
                    for start in range(0, end, server.chunk):
                        self.wfile.write(data[start : min(start + server.chunk, end)])
                        self.wfile.flush()
                        if server.trickle_s:
                            time.sleep(server.trickle_s)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client went away (killed): nothing to do
                self.close_connection = True

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"

    def __enter__(self) -> WeightsServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def refused_url(name: str) -> str:
    """A loopback URL nobody listens on: connecting to it is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/{name}"
