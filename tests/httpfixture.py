"""A loopback HTTP server for the download tests: range requests, ETags, and
injected faults (a transfer dropped midway, ranges ignored, wrong checksums)."""

from __future__ import annotations

import hashlib
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FileServer:
    """Serves ``files`` (URL path -> bytes) on 127.0.0.1 in a background thread."""

    def __init__(self, files: dict[str, bytes]):
        self.files = dict(files)
        self.no_range: set[str] = set()  # paths whose Range headers are ignored
        self.drop: dict[str, int] = {}  # path -> cut the next transfer longer than this many bytes after that many (once)
        self.bad_etag: set[str] = set()  # paths that report a wrong sha256 as ETag
        self.log: list[tuple[str, str | None]] = []  # (path, Range header)
        self.sent: dict[str, int] = {}  # body bytes sent per path
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _head(self, send_body: bool):
                path = self.path.split("?")[0]
                rng = self.headers.get("Range")
                server.log.append((path, rng))
                if path not in server.files:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = server.files[path]
                etag = hashlib.sha256(body).hexdigest()
                if path in server.bad_etag:
                    etag = "0" * 64
                start, end, status = 0, len(body) - 1, 200
                m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng or "")
                if m and path not in server.no_range:
                    start = int(m.group(1))
                    end = min(int(m.group(2)) if m.group(2) else len(body) - 1, len(body) - 1)
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    status = 206
                chunk = body[start:end + 1]
                self.send_response(status)
                self.send_header("Content-Length", str(len(chunk)))
                self.send_header("ETag", f'"{etag}"')
                if path not in server.no_range:
                    self.send_header("Accept-Ranges", "bytes")
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{end}/{len(body)}")
                self.end_headers()
                if not send_body:
                    return
                cut = server.drop.get(path)
                if cut is not None and cut < len(chunk):  # cut the next transfer longer than `cut`
                    del server.drop[path]
                    self.wfile.write(chunk[:cut])
                    self.wfile.flush()
                    server.sent[path] = server.sent.get(path, 0) + cut
                    self.close_connection = True
                    return
                self.wfile.write(chunk)
                server.sent[path] = server.sent.get(path, 0) + len(chunk)

            def do_GET(self):
                self._head(True)

            def do_HEAD(self):
                self._head(False)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "FileServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
