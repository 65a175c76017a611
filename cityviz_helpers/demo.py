"""A small folder of city images with one of each kind of bad file (notebook 01, tests).

Used to show, and to test, what the loader does with real-world mess.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

#: file name -> what :func:`cityviz_helpers.data.scan_image_folder` should do with it
EXPECTED = {
    "empty.jpg": ("skipped", "empty file"),
    "notes.jpg": ("skipped", "not an image"),
    "truncated.jpg": ("skipped", "truncated"),
    "tiny.png": ("skipped", "tiny"),
    "huge.png": ("skipped", "huge"),
    ".hidden.png": ("skipped", "hidden"),
    "grayscale.png": ("converted", "grayscale"),
    "rgba.png": ("converted", "transparency"),
    "palette.png": ("converted", "palette"),
    "cmyk.jpg": ("converted", "CMYK"),
    "sixteen_bit.png": ("converted", "16-bit"),
}
#: what to pass to the loader so that huge.png counts as huge and tiny.png as tiny
SCAN_LIMITS = {"min_side": 32, "max_pixels": 1_000_000}


def make_messy_folder(root: str | Path, n_good: int = 6) -> Path:
    """Write ``<root>/{Tokyo,Pittsburgh}/`` with good images, every kind of bad file
    in ``Tokyo/``, and an empty ``Lisbon/`` folder. Returns ``root``."""
    root = Path(root)
    rng = np.random.default_rng(0)
    for city in ("Tokyo", "Pittsburgh"):
        (root / city).mkdir(parents=True, exist_ok=True)
        for i in range(n_good):
            Image.fromarray(rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)).save(root / city / f"good_{i}.jpg")
    t = root / "Tokyo"
    (t / "empty.jpg").write_bytes(b"")
    (t / "notes.jpg").write_text("this is a text file with an image extension")
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(t / "truncated.jpg")
    (t / "truncated.jpg").write_bytes((t / "truncated.jpg").read_bytes()[:400])
    Image.new("RGB", (8, 8), "blue").save(t / "tiny.png")
    Image.new("RGB", (1200, 1000), "gray").save(t / "huge.png")
    Image.new("RGB", (64, 64)).save(t / ".hidden.png")
    Image.new("L", (64, 64), 128).save(t / "grayscale.png")
    Image.new("RGBA", (64, 64), (0, 0, 255, 100)).save(t / "rgba.png")
    Image.new("RGB", (64, 64), "green").convert("P").save(t / "palette.png")
    Image.new("CMYK", (64, 64), (0, 100, 100, 0)).save(t / "cmyk.jpg")
    Image.fromarray(np.full((64, 64), 40000, np.uint16)).save(t / "sixteen_bit.png")
    (root / "Lisbon").mkdir(exist_ok=True)
    return root
