"""Cached artifacts keyed by the settings that made them (notebook 01).

Each step of the series writes what it computes (a dataset, a trained model,
Grad-CAM maps, ...) into a folder ``artifacts/<profile>/<dataset>/<step>-<hash>``
where ``<hash>`` covers every setting the step depends on. A notebook asks for
the artifact; if a complete one with that hash exists it is loaded, otherwise it
is computed and the notebook says which happened.

A folder is built under a temporary ``.partial`` name and renamed into place
only when complete, so an interrupted run never leaves a folder that a later
run would trust; the next run removes the leftover partial folders of jobs that
no longer run on this host (and nothing else) and starts again. Jobs sharing one
cache may build the same artifact at once: the first rename wins, the others keep it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from .settings import Settings
from .utils import short_path

MARKER = "_artifact.json"


@dataclass(frozen=True)
class Artifact:
    """A complete artifact folder and how this run obtained it."""

    step: str
    path: Path
    key: str
    loaded: bool  # True: reused from the cache; False: computed now
    seconds: float

    def message(self) -> str:
        where = short_path(self.path)
        if self.loaded:
            return f"{self.step}: loaded the cached artifact {where} (settings hash {self.key})."
        return (f"{self.step}: no valid cached artifact for these settings, computed it "
                f"in {self.seconds:.1f} s and saved it to {where} (settings hash {self.key}).")

    @property
    def meta(self) -> dict[str, Any]:
        return json.loads((self.path / MARKER).read_text())


def _abandoned(owner: str) -> bool:
    """Whether the job that named a partial folder ``<host>-<pid>`` (or ``<pid>``) is gone. Jobs on
    other hosts sharing this cache are left alone (their partial folders are never trusted, only kept)."""
    host, _, pid = owner.rpartition("-")
    if host and host != socket.gethostname():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError, OverflowError):
        return False
    return int(pid) == os.getpid()


def artifact(
    settings: Settings,
    step: str,
    sections: tuple[str, ...],
    build: Callable[[Path], Mapping[str, Any] | None],
    *,
    version: int = 1,
    extra: Mapping[str, Any] | None = None,
    verbose: bool = True,
) -> Artifact:
    """Load the artifact of ``step`` for these settings, or build it.

    ``build(folder)`` writes the artifact's files into ``folder`` (which it may
    assume empty) and may return a JSON-able dict of metadata, stored with it.
    ``version`` is bumped when the step's code changes what it writes.
    """
    key = settings.hash(*sections, extra={"step": step, "version": version, **(extra or {})})
    final = settings.artifacts_dir / f"{step}-{key}"
    marker = final / MARKER
    start = time.perf_counter()
    if final.exists():
        try:
            meta = json.loads(marker.read_text())
            valid = meta.get("key") == key
        except (OSError, ValueError):
            valid = False
        if valid:
            result = Artifact(step, final, key, True, time.perf_counter() - start)
            if verbose:
                print(result.message())
            return result
        raise RuntimeError(
            f"{final} exists but is not a complete cityviz artifact (no valid {MARKER}). "
            "It was not made by this run, so it is left untouched: move or delete it "
            "yourself, then run again."
        )

    final.parent.mkdir(parents=True, exist_ok=True)
    for leftover in final.parent.glob(f".{final.name}.partial-*"):
        if _abandoned(leftover.name.rsplit(".partial-", 1)[1]):
            shutil.rmtree(leftover, ignore_errors=True)  # an interrupted attempt, not a job still writing
    partial = final.parent / f".{final.name}.partial-{socket.gethostname()}-{os.getpid()}"
    partial.mkdir()
    try:
        meta = dict(build(partial) or {})
        meta.update(step=step, key=key, version=version, profile=settings.profile,
                    data=settings.data, settings={s: settings[s] for s in sections},
                    created=time.strftime("%Y-%m-%dT%H:%M:%S"))
        (partial / MARKER).write_text(json.dumps(meta, indent=2, default=str))
        try:
            os.replace(partial, final)
        except OSError:
            if not (final / MARKER).exists():
                raise
            # another job (sharing this cache) finished the same artifact first: keep theirs
            shutil.rmtree(partial, ignore_errors=True)
            result = Artifact(step, final, key, True, time.perf_counter() - start)
            if verbose:
                print(result.message())
            return result
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    result = Artifact(step, final, key, False, time.perf_counter() - start)
    if verbose:
        print(result.message())
    return result
