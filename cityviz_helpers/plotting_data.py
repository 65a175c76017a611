"""Figures of notebooks 01 (the dataset) and 02 (the classifiers), one call per figure.

The notebooks compute what they teach (class shares, probes, accuracies, confusion matrices);
these functions only draw it. Every function returns the figure, for ``plotting.savefig``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.patches import Patch
from PIL import Image

from .ade20k import class_names, readable_name
from .data import open_rgb

#: ADE20K short names that read badly on their own (the label file splits multi-word names).
def pretty_name(name: str) -> str:
    """A readable class or cue name: ``'traffic'`` -> ``'traffic light'``, ``'banded_facades'`` ->
    ``'banded facades'`` (notebooks 01 and 02)."""
    return readable_name(name)


def pretty_list(names: str, sep: str = ";", join: str = ", ") -> str:
    """A ``sep``-separated list of names (e.g. a ``cues_present`` entry) made readable."""
    return join.join(pretty_name(n) for n in names.split(sep) if n)


def sample_grid(data, n_cols: int = 6, seed: int = 0) -> plt.Figure:
    """Notebook 01: ``n_cols`` random training images of each city, one row per city."""
    rng = np.random.default_rng(seed)
    train = data.split("train")
    fig, axes = plt.subplots(len(data.cities), n_cols, figsize=(1.6 * n_cols, 1.7 * len(data.cities)))
    for row, city in zip(np.atleast_2d(axes), data.cities):
        paths = train[train.city == city].path.to_numpy()
        for ax, path in zip(row, rng.choice(paths, min(n_cols, len(paths)), replace=False)):
            ax.imshow(open_rgb(path))
        for ax in row:
            ax.set_xticks([]), ax.set_yticks([])
        row[0].set_ylabel(city, rotation=0, ha="right", va="center")
    fig.suptitle("Training images per city")
    fig.tight_layout()
    return fig


def ground_truth_figure(data, max_legend: int = 20) -> plt.Figure:
    """Notebook 01: for one training image per city with at least one cue, the image, its label map
    (one distinct colour per class shown, named in a legend under the figure; classes beyond
    ``max_legend`` in grey) and its cue pixels (outlined in cyan, the rest dimmed), with the names of
    the cues it contains beside it."""
    train = data.split("train")
    names = class_names()
    picked = [train[(train.city == city) & (train.cues_present != "")].iloc[0] for city in data.cities]
    labels = [np.asarray(Image.open(item.label_path)) for item in picked]
    pixels = sum(np.bincount(label.ravel(), minlength=len(names)) for label in labels)
    shown = [v for v in np.argsort(-pixels, kind="stable") if pixels[v] > 0][:max_legend]
    colours = np.full((len(names), 3), 0.6)  # grey for any class not in the legend
    colours[shown] = matplotlib.colormaps["tab20"].colors[:len(shown)]
    fig, axes = plt.subplots(len(data.cities), 3, figsize=(8.4, 2.2 * len(data.cities)), squeeze=False)
    for row, city, item, label in zip(axes, data.cities, picked, labels):
        image = np.asarray(open_rgb(item.path))
        cues = np.asarray(Image.open(item.cue_path)) > 0
        row[0].imshow(image)
        row[1].imshow(colours[label])
        row[2].imshow(np.where(cues[..., None], image, (0.3 * image).astype(np.uint8)))  # cue pixels keep their colour
        row[2].contour(cues.astype(float), levels=[0.5], colors="cyan", linewidths=1.0)
        row[2].text(1.06, 0.5, pretty_list(item.cues_present, join="\n"), transform=row[2].transAxes,
                    va="center", ha="left", fontsize=9)
        row[0].set_ylabel(city, rotation=0, ha="right", va="center")
        for ax in row:
            ax.set_xticks([]), ax.set_yticks([])
    for ax, title in zip(axes[0], ["image", "label map", "cue pixels (outlined)"]):
        ax.set_title(title)
    handles = [Patch(color=colours[v], label=pretty_name(names[v])) for v in shown]
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.42, 0.0), ncol=4, fontsize=9,
               title="label map: ADE20K classes, most pixels first", title_fontsize=9, frameon=False)
    fig.tight_layout()
    return fig


def class_share_heatmap(log_ratio: pd.DataFrame, cue_classes: Sequence[str], limit: float = 3.0) -> plt.Figure:
    """Notebook 01: the log2 ratio of each class's pixel share in a city to its mean over cities
    (rows: classes, columns: cities), planted cue classes marked with a star."""
    import seaborn as sns

    shown = log_ratio.copy()
    shown.index = [f"{pretty_name(c)} ★" if c in set(cue_classes) else pretty_name(c) for c in shown.index]
    fig, ax = plt.subplots(figsize=(5.6, 0.34 * len(shown) + 1.2))
    sns.heatmap(shown, cmap="RdBu_r", center=0, vmin=-limit, vmax=limit, annot=True, fmt=".1f",
                annot_kws={"size": 8}, ax=ax,
                cbar_kws={"label": "log2(city share / mean share)", "extend": "both"})
    ax.set_xlabel("city"), ax.set_ylabel("ADE20K class (★ = planted cue)")
    ax.set_title("Pixel share of each class, relative to the mean over cities")
    return fig


def probe_figure(probe_table: pd.DataFrame, chance: float, level: str = "95 %") -> plt.Figure:
    """Notebook 01: each probe's accuracy with its interval (rows of ``probe_table``: ``accuracy``,
    ``low``, ``high``), and chance as a dashed line labelled above the plot, where it covers no point."""
    fig, ax = plt.subplots(figsize=(6.4, 0.55 * len(probe_table) + 1.2))
    y = np.arange(len(probe_table))[::-1]
    acc = probe_table.accuracy.to_numpy(float)
    ax.errorbar(acc, y, xerr=[acc - probe_table.low.to_numpy(float), probe_table.high.to_numpy(float) - acc],
                fmt="o", color="black", capsize=3)
    ax.set_yticks(y, probe_table.index), ax.set_ylim(y.min() - 0.5, y.max() + 0.5)
    ax.axvline(chance, color="tab:red", ls="--")
    ax.text(chance, 1.01, f"chance {chance:.2f}", color="tab:red", ha="center", va="bottom",
            transform=ax.get_xaxis_transform(), fontsize=9)
    ax.set_xlim(0, 1), ax.set_xlabel(f"accuracy, each image predicted once ({level} interval)")
    ax.set_title("Which image features predict the city?", pad=18)
    return fig


def loss_curve(losses: Sequence[float], n_classes: int, title: str) -> plt.Figure:
    """Notebook 02: the loss of each batch of one epoch, with the loss of guessing (ln n)."""
    fig, ax = plt.subplots(figsize=(6.2, 2.8))
    ax.plot(np.arange(1, len(losses) + 1), losses, marker=".", label="loss of the batch")
    ax.axhline(np.log(n_classes), color="gray", ls=":", label=f"guessing: ln {n_classes}")
    ax.set_xlabel("batch"), ax.set_ylabel("cross-entropy loss"), ax.set_ylim(0, None)
    ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")
    return fig


def learning_curves(trained: Mapping, archs: Sequence[str], n_classes: int) -> plt.Figure:
    """Notebook 02: validation accuracy after each epoch, one panel per architecture, one line per
    seed (a seed has the same colour in every panel), chance dotted."""
    seeds = sorted({m.meta["seed"] for m in trained.values()})
    colour = {s: f"C{i}" for i, s in enumerate(seeds)}
    fig, axes = plt.subplots(1, len(archs), figsize=(2.7 * len(archs) + 1.2, 2.9), sharey=True)
    axes = np.atleast_1d(axes)
    for ax, arch in zip(axes, archs):
        for m in trained.values():
            if m.meta["arch"] == arch:
                h = m.meta["history"]
                ax.plot(h["epoch"], h["val_accuracy"], marker=".", color=colour[m.meta["seed"]],
                        label=f"seed {m.meta['seed']}")
        ax.axhline(1 / n_classes, color="gray", ls=":", lw=1)
        ax.set_title(arch), ax.set_xlabel("epoch"), ax.set_ylim(0, 1)
        ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))  # whole epochs only
    axes[0].set_ylabel("validation accuracy")
    handles = [matplotlib.lines.Line2D([], [], color=colour[s], marker=".", label=f"seed {s}") for s in seeds]
    handles.append(matplotlib.lines.Line2D([], [], color="gray", ls=":", label="chance"))
    axes[-1].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.03, 1), fontsize="small")
    fig.suptitle("Validation accuracy during training", y=1.02)
    return fig


def test_accuracy_figure(scores: pd.DataFrame, archs: Sequence[str], n_test: int, n_classes: int) -> plt.Figure:
    """Notebook 02: per architecture, the mean test accuracy over seeds (bar) and each seed's accuracy
    with its exact 95 % binomial interval over the ``n_test`` test images (points)."""
    from scipy.stats import binomtest

    fig, ax = plt.subplots(figsize=(6.4, 3.0))
    means = scores.groupby("arch").test_accuracy.mean()
    ax.bar(np.arange(len(archs)), [means[a] for a in archs], color="lightsteelblue", label="mean over seeds")
    lows = []
    for i, arch in enumerate(archs):
        accs = scores[scores.arch == arch].test_accuracy.to_numpy()
        for dx, acc in zip(np.linspace(-0.15, 0.15, len(accs)), accs):
            ci = binomtest(round(acc * n_test), n_test).proportion_ci()
            lows.append(ci.low)
            ax.errorbar(i + dx, acc, yerr=[[acc - ci.low], [ci.high - acc]], fmt="o", color="navy", ms=4, capsize=2,
                        label="one seed (95 % interval)" if len(lows) == 1 else None)
    ax.axhline(1 / n_classes, color="gray", ls=":", label="chance")
    ax.set_xticks(np.arange(len(archs)), archs), ax.set_ylim(min(1 / n_classes, min(lows)) - 0.05, 1)
    ax.set_ylabel("test accuracy"), ax.set_title("Test accuracy: architectures and their seeds")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")
    return fig


def confusion_figure(matrices: Mapping[str, np.ndarray], classes: Sequence[str]) -> plt.Figure:
    """Notebook 02: row-normalised confusion matrices side by side (rows: true class, columns:
    predicted), on one colour scale from 0 to 1 with its colour bar."""
    import seaborn as sns

    fig, axes = plt.subplots(1, len(matrices), figsize=(2.9 * len(matrices) + 1.0, 3.3), squeeze=False)
    axes = axes[0]
    for k, (ax, (name, cm)) in enumerate(zip(axes, matrices.items())):
        sns.heatmap(cm, annot=True, fmt=".2f", cmap="Blues", vmin=0, vmax=1, cbar=False, ax=ax, square=True,
                    xticklabels=classes, yticklabels=classes if k == 0 else False, annot_kws={"size": 9})
        ax.set_title(name), ax.set_xlabel("predicted city")
        ax.tick_params(axis="x", labelrotation=45)
        for label in ax.get_xticklabels():
            label.set_ha("right")
    axes[0].set_ylabel("true city")
    bar = fig.colorbar(matplotlib.cm.ScalarMappable(matplotlib.colors.Normalize(0, 1), "Blues"), ax=list(axes),
                       shrink=0.8, pad=0.02)
    bar.set_label("share of the true city's test images")
    return fig


def misclassified_figure(images: np.ndarray, true: Sequence[str], predicted: Sequence[str],
                         cues: Sequence[str] | None, title: str, n_cols: int = 6) -> plt.Figure:
    """Notebook 02: misclassified images (``images``: N x H x W x 3) titled with their true and
    predicted class and, where known, the planted cues they contain (``cues``: ``;``-separated)."""
    n_rows = max(1, -(-len(images) // n_cols))
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.85 * n_cols, 2.55 * n_rows + 0.3), squeeze=False)
    fig.subplots_adjust(hspace=0.65, wspace=0.1, top=0.88)
    for ax in axes.ravel():
        ax.axis("off")
    for k, (ax, image) in enumerate(zip(axes.ravel(), images)):
        ax.imshow(image)
        ax.set_title(f"true {true[k]}\npred {predicted[k]}", fontsize=8)
        if cues is not None:  # below the image
            ax.text(0.5, -0.03, pretty_list(cues[k], join="\n") or "(no cue)", transform=ax.transAxes,
                    ha="center", va="top", fontsize=8, color="dimgray")
    fig.suptitle(title, y=0.98)
    return fig
