"""Datasets of city images: the built-in synthetic cities and any ImageFolder tree.

Notebook 01 explains this module. One loader, :func:`scan_image_folder`, serves
both worlds: it reads ``<root>/<split>/<city>/<image>`` (split folders
``train``, ``val``/``valid``, ``test``) or ``<root>/<city>/<image>`` (then it
makes a stratified split with a fixed seed), checks every file, and returns a
:class:`CityData` with a table of usable images and a report of every file it
skipped or converted. It never modifies or deletes a file.

Real photos are opened by one rule, the same for training, Grad-CAM and every
figure (:func:`open_rgb`): the EXIF orientation is applied (a phone photo
stored sideways is turned upright), any mode (greyscale, palette, CMYK,
16-bit, with transparency) becomes 8-bit RGB, and a non-square image is
**centre-cropped to a square** (the middle of the longer side is kept, nothing
is stretched) before it is resized to the profile's size. An image more than
:data:`MAX_ASPECT` (4) times wider than high, or higher than wide (a stitched
panorama), is skipped with that reason in the report: its centre square would
show less than a quarter of it. The built-in cities are square PNGs without
EXIF data, which the rule leaves unchanged.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from PIL import Image, ImageOps, UnidentifiedImageError

from .artifacts import Artifact, artifact
from .settings import Settings
from .synthetic import DEFAULT_CITIES, City, check_cities, cities_to_dict, cue_table, image_rng, render_image
from .utils import progress

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"}
SPLIT_FOLDERS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
SPLITS = ("train", "val", "test")
#: Bump when the generator changes what it draws: cached datasets are then remade.
GENERATOR_VERSION = 1
#: Longest side over shortest side beyond which an image counts as a panorama and is skipped
#: (its centre square, the rule for non-square images, would show under a quarter of it).
MAX_ASPECT = 4.0
_EXIF_ORIENTATION = 0x0112


class BadImage(Exception):
    """A file that cannot be used as an image; the message says why."""


# --------------------------------------------------------------------------
# Opening one image
# --------------------------------------------------------------------------


def _to_rgb(img: Image.Image) -> tuple[Image.Image, str]:
    """Convert any PIL mode to 8-bit RGB; the note says what was done ('' if nothing)."""
    mode = img.mode
    if mode == "RGB":
        return img, ""
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr8 = np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr8, "L").convert("RGB"), f"{mode} (16-bit) scaled to 8-bit RGB"
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB"), f"{mode} with transparency composited on white"
    names = {"L": "grayscale", "1": "1-bit", "P": "palette", "CMYK": "CMYK", "YCbCr": "YCbCr"}
    return img.convert("RGB"), f"{names.get(mode, mode)} converted to RGB"


def centre_square(img: Image.Image) -> Image.Image:
    """The centred square of side ``min(width, height)`` (the rule for non-square images)."""
    w, h = img.size
    if w == h:
        return img
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return img.crop((left, top, left + side, top + side))


def open_rgb(path: str | os.PathLike, *, min_side: int = 1, max_pixels: int = 80_000_000,
             with_note: bool = False, square: bool = True):
    """Open an image file as 8-bit RGB, or raise :class:`BadImage` saying why not.

    The EXIF orientation is applied; greyscale, palette, RGBA, CMYK and 16-bit
    images are converted; with ``square`` (the default, used for training and
    figures alike) a non-square image is centre-cropped to a square. Zero-byte,
    truncated, non-image, too small (``min_side``), too large (``max_pixels``)
    and panorama (longer side over :data:`MAX_ASPECT` times the shorter) files
    are refused. The file itself is never changed.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as err:
        raise BadImage(f"cannot read ({err.strerror})") from None
    if size == 0:
        raise BadImage("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)
            width, height = img.size
            if width * height > max_pixels:
                raise BadImage(f"huge ({width}x{height} pixels, more than max_pixels={max_pixels:,})")
            if min(width, height) < min_side:
                raise BadImage(f"tiny ({width}x{height} pixels, a side under min_side={min_side})")
            img.load()
    except BadImage:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombWarning, Image.DecompressionBombError) as err:
        raise BadImage(f"not an image ({type(err).__name__})") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise BadImage(f"truncated or corrupt ({err})") from None
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise BadImage(f"panorama ({width}x{height} pixels, more than {MAX_ASPECT:g}:1): its centre square "
                       "would show under a quarter of it")
    notes = []
    try:
        orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
    except (OSError, SyntaxError, ValueError):  # unreadable EXIF: the pixels as stored
        orientation = 1
    if orientation in range(2, 9):
        img = ImageOps.exif_transpose(img)
        notes.append(f"EXIF orientation {orientation} applied")
    rgb, note = _to_rgb(img)
    notes += [note] if note else []
    if square and rgb.size[0] != rgb.size[1]:
        w, h = rgb.size
        rgb = centre_square(rgb)
        notes.append(f"{w}x{h} centre-cropped to {rgb.size[0]}x{rgb.size[1]}")
    return (rgb, "; ".join(notes)) if with_note else rgb


# --------------------------------------------------------------------------
# Scanning a tree
# --------------------------------------------------------------------------


@dataclass
class CityData:
    """Usable images of a city-image tree, their splits, and a quality report."""

    root: Path
    source: str  # "synthetic" or the tree's path
    cities: list[str]
    items: pd.DataFrame  # one row per usable image: path, city, split, (+ ground truth columns)
    report: pd.DataFrame  # one row per skipped or converted file: path, action, reason
    meta: dict = field(default_factory=dict)

    @property
    def has_ground_truth(self) -> bool:
        return "label_path" in self.items.columns

    @property
    def fingerprint(self) -> str:
        """Hash of which images are in which split (and, for the built-in cities, of
        the settings and city declarations that drew them): later steps key their
        artifacts by it, so a different dataset never reuses a stale model."""
        from .settings import settings_hash

        art = self.meta.get("artifact")
        rows = self.items[["path", "city", "split"]].values.tolist()
        if art is not None:  # the same files wherever the artifact folder lives
            rows = [[str(Path(p).relative_to(art.path)), c, s] for p, c, s in rows]
        return settings_hash({"rows": rows, "artifact": getattr(art, "key", None)})

    def split(self, name: str) -> pd.DataFrame:
        return self.items[self.items.split == name].reset_index(drop=True)

    def n_images(self) -> dict[str, int]:
        return {s: int((self.items.split == s).sum()) for s in SPLITS}

    def balance(self) -> pd.DataFrame:
        """Images per city (rows) and split (columns), with totals."""
        table = pd.crosstab(self.items.city, self.items.split).reindex(columns=list(SPLITS), fill_value=0)
        table = table.reindex(self.cities, fill_value=0)
        table["total"] = table.sum(axis=1)
        return table


def scan_image_folder(root: str | os.PathLike, *, seed: int = 0, val_fraction: float = 0.15,
                      test_fraction: float = 0.15, max_per_city: int | None = None, min_side: int = 32,
                      max_pixels: int = 80_000_000, verbose: bool = True) -> CityData:
    """Read a tree of city images; see the module docstring for the layouts."""
    root = Path(root).expanduser()
    if not root.exists():
        raise FileNotFoundError(
            f"No folder at {root}. Give the path of a folder with one sub-folder of images per city "
            "(optionally inside train/ val/ test/), or use data='synthetic' for the built-in cities.")
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is a file; give the folder that holds one sub-folder per city.")

    def visible_dirs(folder: Path) -> list[Path]:
        return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))

    top = visible_dirs(root)
    split_dirs = {SPLIT_FOLDERS[p.name.lower()]: p for p in top if p.name.lower() in SPLIT_FOLDERS}
    layout = "split folders" if split_dirs else "one folder per city"
    groups = ([(split, d) for split, d in split_dirs.items()] if split_dirs else [(None, root)])

    rows, report = [], []
    files, usable = [], {}
    for split, folder in groups:
        for city_dir in visible_dirs(folder):
            usable[city_dir] = 0
            files += [(split, city_dir, p) for p in sorted(city_dir.rglob("*")) if p.is_file()]
    for split, city_dir, path in progress(files, desc="checking images"):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            report.append((str(rel), "skipped", "hidden file"))
            continue
        try:
            _, note = open_rgb(path, min_side=min_side, max_pixels=max_pixels, with_note=True)
        except BadImage as err:
            report.append((str(rel), "skipped", str(err)))
            continue
        if note:
            report.append((str(rel), "converted", note))
        rows.append((str(path), city_dir.name, split))
        usable[city_dir] += 1
    empty = [str(d.relative_to(root)) for d, n in usable.items() if n == 0]
    report += [(e, "skipped", "folder without usable images") for e in empty]

    items = pd.DataFrame(rows, columns=["path", "city", "split"])
    cities = sorted(items.city.unique().tolist())
    if len(cities) < 2:
        found = ", ".join(cities) or "none"
        raise ValueError(
            f"{root} holds usable images of {len(cities)} city folder(s) ({found}); a city classifier "
            "needs at least two. Put each city's images in its own sub-folder, e.g. "
            f"{root}/Tokyo/*.jpg and {root}/Pittsburgh/*.jpg."
            + (f" Folders without usable images: {', '.join(empty)}." if empty else ""))

    if max_per_city:
        rng = np.random.default_rng(seed)
        keep = []
        for city in cities:
            idx = np.flatnonzero(items.city.values == city)
            keep.extend(sorted(rng.permutation(idx)[:max_per_city]) if len(idx) > max_per_city else idx)
        items = items.iloc[sorted(keep)].reset_index(drop=True)
    if not split_dirs:
        items["split"] = _stratified_split(items.city.values, seed, val_fraction, test_fraction)
    elif items.split.isin(["train"]).sum() == 0:
        raise ValueError(f"{root} has split folders but no usable images in train/.")

    data = CityData(root=root, source=str(root), cities=cities, items=items,
                    report=pd.DataFrame(report, columns=["path", "action", "reason"]),
                    meta={"layout": layout, "seed": seed})
    if verbose:
        n = data.n_images()
        print(f"{root}: {layout}, {len(cities)} cities, {n['train']} train / {n['val']} val / "
              f"{n['test']} test images; {int((data.report.action == 'skipped').sum())} files skipped, "
              f"{int((data.report.action == 'converted').sum())} converted (see .report).")
    return data


def _stratified_split(cities: np.ndarray, seed: int, val_fraction: float, test_fraction: float) -> np.ndarray:
    """Per city, shuffle with ``seed`` and cut into train/val/test by the fractions."""
    rng = np.random.default_rng(seed)
    split = np.empty(len(cities), dtype=object)
    for city in sorted(set(cities)):
        idx = rng.permutation(np.flatnonzero(cities == city))
        n_test = int(round(len(idx) * test_fraction))
        n_val = int(round(len(idx) * val_fraction))
        if len(idx) - n_test - n_val < 1:
            raise ValueError(f"City {city!r} has only {len(idx)} usable image(s): too few to split into "
                             "train/val/test. Add images or lower val_fraction/test_fraction.")
        split[idx[:n_test]] = "test"
        split[idx[n_test:n_test + n_val]] = "val"
        split[idx[n_test + n_val:]] = "train"
    return split


# --------------------------------------------------------------------------
# The built-in synthetic cities on disk
# --------------------------------------------------------------------------


def _drawing_workers(workers: int | None, n_jobs: int) -> int:
    """Processes for drawing: all cores where ``fork`` exists (Linux; a notebook's own
    cue styles reach the workers), one elsewhere or for a handful of images."""
    import multiprocessing

    if "fork" not in multiprocessing.get_all_start_methods():
        return 1
    if workers is None:  # a few images are drawn faster than processes start
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        workers = min(cores, 8) if n_jobs >= 200 else 1
    return max(1, workers)


def _draw_one(root: Path, cities: tuple, seed: int, image_size: int, job: tuple) -> dict:
    """Draw and write image ``job = (split, city, index)``; its manifest row."""
    split, c, i = job
    city = cities[c].name
    out = render_image(cities, c, image_rng(seed, c, SPLITS.index(split), i), image_size)
    name = f"{city.lower()}_{split}_{i:05d}.png"
    rel = {kind: Path(kind if kind != "images" else "", split, city, name) for kind in ("images", "labels", "cues")}
    for kind, array in (("images", out.image), ("labels", out.label), ("cues", out.cue_map)):
        path = root / rel[kind]
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(path, optimize=False, compress_level=1)
    return dict(id=name[:-4], split=split, city=city, image=str(rel["images"]), label=str(rel["labels"]),
                cues=str(rel["cues"]), cues_present=";".join(out.cues_present),
                n_cue_instances=sum(out.n_instances.values()), seed=seed)


def generate_synthetic(root: str | os.PathLike, cities: Sequence[City] = DEFAULT_CITIES, *,
                       n_per_city: dict[str, int], image_size: int, seed: int = 0,
                       show_progress: bool = True, workers: int | None = None) -> pd.DataFrame:
    """Write the synthetic cities as an ImageFolder tree with ground truth.

    ``<root>/<split>/<city>/<id>.png`` are the images, ``<root>/labels/...`` the
    ADE20K label maps and ``<root>/cues/...`` the cue maps (same relative
    paths); ``manifest.csv`` lists every image and ``dataset.json`` the cities
    and their cues. Image ``i`` of a city and split depends only on
    ``(seed, city, split, i)``: the same seed gives byte-identical files, drawn
    by ``workers`` processes (default: every core; 1 draws in this process).
    """
    check_cities(cities)
    root = Path(root)
    jobs = [(s, c, i) for s in SPLITS for c in range(len(cities)) for i in range(n_per_city[s])]
    draw = partial(_draw_one, root, tuple(cities), seed, image_size)
    workers = _drawing_workers(workers, len(jobs))
    bar = dict(desc="drawing synthetic cities", total=len(jobs), disable=not show_progress or None)
    if workers > 1:  # each image depends only on (seed, city, split, index): any order gives the same files
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            rows = list(progress(pool.map(draw, jobs, chunksize=64), **bar))
    else:
        rows = [draw(job) for job in progress(jobs, **bar)]
    manifest = pd.DataFrame(rows)
    manifest.to_csv(root / "manifest.csv", index=False)
    (root / "dataset.json").write_text(json.dumps(
        {"cities": cities_to_dict(cities), "cues": cue_table(cities), "n_per_city": n_per_city,
         "image_size": image_size, "seed": seed, "generator_version": GENERATOR_VERSION}, indent=2))
    return manifest


def synthetic_artifact(settings: Settings, cities: Sequence[City] = DEFAULT_CITIES,
                       verbose: bool = True) -> Artifact:
    """The synthetic dataset of these settings: loaded from the cache or drawn now."""
    ds = settings["dataset"]

    def build(folder: Path):
        manifest = generate_synthetic(folder, cities, n_per_city=ds["n_per_city"],
                                      image_size=ds["image_size"], seed=ds["seed"])
        return {"n_images": len(manifest)}

    return artifact(settings, "dataset", ("dataset",), build, version=GENERATOR_VERSION,
                    extra={"cities": cities_to_dict(cities)}, verbose=verbose)


def load_dataset(settings: Settings, cities: Sequence[City] = DEFAULT_CITIES, verbose: bool = True) -> CityData:
    """The dataset the settings select: the built-in cities or a real tree.

    Both go through :func:`scan_image_folder`; the synthetic one also gets its
    ground-truth columns (``label_path``, ``cue_path``, ``cues_present``).
    """
    ds = settings["dataset"]
    if settings.data != "synthetic":
        return scan_image_folder(settings.data, seed=ds["seed"], val_fraction=ds["val_fraction"],
                                 test_fraction=ds["test_fraction"], max_per_city=ds["max_per_city"],
                                 min_side=ds["min_side"], verbose=verbose)
    art = synthetic_artifact(settings, cities, verbose=verbose)
    data = scan_image_folder(art.path, seed=ds["seed"], min_side=1, verbose=False)  # same loader as real trees
    manifest = pd.read_csv(art.path / "manifest.csv", keep_default_na=False)
    manifest["path"] = [str(art.path / p) for p in manifest.image]
    items = data.items.merge(manifest[["path", "id", "label", "cues", "cues_present", "n_cue_instances"]],
                             on="path", how="left", validate="one_to_one")
    items["label_path"] = [str(art.path / p) for p in items.pop("label")]
    items["cue_path"] = [str(art.path / p) for p in items.pop("cues")]
    data.items = items
    data.source = "synthetic"
    data.cities = [c.name for c in cities]
    data.meta.update(json.loads((art.path / "dataset.json").read_text()))
    data.meta["artifact"] = art
    if verbose:
        n = data.n_images()
        print(f"Built-in synthetic cities: {len(data.cities)} cities, {n['train']} train / {n['val']} val / "
              f"{n['test']} test images of {ds['image_size']} px.")
    return data


def ground_truth(data: CityData, split: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Label maps and cue maps (both (N, size, size) uint8) of a split of the
    built-in cities, resized (nearest) to ``size`` if drawn at another size."""
    if not data.has_ground_truth:
        raise ValueError("These images have no ground truth: only the built-in cities do.")

    def read(path):
        img = Image.open(path)
        return np.asarray(img if img.size == (size, size) else img.resize((size, size), Image.NEAREST))

    items = data.split(split)
    return (np.stack([read(p) for p in items.label_path]), np.stack([read(p) for p in items.cue_path]))


# --------------------------------------------------------------------------
# The no-shortcut check
# --------------------------------------------------------------------------


def colour_features(images: Sequence[np.ndarray], bins: int = 4,
                    keep: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """Per image: mean R, G, B and a joint ``bins**3`` colour histogram (fractions).

    ``keep`` (one boolean H x W array per image) restricts both to the pixels
    marked True, e.g. those outside the planted cues; an image with no such
    pixel gets zeros.
    """
    feats = []
    for i, im in enumerate(images):
        px = np.asarray(im, np.float32).reshape(-1, 3) / 255.0
        if keep is not None:
            px = px[np.asarray(keep[i], bool).ravel()]
            if not len(px):
                feats.append(np.zeros(3 + bins ** 3))
                continue
        q = np.minimum((px * bins).astype(int), bins - 1)
        hist = np.bincount((q[:, 0] * bins + q[:, 1]) * bins + q[:, 2], minlength=bins ** 3) / len(px)
        feats.append(np.concatenate([px.mean(0), hist]))
    return np.array(feats)


def label_features(labels: Sequence[np.ndarray], n_labels: int = 151) -> np.ndarray:
    """Per image: the share of pixels of each label value."""
    return np.array([np.bincount(np.asarray(l).ravel(), minlength=n_labels)[:n_labels] / np.asarray(l).size
                     for l in labels])


def class_colour_features(images: Sequence[np.ndarray], labels: Sequence[np.ndarray], classes: Sequence[int],
                          keep: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """Per image: the mean R, G, B of the pixels of each class in ``classes``
    (label values), among the pixels ``keep`` marks (e.g. outside the cues).
    A class the image does not show gets mid-grey, so the feature says nothing
    about which classes are visible: only about their colour."""
    feats = np.full((len(images), 3 * len(classes)), 0.5)
    for i, (im, lab) in enumerate(zip(images, labels)):
        px, lab = np.asarray(im, np.float32).reshape(-1, 3) / 255.0, np.asarray(lab).ravel()
        ok = np.ones(len(lab), bool) if keep is None else np.asarray(keep[i], bool).ravel()
        for j, c in enumerate(classes):
            sel = ok & (lab == c)
            if sel.any():
                feats[i, 3 * j:3 * j + 3] = px[sel].mean(0)
    return feats


def shared_classes(labels: Sequence[np.ndarray], cue_classes: Sequence[int], min_share: float = 0.5) -> list[int]:
    """Label values that no cue draws and that at least ``min_share`` of the images
    show: the scene that every city shares (sky, road, ...)."""
    seen = np.zeros(256)
    for lab in labels:
        seen[np.unique(np.asarray(lab))] += 1
    common = np.flatnonzero(seen >= min_share * len(labels))
    return [int(c) for c in common if c != 0 and c not in set(cue_classes)]


def probe(features: np.ndarray, cities: Sequence[str], seed: int = 0, folds: int = 5, level: float = 0.95) -> dict:
    """Does a logistic regression predict the city from ``features``?

    Each image is predicted once, by the fold that did not train on it; the
    accuracy comes with an exact (Clopper-Pearson) binomial interval over the
    images, and ``chance_inside`` says whether chance (1 / number of cities) lies
    in it: True means these features carry no detectable city signal.
    """
    from scipy.stats import binomtest
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = np.asarray(cities)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
    pred = cross_val_predict(model, features, y, cv=StratifiedKFold(folds, shuffle=True, random_state=seed))
    k, n = int((pred == y).sum()), len(y)
    ci = binomtest(k, n).proportion_ci(confidence_level=level)
    chance = 1 / len(np.unique(y))
    return {"accuracy": k / n, "low": float(ci.low), "high": float(ci.high), "n": n, "chance": chance,
            "chance_inside": bool(ci.low <= chance <= ci.high)}


def probe_accuracy(features: np.ndarray, cities: Sequence[str], seed: int = 0, folds: int = 5) -> float:
    """Cross-validated accuracy of a logistic regression predicting the city (see :func:`probe`)."""
    return probe(features, cities, seed, folds)["accuracy"]