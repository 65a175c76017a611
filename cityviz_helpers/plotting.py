"""One figure style for the series, label colours and figure saving (all notebooks)."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

from .ade20k import class_names
from .settings import Settings

FIG_DPI = 100  # inline figures: 8 pt text stays readable, and committed notebooks stay light
SAVE_DPI = 130
#: The smallest text a figure may carry, in points: :func:`savefig` refuses a figure with smaller text.
MIN_FONT_PT = 8.0


def setup_style() -> None:
    """Apply the series' figure style (call once at the top of a notebook)."""
    import seaborn as sns

    sns.set_theme(context="notebook", style="whitegrid", font_scale=0.95)
    matplotlib.rcParams.update({"figure.dpi": FIG_DPI, "savefig.dpi": SAVE_DPI,
                                "savefig.bbox": "tight", "axes.titlesize": "medium"})


def small_text(fig: plt.Figure, min_pt: float = MIN_FONT_PT) -> list[str]:
    """The visible, non-empty texts of ``fig`` (titles, labels, tick labels, legends, annotations)
    set in less than ``min_pt`` points, each as ``'text' (size pt)``."""
    found = []
    for text in fig.findobj(matplotlib.text.Text):
        words = text.get_text().strip()
        if words and text.get_visible() and text.get_fontsize() < min_pt - 1e-6:
            found.append(f"{words[:30]!r} ({text.get_fontsize():.1f} pt)")
    return found


def savefig(fig: plt.Figure, settings: Settings, name: str) -> Path:
    """Save ``fig`` as ``outputs/<profile>/figures/<name>.png`` and return the path.

    Refuses (ValueError) a figure with text smaller than :data:`MIN_FONT_PT`, which is hard to
    read at the size the notebooks show it; enlarge the text or the figure."""
    small = small_text(fig)
    if small:
        raise ValueError(f"Figure '{name}' has text smaller than {MIN_FONT_PT:g} pt, too small to read: "
                         f"{', '.join(small[:6])}{' ...' if len(small) > 6 else ''}. Give it a larger "
                         "fontsize (or the figure fewer labels) and draw it again.")
    path = settings.figures_dir / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def label_palette(n: int = 151) -> np.ndarray:
    """A fixed RGB colour (uint8) per label value; 0 (unlabelled) is black."""
    rng = np.random.default_rng(1905)
    colours = rng.integers(40, 256, size=(n, 3)).astype(np.uint8)
    colours[0] = 0
    return colours


def colourise_labels(label: np.ndarray) -> np.ndarray:
    """An RGB image of a label map, one colour per class."""
    return label_palette()[np.asarray(label)]


def overlay(image: np.ndarray, colours: np.ndarray, alpha: float = 0.55, where: np.ndarray | None = None):
    """Blend ``colours`` over ``image`` (both HxWx3 uint8), optionally only ``where``."""
    out = image.astype(np.float32)
    blend = (1 - alpha) * out + alpha * colours.astype(np.float32)
    if where is None:
        out = blend
    else:
        out[where] = blend[where]
    return out.clip(0, 255).astype(np.uint8)


def label_legend(ax, labels: np.ndarray, max_items: int = 12, **kwargs) -> None:
    """A legend of the classes present in ``labels`` (most frequent first)."""
    from matplotlib.patches import Patch

    values, counts = np.unique(np.asarray(labels), return_counts=True)
    names, pal = class_names(), label_palette()
    order = [v for _, v in sorted(zip(-counts, values))][:max_items]
    handles = [Patch(color=pal[v] / 255, label=names[v]) for v in order]
    ax.legend(handles=handles, **kwargs)


def heatmap_rgb(cam: np.ndarray, cmap: str = "jet") -> np.ndarray:
    """A map in [0, 1] (H, W) as an RGB image (uint8) in a colour map."""
    rgba = matplotlib.colormaps[cmap](np.clip(np.asarray(cam, np.float32), 0, 1))
    return (rgba[..., :3] * 255 + 0.5).astype(np.uint8)


def cam_overlay(image: np.ndarray, cam: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """A Grad-CAM map blended over its image (both at the same size)."""
    return overlay(np.asarray(image), heatmap_rgb(cam), alpha)


def cam_colorbar(fig: plt.Figure, axes, cmap: str = "jet", label: str = "map value (0: low, 1: high)"):
    """A colour bar for maps drawn with :func:`cam_overlay` / :func:`heatmap_rgb`, beside ``axes``."""
    mappable = matplotlib.cm.ScalarMappable(norm=matplotlib.colors.Normalize(0, 1), cmap=cmap)
    bar = fig.colorbar(mappable, ax=axes, shrink=0.6, pad=0.02)
    bar.set_label(label, fontsize=8)
    bar.ax.tick_params(labelsize=8)
    return bar


def thumbnail_map(ax, xy: np.ndarray, patches: np.ndarray, cells: int = 8, edge_colours=None) -> list[int]:
    """A 2-D map (t-SNE, notebook 04) with thumbnails that never overlap: the map scaled to
    a unit square (t-SNE's axes have no units), every point in light grey, and in each
    square of a ``cells`` x ``cells`` grid the thumbnail of the point nearest the square's
    centre, drawn unsmoothed and filling the square. ``edge_colours`` (one colour per
    point, e.g. its cluster's) frames each thumbnail. Returns the indices shown."""
    from .clustering import spread_points

    xy = np.asarray(xy, float)
    lo, hi = xy.min(0), xy.max(0)
    unit = (xy - lo) / np.where(hi > lo, hi - lo, 1.0)
    ax.scatter(unit[:, 0], unit[:, 1], s=2, c="lightgray", zorder=1)
    half = 0.5 / cells * 0.94
    shown = []
    for i, (cx, cy) in spread_points(unit, cells):
        ax.imshow(patches[i], extent=(cx - half, cx + half, cy - half, cy + half), interpolation="nearest", zorder=2)
        if edge_colours is not None:
            ax.add_patch(matplotlib.patches.Rectangle((cx - half, cy - half), 2 * half, 2 * half, fill=False, lw=2,
                                                      edgecolor=edge_colours[i], zorder=3))
        shown.append(i)
    ax.set_xlim(-0.02, 1.02), ax.set_ylim(-0.02, 1.02)
    ax.set_aspect("equal")
    return shown
