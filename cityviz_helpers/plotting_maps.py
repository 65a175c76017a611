"""Figures of notebook 03 (Grad-CAM maps and masks) and its deep dive 03b, one call per figure.

The notebooks compute what they teach (the maps, masks, IoUs, scores against the planted cues, the
CAM study, the randomisation check); these functions only draw it, and format its tables. Every
figure function returns the figure, for ``plotting.savefig``; every text in it is at least
``plotting.MIN_FONT_PT`` points, and every map drawn in the ``jet`` colours carries a colour bar.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .gradcam import visual_explanation
from .plotting import MIN_FONT_PT, cam_colorbar, cam_overlay

SMALL = MIN_FONT_PT  # panel titles, colour bar and legend text
_METHODS = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "hirescam": "HiResCAM", "layercam": "LayerCAM",
            "xgradcam": "XGrad-CAM", "eigencam": "EigenCAM", "scorecam": "Score-CAM"}
_BASELINES = {"uniform": "uniform map", "centre": "centre blob", "cue_prior": "cue-location prior"}
_LINES = {"cue_prior": "--", "centre": ":", "uniform": "-."}  # one line style per baseline, in every figure


def pretty_method(method: str) -> str:
    """A CAM method as its authors write it: ``'hirescam'`` -> ``'HiResCAM'`` (notebooks 03, 03b)."""
    return _METHODS.get(method, method)


def pretty_baseline(kind: str) -> str:
    """A baseline map's name in words: ``'cue_prior'`` -> ``'cue-location prior'`` (notebooks 03, 03b)."""
    return _BASELINES.get(kind, kind.replace("_", " "))


def setting_name(method: str, layer: str) -> str:
    """A CAM setting in words: ``('hirescam', 'earlier')`` -> ``'HiResCAM, earlier layer'``."""
    return f"{pretty_method(method)}, {layer} layer"


def format_table(table: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """A copy of ``table`` for display: every float with ``digits`` decimals (also in columns that mix
    floats and text, where ``DataFrame.round`` does nothing), whole numbers without decimals, and
    missing values as a dash."""
    def cell(v):
        if isinstance(v, (bool, np.bool_)) or v is None:
            return "–" if v is None else str(v)
        if isinstance(v, (int, np.integer)):
            return f"{v:d}"
        if isinstance(v, (float, np.floating)):
            return "–" if np.isnan(v) else f"{v:.{digits}f}"
        return v

    return table.apply(lambda col: col.map(cell))


def example_images(data, n_per_city: int = 1) -> list[int]:
    """Indices of the first ``n_per_city`` test images of each city, which the figures of notebook 03
    show (on the built-in cities: images that show at least one planted cue)."""
    items = data.split("test")
    chosen = []
    for city in data.cities:
        rows = items[items.city == city]
        if data.has_ground_truth:
            rows = rows[rows.cues_present.fillna("").str.len() > 0]
        chosen += list(rows.index[:n_per_city])
    return chosen


def _baseline_lines(ax, baselines: Mapping[str, float], colour: str) -> None:
    """One horizontal line per baseline map (kind -> its score). Baselines whose scores agree to three
    decimals share one line and one label ("uniform map and centre blob"), so no line hides another."""
    groups: dict[float, list[str]] = {}
    for kind, value in baselines.items():
        groups.setdefault(round(float(value), 3), []).append(kind)
    for kinds in groups.values():
        ax.axhline(baselines[kinds[0]], color=colour, ls=_LINES.get(kinds[0], "-"), lw=1,
                   label=" and ".join(pretty_baseline(k) for k in kinds))


def _blank(ax) -> None:
    ax.set_xticks([]), ax.set_yticks([])


def by_hand_figure(image: np.ndarray, grid: np.ndarray, by_hand: np.ndarray, package: np.ndarray, city: str,
                   model: str) -> plt.Figure:
    """Notebook 03, section 1: the image, the layer's grid map ``grid`` (already in [0, 1]) cell by cell,
    the hand-written map upsampled and the ``grad-cam`` package's map, both over the image."""
    fig, axes = plt.subplots(1, 4, figsize=(9.0, 2.6), layout="constrained")
    axes[0].imshow(image)
    axes[1].imshow(grid, cmap="jet", vmin=0, vmax=1, interpolation="nearest")
    axes[2].imshow(cam_overlay(image, by_hand))
    axes[3].imshow(cam_overlay(image, package))
    titles = [f"test image ({city})", f"grid map: {grid.shape[0]} x {grid.shape[1]} cells", "by hand, upsampled",
              "grad-cam package"]
    for ax, title in zip(axes, titles):
        ax.set_title(title, fontsize=SMALL), _blank(ax)
    cam_colorbar(fig, axes[-1], label="map value")
    fig.suptitle(f"{model}: Grad-CAM from the layer's grid to the image")
    return fig


def explanation_grid(image_of: Callable[[int], np.ndarray], maps: np.ndarray, examples: Sequence[int],
                     row_labels: Sequence[str], thresholds: Sequence[float], title: str) -> plt.Figure:
    """Notebook 03, section 3: one row per example image: the image, its map over it, and the paper's
    visual explanation at each threshold (``gradcam.visual_explanation``: the pixels at or below the
    threshold greyed out)."""
    cols = ["image", "map"] + [f"kept > {t}" for t in thresholds]
    fig, axes = plt.subplots(len(examples), len(cols), figsize=(1.7 * len(cols) + 1.2, 1.6 * len(examples)),
                             layout="constrained", squeeze=False)
    for r, (i, label) in enumerate(zip(examples, row_labels)):
        image = image_of(i)
        panels = [image, cam_overlay(image, maps[i])] + [visual_explanation(image, maps[i], t) for t in thresholds]
        for c, (ax, panel) in enumerate(zip(axes[r], panels)):
            ax.imshow(panel), _blank(ax)
            if r == 0:
                ax.set_title(cols[c], fontsize=SMALL + 1)
        axes[r, 0].set_ylabel(label, fontsize=SMALL + 1)
    cam_colorbar(fig, axes[:, 1:], label="map value (the map column)")
    fig.suptitle(title)
    return fig


def side_by_side(image_of: Callable[[int], np.ndarray], maps_a: np.ndarray, maps_b: np.ndarray,
                 examples: Sequence[int], row_labels: Sequence[str], names: tuple[str, str], ious: Sequence[float],
                 threshold: float, title: str) -> plt.Figure:
    """Notebook 03, section 4: the example images with the maps of two models side by side, and under
    the right-hand map the IoU of the two models' masks at ``threshold`` (computed by the notebook)."""
    fig, axes = plt.subplots(len(examples), 3, figsize=(5.8, 1.7 * len(examples)), layout="constrained",
                             squeeze=False)
    for r, (i, label, iou) in enumerate(zip(examples, row_labels, ious)):
        image = image_of(i)
        for ax, panel in zip(axes[r], [image, cam_overlay(image, maps_a[i]), cam_overlay(image, maps_b[i])]):
            ax.imshow(panel), _blank(ax)
        axes[r, 2].set_xlabel(f"mask IoU at {threshold}: {iou:.2f}", fontsize=SMALL)
        axes[r, 0].set_ylabel(label, fontsize=SMALL + 1)
    for ax, column in zip(axes[0], ["image", *names]):
        ax.set_title(column, fontsize=SMALL + 1)
    cam_colorbar(fig, axes[:, 1:])
    fig.suptitle(title)
    return fig


def mask_area_bars(area: pd.DataFrame) -> plt.Figure:
    """Notebook 03, section 5: the mean share of the image inside each model's masks (rows: models,
    columns: thresholds), one bar per threshold."""
    fig, ax = plt.subplots(figsize=(7.0, 2.8))
    x, width = np.arange(len(area)), 0.8 / area.shape[1]
    for k, column in enumerate(area.columns):
        ax.bar(x + (k - (area.shape[1] - 1) / 2) * width, area[column], width, label=f"threshold {column}")
    ax.set_xticks(x, area.index, rotation=30, ha="right")
    ax.set_ylabel("share of the image in the mask")
    ax.set_ylim(0, 1), ax.set_title("Mask area per model (mean over the test images)")
    ax.legend(fontsize=SMALL + 1, loc="upper left", bbox_to_anchor=(1.01, 1))
    return fig


def explorer_figure(image: np.ndarray, cam: np.ndarray, threshold: float, titles: Sequence[str],
                    title: str) -> plt.Figure:
    """Notebook 03's explorer: the image, its map over it and the visual explanation at ``threshold``."""
    fig, axes = plt.subplots(1, 3, figsize=(7.8, 2.6), layout="constrained")
    panels = [image, cam_overlay(image, cam), visual_explanation(image, cam, threshold)]
    for ax, panel, name in zip(axes, panels, titles):
        ax.imshow(panel), ax.set_title(name, fontsize=SMALL + 1), ax.axis("off")
    cam_colorbar(fig, axes[1], label="map value")
    fig.suptitle(title)
    return fig


def baselines_figure(prior: np.ndarray, centre: np.ndarray) -> plt.Figure:
    """Notebook 03, section 7: the two baseline maps that have a shape (the uniform one has none): the
    cue-location prior (how often each pixel lies on a cue in the training images) and the centre blob."""
    fig, axes = plt.subplots(1, 2, figsize=(6.4, 2.8), layout="constrained")
    panels = [("cue-location prior", prior, "share of training images\nwith a cue here"),
              ("centre blob", centre, "map value")]
    for ax, (name, image, unit) in zip(axes, panels):
        shown = ax.imshow(image, cmap="magma")
        ax.set_title(name, fontsize=SMALL + 1), _blank(ax)
        bar = fig.colorbar(shown, ax=ax, shrink=0.85)
        bar.set_label(unit, fontsize=SMALL), bar.ax.tick_params(labelsize=SMALL)
    fig.suptitle("Two baselines that never look at the image")
    return fig


def relevance_bars(masses: Mapping[str, pd.Series], baselines: Mapping[str, float], title: str,
                   colours: Sequence[str] = ("silver", "tab:red")) -> plt.Figure:
    """Notebooks 03 and 03b: each model's relevance mass on the cues, one bar per setting (``masses``:
    label -> a Series over the models), and a horizontal line per baseline map (kind -> its mass)."""
    fig, ax = plt.subplots(figsize=(8.6, 3.2))
    first = next(iter(masses.values()))
    x, width = np.arange(len(first)), 0.8 / len(masses)
    for k, ((label, values), colour) in enumerate(zip(masses.items(), colours)):
        ax.bar(x + (k - (len(masses) - 1) / 2) * width, values.to_numpy(float), width, color=colour, label=label)
    _baseline_lines(ax, baselines, "black")
    ax.set_xticks(x, first.index, rotation=30, ha="right")
    ax.set_ylabel("relevance mass on the cues\n(raw map)")
    ax.set_title(title)
    ax.legend(fontsize=SMALL + 1, loc="upper left", bbox_to_anchor=(1.01, 1))
    return fig


def cam_study_figure(per_setting: pd.DataFrame, by_arch: pd.DataFrame, baselines: Mapping[str, float],
                     methods: Sequence[str], layers: Sequence[str]) -> plt.Figure:
    """Notebook 03b, section 2: the CAM study on the validation images. Per method (x) and layer (bar
    colour), the mean raw relevance mass over the models (bars) and each architecture's mean (markers),
    with one line per baseline map. ``per_setting`` has a ``relevance_mass`` column and ``by_arch`` one
    column per architecture, both indexed by (layer, method)."""
    fig, ax = plt.subplots(figsize=(9.2, 3.6))
    width = 0.8 / len(layers)
    for k, layer in enumerate(layers):
        x = np.arange(len(methods)) + (k - (len(layers) - 1) / 2) * width
        ax.bar(x, [per_setting.loc[(layer, m), "relevance_mass"] for m in methods], width, label=f"{layer} layer")
        for arch, marker in zip(by_arch.columns, "os^Dv<>p"):
            ax.scatter(x, [by_arch.loc[(layer, m), arch] for m in methods], color="black", marker=marker, s=12,
                       zorder=3, label=arch if k == 0 else None)
    _baseline_lines(ax, baselines, "gray")
    ax.set_xticks(np.arange(len(methods)), [pretty_method(m) for m in methods])
    ax.set_xlabel("CAM method"), ax.set_ylabel("relevance mass on the cues\n(raw map)")
    ax.set_title("Validation images: which setting puts its map on the cues? (bars: mean of the models)")
    ax.legend(fontsize=SMALL + 1, loc="upper left", bbox_to_anchor=(1.01, 1))
    return fig


def randomization_bars(table: pd.DataFrame, checked: Mapping[str, tuple[str, str]],
                       colours: Sequence[str] = ("silver", "tab:red")) -> plt.Figure:
    """Notebook 03b, section 4: per model, the mean rank correlation between its maps and those of its
    randomised copy, one bar per setting (``checked``: label -> (method, layer); ``table`` has columns
    ``'<label>: rank correlation'`` and ``'<label>: pairs'``). A model whose randomised copy gave only
    flat maps has no correlation: it is marked "all flat" instead of a bar."""
    fig, ax = plt.subplots(figsize=(8.6, 3.4))
    x, width = np.arange(len(table)), 0.8 / len(checked)
    for k, ((label, (method, layer)), colour) in enumerate(zip(checked.items(), colours)):
        at = x + (k - (len(checked) - 1) / 2) * width
        ax.bar(at, table[f"{label}: rank correlation"].fillna(0).to_numpy(float), width, color=colour,
               label=f"{label}: {setting_name(method, layer)}")
        for xi, n in zip(at, table[f"{label}: pairs"]):
            if n == 0:
                ax.annotate("all flat", (xi, 0.05), ha="center", va="bottom", fontsize=SMALL, rotation=90)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(x, table.index, rotation=30, ha="right")
    ax.set_ylim(-1, 1), ax.set_ylabel("rank correlation,\ntrained vs random")
    ax.set_title("Trained versus randomised weights (pairs where both maps vary)")
    ax.legend(fontsize=SMALL + 1, loc="upper left", bbox_to_anchor=(1.01, 1))
    return fig
