"""A local HTTP server on 127.0.0.1 (random port) standing in for a data mirror and the Hugging Face hub.

It serves ``files`` (URL path → bytes) with ``Range`` support; ``cut_after`` makes the next GET of a path send
only that many bytes and then drop the connection (an interrupted download); every request is logged. Hub paths
(``/{repo}/resolve/{revision}/{file}``) answer HEAD and GET with the headers ``hf_hub_download`` reads:
``X-Repo-Commit``, ``ETag`` and ``Content-Length``.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class FileServer:
    files: dict[str, bytes] = field(default_factory=dict)
    cut_after: dict[str, int] = field(default_factory=dict)
    log: list[tuple[str, str, str | None]] = field(default_factory=list)  # (method, path, Range header)
    base_url: str = ""


def _handler(state: FileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # quiet
            pass

        def _common(self, head: bool) -> None:
            path = self.path.split("?", 1)[0]
            state.log.append((self.command, path, self.headers.get("Range")))
            body = state.files.get(path)
            if body is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            start = 0
            status = 200
            rng = self.headers.get("Range")
            if rng and rng.startswith("bytes=") and not head:
                start = int(rng[6:].split("-", 1)[0] or 0)
                if start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status = 206
            chunk = body[start:]
            self.send_response(status)
            self.send_header("Content-Length", str(len(chunk)))
            self.send_header("Accept-Ranges", "bytes")
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            if "/resolve/" in path:
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("ETag", f'"{hashlib.sha256(body).hexdigest()}"')
            self.end_headers()
            if head:
                return
            cut = state.cut_after.pop(path, None)
            if cut is not None:
                self.wfile.write(chunk[:cut])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)
                return
            self.wfile.write(chunk)

        def do_GET(self) -> None:
            self._common(head=False)

        def do_HEAD(self) -> None:
            self._common(head=True)

    return Handler


@contextmanager
def serve_files(files: dict[str, bytes] | None = None) -> Iterator[FileServer]:
    """A :class:`FileServer` listening on 127.0.0.1 for the duration of the block."""
    state = FileServer(dict(files or {}))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    state.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
