"""The machine-readable record of every key number: ``outputs/<profile>/results.json``.

Each notebook writes its own sections (``dataset``, ``models``, ...) and leaves
the others as they are. A section is **replaced whole** each time it is written,
so no entry of an earlier run (a model that no longer exists, a key that was
renamed) can survive next to the new ones, and it carries ``settings_hash``:
the hash of every setting of the run that wrote it, so two sections written
under different settings can be told apart.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .settings import Settings
from .utils import atomic_write

#: The key of each section that holds the settings hash of the run that wrote it.
HASH_KEY = "settings_hash"


def _plain(value: Any) -> Any:
    """Turn numpy scalars/arrays and tuples into JSON types; NaN becomes null."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def results_path(settings: Settings) -> Path:
    return settings.outputs_dir / "results.json"


def run_hash(settings: Settings) -> str:
    """The hash of every setting of this run (all sections, and the data world)."""
    return settings.hash(*settings.sections)


def load_results(settings: Settings) -> dict[str, Any]:
    path = results_path(settings)
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError as err:
        raise ValueError(
            f"{path} is not valid JSON ({err}). It is cityviz's own output file: "
            "rename it to keep it, and the next run writes a fresh one."
        ) from None


def merge_results(settings: Settings, section: str, values: Mapping[str, Any]) -> Path:
    """Write ``section`` of results.json (atomically), replacing it whole.

    The other sections are kept; this one holds exactly ``values`` plus
    ``settings_hash`` (:func:`run_hash`), so nothing from an earlier run of the
    same notebook survives in it.
    """
    if not isinstance(values, Mapping):
        raise TypeError(f"A results section is a mapping of names to values, not {type(values).__name__}.")
    if HASH_KEY in values:
        raise ValueError(f"'{HASH_KEY}' is written by merge_results itself; leave it out of the values.")
    path = results_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = load_results(settings)
    data[section] = {**_plain(values), HASH_KEY: run_hash(settings)}
    data.setdefault("profile", settings.profile)
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n"))
    return path


def update_results(settings: Settings, section: str, values: Mapping[str, Any]) -> Path:
    """Add ``values`` to ``section`` of results.json, keeping the keys already there when the run
    that wrote them had the same settings (a deep-dive notebook adds its numbers to its chapter's
    section this way). Under other settings the section is replaced whole, as :func:`merge_results`
    does, so no key of another run survives."""
    current = load_results(settings).get(section)
    kept = {}
    if isinstance(current, Mapping) and current.get(HASH_KEY) == run_hash(settings):
        kept = {k: v for k, v in current.items() if k != HASH_KEY}
    return merge_results(settings, section, {**kept, **_plain(values)})
