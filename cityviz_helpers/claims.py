"""Claims: one job at a time trains a model in a shared artifact cache (see :mod:`cityviz_helpers.jobs`).

Before training, a job creates ``claim.json`` in the model's folder with
``O_CREAT | O_EXCL`` (only one creator can succeed, also on NFS v3 and later),
holding its pid, host and start time, and touches it every :data:`HEARTBEAT_S`
seconds while it trains. Another job that finds a live claim skips the model
(the notebook raises :class:`ModelBusy`). A claim is *stale*, and is taken over
with a message, when its process no longer runs on this host, or (another host)
when it has had no heartbeat for ``stale_after`` seconds (default
:data:`STALE_AFTER_S`).

This module depends on nothing else of the package: :mod:`cityviz_helpers.train`
uses it, and :mod:`cityviz_helpers.jobs` (the command line, DDP) uses both, so the
imports run one way.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

#: Seconds between two touches of a claim file by the job that holds it.
HEARTBEAT_S = 30.0
#: A claim from another host with no heartbeat for this long is stale (``--stale-after``).
STALE_AFTER_S = 600.0
CLAIM = "claim.json"
#: Tokens of the claims this process holds now (a claim of this pid with another token is a leftover).
_HELD: set[str] = set()


class ModelBusy(RuntimeError):
    """Another live job holds the claim on this model."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it runs
        return True
    except (OverflowError, ValueError):
        return False
    return True


def read_claim(path: Path) -> dict | None:
    """The claim in ``path``: None when there is none, ``{}`` when it cannot be read (being written)."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return None
    try:
        value = json.loads(text)
        return value if isinstance(value, dict) else {}
    except ValueError:
        return {}


def claim_is_stale(claim: dict, path: Path, stale_after: float = STALE_AFTER_S) -> tuple[bool, str]:
    """Whether ``claim`` (read from ``path``) may be taken over, and why (or who holds it)."""
    try:
        age = time.time() - Path(path).stat().st_mtime
    except FileNotFoundError:
        return True, "it was just released"
    if not claim:  # empty or half-written: its writer is within milliseconds of finishing
        return (age > 60, f"it is unreadable and {age:.0f} s old") if age > 60 else (False, "being written")
    pid, host = claim.get("pid"), claim.get("host")
    if host == socket.gethostname() and isinstance(pid, int):
        if pid == os.getpid():
            if claim.get("token") not in _HELD:
                return True, "it is a leftover of this very process"
            return False, f"this process ({pid}) holds it already"
        if not _pid_alive(pid):
            return True, f"process {pid} no longer runs on this host"
    if age > stale_after:
        return True, f"no heartbeat for {age:.0f} s (more than {stale_after:.0f} s)"
    return False, f"process {pid} on {host} since {claim.get('started', '?')}, last heartbeat {age:.0f} s ago"


class Claim:
    """An exclusive claim on training one model (see the module's docstring)."""

    def __init__(self, folder: Path, name: str, stale_after: float = STALE_AFTER_S,
                 heartbeat_s: float = HEARTBEAT_S, verbose: bool = True):
        self.path = Path(folder) / CLAIM
        self.name, self.stale_after, self.heartbeat_s, self.verbose = name, stale_after, heartbeat_s, verbose
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _content(self) -> dict:
        return {"pid": os.getpid(), "host": socket.gethostname(), "token": self.token,
                "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "argv": sys.argv[:8]}

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(self._content(), indent=1))
        return True

    def acquire(self) -> "Claim":
        for _ in range(5):
            if self._create():
                _HELD.add(self.token)
                self._thread = threading.Thread(target=self._beat, daemon=True, name=f"claim-{self.name}")
                self._thread.start()
                return self
            other = read_claim(self.path)
            if other is None:  # released between our two looks: try again
                continue
            stale, why = claim_is_stale(other, self.path, self.stale_after)
            if not stale:
                raise ModelBusy(
                    f"{self.name} is being trained by another job: {why} (claim {self.path}). Wait for it to "
                    "finish (its model is then loaded from the cache), or, if that job is dead, delete the "
                    f"claim file and run again; a claim with no heartbeat for {self.stale_after:.0f} s is taken "
                    "over automatically.")
            self._take_over(other, why)
        raise ModelBusy(f"{self.name}: could not claim {self.path} after 5 tries (other jobs keep taking it).")

    def _take_over(self, other: dict, why: str) -> None:
        """Remove a stale claim, under a short-lived break lock so that two jobs never both remove one
        and one of them then removes the other's fresh claim."""
        lock = self.path.with_name(CLAIM + ".break")
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                if time.time() - lock.stat().st_mtime > 60:  # its holder died within its few milliseconds
                    lock.unlink(missing_ok=True)
            except FileNotFoundError:
                pass
            time.sleep(0.2)
            return
        try:
            os.close(fd)
            if read_claim(self.path) == other:  # still the stale claim we judged
                self.path.unlink(missing_ok=True)
                if self.verbose:
                    print(f"{self.name}: took over the stale claim of process {other.get('pid')} on "
                          f"{other.get('host')} ({why}); an interrupted run resumes from last.pt.")
        finally:
            lock.unlink(missing_ok=True)

    def _ours(self) -> bool:
        claim = read_claim(self.path)
        return bool(claim) and claim.get("token") == self.token

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                if self._ours():
                    os.utime(self.path)
            except OSError:
                pass

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._ours():
            self.path.unlink(missing_ok=True)
        _HELD.discard(self.token)


@contextmanager
def claim_model(folder: Path, name: str, stale_after: float | None = None, verbose: bool = True):
    """Hold the claim on the model in ``folder`` while the block runs; :class:`ModelBusy` if another
    live job holds it. ``stale_after`` defaults to ``$CITYVIZ_CLAIM_STALE_S`` or :data:`STALE_AFTER_S`."""
    if stale_after is None:
        stale_after = float(os.environ.get("CITYVIZ_CLAIM_STALE_S") or STALE_AFTER_S)
    claim = Claim(folder, name, stale_after, verbose=verbose).acquire()
    try:
        yield claim
    finally:
        claim.release()
