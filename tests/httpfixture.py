"""Loopback HTTP servers for the download tests: a plain file server (for
torchvision's weights) and a stand-in for the Hugging Face Hub with its CDN.

How the real Hub answers, as read in huggingface_hub's own client
(``src/huggingface_hub/file_download.py``: ``get_hf_file_metadata`` and the
redirect handling in ``utils/_http.py``, version 2.4 installed here; its README
"small files are returned directly, large files (git-lfs) via a redirect to a
Cloudfront URL"):

* ``HEAD``/``GET {endpoint}/[datasets/]{repo}/resolve/{revision}/{path}``.
  A small file stored in git is answered directly (200) with ``ETag`` = its git
  blob id (40 hex) and ``X-Repo-Commit``. A stored (LFS/Xet) file is answered
  with a **302** to a CDN on another host; that 302 carries the file's sha256 as
  ``X-Linked-Etag`` and its size as ``X-Linked-Size`` (the client does not
  follow a redirect to another host: "the file metadata is carried by this very
  response"). A missing file is a 404 with ``X-Error-Code: EntryNotFound``.
* The CDN serves the bytes with range support, its own ``ETag`` (64 hex, but
  not the file's sha256), and signed addresses that expire (403 afterwards, as
  S3/CloudFront do).

The servers keep a clock that tests can move (``hub.advance(seconds)``), so
expiry is tested without waiting.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COMMIT = "c0ffee" + "0" * 34  # the revision every repo of the stand-in Hub is at
# stored with LFS/Xet on the Hub: the patterns of the .gitattributes a new Hub repository starts with
# (*.bin, *.csv in datasets, *.gz, *.pth, *.safetensors, *.zip, ...) among them
LFS_SUFFIXES = (".csv", ".zip", ".safetensors", ".pth", ".bin", ".gz")


def git_blob_id(data: bytes) -> str:
    """The id git gives a file's content (the Hub's ETag of a small file)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class _Server:
    """A ThreadingHTTPServer on 127.0.0.1 with a request log."""

    def __init__(self, handler_cls):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler_cls)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self):
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def _send_body(handler, body: bytes, status: int, headers: dict, send: bool, rng: str | None,
               ranges: bool, cut: int | None) -> int:
    """Answer with ``body`` (or the part ``rng`` asks for); returns the body bytes sent."""
    start, end = 0, len(body) - 1
    m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng or "")
    if m and ranges and status == 200:
        start = int(m.group(1))
        end = min(int(m.group(2)) if m.group(2) else len(body) - 1, len(body) - 1)
        if start >= len(body):
            handler.send_response(416)
            handler.send_header("Content-Range", f"bytes */{len(body)}")
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return 0
        status = 206
    chunk = body[start:end + 1]
    handler.send_response(status)
    handler.send_header("Content-Length", str(len(chunk)))
    for k, v in headers.items():
        handler.send_header(k, v)
    if ranges:
        handler.send_header("Accept-Ranges", "bytes")
    if status == 206:
        handler.send_header("Content-Range", f"bytes {start}-{end}/{len(body)}")
    handler.end_headers()
    if not send:
        return 0
    if cut is not None and cut < len(chunk):  # the connection drops after `cut` bytes
        handler.wfile.write(chunk[:cut])
        handler.wfile.flush()
        handler.close_connection = True
        return cut
    handler.wfile.write(chunk)
    return len(chunk)


class _Quiet(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.answer(True)

    def do_HEAD(self):
        self.answer(False)


class FileServer:
    """Serves ``files`` (URL path -> bytes) like a static file host (download.pytorch.org, a web
    server, a release page): ranges, redirects, and faults on demand (a dropped transfer, ranges
    ignored)."""

    def __init__(self, files: dict[str, bytes]):
        self.files = dict(files)
        # path -> path on this server answered with a 302 to it, as a static host hands a release asset
        # to its storage (GitHub's "Get a release asset" answers 302 with the Location of the file)
        self.redirects: dict[str, str] = {}
        self.no_range: set[str] = set()
        self.drop: dict[str, int] = {}  # path -> cut the next transfer longer than this after that many bytes (once)
        self.log: list[tuple[str, str | None]] = []
        self.sent: dict[str, int] = {}
        server = self

        class Handler(_Quiet):
            def answer(self, send):
                path = self.path.split("?")[0]
                rng = self.headers.get("Range")
                server.log.append((path, rng))
                if path in server.redirects:
                    self.send_response(302)
                    self.send_header("Location", server.url + server.redirects[path])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if path not in server.files:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = server.files[path]
                cut = server.drop.get(path) if send else None
                if cut is not None and cut < len(body):
                    del server.drop[path]
                n = _send_body(self, body, 200, {"ETag": f'"{hashlib.md5(body).hexdigest()}"'}, send, rng,
                               path not in server.no_range, cut)
                server.sent[path] = server.sent.get(path, 0) + n

        self._server = _Server(Handler)
        self.url = self._server.url

    def __enter__(self) -> "FileServer":
        self._server.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.stop()


class HubServer:
    """A stand-in for huggingface.co and its CDN, on two loopback ports.

    ``repos`` maps ``"datasets/osv5m/osv5m"`` or ``"smp-hub/segformer-..."``
    (the URL prefix before ``/resolve/``) to ``{path in repo: bytes}``. Files
    whose names end in :data:`LFS_SUFFIXES` are "stored" and redirected to the
    CDN; the rest are served directly.

    Faults, set by tests:

    * ``ttl``: seconds a CDN address stays valid (then 403);
    * ``clock_step``: seconds the clock moves on each CDN request (so addresses
      expire during a long run);
    * ``drop[path]``: cut the next CDN transfer of that file after that many bytes;
    * ``no_range``: CDN paths (repo paths) whose Range headers are ignored;
    * ``corrupt``: repo paths whose bytes (from the CDN, or from the Hub for a
      small file) have one flipped byte (the Hub's hash then no longer matches);
    * ``no_commit_header``: answer like a server that is not a Hub;
    * ``gated``: repos that answer 401 to a request without ``Authorization: Bearer <token>``.
    """

    def __init__(self, repos: dict[str, dict[str, bytes]], ttl: float = 3600.0):
        self.repos = {k: dict(v) for k, v in repos.items()}
        self.ttl, self.clock_step, self.now = ttl, 0.0, 1_000_000.0
        self.drop: dict[str, int] = {}
        self.no_range: set[str] = set()
        self.corrupt: set[str] = set()
        self.no_commit_header = False
        self.gated: set[str] = set()  # repos answering 401 unless "Authorization: Bearer <token>" comes along
        self.token = "hf_" + "t" * 34
        self.log: list[tuple[str, str, str | None]] = []  # (host "hub"/"cdn", path, Range header)
        self.authorized: list[tuple[str, bool]] = []  # (host, whether an Authorization header came along)
        self.sent: dict[str, int] = {}  # CDN body bytes per repo path
        self.signed = 0  # CDN addresses handed out
        self.expired = 0  # CDN requests refused as expired
        self._key = b"stand-in signing key"
        self._lock = threading.Lock()
        hub = self

        def find(prefix_and_path: str):
            for repo, files in hub.repos.items():
                head = f"/{repo}/resolve/"
                if prefix_and_path.startswith(head):
                    revision, _, name = prefix_and_path[len(head):].partition("/")
                    return repo, revision, name, files.get(urllib.parse.unquote(name))
            return None, None, None, None

        class HubHandler(_Quiet):
            def answer(self, send):
                path = self.path.split("?")[0]
                hub.log.append(("hub", path, self.headers.get("Range")))
                hub.authorized.append(("hub", "Authorization" in self.headers))
                repo, revision, name, body = find(path)
                common = {} if hub.no_commit_header else {"X-Repo-Commit": COMMIT}
                if repo in hub.gated and self.headers.get("Authorization") != f"Bearer {hub.token}":
                    # a gated or private repository asked without the user's token: 401, as the Hub answers
                    self.send_response(401)
                    self.send_header("X-Error-Code", "GatedRepo")
                    self.send_header("X-Error-Message", "Access to this repository is restricted")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if body is None or revision not in ("main", COMMIT):
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound" if repo else "RepoNotFound")
                    self.send_header("X-Error-Message", "Entry not found" if repo else "Repository not found")
                    for k, v in common.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if name.endswith(LFS_SUFFIXES):  # stored file: 302 to a signed CDN address
                    sha = hashlib.sha256(body).hexdigest()
                    self.send_response(302)
                    self.send_header("Location", hub.sign(repo, name))
                    self.send_header("X-Linked-Etag", f'"{sha}"')
                    self.send_header("X-Linked-Size", str(len(body)))
                    self.send_header("ETag", f'W/"{hashlib.md5(b"redirect" + body).hexdigest()}"')
                    for k, v in common.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                etag = git_blob_id(body)
                if name in hub.corrupt:  # served directly, with a flipped byte
                    body = bytes(body[:len(body) // 2]) + bytes([body[len(body) // 2] ^ 0xFF]) + body[len(body) // 2 + 1:]
                _send_body(self, body, 200, {"ETag": f'"{etag}"', **common}, send, self.headers.get("Range"), True, None)

        class CdnHandler(_Quiet):
            def answer(self, send):
                parts = urllib.parse.urlsplit(self.path)
                key = urllib.parse.unquote(parts.path.lstrip("/"))
                query = dict(urllib.parse.parse_qsl(parts.query))
                rng = self.headers.get("Range")
                hub.log.append(("cdn", key, rng))
                hub.authorized.append(("cdn", "Authorization" in self.headers))
                with hub._lock:
                    now = hub.now
                    hub.now += hub.clock_step
                expires = float(query.get("Expires", 0))
                good = hmac.compare_digest(query.get("Signature", ""), hub._signature(key, expires))
                repo, _, name = key.rpartition("/resolve-cache/")
                body = hub.repos.get(repo, {}).get(name)
                if not good or body is None or now > expires:
                    hub.expired += good and body is not None
                    msg = b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"
                    self.send_response(403)
                    self.send_header("Content-Length", str(len(msg)))
                    self.end_headers()
                    if send:
                        self.wfile.write(msg)
                    return
                if name in hub.corrupt:
                    body = bytearray(body)
                    body[len(body) // 2] ^= 0xFF
                    body = bytes(body)
                cut = hub.drop.get(name) if send else None
                if cut is not None and cut < len(body):
                    del hub.drop[name]
                cdn_etag = hashlib.sha256(b"cdn-object:" + body).hexdigest()  # 64 hex, not the file's sha256
                n = _send_body(self, body, 200, {"ETag": f'"{cdn_etag}"'}, send, rng, name not in hub.no_range, cut)
                hub.sent[name] = hub.sent.get(name, 0) + n

        self._hub, self._cdn = _Server(HubHandler), _Server(CdnHandler)
        self.url, self.cdn_url = self._hub.url, self._cdn.url

    def _signature(self, key: str, expires: float) -> str:
        return hmac.new(self._key, f"{key}|{expires}".encode(), "sha256").hexdigest()

    def sign(self, repo: str, name: str) -> str:
        """A fresh CDN address for file ``name`` of ``repo``, valid for ``ttl`` seconds."""
        key = f"{repo}/resolve-cache/{name}"
        with self._lock:
            expires = self.now + self.ttl
            self.signed += 1
        query = urllib.parse.urlencode({"Expires": expires, "Signature": self._signature(key, expires)})
        return f"{self.cdn_url}/{urllib.parse.quote(key)}?{query}"

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds

    def requests(self, host: str, name: str | None = None) -> list[tuple[str, str | None]]:
        """(path, Range) of the requests to ``host`` ("hub" or "cdn"), optionally only for one file."""
        return [(p, r) for h, p, r in self.log if h == host and (name is None or p.endswith("/" + name))]

    def __enter__(self) -> "HubServer":
        self._hub.start()
        self._cdn.start()
        return self

    def __exit__(self, *exc) -> None:
        self._hub.stop()
        self._cdn.stop()
