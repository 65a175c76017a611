"""Figures of notebook 05 (segmentation statistics) and its deep dive 05b, one call per figure.

The statistics are computed in the notebooks, where they are explained; the functions here only draw
them. Every figure keeps its text at :data:`cityviz_helpers.plotting.MIN_FONT_PT` points or more, puts
a colour bar beside every colour scale, keeps legends off the data and shows readable class names
(:func:`class_labels`): "traffic light" and "car", not ADE20K's first tokens "traffic" and "auto".
Each function returns the figure; the notebook saves it with :func:`cityviz_helpers.plotting.savefig`.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np

from .ade20k import readable_class_names, readable_name
from .plotting import label_palette

#: Text size of annotations, ticks and legends in these figures (at least plotting.MIN_FONT_PT).
TEXT_PT = 9

def class_labels() -> list[str]:
    """Readable class names indexed by label value (0: "unlabelled"): ADE20K's short names, except
    where the short name is the first word of a longer one (``class_labels()[137] == "traffic light"``,
    ``[21] == "car"``, ``[9] == "window"``)."""
    return readable_class_names()


def cue_label(style: str) -> str:
    """A planted cue's style name as words: ``"banded_facades"`` -> ``"banded facades"``."""
    return readable_name(style)


def _class_legend(ax, label_maps: np.ndarray, names: Sequence[str], max_items: int = 12) -> None:
    """A legend of the classes in ``label_maps`` (most frequent first), outside ``ax`` on its right."""
    from matplotlib.patches import Patch

    values, counts = np.unique(np.asarray(label_maps), return_counts=True)
    order = [v for _, v in sorted(zip(-counts, values))][:max_items]
    pal = label_palette()
    ax.legend(handles=[Patch(color=pal[v] / 255, label=names[v]) for v in order], fontsize=TEXT_PT,
              loc="upper left", bbox_to_anchor=(1.03, 1), borderaxespad=0, title="class",
              title_fontsize=TEXT_PT)


def segmentation_examples(images: Sequence[np.ndarray], panels: Mapping[str, np.ndarray], row_names: Sequence[str],
                          names: Sequence[str]) -> plt.Figure:
    """One row per image: the image, then each label map of ``panels`` (column title -> label maps,
    one per image) in the series' class colours, with a legend of the classes shown."""
    cols = ["image", *panels]
    fig, axes = plt.subplots(len(images), len(cols), figsize=(1.9 * len(cols) + 2.2, 1.9 * len(images)),
                             squeeze=False)
    for r, image in enumerate(images):
        shown = [image] + [label_palette()[np.asarray(maps[r])] for maps in panels.values()]
        for ax, panel, title in zip(axes[r], shown, cols):
            ax.imshow(panel)
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=TEXT_PT + 1)
        axes[r, 0].set_ylabel(row_names[r], fontsize=TEXT_PT + 1)
    _class_legend(axes[0, -1], np.stack([np.asarray(m) for m in panels.values()]), names)
    return fig


def top_objects(stats_by_city: Mapping[str, dict], tops: Mapping[str, Sequence[int]], names: Sequence[str],
                title: str) -> plt.Figure:
    """Per city (one panel each, two per row), the attention beyond area of its top classes
    ``tops[city]`` with their 95 % bootstrap intervals, from :func:`segmentation.city_statistics`
    results; a dotted line marks 1 (attention equal to area)."""
    cities = list(stats_by_city)
    n_rows = (len(cities) + 1) // 2
    fig, axes = plt.subplots(n_rows, 2 if len(cities) > 1 else 1, figsize=(9, 2.1 * n_rows + 0.5),
                             sharex=True, squeeze=False, layout="constrained")
    for ax, city in zip(axes.flat, cities):
        s, top = stats_by_city[city], list(tops[city])
        y = np.arange(len(top))[::-1]
        err = np.array([s["ratio"][top] - s["ratio_low"][top], s["ratio_high"][top] - s["ratio"][top]])
        ax.barh(y, s["ratio"][top], xerr=err.reshape(2, -1), color="tab:blue", capsize=2)
        ax.set_yticks(y, [names[c] for c in top], fontsize=TEXT_PT + 1)
        if not top:
            ax.text(0.5, 0.5, "no class qualifies", transform=ax.transAxes, ha="center", va="center",
                    fontsize=TEXT_PT + 1)
        ax.axvline(1, color="gray", ls=":")
        ax.set_title(city, fontsize=TEXT_PT + 2)
    for ax in axes.flat[len(cities):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("attention beyond area (1: as much as its area)")
    fig.suptitle(title)
    return fig


def _ratio_text(r: float) -> str:
    return "0" if r == 0 else f"{r:.0f}" if r >= 10 else f"{r:.1f}" if r >= 1 else f"{r:.2f}"


def ratio_heatmap(ratios: "pd.DataFrame", title: str, percentile: float = 90) -> plt.Figure:
    """Attention beyond area, class (rows) by model (columns), on a log scale symmetric around 1.

    The colour scale spans the ``percentile`` of the cells' distances from 1 (on the log scale) both
    ways, so one extreme cell cannot wash out the rest; cells beyond it take the end colours (the
    colour bar's arrows), and every cell is annotated with its ratio."""
    import seaborn as sns

    values = ratios.to_numpy(float)
    logs = np.log2(np.clip(values, 1 / 64, None))
    finite = np.abs(logs[np.isfinite(logs)])
    lim = max(1.0, float(np.ceil(np.percentile(finite, percentile)))) if finite.size else 1.0
    fig, ax = plt.subplots(figsize=(1.0 * ratios.shape[1] + 3.2, 0.42 * ratios.shape[0] + 1.6))
    annot = np.vectorize(_ratio_text)(values)
    sns.heatmap(logs, cmap="RdBu_r", center=0, vmin=-lim, vmax=lim, annot=annot, fmt="",
                annot_kws={"size": TEXT_PT}, ax=ax, xticklabels=list(ratios.columns),
                yticklabels=list(ratios.index), cbar_kws={"extend": "both", "ticks": np.arange(-lim, lim + 1)})
    bar = ax.collections[0].colorbar
    bar.set_ticklabels([f"{2.0 ** v:g}" if v >= 0 else f"1/{2.0 ** -v:g}" for v in np.arange(-lim, lim + 1)])
    bar.set_label("attention beyond area (log scale)")
    ax.tick_params(axis="x", rotation=35)
    plt.setp(ax.get_xticklabels(), ha="right", rotation_mode="anchor")
    ax.set_xlabel("model"), ax.set_ylabel("class")
    ax.set_title(title)
    return fig


def cue_recall_bars(recall: "pd.DataFrame", k: int, threshold: float, n_chance: int) -> plt.Figure:
    """Cue recall at ``k`` per model (rows of ``recall``), one bar per segmenter column and the chance
    level (column ``"chance"``, masks moved to other images of the city, ``n_chance`` draws)."""
    colours = {"trained": "tab:blue", "oracle": "tab:orange", "chance": "lightgray"}
    legend = {"trained": "trained segmenter", "oracle": "oracle segmenter (the truth)",
              "chance": f"chance: other images' masks ({n_chance} draws)"}
    fig, ax = plt.subplots(figsize=(8, 3))
    recall.plot.bar(ax=ax, width=0.8, color=[colours.get(c, "gray") for c in recall.columns])
    ax.set_ylim(0, 1), ax.set_ylabel(f"cue recall at {k}"), ax.set_xlabel("")
    ax.set_title(f"Planted cues among each city's top classes (mean over cities, threshold {threshold})")
    ax.tick_params(axis="x", rotation=30)
    plt.setp(ax.get_xticklabels(), ha="right", rotation_mode="anchor")
    ax.legend([legend.get(c, c) for c in recall.columns], fontsize=TEXT_PT, loc="upper left",
              bbox_to_anchor=(1.01, 1))
    return fig


def distance_matrices(panels: Sequence[tuple[np.ndarray, str, str]], order: Sequence[str], title: str) -> plt.Figure:
    """Every pair of models: one annotated matrix per ``(matrix, title, colour map)`` of ``panels``,
    rows and columns in ``order``, each with its own colour bar."""
    import seaborn as sns

    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 5.2), squeeze=False, layout="constrained")
    for ax, (mat, name, cmap) in zip(axes[0], panels):
        sns.heatmap(mat, xticklabels=order, yticklabels=order, cmap=cmap, annot=True, fmt=".2f",
                    annot_kws={"size": TEXT_PT}, ax=ax, square=True, cbar_kws={"label": name, "shrink": 0.8})
        ax.tick_params(labelsize=TEXT_PT + 1)
        ax.tick_params(axis="x", rotation=40)
        plt.setp(ax.get_xticklabels(), ha="right", rotation_mode="anchor")
        ax.set_title(name)
    fig.suptitle(title)
    return fig


def per_architecture(per_arch: Mapping[str, "pd.DataFrame"], title: str) -> plt.Figure:
    """Per architecture and distance: the mean distance between its own seeds (within, circle) and
    from its models to the other architectures' (between, square), one panel per distance, from
    :func:`segmentation.per_architecture`."""
    fig, axes = plt.subplots(1, len(per_arch), figsize=(4.6 * len(per_arch) + 1.8, 2.8), sharey=True, squeeze=False,
                             layout="constrained")
    axes = axes[0]
    for ax, (measure, p) in zip(axes, per_arch.items()):
        y = np.arange(len(p))[::-1]
        ax.hlines(y, p.within, p.between, color="lightgray", lw=3)
        ax.scatter(p.within, y, color="tab:blue", zorder=3, label="within: its own seeds")
        ax.scatter(p.between, y, color="tab:red", marker="s", zorder=3, label="between: to the others")
        ax.set_yticks(y, p.index), ax.set_xlabel(f"distance: {measure}")
    axes[-1].legend(fontsize=TEXT_PT, loc="upper left", bbox_to_anchor=(1.02, 1))
    fig.suptitle(title)
    return fig


__all__ = ["class_labels", "cue_label", "segmentation_examples", "top_objects", "ratio_heatmap", "cue_recall_bars",
           "distance_matrices", "per_architecture", "TEXT_PT"]
