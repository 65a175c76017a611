"""The machine-readable record of every key number: ``outputs/<profile>/results.json``.

Each notebook merges its own section (``dataset``, ``models``, ...) and leaves
the others as they are, so the file always holds the latest value of every
number, each traceable to the notebook that computed it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .settings import Settings
from .utils import atomic_write


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
    """Merge ``values`` into ``section`` of results.json (written atomically).

    Keys inside the section are updated one level deep, so two notebooks can
    add different entries to the same section (e.g. ``timings``).
    """
    path = results_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = load_results(settings)
    current = data.get(section)
    if isinstance(current, dict) and isinstance(values, Mapping):
        current.update(_plain(values))
    else:
        data[section] = _plain(values)
    data.setdefault("profile", settings.profile)
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n"))
    return path
