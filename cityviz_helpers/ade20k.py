"""ADE20K's 150 object classes, the label set of every label map in the series.

Label maps store 0 for "unlabelled" and ``i`` (1..150) for ADE20K class ``i``,
as in ADE20K itself. The synthetic cities and the segmentation models share
this label set, so the statistics of notebook 05 treat both alike.
"""

from __future__ import annotations

import csv
from functools import lru_cache
from importlib import resources

N_CLASSES = 150
UNLABELLED = 0


@lru_cache(maxsize=None)
def class_table() -> tuple[tuple[int, str, str], ...]:
    """``(index, short name, full name)`` for the 150 classes, in index order."""
    rows = []
    with resources.files(__package__).joinpath("data/ade20k_object150_info.csv").open() as fh:
        for row in csv.DictReader(fh):
            names = row["Name"].split(";")
            rows.append((int(row["Idx"]), names[0], ", ".join(names)))
    assert [r[0] for r in rows] == list(range(1, N_CLASSES + 1))
    return tuple(rows)


def class_names() -> list[str]:
    """Short names indexed by label value: ``class_names()[0] == 'unlabelled'``."""
    return ["unlabelled"] + [short for _, short, _ in class_table()]


#: Readable names for ADE20K short names that are only the first word of a longer name, or hard to read
#: (the figures and tables of every notebook use these: "traffic light", not "traffic").
READABLE = {"windowpane": "window", "auto": "car", "chest": "chest of drawers", "case": "display case",
            "pool": "pool table", "coffee": "coffee table", "palm": "palm tree", "kitchen": "kitchen island",
            "swivel": "swivel chair", "arcade": "arcade machine", "light": "light source", "dirt": "dirt track",
            "conveyer": "conveyor belt", "washer": "washing machine", "swimming": "swimming pool",
            "trade": "brand name", "traffic": "traffic light", "ashcan": "trash can", "crt": "CRT screen",
            "bulletin": "bulletin board", "streetlight": "street light"}
_READABLE_BY_INDEX = {59: "screen door", 131: "projection screen"}  # two classes share the short name "screen"


def readable_name(name: str) -> str:
    """A class or cue name as the notebooks show it: ``'traffic'`` -> ``'traffic light'``,
    ``'banded_facades'`` -> ``'banded facades'``."""
    name = str(name)
    return READABLE.get(name, name.replace("_", " "))


def readable_class_names() -> list[str]:
    """:func:`class_names` made readable, indexed by label value (``[137] == 'traffic light'``)."""
    return [_READABLE_BY_INDEX.get(i, readable_name(n)) for i, n in enumerate(class_names())]


@lru_cache(maxsize=None)
def class_index(name: str) -> int:
    """Label value of a class given its short name (e.g. ``'signboard'`` -> 44)."""
    for idx, short, full in class_table():
        if name == short:
            return idx
    raise KeyError(f"{name!r} is not an ADE20K short class name; see cityviz_helpers.ade20k.class_names().")
