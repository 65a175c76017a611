"""Real street images and pretrained weights: the Python behind ``data_download.sh``.

Sources
-------
* **OpenStreetView-5M** (``osv5m/osv5m`` on the Hugging Face hub, CC-BY-SA-4.0,
  no account needed). A metadata CSV per split (``train.csv``, ``test.csv``)
  has one row per image with its ``unique_city``; the images sit in zip shards
  (``images/<split>/00.zip`` ...). We read each shard's table of contents and
  only the members we need with HTTP range requests (Python's :mod:`zipfile`
  does the zip parsing on a seekable HTTP file), falling back to fetching the
  whole shard when a server ignores ranges.

How Hub files are fetched
-------------------------
The Hub answers a request for a stored (LFS/Xet) file with a redirect to a CDN
whose signed address expires; the file's sha256 travels only on that redirect
(``X-Linked-Etag``), never in the CDN's own ``ETag``. So every Hub file is
*resolved* by ``huggingface_hub``'s own client (:func:`huggingface_hub.get_hf_file_metadata`:
``HF_ENDPOINT``, ``HF_TOKEN``, proxies and the Hub's redirect rules are its
business), which gives the sha256 (or, for a small file kept in git, its git
blob id), the size and the current CDN address. The bytes then come from that
address with our resumable transfer: a ``.part`` file that a rerun continues,
and an address that has expired (403/410) is resolved again and the transfer
goes on from the same byte. ``hf_hub_download`` is not used for the transfer
because (huggingface_hub 2.4) it deletes its partial file on any failure, so a
multi-gigabyte shard or ``train.csv`` would restart from zero after every
interruption.
* **GSV-Cities** (Kaggle dataset ``amaralibey/gsv-cities``) through the Kaggle
  command-line tool and the user's API token.
* **Weights**: torchvision's ImageNet weights into the torch cache, and an
  ADE20K-trained Segformer from the ``smp-hub`` organisation into ``models/``.

Safety rules (each has a test in ``tests/test_download.py``):

* every file is written under a temporary name and renamed when complete and
  verified; an interrupted transfer leaves only a ``.part`` file, which the
  next run resumes (it is never trusted as finished);
* an output folder that holds files this script did not create is refused,
  and no existing file is ever overwritten or deleted;
* each failure (no network, HTTP error, checksum mismatch, full disk,
  malformed metadata) raises :class:`DownloadError` with what to do;
* what was verified is said, never implied: a Hub file's sha256 (or git blob
  id) from the Hub, torchvision's weights against the hash prefix in their
  name, every image against its zip member's CRC-32, and the size where no
  hash exists.
"""

from __future__ import annotations

import argparse
import csv
import errno
import http.client
import hashlib
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

from .settings import REPO_ROOT, home
from .utils import progress

if TYPE_CHECKING:  # numpy and pandas are imported where used, so that --help works before installing
    import pandas as pd

HF_ENDPOINT = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
OSV5M_REPO = "osv5m/osv5m"
OSV5M_LICENCE = "CC-BY-SA-4.0"
OSV5M_SHARDS = {"train": 98, "test": 5}  # images/<split>/00.zip ... as published
PAPER_CITIES = ("Tokyo", "Pittsburgh")
GSV_DATASET = "amaralibey/gsv-cities"
#: The cities of GSV-Cities, as its archive's Images/<city>/ folders name them (the dataset's
#: Kaggle page and amaralibey/gsv-cities' data loaders, whose default cities are London and Boston).
GSV_CITIES = ("Bangkok", "Barcelona", "Boston", "Brussels", "BuenosAires", "Chicago", "Lisbon", "London",
              "LosAngeles", "Madrid", "Medellin", "Melbourne", "MexicoCity", "Miami", "Minneapolis", "OSL",
              "Osaka", "PRG", "PRS", "Phoenix", "Rome", "TRT", "WashingtonDC")
#: Other names accepted for them (compared without case, spaces, dots or hyphens).
GSV_ALIASES = {"paris": "PRS", "oslo": "OSL", "prague": "PRG", "praha": "PRG", "toronto": "TRT",
               "buenosaires": "BuenosAires", "losangeles": "LosAngeles", "la": "LosAngeles",
               "mexicocity": "MexicoCity", "ciudaddemexico": "MexicoCity", "washington": "WashingtonDC",
               "washingtondc": "WashingtonDC", "medellín": "Medellin", "lisboa": "Lisbon", "roma": "Rome",
               "bruxelles": "Brussels", "brussel": "Brussels"}
GSV_DEFAULT_CITIES = ("London", "Boston")
SEGFORMER_FILES = ("config.json", "model.safetensors")
TORCHVISION_WEIGHTS = {"resnet18": "ResNet18_Weights", "vgg11": "VGG11_Weights"}
MARKER = ".cityviz-download.json"  # marks a folder this script created
MANIFEST = "ATTRIBUTION.csv"
CACHE = ".cache"
USER_AGENT = "cityviz-data-download/1.0"
BLOCK = 64 * 1024  # read-ahead of ranged reads: a zip member header plus most of a typical JPEG


class DownloadError(RuntimeError):
    """A download failed; the message says why and what to do. ``status`` is
    the HTTP status when the server answered with an error."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


OFFLINE_HINT = ("data_download.sh needs internet. Offline, use the built-in cities (CITYVIZ_DATA=synthetic, "
                "the default) or point CITYVIZ_DATA at a folder of city images you already have "
                "(docs/real-data.md).")


# --------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------


def _show(url: str) -> str:
    """``url`` without its query (a signed CDN address's signature is nobody's business)."""
    return urllib.parse.urlsplit(url)._replace(query="").geturl()


def hub_headers(url: str) -> dict:
    """``Authorization: Bearer $HF_TOKEN`` for an address on the Hub itself (``HF_ENDPOINT``'s host), and
    nothing for any other host: a token never travels to a CDN or a teacher's web server. The Hub
    serves small git-stored files (a ``config.json``) from its own address, so a gated or private
    repository needs the token on those transfers too, not only on the metadata request."""
    token = os.environ.get("HF_TOKEN", "").strip()
    if not token:
        return {}
    host = urllib.parse.urlsplit(url).netloc.lower()
    return {"Authorization": f"Bearer {token}"} if host in _hub_hosts() else {}


#: Hosts of the Hub endpoints this process has built addresses for (``--endpoint``, a mirror).
_ENDPOINT_HOSTS: set[str] = set()


def _hub_hosts() -> set[str]:
    return {urllib.parse.urlsplit(HF_ENDPOINT).netloc.lower(), *_ENDPOINT_HOSTS}


class _NoAuthAcrossHosts(urllib.request.HTTPRedirectHandler):
    """Follow redirects, but drop the ``Authorization`` header when one leaves the host it was meant for."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and urllib.parse.urlsplit(newurl).netloc != urllib.parse.urlsplit(req.full_url).netloc:
            for name in list(new.headers):
                if name.lower() == "authorization":
                    del new.headers[name]
        return new


_OPENER = urllib.request.build_opener(_NoAuthAcrossHosts)


def _request(url: str, *, headers: dict | None = None, timeout: float = 30.0):
    """GET ``url`` (with :func:`hub_headers`); turn each kind of failure into a :class:`DownloadError`."""
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, **hub_headers(url), **(headers or {})})
    try:
        return _OPENER.open(req, timeout=timeout)
    except urllib.error.HTTPError as err:
        hint = {401: "the server asks for a login: the file may be gated or private (set HF_TOKEN for the Hub) "
                     "or the address is wrong",
                403: "access denied: the file may be gated or the address expired; rerun later",
                404: "not found: the dataset or model may have moved; check the address or --endpoint",
                429: "too many requests: wait a few minutes and rerun (finished files are kept)"}.get(
            err.code, "the server failed; rerun later (finished files are kept, partial ones resume)")
        raise DownloadError(f"HTTP {err.code} for {_show(url)}: {hint}.", status=err.code) from None
    except (urllib.error.URLError, socket.timeout, ConnectionError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise DownloadError(f"Could not reach {urllib.parse.urlsplit(url).netloc} ({reason}). {OFFLINE_HINT}") from None


def check_network(url: str, timeout: float = 5.0) -> None:
    """Fail within ``timeout`` seconds with a clear message when ``url``'s host is unreachable.
    Behind a proxy (``HTTPS_PROXY`` ...) the host may be reachable only through it, so
    nothing is checked here and the transfers say what fails."""
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    proxies = urllib.request.getproxies()
    if proxies.get(parts.scheme) and not urllib.request.proxy_bypass(parts.hostname or ""):
        return
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout).close()
    except OSError as err:
        raise DownloadError(f"No network: cannot connect to {parts.hostname}:{port} ({err}). {OFFLINE_HINT}") from None


def _disk_full(err: OSError, path: Path) -> DownloadError:
    return DownloadError(
        f"The disk is full while writing {path}. Free some space (or choose another --out / TORCH_HOME) "
        "and rerun: finished files are kept and the partial one resumes.")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _git_blob_id(path: Path) -> str:
    """The id git (and the Hub, as the ETag of a small file) gives a file's content."""
    digest = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


EXPIRED = (403, 410)  # how a CDN refuses a signed address whose time is up


def fetch_file(url: str, dest: str | Path, *, sha256: str | None = None, sha256_prefix: str | None = None,
               git_blob: str | None = None, size: int | None = None, resolve=None, label: str | None = None,
               retries: int = 3, show_progress: bool = True, timeout: float = 30.0) -> Path:
    """Download ``url`` to ``dest``: resumable (a ``.part`` file and HTTP ranges),
    verified against what the caller trusts (a ``sha256``, a ``sha256_prefix``,
    a ``git_blob`` id, a ``size``), and renamed into place only when complete.
    A server's own ``ETag`` is never trusted as a checksum (a CDN's is a hash
    of something else). ``resolve()``, when given, returns a fresh address for
    the same file: it is called once each time the current one has expired
    (HTTP 403/410), and the transfer goes on from the same byte. ``label``
    names the file in messages (default: ``dest``'s name). An existing ``dest``
    is returned untouched."""
    dest = Path(dest)
    label = label or dest.name
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    attempt, total, renewed = 0, size, False
    while True:
        offset = part.stat().st_size if part.exists() else 0
        if total is not None and offset >= total:
            break
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        try:
            resp = _request(url, headers=headers, timeout=timeout)
        except DownloadError as err:
            if err.status in EXPIRED and resolve is not None and not renewed:
                url, renewed = resolve(), True  # once per failure: a second refusal in a row is an error
                continue
            if err.status == 416 and offset:
                raise DownloadError(f"{part} is longer than {_show(url)}: it is not a part of that file. Move it away "
                                    "and rerun.") from None
            raise
        renewed = False
        with resp:
            if offset and resp.status == 206:
                told = int(resp.headers.get("Content-Range", "*/0").rsplit("/", 1)[1] or 0) or None
                mode = "ab"
            else:  # a fresh start, or a server that ignores ranges: start over
                offset, mode = 0, "wb"
                length = resp.headers.get("Content-Length")
                told = int(length) if length else None
            total = size if size is not None else told  # a size the caller trusts wins over the server's
            bar = progress(total=total, initial=offset, unit="B", unit_scale=True, desc=dest.name,
                           disable=None if show_progress else True)
            try:
                with open(part, mode) as fh:
                    while True:
                        block = resp.read(1 << 20)
                        if not block:
                            break
                        fh.write(block)
                        bar.update(len(block))
            except OSError as err:
                if err.errno == errno.ENOSPC:
                    raise _disk_full(err, part) from None
                if not isinstance(err, (ConnectionError, socket.timeout)):
                    raise
            except http.client.HTTPException:  # IncompleteRead: the server dropped the transfer
                pass
            finally:
                bar.close()
        have = part.stat().st_size
        if total is None or have >= total:
            break
        attempt += 1
        if attempt > retries:
            raise DownloadError(
                f"The transfer of {_show(url)} dropped {retries + 1} times ({have} of {total} bytes in {part}). "
                "Rerun the same command: it resumes from there.")
        time.sleep(min(2 ** attempt, 10) * 0.1)
    if total is not None and part.stat().st_size != total:
        bad = part.with_name(part.name + ".bad")
        os.replace(part, bad)
        raise DownloadError(f"{label}: {bad.stat().st_size} bytes arrived, but the file has {total}. It is kept "
                            f"as {bad} (not used); rerun to fetch it again.")
    expected, actual = None, None
    if sha256 or sha256_prefix:
        actual, expected = _sha256(part), sha256 or sha256_prefix
        ok = actual == sha256 if sha256 else actual.startswith(sha256_prefix)
        kind = "sha256"
    elif git_blob:
        actual, expected, kind = _git_blob_id(part), git_blob, "git blob id"
        ok = actual == git_blob
    if expected is not None and not ok:
        bad = part.with_name(part.name + ".bad")
        os.replace(part, bad)
        raise DownloadError(
            f"Checksum mismatch for {label}: got {kind} {actual[:16]}..., expected {expected[:16]}... "
            f"The file was corrupted in transit; it is kept as {bad} (not used). Rerun to fetch it again.")
    os.replace(part, dest)
    return dest


# --------------------------------------------------------------------------
# Files on the Hugging Face hub
# --------------------------------------------------------------------------


@dataclass
class HubFile:
    """Where a Hub file's bytes are now, and what the Hub says they are."""

    url: str  # the file's resolve address on the Hub
    location: str  # where to read it now: a signed CDN address, or ``url`` for a small file
    size: int | None
    sha256: str | None  # from X-Linked-Etag (a stored LFS/Xet file)
    git_blob: str | None  # from ETag (a small file kept in git)

    @property
    def check(self) -> str:
        """Which verification is possible, in words."""
        if self.sha256:
            return "sha256 from the Hub (X-Linked-Etag)"
        if self.git_blob:
            return "git blob id from the Hub (ETag of a file kept in git)"
        return "size only (the Hub gave no hash)" if self.size is not None else "none (the Hub gave no hash or size)"


def hub_url(repo_id: str, filename: str, repo_type: str = "model", endpoint: str = HF_ENDPOINT,
            revision: str = "main") -> str:
    """The resolve address of a Hub file (as ``huggingface_hub.hf_hub_url`` builds it)."""
    prefix = {"model": "", "dataset": "datasets/", "space": "spaces/"}[repo_type]
    _ENDPOINT_HOSTS.add(urllib.parse.urlsplit(endpoint).netloc.lower())  # HF_TOKEN goes to it (hub_headers)
    return f"{endpoint.rstrip('/')}/{prefix}{repo_id}/resolve/{revision}/{urllib.parse.quote(filename)}"


def resolve_hub_file(url: str) -> HubFile:
    """Ask the Hub, through ``huggingface_hub``, where ``url``'s bytes are and
    what their hash and size are (one HEAD request; a redirect to the CDN is
    not followed, because the hash travels on the redirect itself)."""
    try:
        from huggingface_hub import get_hf_file_metadata
        from huggingface_hub.errors import FileMetadataError, HfHubHTTPError
    except ModuleNotFoundError:  # pragma: no cover - the environment always has it (smp depends on it)
        raise DownloadError("huggingface_hub is not installed in this environment: run `make install` and "
                            "rerun.") from None
    try:
        meta = get_hf_file_metadata(url, timeout=30)
    except HfHubHTTPError as err:
        status = getattr(getattr(err, "response", None), "status_code", None)
        hint = {401: "the Hub asks for a login: the file may be gated or private (set HF_TOKEN) or the "
                     "repository name is wrong",
                403: "access denied: the file may be gated (accept its terms on the Hub and set HF_TOKEN)",
                404: "not found on the Hub: the dataset or model may have moved; check the name and --endpoint",
                429: "too many requests: wait a few minutes and rerun (finished files are kept)"}.get(
            status, "the Hub failed; rerun later (finished files are kept, partial ones resume)")
        raise DownloadError(f"HTTP {status} for {url}: {hint}.", status=status) from None
    except FileMetadataError as err:
        raise DownloadError(f"{url} did not answer like the Hugging Face hub ({err}). Check --endpoint / "
                            "HF_ENDPOINT, or a proxy in between.") from None
    except Exception as err:  # the client's network errors (httpx/requests, depending on its version)
        if isinstance(err, OSError) or type(err).__module__.split(".")[0] in ("httpx", "httpx2", "httpcore",
                                                                               "requests", "urllib3"):
            raise DownloadError(f"Could not reach {urllib.parse.urlsplit(url).netloc} ({type(err).__name__}: "
                                f"{err}). {OFFLINE_HINT}") from None
        raise
    if meta.commit_hash is None:  # every Hub answer names the commit (as hf_hub_download requires too)
        raise DownloadError(f"{url} did not answer like the Hugging Face hub (no X-Repo-Commit header). Check "
                            "--endpoint / HF_ENDPOINT, or a proxy in between.")
    etag = (meta.etag or "").strip().removeprefix("W/").strip('"').lower()
    return HubFile(url=url, location=urllib.parse.urljoin(url, meta.location or url), size=meta.size,
                   sha256=etag if re.fullmatch(r"[0-9a-f]{64}", etag) else None,
                   git_blob=etag if re.fullmatch(r"[0-9a-f]{40}", etag) else None)


def fetch_hub_file(repo_id: str, filename: str, dest: str | Path, *, repo_type: str = "model",
                   endpoint: str = HF_ENDPOINT, show_progress: bool = True) -> tuple[Path, str]:
    """Fetch one Hub file to ``dest`` (resumable, verified against the Hub's own
    hash); returns the path and the check that was made. An existing ``dest``
    is returned untouched ("already there")."""
    dest = Path(dest)
    if dest.exists():
        return dest, "already there (verified when it was fetched)"
    url = hub_url(repo_id, filename, repo_type, endpoint)
    target = resolve_hub_file(url)
    fetch_file(target.location, dest, sha256=target.sha256, git_blob=target.git_blob, size=target.size,
               resolve=lambda: resolve_hub_file(url).location, label=filename, show_progress=show_progress)
    return dest, target.check


class RangeFile(io.RawIOBase):
    """A read-only, seekable view of a remote file through HTTP range requests,
    so that :class:`zipfile.ZipFile` reads only a shard's table of contents and
    the members it is asked for. ``resolve()`` gives the current address (a
    signed CDN address expires: on 403/410 it is asked for a new one, and the
    read goes on from the same byte)."""

    def __init__(self, resolve, url: str, size: int, retries: int = 3, timeout: float = 60.0,
                 stats: dict | None = None):
        self.resolve, self.url, self.size, self.retries, self.timeout = resolve, url, size, retries, timeout
        self.pos = 0
        # shared by reopened copies: requests, bytes, and how often an expired address was renewed
        self.stats = stats if stats is not None else {"requests": 0, "bytes": 0, "renewed": 0}

    def reopen(self) -> "RangeFile":
        """A fresh handle on the same file (a closed ZipFile closes its handle)."""
        return RangeFile(self.resolve, self.url, self.size, self.retries, self.timeout, self.stats)

    @classmethod
    def open(cls, resolve, **kwargs) -> "RangeFile | None":
        """A RangeFile when the server honours ranges, else ``None``. ``resolve()``
        returns ``(address, size)``."""
        url, size = resolve()
        with _request(url, headers={"Range": "bytes=0-0"}) as resp:
            if resp.status != 206 or "Content-Range" not in resp.headers:
                return None
            size = int(resp.headers["Content-Range"].rsplit("/", 1)[1])
        return cls(lambda: resolve()[0], url, size, **kwargs)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.pos, 2: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self.size - self.pos)
        if n <= 0:
            return 0
        got, drops, renewed = 0, 0, False
        while got < n:  # a dropped connection: ask again for the rest
            try:
                with _request(self.url, headers={"Range": f"bytes={self.pos + got}-{self.pos + n - 1}"},
                              timeout=self.timeout) as resp:
                    self.stats["requests"] += 1
                    if resp.status != 206:
                        raise DownloadError(f"{_show(self.url)} stopped honouring range requests; rerun.")
                    renewed = False
                    while got < n:
                        chunk = resp.read(n - got)
                        if not chunk:
                            break
                        buffer[got:got + len(chunk)] = chunk
                        got += len(chunk)
            except DownloadError as err:
                if err.status not in EXPIRED or renewed:  # a fresh address refused at once: a real denial
                    raise
                self.url, renewed = self.resolve(), True
                self.stats["renewed"] += 1
                continue
            except (ConnectionError, socket.timeout, http.client.HTTPException):
                pass
            if got < n:
                drops += 1
                if drops > self.retries:
                    raise DownloadError(f"The transfer from {_show(self.url)} dropped {drops} times. Rerun the same "
                                        "command: finished images are kept.")
        self.pos += got
        self.stats["bytes"] += got
        return got


# --------------------------------------------------------------------------
# Output folders: ours, never a user's
# --------------------------------------------------------------------------


def claim_folder(out: Path, source: str) -> None:
    """Create ``out`` (or reuse one this script created); refuse a folder that
    already holds someone else's files."""
    marker = out / MARKER
    if out.exists() and not out.is_dir():
        raise DownloadError(f"{out} is a file, not a folder. Choose another --out.")
    if out.exists() and any(out.iterdir()) and not marker.exists():
        raise DownloadError(
            f"Refusing to write into {out}: it already holds files that data_download.sh did not create. "
            "Nothing was changed. Choose another --out, or move those files away. (A folder of city images "
            "you already have needs no download: set CITYVIZ_DATA to its path.)")
    if marker.exists():
        info = json.loads(marker.read_text())
        if info.get("source") != source:
            raise DownloadError(f"{out} holds {info.get('source')} images, not {source}. Choose another --out.")
        return
    out.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"source": source, "created_by": "data_download.sh",
                                  "created": time.strftime("%Y-%m-%d %H:%M:%S")}, indent=1))


def _write_new(dest: Path, data: bytes) -> bool:
    """Write ``dest`` atomically unless it exists; True when written."""
    if dest.exists():
        return False
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, dest)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        if err.errno == errno.ENOSPC:
            raise _disk_full(err, dest) from None
        raise
    return True


def _folder_name(name: str) -> str:
    cleaned = re.sub(r"[^\w\- ]+", "_", name, flags=re.UNICODE).strip(" _")
    return cleaned or "city"


def _read_manifest(out: Path) -> pd.DataFrame:
    import pandas as pd

    path = out / MANIFEST
    if path.exists():
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    return pd.DataFrame(columns=["file", "id", "city", "split", "creator_username", "creator_id", "licence", "source"])


def _write_manifest(out: Path, table: pd.DataFrame) -> None:
    tmp = out / f".{MANIFEST}.part"
    table.sort_values(["city", "file"]).to_csv(tmp, index=False, quoting=csv.QUOTE_MINIMAL)
    os.replace(tmp, out / MANIFEST)


# --------------------------------------------------------------------------
# OpenStreetView-5M
# --------------------------------------------------------------------------

OSV5M_COLUMNS = ("id", "unique_city")


def osv5m_url(path: str, endpoint: str = HF_ENDPOINT) -> str:
    return f"{endpoint.rstrip('/')}/datasets/{OSV5M_REPO}/resolve/main/{path}"


def read_osv5m_metadata(path: Path, split: str) -> pd.DataFrame:
    """The metadata columns we need (id, city, creator) from a split's CSV."""
    import pandas as pd

    try:
        header = pd.read_csv(path, nrows=0)
        missing = [c for c in OSV5M_COLUMNS if c not in header.columns]
        if missing:
            raise ValueError(f"it lacks the column(s) {', '.join(missing)}")
        wanted = [c for c in ("id", "unique_city", "city", "creator_username", "creator_id") if c in header.columns]
        table = pd.read_csv(path, usecols=wanted, dtype=str, keep_default_na=False)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise DownloadError(
            f"The metadata file {path} is malformed ({err}). It was downloaded by this script; move it away "
            "and rerun to fetch it again. If it persists, the dataset's format has changed: please report it.") from None
    table = table[(table.id != "") & (table.unique_city != "")]
    table["split"] = split
    for col in ("creator_username", "creator_id"):
        if col not in table:
            table[col] = ""
    return table


def city_counts(meta: pd.DataFrame) -> pd.DataFrame:
    """Images per ``unique_city``, most first, with the short name."""
    import pandas as pd

    counts = meta.groupby("unique_city").size().sort_values(ascending=False, kind="stable")
    return pd.DataFrame({"unique_city": counts.index, "name": [_city_name(c) for c in counts.index],
                         "images": counts.values})


def _city_name(unique_city: str) -> str:
    return unique_city.split("_", 1)[0]


def match_cities(meta: pd.DataFrame, wanted: Sequence[str], per_city: int) -> tuple[dict[str, str], list[str]]:
    """Map each requested city to one ``unique_city`` (exact value, else by its
    name, the one with most images), and notes for the user."""
    counts = city_counts(meta)
    chosen, notes = {}, []
    for name in wanted:
        exact = counts[counts.unique_city == name]
        rows = exact if len(exact) else counts[counts.name.str.lower() == name.lower()]
        if rows.empty:
            close = counts[counts.name.str.lower().str.contains(re.escape(name.lower()))].head(5)
            hint = f" Close matches: {', '.join(close.unique_city)}." if len(close) else ""
            raise DownloadError(f"No city called {name!r} in the OpenStreetView-5M metadata.{hint} "
                                "See `./data_download.sh --list-cities`.")
        row = rows.iloc[0]
        if len(rows) > 1:
            notes.append(f"{name}: {len(rows)} places share this name; using {row.unique_city} "
                         f"({row.images} images). Pass the full name to pick another: "
                         + ", ".join(rows.unique_city.iloc[1:4]))
        if row.images < per_city:
            notes.append(f"{name}: only {row.images} images in the chosen split(s), fewer than --per-city {per_city}.")
        chosen[name] = row.unique_city
    return chosen, notes


@dataclass
class Osv5mReport:
    out: Path
    written: dict[str, int]
    kept: int  # images already there from an earlier run
    missing: int  # ids in the metadata but in no shard
    not_ours: list[str]  # existing files we did not write and left alone
    range_requests: int
    bytes_from_shards: int
    notes: list[str]
    checks: dict[str, str]  # file on the Hub -> how it was verified
    renewed: int = 0  # expired CDN addresses resolved again during range reads


def _shard_listing(out: Path, split: str, shard: str, endpoint: str) -> tuple[dict[str, str], "RangeFile | Path", str]:
    """Member names by image id of one shard (cached), how to read it, and how the shard itself was checked."""
    cache = out / CACHE / "shards"
    listing_file = cache / f"{split}-{shard}.json"
    path = f"images/{split}/{shard}.zip"
    url = osv5m_url(path, endpoint)

    def where() -> tuple[str, int | None]:
        target = resolve_hub_file(url)
        return target.location, target.size

    source, check = RangeFile.open(where), "members read with ranges; each image checked against its zip CRC-32"
    if source is None:  # no range support: the whole shard, resumable and verified against the Hub's hash
        print(f"{path}: the server does not support range requests; fetching the whole shard.")
        source, how = fetch_hub_file(OSV5M_REPO, path, cache / f"{split}-{shard}.zip", repo_type="dataset",
                                     endpoint=endpoint)
        check = f"whole shard: {how}; each image checked against its zip CRC-32"
    if listing_file.exists():
        return json.loads(listing_file.read_text()), source, check
    with _open_zip(source, url) as zf:
        names = {Path(n).stem: n for n in zf.namelist() if not n.endswith("/")}
    _write_new(listing_file, json.dumps(names).encode())
    return names, source, check


def _open_zip(source, url: str) -> zipfile.ZipFile:
    try:
        fh = io.BufferedReader(source.reopen(), buffer_size=BLOCK) if isinstance(source, RangeFile) else open(source, "rb")
        return zipfile.ZipFile(fh)
    except zipfile.BadZipFile as err:
        raise DownloadError(f"{url} is not a readable zip ({err}). Rerun later; if it persists the dataset "
                            "has changed format.") from None


def fetch_osv5m(out: str | Path | None = None, cities: Sequence[str] = PAPER_CITIES, per_city: int = 600,
                splits: Sequence[str] = ("test",), seed: int = 0, endpoint: str = HF_ENDPOINT,
                shards: dict[str, int] | None = None) -> Osv5mReport:
    """Fetch up to ``per_city`` images of each city into ``out/<city>/<id>.jpg``
    with an attribution manifest. Safe to rerun: finished images are kept."""
    import numpy as np
    import pandas as pd

    out = Path(out) if out else home() / "data" / "osv5m"
    shards = shards or OSV5M_SHARDS
    check_network(endpoint)
    claim_folder(out, "osv5m")
    meta = load_osv5m_metadata(out, splits, endpoint)
    chosen, notes = match_cities(meta, cities, per_city)
    folders = {u: _folder_name(_city_name(u)) for u in chosen.values()}
    if len(set(folders.values())) < len(folders):  # two places with one name: use the full names
        folders = {u: _folder_name(u) for u in chosen.values()}
    # every shard's table of contents first (cached), so the sample is drawn from images that exist
    sources, where, checks = {}, {}, dict(meta.attrs.get("checks", {}))
    for split in splits:
        for k in range(shards[split]):
            shard = f"{k:02d}"
            url = osv5m_url(f"images/{split}/{shard}.zip", endpoint)
            names, source, check = _shard_listing(out, split, shard, endpoint)
            checks[f"images/{split}/{shard}.zip"] = check
            sources[split, shard] = (url, source)
            where.update({(split, i): (shard, member) for i, member in names.items()})
    rng = np.random.default_rng(seed)
    wanted, missing = {}, 0
    for name, u in chosen.items():
        rows = meta[meta.unique_city == u]
        present = rows[[(r.split, r.id) in where for r in rows.itertuples(index=False)]]
        missing += len(rows) - len(present)
        if len(rows) >= per_city > len(present):
            notes.append(f"{name}: {len(rows) - len(present)} of its images are listed in the metadata but in no "
                         f"shard; {len(present)} can be fetched.")
        take = present.iloc[np.sort(rng.permutation(len(present))[:per_city])]
        wanted.update({r.id: r for r in take.itertuples(index=False)})

    manifest = _read_manifest(out)
    done = set(manifest.id)
    todo = {i: r for i, r in wanted.items() if i not in done}
    kept = len(wanted) - len(todo)
    written = {folders[u]: 0 for u in chosen.values()}
    not_ours, new_rows = [], []

    def save_manifest():
        _write_manifest(out, pd.concat([manifest, pd.DataFrame(new_rows)], ignore_index=True))

    def record(image_id, row, dest, split):
        new_rows.append({"file": str(dest.relative_to(out)), "id": image_id, "city": folders[row.unique_city],
                         "split": split, "creator_username": row.creator_username, "creator_id": row.creator_id,
                         "licence": OSV5M_LICENCE, "source": f"https://huggingface.co/datasets/{OSV5M_REPO}"})
        if len(new_rows) % 200 == 0:  # keep the manifest current in case of interruption
            save_manifest()

    for (split, shard), (url, source) in sources.items():
        hits = [(i, where[split, i][1]) for i, r in todo.items() if r.split == split and where[split, i][0] == shard]
        if not hits:
            continue
        with _open_zip(source, url) as zf:
            for image_id, member in progress(hits, desc=f"{split} shard {shard}", unit="img"):
                row = todo[image_id]
                dest = out / folders[row.unique_city] / f"{image_id}.jpg"
                try:
                    data = zf.read(member)
                except zipfile.BadZipFile as err:
                    raise DownloadError(f"Checksum mismatch in {member} of {url} ({err}): the transfer was "
                                        "corrupted. Rerun: finished images are kept.") from None
                if dest.exists():
                    if dest.read_bytes() == data:  # written by a run stopped before its manifest was saved
                        record(image_id, row, dest, split)
                        kept += 1
                    else:  # someone else's file: leave it alone
                        not_ours.append(str(dest))
                    continue
                _write_new(dest, data)
                written[folders[row.unique_city]] += 1
                record(image_id, row, dest, split)
    if new_rows:
        save_manifest()
    stats = [s.stats for _, s in sources.values() if isinstance(s, RangeFile)]
    return Osv5mReport(out=out, written=written, kept=kept, missing=missing, not_ours=not_ours,
                       range_requests=sum(s["requests"] for s in stats), bytes_from_shards=sum(s["bytes"] for s in stats),
                       notes=notes, checks=checks, renewed=sum(s["renewed"] for s in stats))


def load_osv5m_metadata(out: Path, splits: Sequence[str], endpoint: str = HF_ENDPOINT) -> pd.DataFrame:
    import pandas as pd

    tables, checks = [], {}
    for split in splits:
        if split not in OSV5M_SHARDS:
            raise DownloadError(f"Unknown split {split!r}: OpenStreetView-5M has {', '.join(OSV5M_SHARDS)}.")
        path, checks[f"{split}.csv"] = fetch_hub_file(OSV5M_REPO, f"{split}.csv", out / CACHE / f"{split}.csv",
                                                      repo_type="dataset", endpoint=endpoint)
        tables.append(read_osv5m_metadata(path, split))
    table = pd.concat(tables, ignore_index=True)
    table.attrs["checks"] = checks  # how each metadata file was verified (said in the report)
    return table


# --------------------------------------------------------------------------
# GSV-Cities through the Kaggle command-line tool
# --------------------------------------------------------------------------


def _city_key(name: str) -> str:
    return re.sub(r"[\s._-]+", "", name).lower()


def match_gsv_cities(wanted: Sequence[str]) -> list[str]:
    """GSV-Cities' own names for ``wanted`` (its names in any case, or an alias
    such as Paris for PRS); an unknown name is an error that lists them all,
    raised before anything is downloaded."""
    names = {_city_key(c): c for c in GSV_CITIES}
    names.update(GSV_ALIASES)
    chosen = []
    for city in wanted:
        match = names.get(_city_key(city))
        if match is None:
            raise DownloadError(
                f"GSV-Cities has no city {city!r}. Its {len(GSV_CITIES)} cities: {', '.join(GSV_CITIES)} "
                "(PRS is Paris, OSL Oslo, PRG Prague, TRT Toronto; those names work too). Nothing was downloaded.")
        if match not in chosen:
            chosen.append(match)
    return chosen


def gsv_city_table():
    """GSV-Cities' cities and the other names accepted for them (``--list-cities``)."""
    import pandas as pd

    aliases = {c: sorted(a for a, t in GSV_ALIASES.items() if t == c and a != _city_key(c)) for c in GSV_CITIES}
    return pd.DataFrame({"city": GSV_CITIES, "also accepted": [", ".join(aliases[c]) for c in GSV_CITIES]})


def kaggle_credentials() -> str | None:
    """Which of the Kaggle CLI's credential forms is present, in words, or None.

    The CLI (Kaggle/kaggle-api, docs/README.md, "Authentication") accepts: an
    OAuth login (``kaggle auth login``), the ``KAGGLE_API_TOKEN`` variable, a
    token file ``~/.kaggle/access_token``, and the legacy ``kaggle.json``
    (``~/.kaggle/``, ``~/.config/kaggle/`` or ``$KAGGLE_CONFIG_DIR``) or
    ``KAGGLE_USERNAME``/``KAGGLE_KEY``. Where the OAuth login is stored is the
    CLI's business, so None does not mean there is none: the CLI is then left
    to decide, and its own message is passed on."""
    if os.environ.get("KAGGLE_API_TOKEN"):
        return "KAGGLE_API_TOKEN"
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return "KAGGLE_USERNAME and KAGGLE_KEY"
    dirs = [Path(os.environ["KAGGLE_CONFIG_DIR"])] if os.environ.get("KAGGLE_CONFIG_DIR") else []
    dirs += [Path.home() / ".kaggle", Path.home() / ".config" / "kaggle"]
    for folder in dirs:
        for name in ("access_token", "kaggle.json"):
            if (folder / name).exists():
                return str(folder / name)
    return None


KAGGLE_AUTH_HINT = ("Kaggle needs you to be signed in: run `kaggle auth login`, or create an API token at "
                    "kaggle.com > Settings > API and either export KAGGLE_API_TOKEN=<token> or save it as "
                    "~/.kaggle/access_token (a legacy ~/.kaggle/kaggle.json, or KAGGLE_USERNAME and KAGGLE_KEY, "
                    "works too). Or use --source osv5m, which needs no account.")


def fetch_gsv_cities(out: str | Path | None = None, cities: Sequence[str] = GSV_DEFAULT_CITIES, per_city: int = 600,
                     seed: int = 0, kaggle: str = "kaggle") -> dict[str, int]:
    """Download GSV-Cities with the Kaggle tool and unpack up to ``per_city``
    images of each city into ``out/<City>/``. Needs a Kaggle account."""
    import numpy as np

    out = Path(out) if out else home() / "data" / "gsv-cities"
    cities = match_gsv_cities(cities)  # before anything is downloaded
    exe = shutil.which(kaggle)
    if exe is None:
        raise DownloadError(f"The Kaggle command-line tool ({kaggle}) is not installed: run "
                            "`pip install kaggle` in this environment and rerun.")
    credentials = kaggle_credentials()
    claim_folder(out, "gsv-cities")
    cache = out / CACHE
    cache.mkdir(exist_ok=True)
    archive = next(iter(sorted(cache.glob("*.zip"))), None)
    if archive is None:
        print(f"Downloading {GSV_DATASET} with the Kaggle tool (large: see docs/real-data.md for the size); credentials: "
              f"{credentials or 'none found by this script, so the Kaggle tool decides (e.g. a `kaggle auth login`)'}.")
        proc = subprocess.run([exe, "datasets", "download", "-d", GSV_DATASET, "-p", str(cache)])
        archive = next(iter(sorted(cache.glob("*.zip"))), None)
        if proc.returncode != 0 or archive is None:
            hint = "" if credentials else " " + KAGGLE_AUTH_HINT
            raise DownloadError(f"The Kaggle tool failed (exit code {proc.returncode}); its message is above.{hint} "
                                "Rerun when it is fixed; nothing was unpacked.")
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile:
        bad = archive.with_name(archive.name + ".bad")
        os.replace(archive, bad)
        raise DownloadError(f"{archive} is not a complete zip (kept as {bad}); rerun to download it again.") from None
    by_city: dict[str, list[str]] = {}
    for name in zf.namelist():
        parts = Path(name).parts
        if len(parts) >= 3 and parts[-3].lower() == "images" and name.lower().endswith((".jpg", ".jpeg", ".png")):
            by_city.setdefault(parts[-2], []).append(name)
    counts = {}
    rng = np.random.default_rng(seed)
    with zf:
        for city in cities:
            match = next((c for c in by_city if c.lower() == city.lower()), None)
            if match is None:
                raise DownloadError(f"The downloaded archive {archive} has no Images/{city}/ folder (it has: "
                                    f"{', '.join(sorted(by_city)) or 'none'}). The dataset may have changed; "
                                    "please report it.")
            members = sorted(by_city[match])
            members = [members[i] for i in np.sort(rng.permutation(len(members))[:per_city])]
            counts[match] = 0
            for member in progress(members, desc=match, unit="img"):
                try:
                    data = zf.read(member)
                except zipfile.BadZipFile as err:
                    raise DownloadError(f"Checksum mismatch in {member} of {archive} ({err}). Move the archive "
                                        "away and rerun to download it again.") from None
                counts[match] += _write_new(out / _folder_name(match) / Path(member).name, data)
    return counts


# --------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------


def weights_url(arch: str) -> str:
    """The address of torchvision's ImageNet weights for ``arch``."""
    from torchvision import models as tvm

    return getattr(tvm, TORCHVISION_WEIGHTS[arch]).IMAGENET1K_V1.url


def fetch_torchvision_weights(archs: Iterable[str] = ("resnet18",), base_url: str | None = None) -> list[Path]:
    """ImageNet weights into the torch cache (``$TORCH_HOME/hub/checkpoints``),
    where :mod:`cityviz_helpers.models` loads them offline."""
    import torch

    paths = []
    for arch in archs:
        if arch not in TORCHVISION_WEIGHTS:
            raise DownloadError(f"No ImageNet weights for {arch!r}: choose from {', '.join(TORCHVISION_WEIGHTS)} "
                                "(simple and simpler are trained from scratch, as in the paper).")
        url = weights_url(arch)
        if base_url:
            url = f"{base_url.rstrip('/')}/{Path(url).name}"
        dest = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
        prefix = re.search(r"-([a-f0-9]{8,})\.", dest.name)
        paths.append(fetch_file(url, dest, sha256_prefix=prefix.group(1) if prefix else None))
        check = "checked against the sha256 prefix in their name" if prefix else "no hash in their name: not checked"
        print(f"{arch}: ImageNet weights in {dest} ({check})")
    return paths


def fetch_segformer(variant: str = "b0", folder: str | Path | None = None, endpoint: str = HF_ENDPOINT) -> Path:
    """An ADE20K Segformer from smp-hub into ``models/segformer-<variant>-ade20k``,
    loadable offline with ``smp.from_pretrained(folder)``; the repository per
    variant comes from :data:`cityviz_helpers.segmentation.SEGFORMER_VARIANTS`."""
    from .segmentation import SEGFORMER_VARIANTS

    if variant not in SEGFORMER_VARIANTS:
        raise DownloadError(f"No Segformer {variant!r}: choose from {', '.join(SEGFORMER_VARIANTS)}.")
    repo, input_size = SEGFORMER_VARIANTS[variant]
    folder = Path(folder) if folder else home() / "models" / f"segformer-{variant}-ade20k"
    claim_folder(folder, repo)
    for name in SEGFORMER_FILES:
        _, check = fetch_hub_file(repo, name, folder / name, endpoint=endpoint)
        print(f"  {name}: {check}")
    print(f"Segformer {variant} (ADE20K, trained at {input_size} px) in {folder}")
    return folder


# --------------------------------------------------------------------------
# Command line (data_download.sh)
# --------------------------------------------------------------------------

EPILOG = """examples:
  ./data_download.sh                          # Tokyo and Pittsburgh from OpenStreetView-5M
  ./data_download.sh --list-cities 30         # the 30 cities with most images
  ./data_download.sh --cities Paris,Tokyo --per-city 300
  ./data_download.sh --weights                # ResNet-18 ImageNet weights + ADE20K Segformer b0
  ./data_download.sh --source gsv-cities      # London,Boston; needs a Kaggle login
  ./data_download.sh --source gsv-cities --list-cities
then run the notebooks on the images:  CITYVIZ_DATA=osv5m make tutorial

Safe to rerun: finished files are kept, interrupted ones resume, and no file
this script did not create is ever overwritten or deleted. Hub files are
checked against the sha256 (or git blob id) the Hub gives, torchvision's
weights against the hash in their name, and every image against its zip CRC.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="data_download.sh", description="Fetch real street images and pretrained weights for cityviz.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", choices=["osv5m", "gsv-cities"], default="osv5m",
                   help="image source: OpenStreetView-5M (default, no account) or GSV-Cities (Kaggle account)")
    p.add_argument("--cities", default=None,
                   help="comma-separated city names (default: the paper's Tokyo,Pittsburgh for osv5m; "
                        "London,Boston for gsv-cities, which has neither); for osv5m a name or a full "
                        "unique_city value from --list-cities; for gsv-cities a name from --list-cities "
                        "(Paris, Oslo, Prague, Toronto are PRS, OSL, PRG, TRT there)")
    p.add_argument("--per-city", type=int, default=600, help="at most this many images per city (default 600)")
    p.add_argument("--splits", default="test",
                   help="osv5m splits to draw from: test (default; 210k images, 5 shards), train (4.9M, 98 "
                        "shards, a much larger metadata file), or test,train")
    p.add_argument("--list-cities", type=int, nargs="?", const=25, metavar="N",
                   help="print the N cities with most images (default 25) and exit; for gsv-cities all its "
                        "cities (no download needed)")
    p.add_argument("--out", default=None, help="output folder (default data/<source> in the repository)")
    p.add_argument("--seed", type=int, default=0, help="which images are sampled when a city has more (default 0)")
    p.add_argument("--weights", action="store_true",
                   help="fetch only weights: torchvision's ImageNet weights (see --imagenet) into the torch "
                        "cache, and the ADE20K Segformer into models/")
    p.add_argument("--imagenet", default="resnet18",
                   help="architectures whose ImageNet weights --weights fetches (default resnet18, the one the "
                        "settings fine-tune; add vgg11 (531 MB) if you put it in train.pretrained)")
    p.add_argument("--segformer", default="b0", choices=[f"b{i}" for i in range(6)],
                   help="Segformer size for --weights (default b0, the smallest; b2 is more accurate, with about "
                        "7x the parameters; b0-b4 were trained at 512 px, b5 at 640)")
    p.add_argument("--endpoint", default=HF_ENDPOINT, help="Hugging Face hub address (default $HF_ENDPOINT or "
                                                            "https://huggingface.co; a mirror works too)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        import numpy  # noqa: F401
        import pandas  # noqa: F401
    except ModuleNotFoundError as err:
        print(f"data_download.sh: this Python ({sys.executable}) lacks {err.name}: cityviz's environment is not "
              f"installed yet. Run `make install` in {REPO_ROOT} once (or activate the conda environment from "
              "environment.yml) and rerun.", file=sys.stderr)
        return 1
    try:
        if args.per_city < 1:
            raise DownloadError("--per-city must be at least 1.")
        default = GSV_DEFAULT_CITIES if args.source == "gsv-cities" else PAPER_CITIES
        cities = [c.strip() for c in args.cities.split(",") if c.strip()] if args.cities else list(default)
        if args.weights:
            check_network(args.endpoint)
            fetch_torchvision_weights([a.strip() for a in args.imagenet.split(",") if a.strip()])
            fetch_segformer(args.segformer, endpoint=args.endpoint)
            return 0
        if args.source == "gsv-cities":
            if args.list_cities:
                print(gsv_city_table().head(args.list_cities).to_string(index=False))
                return 0
            counts = fetch_gsv_cities(args.out, cities, args.per_city, seed=args.seed)
            print("new images per city:", counts)
            return 0
        splits = [s.strip() for s in args.splits.split(",") if s.strip()]
        if args.list_cities:
            out = Path(args.out) if args.out else home() / "data" / "osv5m"
            check_network(args.endpoint)
            claim_folder(out, "osv5m")
            table = city_counts(load_osv5m_metadata(out, splits, args.endpoint)).head(args.list_cities)
            print(table.to_string(index=False))
            return 0
        report = fetch_osv5m(args.out, cities, args.per_city, splits, seed=args.seed, endpoint=args.endpoint)
        for note in report.notes:
            print("note:", note)
        for name, check in report.checks.items():
            print(f"verified {name}: {check}")
        print(f"{report.out}: new images {report.written}; {report.kept} already there; "
              f"{report.missing} listed in the metadata but in no shard; "
              f"{report.bytes_from_shards / 1e6:.1f} MB in {report.range_requests} range requests.")
        if report.not_ours:
            print(f"left alone {len(report.not_ours)} existing file(s) this script did not write, e.g. {report.not_ours[0]}")
        print(f"Attribution (CC-BY-SA-4.0): {report.out / MANIFEST}. Next: CITYVIZ_DATA=osv5m make tutorial")
        return 0
    except DownloadError as err:
        print(f"data_download.sh: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ndata_download.sh: interrupted; rerun the same command to resume.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
