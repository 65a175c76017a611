"""The built-in synthetic cities: street scenes with pixel-exact ground truth.

Notebook 01 explains the generator; every later notebook uses its output.

A scene is a street seen by a pinhole camera: sky, two rows of building
facades with windows, road and sidewalks, and street objects (cars, people,
trees, poles, street lights, signboards, awnings, fences, ...) standing at a
depth ``z`` so that they shrink toward the horizon. Camera height, pitch
(horizon), yaw (vanishing point), focal length, lighting, colour cast and noise
are random per image, and nearer objects occlude farther ones.

Cities are declared as data. All cities share one *base* distribution of
scene content; a :class:`City` adds its *cues*: extra object instances drawn
in a style of its own (banded facades, blade signs, conifers, ...), each
present in an image with probability ``presence``. Every class that is not a
cue is therefore distributed identically across cities, and the only thing a
classifier can learn is the cues. Each cue instance is recorded in a *cue map*
(pixel value ``16 * cue_number + instance``), the ground truth against which
notebook 03 scores Grad-CAM.

Label maps use ADE20K's label values (:mod:`cityviz_helpers.ade20k`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from .ade20k import class_index

# --------------------------------------------------------------------------
# Declaring cities
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class CueStyle:
    """A way of drawing one object class that a city can make its own."""

    name: str
    class_name: str  # ADE20K short name of the class it draws
    size: str  # "large", "medium" or "small": typical share of the image
    description: str
    draw: Callable[["Scene", np.random.Generator, int, int], None] = field(repr=False)
    replaces: str | None = None  # base kind (BASE_COUNTS key) whose count the cue's instances take


#: Registered cue styles by name. Add your own with :func:`register_cue_style`.
CUE_STYLES: dict[str, CueStyle] = {}


def register_cue_style(name: str, class_name: str, size: str, description: str,
                       replaces: str | None = None):
    """Decorator registering ``draw(scene, rng, count, cue_number)`` as a cue style.

    ``draw`` adds ``count`` instances to ``scene`` (:meth:`Scene.add`,
    :meth:`Scene.add_plane`) whose parts carry ``cue=16 * cue_number + instance``.
    ``replaces`` names a base kind of the same class (a key of ``BASE_COUNTS``):
    the cue's instances then take the place of that many base instances, so the
    class looks different in the city without adding much colour mass, which
    keeps cities inseparable by colour statistics alone.
    """
    class_index(class_name)  # fail early on a class name ADE20K does not have
    if size not in ("large", "medium", "small"):
        raise ValueError(f"size must be 'large', 'medium' or 'small', not {size!r}")

    def wrap(fn):
        CUE_STYLES[name] = CueStyle(name, class_name, size, description, fn, replaces)
        return fn

    return wrap


@dataclass(frozen=True)
class Cue:
    """One discriminative cue of a city: a style, how often, how many."""

    style: str
    presence: float = 0.7  # probability that an image of the city shows it
    count: tuple[int, int] = (2, 3)  # instances when present (inclusive range)

    def __post_init__(self):
        if self.style not in CUE_STYLES:
            raise ValueError(f"Unknown cue style {self.style!r}. Registered styles: "
                             f"{', '.join(sorted(CUE_STYLES))} (add one with register_cue_style).")
        if not 0.0 <= self.presence <= 1.0:
            raise ValueError(f"Cue {self.style!r}: presence must be in [0, 1], not {self.presence}.")
        lo, hi = self.count
        if not 1 <= lo <= hi <= 15:
            raise ValueError(f"Cue {self.style!r}: count must be a range within 1..15, not {self.count}.")

    @property
    def class_name(self) -> str:
        return CUE_STYLES[self.style].class_name


@dataclass(frozen=True)
class City:
    """A city: a name and the cues it adds to the shared base distribution."""

    name: str
    cues: tuple[Cue, ...]

    def __post_init__(self):
        object.__setattr__(self, "cues", tuple(self.cues))
        styles = [c.style for c in self.cues]
        if len(set(styles)) != len(styles):
            raise ValueError(f"City {self.name!r} lists a cue style twice: {styles}.")
        if not self.name or "/" in self.name or self.name.startswith("."):
            raise ValueError(f"City name {self.name!r} cannot be used as a folder name.")


def cue_table(cities: Sequence[City]) -> list[dict]:
    """One row per (city, cue) with its global ``cue_number`` (1-based)."""
    rows, number = [], 0
    for city in cities:
        for cue in city.cues:
            number += 1
            style = CUE_STYLES[cue.style]
            rows.append(dict(cue_number=number, city=city.name, cue=cue.style,
                             class_name=style.class_name, label=class_index(style.class_name),
                             size=style.size, presence=cue.presence, count=list(cue.count),
                             description=style.description))
    if number > 15:
        raise ValueError(f"At most 15 cues over all cities fit in a cue map; these cities declare {number}.")
    return rows


def check_cities(cities: Sequence[City]) -> None:
    names = [c.name for c in cities]
    if len(cities) < 2:
        raise ValueError("Declare at least two cities: a classifier needs something to tell apart.")
    if len(set(names)) != len(names):
        raise ValueError(f"City names must be unique: {names}.")
    cue_table(cities)


def cities_to_dict(cities: Sequence[City]) -> list[dict]:
    """A JSON-able description (used in settings hashes and dataset.json)."""
    return [{"name": c.name, "cues": [{"style": q.style, "presence": q.presence,
                                       "count": list(q.count)} for q in c.cues]} for c in cities]


def cities_from_dict(data: Sequence[dict]) -> tuple[City, ...]:
    return tuple(City(d["name"], tuple(Cue(q["style"], q.get("presence", 0.7),
                                           tuple(q.get("count", (2, 3)))) for q in d["cues"]))
                 for d in data)


# --------------------------------------------------------------------------
# Colours
# --------------------------------------------------------------------------

FACADE_COLOURS = np.array([(0.80, 0.72, 0.60), (0.64, 0.34, 0.26), (0.58, 0.58, 0.60),
                           (0.88, 0.86, 0.80), (0.84, 0.76, 0.50), (0.50, 0.56, 0.64),
                           (0.70, 0.54, 0.44), (0.76, 0.80, 0.74)], np.float32)
VEHICLE_COLOURS = np.array([(0.92, 0.92, 0.92), (0.12, 0.12, 0.14), (0.62, 0.64, 0.66),
                            (0.70, 0.14, 0.12), (0.16, 0.26, 0.56), (0.18, 0.36, 0.22),
                            (0.88, 0.74, 0.18)], np.float32)
BRIGHT_COLOURS = np.array([(0.86, 0.16, 0.14), (0.94, 0.80, 0.14), (0.14, 0.36, 0.74),
                           (0.16, 0.58, 0.30), (0.95, 0.95, 0.92), (0.94, 0.50, 0.12)], np.float32)
CLOTHES_COLOURS = np.array([(0.15, 0.15, 0.2), (0.7, 0.2, 0.2), (0.2, 0.3, 0.6), (0.85, 0.85, 0.8),
                            (0.5, 0.45, 0.35), (0.3, 0.5, 0.3)], np.float32)
SKIES = np.array([[(0.40, 0.60, 0.92), (0.78, 0.86, 0.97)],
                  [(0.66, 0.68, 0.72), (0.84, 0.85, 0.87)],
                  [(0.32, 0.38, 0.62), (0.94, 0.72, 0.52)]], np.float32)
GREEN = np.array((0.22, 0.44, 0.16), np.float32)
FENCE_COLOURS = np.array([(0.92, 0.92, 0.88), (0.16, 0.34, 0.22), (0.12, 0.12, 0.12), (0.45, 0.46, 0.48)],
                         np.float32)
GREY = np.array((0.42, 0.43, 0.45), np.float32)
DARK = np.array((0.10, 0.10, 0.11), np.float32)


def _jitter(rng, colour, amount=0.05):
    return np.clip(np.asarray(colour, np.float32) + rng.normal(0, amount, 3).astype(np.float32), 0, 1)


def _pick(rng, palette, amount=0.05):
    return _jitter(rng, palette[rng.integers(len(palette))], amount)


# --------------------------------------------------------------------------
# Scene geometry and rasterisation
# --------------------------------------------------------------------------


@dataclass
class Segment:
    """One building along a side of the street, ``z0..z1`` metres deep."""

    side: int  # -1 left, +1 right
    z0: float
    z1: float
    height: float
    colour: np.ndarray
    win_pitch: float
    win_width: float
    win_height: float
    shop_colour: np.ndarray | None
    band: tuple[int, int] | None = None  # cue (number, instance) for banded facades


@dataclass
class Part:
    """A piece of an object: a billboard shape at depth z or a patch of a side plane."""

    kind: str  # "rect", "ellipse", "poly" (billboards at (X, z)) or "plane"
    geom: tuple
    colour: object  # (3,) colour, or a function (Z, Y) -> (mask, colours) for planes
    label: int
    cue: int = 0


class Scene:
    """The camera, street layout and object list of one image being drawn."""

    def __init__(self, rng: np.random.Generator, size: int):
        self.H = self.W = size
        W, H = self.W, self.H
        self.f = W * rng.uniform(0.55, 0.85)  # focal length, pixels
        self.xv = W * rng.uniform(0.36, 0.64)  # vanishing point (yaw)
        self.yh = H * rng.uniform(0.36, 0.54)  # horizon (pitch)
        self.h = rng.uniform(1.3, 2.6)  # camera height, metres
        self.road = rng.uniform(3.0, 5.5)  # road half-width
        self.xb = {s: self.road + rng.uniform(2.2, 3.6) for s in (-1, 1)}  # facade planes
        self.shade = {s: 1.0 for s in (-1, 1)}
        self.shade[int(rng.choice([-1, 1]))] = rng.uniform(0.62, 0.95)  # the sun side is brighter
        self.segments: list[Segment] = []
        for side in (-1, 1):
            z = self.z_visible(side * self.xb[side]) * rng.uniform(0.6, 0.95)
            while z < 160:
                length = rng.uniform(7, 20)
                shop = _pick(rng, FACADE_COLOURS) * 0.7 if rng.random() < 0.5 else None
                self.segments.append(Segment(
                    side, z, z + length, rng.uniform(7, 26), _pick(rng, FACADE_COLOURS, 0.04),
                    rng.uniform(2.4, 3.6), rng.uniform(0.9, 1.5), rng.uniform(1.2, 1.8), shop))
                z += length
        self.things: list[tuple[float, list[Part]]] = []

    # geometry ------------------------------------------------------------
    def z_visible(self, X: float) -> float:
        """Nearest depth at which lateral offset X is inside the image."""
        edge = self.xv if X < 0 else self.W - self.xv
        return max(1.0, self.f * abs(X) / max(edge, 1.0))

    def sample_z(self, rng, X: float, far: float = 45.0) -> float:
        near = self.z_visible(X) * 0.95
        return float(near + (max(far, near + 5) - near) * rng.random() ** 1.5)  # more near than far

    def sidewalk_x(self, rng, side: int) -> float:
        return side * rng.uniform(self.road + 0.5, self.xb[side] - 0.6)

    def add(self, X: float, z: float, parts: list[Part]) -> None:
        """Add a billboard object standing at lateral X, depth z."""
        for p in parts:
            if p.kind == "poly":
                p.geom = (X, z, p.geom)
            elif p.kind != "plane":
                p.geom = (X, z) + tuple(p.geom)
        self.things.append((z, parts))

    def add_plane(self, z_sort: float, parts: list[Part]) -> None:
        self.things.append((z_sort, parts))


class Canvas:
    def __init__(self, H: int, W: int):
        self.H, self.W = H, W
        self.rgb = np.zeros((H, W, 3), np.float32)
        self.label = np.zeros((H, W), np.uint8)
        self.cue = np.zeros((H, W), np.uint8)

    def paint(self, y0, x0, mask, colour, label, cue=0):
        h, w = mask.shape
        sl = (slice(y0, y0 + h), slice(x0, x0 + w))
        self.rgb[sl][mask] = colour if np.ndim(colour) == 1 else colour[mask]
        self.label[sl][mask] = label
        self.cue[sl][mask] = cue


def _clip_box(x0, x1, y0, y1, W, H):
    x0, x1 = max(int(np.floor(x0)), 0), min(int(np.ceil(x1)), W)
    y0, y1 = max(int(np.floor(y0)), 0), min(int(np.ceil(y1)), H)
    return x0, x1, y0, y1


def _raster(scene: Scene, part: Part):
    """(y0, x0, mask, colour) of a part in pixel coordinates, or None if off-screen."""
    f, xv, yh, h, W, H = scene.f, scene.xv, scene.yh, scene.h, scene.W, scene.H
    if part.kind == "plane":
        Xp, z0, z1, Y0, Y1 = part.geom
        xa, xb = xv + f * Xp / z0, xv + f * Xp / z1
        ya = yh + f * (h - Y1) / min(z0, z1)
        yb = yh + f * (h - Y0) / min(z0, z1)
        x0, x1, y0, y1 = _clip_box(min(xa, xb), max(xa, xb), ya, yb, W, H)
        if x1 <= x0 or y1 <= y0:
            return None
        xs = np.arange(x0, x1, dtype=np.float32) + 0.5
        ys = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5
        with np.errstate(divide="ignore"):
            Z = f * Xp / (xs - xv)
        Z = np.where(Z > 0, Z, np.inf)[None, :]
        Y = h - (ys - yh) * Z / f
        mask = (Z >= z0) & (Z < z1) & (Y >= Y0) & (Y < Y1)
        colour = part.colour
        if callable(colour):
            keep, colour = colour(np.broadcast_to(Z, mask.shape), Y)
            mask &= keep
        return y0, x0, mask, colour
    X, z = part.geom[:2]
    s = f / z
    cx, cy = xv + f * X / z, yh + f * h / z  # screen position of the object's foot
    if part.kind == "rect":
        u0, u1, v0, v1 = part.geom[2:]
        # pixel i is inside when its centre i + 0.5 lies in [a, b): i in [ceil(a - .5), ceil(b - .5))
        x0, x1 = (int(np.ceil(cx + s * u - 0.5)) for u in (u0, u1))
        y0, y1 = (int(np.ceil(cy - s * v - 0.5)) for v in (v1, v0))
        x0, x1, y0, y1 = max(x0, 0), min(x1, W), max(y0, 0), min(y1, H)
        if x1 <= x0 or y1 <= y0:
            return None
        return y0, x0, np.ones((y1 - y0, x1 - x0), bool), part.colour
    if part.kind == "ellipse":
        cu, cv, ru, rv = part.geom[2:]
        ex, ey, rx, ry = cx + s * cu, cy - s * cv, s * ru, s * rv
        x0, x1, y0, y1 = _clip_box(ex - rx, ex + rx, ey - ry, ey + ry, W, H)
        if x1 <= x0 or y1 <= y0:
            return None
        xs = (np.arange(x0, x1) + 0.5 - ex) / max(rx, 1e-6)
        ys = (np.arange(y0, y1)[:, None] + 0.5 - ey) / max(ry, 1e-6)
        mask = xs ** 2 + ys ** 2 <= 1.0
        return y0, x0, mask, part.colour
    if part.kind == "poly":  # convex, counter-clockwise in (u, v)
        pts = np.array(part.geom[2], np.float32)
        px, py = cx + s * pts[:, 0], cy - s * pts[:, 1]
        x0, x1, y0, y1 = _clip_box(px.min(), px.max(), py.min(), py.max(), W, H)
        if x1 <= x0 or y1 <= y0:
            return None
        xs = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5
        ys = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5
        mask = np.ones((y1 - y0, x1 - x0), bool)
        n = len(px)
        for i in range(n):  # inside = same side of every edge (y axis points down)
            ax, ay, bx, by = px[i], py[i], px[(i + 1) % n], py[(i + 1) % n]
            mask &= (bx - ax) * (ys - ay) - (by - ay) * (xs - ax) <= 0
        return y0, x0, mask, part.colour
    raise ValueError(part.kind)


def _draw_part(canvas: Canvas, scene: Scene, part: Part) -> None:
    out = _raster(scene, part)
    if out is not None:
        y0, x0, mask, colour = out
        if mask.any():
            canvas.paint(y0, x0, mask, colour, part.label, part.cue)


# --------------------------------------------------------------------------
# The base scene, shared by every city
# --------------------------------------------------------------------------

L = {name: class_index(name) for name in
     ("building", "sky", "tree", "road", "windowpane", "sidewalk", "person", "door", "auto",
      "fence", "signboard", "bus", "awning", "streetlight", "pole", "traffic", "flag")}


def _draw_background(canvas: Canvas, scene: Scene, rng) -> None:
    H, W, f, xv, yh, h = scene.H, scene.W, scene.f, scene.xv, scene.yh, scene.h
    top, bottom = SKIES[rng.integers(len(SKIES))]
    t = np.clip((np.arange(H, dtype=np.float32) + 0.5) / max(yh, 1), 0, 1)[:, None, None]
    canvas.rgb[:] = (1 - t) * _jitter(rng, top, 0.03) + t * _jitter(rng, bottom, 0.03)
    canvas.label[:] = L["sky"]
    # ground: every pixel below the horizon sees the ground plane at depth Z
    y0 = int(np.floor(yh)) + 1
    if y0 < H:
        ys = np.arange(y0, H, dtype=np.float32)[:, None] + 0.5
        xs = np.arange(W, dtype=np.float32)[None, :] + 0.5
        Z = f * h / (ys - yh)
        X = (xs - xv) * Z / f
        road = np.abs(X) < scene.road
        rgb = np.where(road[..., None], _jitter(rng, (0.30, 0.30, 0.32), 0.04),
                       _jitter(rng, (0.62, 0.60, 0.56), 0.05))
        dash = road & (np.abs(X) < 0.12) & ((Z % 6.0) < 3.0)
        rgb[dash] = (0.85, 0.85, 0.80)
        canvas.rgb[y0:] = rgb
        canvas.label[y0:] = np.where(road, L["road"], L["sidewalk"])


def _facade_pattern(seg: Segment, shade: float):
    """Colours of a facade: wall, windows, optional darker shop floor and bands."""
    wall = seg.colour * shade
    glass = np.array((0.20, 0.24, 0.30), np.float32) * shade
    shop = None if seg.shop_colour is None else seg.shop_colour * shade

    def pattern(Z, Y):
        rgb = np.broadcast_to(wall, Z.shape + (3,)).copy()
        if seg.band is not None:  # the banded-facade cue: alternate darker bands
            dark = (Y % 2.4) < 1.2  # same mean brightness as a plain wall
            rgb[dark] *= 0.72
            rgb[~dark] = np.minimum(rgb[~dark] * 1.28, 1.0)
        if shop is not None:
            rgb[Y < 3.0] = shop
        return np.ones(Z.shape, bool), rgb

    def windows(Z, Y):
        dz = (Z - seg.z0) % seg.win_pitch
        upper = (dz > 0.5) & (dz < 0.5 + seg.win_width) & (Y > 3.6) & (Y < seg.height - 1.0) \
            & (((Y - 3.6) % 3.0) < seg.win_height) & (seg.band is None)
        shopfront = (Y > 0.4) & (Y < 2.4) & (((Z - seg.z0) % 5.0) > 0.6) & (((Z - seg.z0) % 5.0) < 3.6)
        return upper | shopfront, glass

    def doors(Z, Y):
        dz = (Z - seg.z0) % 5.0
        return (Y < 2.2) & (dz > 4.0) & (dz < 4.8), glass * 0.6

    return pattern, windows, doors


def _draw_facades(canvas: Canvas, scene: Scene) -> None:
    for seg in sorted(scene.segments, key=lambda s: -s.z0):  # far to near
        Xp = seg.side * scene.xb[seg.side]
        wall, windows, doors = _facade_pattern(seg, scene.shade[seg.side])
        geom = (Xp, seg.z0, seg.z1, 0.0, seg.height)
        cue = 0 if seg.band is None else 16 * seg.band[0] + seg.band[1]
        _draw_part(canvas, scene, Part("plane", geom, wall, L["building"], cue))
        _draw_part(canvas, scene, Part("plane", geom, windows, L["windowpane"]))
        _draw_part(canvas, scene, Part("plane", geom, doors, L["door"]))


def _car(rng, cue=0):
    c = _pick(rng, VEHICLE_COLOURS)
    lab = L["auto"]
    return [Part("rect", (-0.9, 0.9, 0.3, 1.1), c, lab, cue),
            Part("rect", (-0.7, 0.7, 1.1, 1.55), c * 0.45, lab, cue),
            Part("rect", (-0.85, -0.45, 0.0, 0.35), DARK, lab, cue),
            Part("rect", (0.45, 0.85, 0.0, 0.35), DARK, lab, cue)]


def _person(rng, cue=0):
    lab = L["person"]
    return [Part("rect", (-0.18, 0.18, 0.0, 0.85), _pick(rng, CLOTHES_COLOURS), lab, cue),
            Part("rect", (-0.26, 0.26, 0.85, 1.45), _pick(rng, CLOTHES_COLOURS), lab, cue),
            Part("ellipse", (0.0, 1.6, 0.13, 0.16), _jitter(rng, (0.75, 0.58, 0.46), 0.08), lab, cue)]


def _round_tree(rng, cue=0):
    r = rng.uniform(1.3, 2.2)
    return [Part("rect", (-0.13, 0.13, 0.0, 2.6), _jitter(rng, (0.35, 0.25, 0.16)), L["tree"], cue),
            Part("ellipse", (0.0, 2.4 + r, r, r * 1.1), _jitter(rng, GREEN, 0.05), L["tree"], cue)]


def _pole(rng, cue=0):
    return [Part("rect", (-0.09, 0.09, 0.0, rng.uniform(3.5, 5.0)), _jitter(rng, GREY, 0.04), L["pole"], cue)]


def _streetlight(rng, side, cue=0):
    lab, c = L["streetlight"], _jitter(rng, GREY * 0.8, 0.03)
    arm = -side * 1.5
    return [Part("rect", (-0.09, 0.09, 0.0, 6.4), c, lab, cue),
            Part("rect", (min(0, arm), max(0, arm), 6.2, 6.4), c, lab, cue),
            Part("ellipse", (arm, 6.1, 0.32, 0.16), np.array((0.96, 0.90, 0.62), np.float32), lab, cue)]


def _plane_item(scene: Scene, side, z0, length, Y0, Y1, colour, label, offset=0.0, cue=0):
    Xp = side * (scene.xb[side] - offset)
    return Part("plane", (Xp, z0, z0 + length, Y0, Y1), colour, label, cue)


def _facade_z(rng, scene: Scene, side, length, span=30.0):
    near = scene.z_visible(side * scene.xb[side])
    return float(near + span * rng.random() ** 1.5), length


#: How many objects of each base kind an image gets: (low, high) inclusive.
BASE_COUNTS = {"cars": (0, 4), "buses": (0, 1), "people": (0, 5), "trees": (1, 4), "poles": (0, 2),
               "streetlights": (0, 2), "signboards": (0, 3), "awnings": (0, 2), "railings": (0, 1),
               "occluders": (0, 1)}


def sample_base_counts(rng) -> dict[str, int]:
    counts = {k: int(rng.integers(lo, hi + 1)) for k, (lo, hi) in BASE_COUNTS.items()}
    counts["buses"] = int(rng.random() < 0.12)
    counts["occluders"] = int(rng.random() < 0.25)
    return counts


def _add_base_objects(scene: Scene, rng, counts: dict[str, int]) -> None:
    """The shared base distribution, identical for every city but for ``counts``."""
    for _ in range(counts["cars"]):  # cars in either lane
        X = float(rng.choice([-1, 1]) * rng.uniform(0.9, max(1.0, scene.road - 1.0)))
        scene.add(X, scene.sample_z(rng, X, 50), _car(rng))
    for _ in range(counts["buses"]):
        X = float(rng.choice([-1, 1]) * rng.uniform(1.3, max(1.4, scene.road - 1.3)))
        scene.add(X, scene.sample_z(rng, X, 30), _bus(rng))
    for _ in range(counts["people"]):
        X = scene.sidewalk_x(rng, int(rng.choice([-1, 1])))
        scene.add(X, scene.sample_z(rng, X, 40), _person(rng))
    for _ in range(counts["trees"]):
        X = int(rng.choice([-1, 1])) * (scene.road + 0.7)
        scene.add(X, scene.sample_z(rng, X, 25), _round_tree(rng))
    for _ in range(counts["poles"]):
        X = int(rng.choice([-1, 1])) * (scene.road + 0.4)
        scene.add(X, scene.sample_z(rng, X, 45), _pole(rng))
    for _ in range(counts["streetlights"]):
        side = int(rng.choice([-1, 1]))
        X = side * (scene.road + 0.4)
        scene.add(X, scene.sample_z(rng, X, 25), _streetlight(rng, side))
    for _ in range(counts["signboards"]):  # flat signboards on facades
        side = int(rng.choice([-1, 1]))
        z0, length = _facade_z(rng, scene, side, rng.uniform(2.5, 5.0), span=20.0)
        part = _plane_item(scene, side, z0, length, 3.2, 4.2, _pick(rng, BRIGHT_COLOURS) * scene.shade[side],
                           L["signboard"], offset=0.05)
        scene.add_plane(z0, [part])
    for _ in range(counts["awnings"]):  # plain awnings
        side = int(rng.choice([-1, 1]))
        z0, length = _facade_z(rng, scene, side, rng.uniform(5.0, 9.0), span=15.0)
        part = _plane_item(scene, side, z0, length, 2.0, 3.8, _pick(rng, BRIGHT_COLOURS) * scene.shade[side],
                           L["awning"], offset=0.5)
        scene.add_plane(z0 - 0.1, [part])
    for _ in range(counts["railings"]):  # a plain railing along the kerb
        side = int(rng.choice([-1, 1]))
        Xp = side * (scene.road + 0.25)
        z0 = scene.z_visible(Xp) * rng.uniform(0.8, 1.3)
        colour = _pick(rng, FENCE_COLOURS, 0.03)

        def bars(Z, Y, colour=colour):
            return (((Z * 2.0) % 1.0) < 0.35) | (Y > 1.0), colour

        scene.add_plane(z0, [Part("plane", (Xp, z0, z0 + rng.uniform(15, 30), 0.0, 1.15), bars, L["fence"])])
    for _ in range(counts["occluders"]):  # a pedestrian close to the camera hides part of the view
        X = scene.sidewalk_x(rng, int(rng.choice([-1, 1])))
        scene.add(X, scene.z_visible(X) * rng.uniform(0.95, 1.3), _person(rng))


# --------------------------------------------------------------------------
# Cue styles (the default cities use these; register your own the same way)
# --------------------------------------------------------------------------


def _bus(rng, cue=0):
    c, lab = _pick(rng, VEHICLE_COLOURS), L["bus"]
    return [Part("rect", (-1.25, 1.25, 0.3, 3.1), c, lab, cue),
            Part("rect", (-1.1, 1.1, 1.7, 2.7), c * 0.4, lab, cue),
            Part("rect", (-1.1, -0.6, 0.0, 0.4), DARK, lab, cue),
            Part("rect", (0.6, 1.1, 0.0, 0.4), DARK, lab, cue)]


@register_cue_style("banded_facades", "building", "large",
                    "whole building facades painted in horizontal dark and light bands")
def _draw_banded(scene: Scene, rng, count, number):
    near = []
    for side in (-1, 1):  # the first two visible buildings of each side
        z_min = scene.z_visible(side * scene.xb[side])
        near += sorted((s for s in scene.segments if s.side == side and s.z1 > z_min), key=lambda s: s.z0)[:2]
    for k, i in enumerate(rng.permutation(len(near))[:count]):
        near[i].band = (number, k)


@register_cue_style("blade_signs", "signboard", "small",
                    "tall vertical signs sticking out of facades, with bars of lettering",
                    replaces="signboards")
def _draw_blades(scene: Scene, rng, count, number):
    for k in range(count):
        side = int(rng.choice([-1, 1]))
        X = side * (scene.xb[side] - 0.7)
        colour, text = _pick(rng, BRIGHT_COLOURS), _pick(rng, BRIGHT_COLOURS)
        v0 = rng.uniform(3.0, 4.5)
        height = rng.uniform(3.0, 4.5)
        cue = 16 * number + k
        parts = [Part("rect", (-0.55, 0.55, v0, v0 + height), colour * scene.shade[side], L["signboard"], cue)]
        for j in range(3):  # lettering
            a = v0 + height * (0.12 + 0.28 * j)
            parts.append(Part("rect", (-0.3, 0.3, a, a + height * 0.16), text * 0.6, L["signboard"], cue))
        scene.add(X, scene.sample_z(rng, X, 25), parts)


@register_cue_style("striped_awnings", "awning", "medium",
                    "shop awnings with bold vertical stripes",
                    replaces="awnings")
def _draw_striped_awnings(scene: Scene, rng, count, number):
    for k in range(count):
        side = int(rng.choice([-1, 1]))
        z0, length = _facade_z(rng, scene, side, rng.uniform(5.0, 9.0), span=15.0)
        a = _pick(rng, BRIGHT_COLOURS) * scene.shade[side]
        b = np.array((0.93, 0.93, 0.90), np.float32) * scene.shade[side]

        def stripes(Z, Y, a=a, b=b):
            rgb = np.where(((Z % 1.2) < 0.6)[..., None], a, b)
            return np.ones(Z.shape, bool), rgb

        scene.add_plane(z0 - 0.1, [_plane_item(scene, side, z0, length, 2.0, 3.8, stripes, L["awning"],
                                               offset=0.5, cue=16 * number + k)])


@register_cue_style("lattice_fences", "fence", "large",
                    "long, tall fences with a diagonal lattice along the kerb",
                    replaces="railings")
def _draw_lattice_fences(scene: Scene, rng, count, number):
    sides = rng.permutation([-1, 1])
    for k in range(count):
        side = int(sides[k % 2])
        Xp = side * (scene.road + 0.25)
        z0 = scene.z_visible(Xp) * rng.uniform(0.8, 1.3) + 12.0 * (k // 2)
        colour = _pick(rng, FENCE_COLOURS, 0.03)

        def lattice(Z, Y, colour=colour):
            grid = ((Z + Y) % 1.2 < 0.35) | ((Z - Y) % 1.2 < 0.35) | (Y > 1.8) | (Y < 0.15)
            return grid, colour

        scene.add_plane(z0, [Part("plane", (Xp, z0, z0 + rng.uniform(15, 30), 0.0, 2.0), lattice,
                                  L["fence"], 16 * number + k)])


@register_cue_style("twin_streetlights", "streetlight", "small",
                    "ornate street lights with two arms and two lamps",
                    replaces="streetlights")
def _draw_twin_lights(scene: Scene, rng, count, number):
    for k in range(count):
        side = int(rng.choice([-1, 1]))
        X = side * (scene.road + 0.4)
        c, lab, cue = _jitter(rng, (0.16, 0.2, 0.18), 0.03), L["streetlight"], 16 * number + k
        lamp = np.array((0.98, 0.92, 0.60), np.float32)
        parts = [Part("rect", (-0.16, 0.16, 0.0, 5.6), c, lab, cue),
                 Part("rect", (-1.5, 1.5, 5.25, 5.6), c, lab, cue),
                 Part("ellipse", (-1.5, 4.8, 0.42, 0.55), lamp, lab, cue),
                 Part("ellipse", (1.5, 4.8, 0.42, 0.55), lamp, lab, cue),
                 Part("ellipse", (0.0, 6.0, 0.35, 0.45), c, lab, cue)]
        scene.add(X, scene.sample_z(rng, X, 25), parts)


@register_cue_style("conifers", "tree", "medium",
                    "pointed conifer trees instead of round street trees",
                    replaces="trees")
def _draw_conifers(scene: Scene, rng, count, number):
    for k in range(count):
        side = int(rng.choice([-1, 1]))
        X = side * (scene.road + 0.7)
        lab, cue = L["tree"], 16 * number + k
        green = _jitter(rng, GREEN, 0.05)
        w = rng.uniform(1.1, 1.5)
        parts = [Part("rect", (-0.13, 0.13, 0.0, 1.3), _jitter(rng, (0.35, 0.25, 0.16)), lab, cue),
                 Part("poly", [(-1.4 * w, 1.0), (1.4 * w, 1.0), (0.0, 3.6)], green, lab, cue),
                 Part("poly", [(-1.1 * w, 2.5), (1.1 * w, 2.5), (0.0, 5.0)], green, lab, cue),
                 Part("poly", [(-0.8 * w, 4.0), (0.8 * w, 4.0), (0.0, 6.4)], green, lab, cue)]
        scene.add(X, scene.sample_z(rng, X, 25), parts)


@register_cue_style("flags", "flag", "small",
                    "two-coloured flags hung from facades")
def _draw_flags(scene: Scene, rng, count, number):
    for k in range(count):
        side = int(rng.choice([-1, 1]))
        X = side * (scene.xb[side] - 1.2)
        a, b = BRIGHT_COLOURS[rng.permutation(len(BRIGHT_COLOURS))[:2]] * scene.shade[side]
        v0 = rng.uniform(4.0, 6.5)
        lab, cue = L["flag"], 16 * number + k
        parts = [Part("rect", (-1.0, 1.0, v0 + 0.7, v0 + 1.4), a, lab, cue),
                 Part("rect", (-1.0, 1.0, v0, v0 + 0.7), b, lab, cue),
                 Part("rect", (-1.15, -1.0, v0 - 0.5, v0 + 1.6), GREY, lab, cue)]
        scene.add(X, scene.sample_z(rng, X, 25), parts)


@register_cue_style("buses", "bus", "large",
                    "large buses in the street (other cities have one now and then)",
                    replaces="buses")
def _draw_buses(scene: Scene, rng, count, number):
    for k in range(count):
        X = float(rng.choice([-1, 1]) * rng.uniform(1.3, max(1.4, scene.road - 1.3)))
        scene.add(X, scene.sample_z(rng, X, 30), _bus(rng, 16 * number + k))


@register_cue_style("traffic_lights", "traffic", "small",
                    "traffic lights on posts at the kerb")
def _draw_traffic_lights(scene: Scene, rng, count, number):
    for k in range(count):
        side = int(rng.choice([-1, 1]))
        X = side * (scene.road + 0.35)
        lab, cue = L["traffic"], 16 * number + k
        lit = rng.integers(3)
        lamps = [np.array(c, np.float32) * (1.0 if i == lit else 0.35)
                 for i, c in enumerate([(0.95, 0.15, 0.1), (0.95, 0.7, 0.1), (0.1, 0.85, 0.3)])]
        parts = [Part("rect", (-0.12, 0.12, 0.0, 3.0), DARK * 2, lab, cue),
                 Part("rect", (-0.45, 0.45, 3.0, 5.0), DARK, lab, cue)]
        parts += [Part("ellipse", (0.0, 4.6 - 0.6 * i, 0.28, 0.26), lamps[i], lab, cue) for i in range(3)]
        scene.add(X, scene.sample_z(rng, X, 25), parts)


DEFAULT_CITIES: tuple[City, ...] = (
    City("Amberton", (Cue("banded_facades", 0.8, (1, 2)), Cue("blade_signs", 0.8, (2, 4)))),
    City("Borealis", (Cue("lattice_fences", 0.8, (1, 2)), Cue("striped_awnings", 0.8, (2, 3)),
                      Cue("twin_streetlights", 0.8, (2, 3)))),
    City("Coralia", (Cue("conifers", 0.8, (2, 4)), Cue("flags", 0.8, (2, 4)))),
    City("Dunmore", (Cue("buses", 0.8, (1, 2)), Cue("traffic_lights", 0.8, (2, 4)))),
)


# --------------------------------------------------------------------------
# Rendering one image
# --------------------------------------------------------------------------


@dataclass
class SyntheticImage:
    image: np.ndarray  # (H, W, 3) uint8
    label: np.ndarray  # (H, W) uint8, ADE20K label values
    cue_map: np.ndarray  # (H, W) uint8, 16 * cue_number + instance, 0 = no cue
    cues_present: list[str]  # cue styles with at least one visible pixel
    n_instances: dict[str, int]  # visible instances per cue style


def render_image(cities: Sequence[City], city: int, rng: np.random.Generator, size: int) -> SyntheticImage:
    """Draw one street scene of ``cities[city]`` with its ground truth."""
    numbers = {row["cue"]: row["cue_number"] for row in cue_table(cities) if row["city"] == cities[city].name}
    scene = Scene(rng, size)
    counts = sample_base_counts(rng)
    drawn = []
    for cue in cities[city].cues:
        if rng.random() < cue.presence:
            count = int(rng.integers(cue.count[0], cue.count[1] + 1))
            drawn.append((cue.style, count))
            kind = CUE_STYLES[cue.style].replaces
            if kind:
                counts[kind] = max(0, counts[kind] - count)
    _add_base_objects(scene, rng, counts)
    for style, count in drawn:
        CUE_STYLES[style].draw(scene, rng, count, numbers[style])
    canvas = Canvas(size, size)
    _draw_background(canvas, scene, rng)
    _draw_facades(canvas, scene)
    for _, parts in sorted(scene.things, key=lambda t: -t[0]):  # painter's order: far first
        for part in parts:
            _draw_part(canvas, scene, part)
    # lighting, colour cast, contrast and sensor noise
    rgb = canvas.rgb * rng.uniform(0.7, 1.2)
    cast = rng.uniform(-0.12, 0.12)
    rgb *= np.array((1 + cast, 1.0, 1 - cast), np.float32)
    contrast = rng.uniform(0.8, 1.15)
    rgb = (rgb - rgb.mean()) * contrast + rgb.mean()
    rgb += rng.normal(0, rng.uniform(0.0, 0.035), rgb.shape).astype(np.float32)
    image = (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)

    present, counts = [], {}
    ids = np.unique(canvas.cue)
    for style, number in numbers.items():
        k = int(((ids >> 4) == number).sum())
        if k:
            present.append(style)
            counts[style] = k
    return SyntheticImage(image, canvas.label, canvas.cue, present, counts)


def image_rng(seed: int, city: int, split: int, index: int) -> np.random.Generator:
    """The random stream of one image: independent of generation order."""
    return np.random.default_rng([seed, city, split, index])


def cue_masks(cue_map: np.ndarray) -> dict[int, np.ndarray]:
    """Boolean mask per cue number present in a cue map (or a batch of them)."""
    numbers = np.unique(cue_map >> 4)
    return {int(n): (cue_map >> 4) == n for n in numbers if n}
