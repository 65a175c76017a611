"""The figures of notebook 04 (clusters of highlighted regions) and its deep dive 04b, one call per figure.

The notebooks compute everything they show (regions, clusters, enrichment ratios) in the open and
hand the results to these functions, which only draw. Every text is at least
:data:`cityviz_helpers.plotting.MIN_FONT_PT` points, every colour scale has a colour bar, legends sit
outside the data, and a colour means one thing within a figure: a **cluster** in the t-SNE maps,
thumbnails and galleries (:func:`cluster_colours`), an **architecture** in the per-model charts.
Cities are told apart by marker shape, never by colour.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .ade20k import readable_name
from .plotting import MIN_FONT_PT, cam_overlay, label_palette, overlay

#: Text size of labels, legends and small titles in these figures (points).
SMALL = max(MIN_FONT_PT, 8.5)
#: One marker per city (cities are never told apart by colour in these figures).
CITY_MARKERS = "o^sDvP*X"


def pretty_cue(name: str) -> str:
    """A planted cue's name as a reader writes it: ``"banded_facades"`` -> ``"banded facades"``,
    ``"none"`` -> ``"no cue"``."""
    return "no cue" if str(name) == "none" else readable_name(name)


def cluster_colours(k: int) -> dict[int, tuple]:
    """One colour per cluster ``0 .. k-1`` (tab10, or tab20 beyond ten clusters). In notebook 04 these
    colours mean clusters and nothing else."""
    cmap = plt.get_cmap("tab10" if k <= 10 else "tab20")
    return {c: cmap(c % cmap.N) for c in range(k)}


def regions_figure(image: np.ndarray, cam: np.ndarray, painted: np.ndarray, city: str, model: str,
                   min_area: int) -> plt.Figure:
    """Notebook 04, section 1: a test image, its Grad-CAM map (with a colour bar) and the regions cut
    from the mask; ``painted`` holds 0 outside the regions and ``1, 2, ...`` for each kept region."""
    n = int(painted.max())
    fig, axes = plt.subplots(1, 3, figsize=(8, 2.9), layout="constrained")
    axes[0].imshow(image)
    axes[0].set_title(f"test image ({city})", fontsize=SMALL)
    axes[1].imshow(cam_overlay(image, cam))
    axes[1].set_title(f"{model}: Grad-CAM map", fontsize=SMALL)
    axes[2].imshow(overlay(image, label_palette(20)[painted], 0.7, painted > 0))
    axes[2].set_title(f"{n} region{'s' * (n != 1)} of at least {min_area} px\n(one colour each)", fontsize=SMALL)
    for ax in axes:
        ax.axis("off")
    mappable = matplotlib.cm.ScalarMappable(norm=matplotlib.colors.Normalize(0, 1), cmap="jet")
    bar = fig.colorbar(mappable, ax=axes[1], shrink=0.8, pad=0.02)
    bar.set_label("map value", fontsize=SMALL)
    bar.ax.tick_params(labelsize=SMALL)
    return fig


def silhouette_figure(silhouettes: Mapping[str, Mapping[int, float]], arch_of: Mapping[str, str],
                      first_seed: Mapping[str, bool], archs: Sequence[str]) -> plt.Figure:
    """Notebook 04, section 3: each model's silhouette score against K; colour = architecture,
    solid line = first seed, dashed = second seed. The legend sits beside the axes."""
    colours = dict(zip(archs, plt.get_cmap("Dark2").colors))
    fig, ax = plt.subplots(figsize=(7.5, 3.0), layout="constrained")
    for name, scores in silhouettes.items():
        ks = sorted(scores)
        ax.plot(ks, [scores[k] for k in ks], marker=".", label=name, color=colours[arch_of[name]],
                ls="-" if first_seed[name] else "--")
    ax.set_xlabel("number of clusters K", fontsize=SMALL + 1), ax.set_ylabel("silhouette score", fontsize=SMALL + 1)
    ax.set_title("Choosing K: the highest silhouette wins (colour: architecture; dashed: second seed)",
                 fontsize=SMALL + 0.5)
    ax.legend(fontsize=SMALL, ncol=1, bbox_to_anchor=(1.01, 1), loc="upper left")
    return fig


def tsne_figure(xy: np.ndarray, point_cities: np.ndarray, cities: Sequence[str], labels: np.ndarray,
                cluster_label: Mapping[int, str], title: str) -> plt.Figure:
    """Notebook 04, section 4: the t-SNE map twice, on the left each region's city by marker shape (in
    black), on the right its cluster by colour (:func:`cluster_colours`); legends below the panels."""
    k = len(cluster_label)
    colour = cluster_colours(k)
    fig, axes = plt.subplots(1, 2, figsize=(10, 5.2), layout="constrained")
    for city, marker in zip(cities, CITY_MARKERS):
        pts = np.asarray(point_cities) == city
        axes[0].scatter(xy[pts, 0], xy[pts, 1], s=14, marker=marker, facecolors="none", edgecolors="black",
                        linewidths=0.6, label=city)
    axes[0].set_title("city of each region (marker shape)", fontsize=SMALL + 1)
    for c in range(k):
        pts = labels == c
        axes[1].scatter(xy[pts, 0], xy[pts, 1], s=8, color=colour[c], label=cluster_label[c])
    axes[1].set_title("cluster of each region (colour)", fontsize=SMALL + 1)
    for ax, ncol in zip(axes, (len(cities), 1 if k <= 6 else 2)):
        ax.set_xlabel("t-SNE 1", fontsize=SMALL), ax.set_ylabel("t-SNE 2", fontsize=SMALL)
        ax.set_xticks([]), ax.set_yticks([])
        ax.legend(fontsize=SMALL, markerscale=1.6, loc="upper center", bbox_to_anchor=(0.5, -0.06), ncol=ncol)
    fig.suptitle(title, fontsize=SMALL + 2)
    return fig


def thumbnail_figure(xy: np.ndarray, patches: np.ndarray, labels: np.ndarray, cluster_label: Mapping[int, str],
                     title: str, cells: int = 8) -> plt.Figure:
    """Notebook 04, section 4: the t-SNE map with a thumbnail of a region in each square of a
    ``cells`` x ``cells`` grid (:func:`cityviz_helpers.plotting.thumbnail_map`), framed in its cluster's
    colour; the legend of the frames sits below the map."""
    from matplotlib.patches import Patch

    from .plotting import thumbnail_map

    colour = cluster_colours(len(cluster_label))
    fig, ax = plt.subplots(figsize=(7.5, 8.6), layout="constrained")
    on_map = thumbnail_map(ax, xy, patches, cells=cells, edge_colours=[colour[c] for c in labels])
    ax.set_xlabel("t-SNE 1", fontsize=SMALL), ax.set_ylabel("t-SNE 2", fontsize=SMALL)
    ax.set_xticks([]), ax.set_yticks([]), ax.grid(False)
    ax.set_title(f"{title} ({len(on_map)} of {len(xy)} regions shown; frame colour: cluster)", fontsize=SMALL + 1)
    ax.legend(handles=[Patch(facecolor="none", edgecolor=colour[c], lw=2, label=cluster_label[c])
                       for c in range(len(cluster_label))], fontsize=SMALL, loc="upper center",
              bbox_to_anchor=(0.5, -0.03), ncol=2)
    return fig


def cluster_gallery(nearest: Mapping[int, np.ndarray], patches: np.ndarray, cluster_label: Mapping[int, str],
                    clusters: Sequence[int] | None = None, n: int = 8) -> plt.Figure:
    """Notebook 04, section 5 and its browser: one row per cluster, the ``n`` regions nearest its centre
    (``nearest``, from :func:`cityviz_helpers.clustering.nearest_to_centre`), titled with its label."""
    clusters = list(nearest) if clusters is None else list(clusters)
    fig, axes = plt.subplots(len(clusters), n, figsize=(1.0 * n, 1.35 * len(clusters)), squeeze=False)
    for row, c in zip(axes, clusters):
        for ax in row:
            ax.axis("off")
        for ax, i in zip(row, nearest[c]):
            ax.imshow(patches[i], interpolation="nearest")
        row[0].set_title(cluster_label[c], fontsize=SMALL, loc="left")
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.9, wspace=0.06, hspace=0.38)
    return fig


def enrichment_heatmap(ratio: pd.DataFrame, enriched: pd.DataFrame, cluster_label: Mapping[int, str],
                       title: str) -> plt.Figure:
    """Notebook 04, section 6: the enrichment ratio of every cluster (row) and city (column) as a
    heatmap on a log scale centred on 1 (red: more of the city than its share of all regions, blue:
    fewer), with a colour bar; each cell carries its ratio, and a star where ``enriched`` (rows with
    ``cluster`` and ``city``) lists the pair."""
    values = ratio.to_numpy(float)
    finite = values[np.isfinite(values) & (values > 0)]
    span = max(2.0, float(np.nanmax(np.abs(np.log2(finite)))) if len(finite) else 2.0)
    norm = matplotlib.colors.LogNorm(2 ** -span, 2 ** span)
    shown = np.clip(np.where(values > 0, values, 2 ** -span), 2 ** -span, 2 ** span)
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * ratio.shape[1], 0.9 + 0.45 * ratio.shape[0]), layout="constrained")
    image = ax.imshow(shown, cmap="RdBu_r", norm=norm, aspect="auto")
    starred = {(int(r.cluster), r.city) for r in enriched.itertuples()}
    for i, c in enumerate(ratio.index):
        for j, city in enumerate(ratio.columns):
            mark = " *" if (int(c), city) in starred else ""
            strong = abs(np.log2(max(values[i, j], 2 ** -span))) > 0.6 * span
            ax.text(j, i, f"{values[i, j]:.2f}{mark}", ha="center", va="center", fontsize=SMALL + 0.5,
                    color="white" if strong else "black")
    ax.set_xticks(range(ratio.shape[1]), ratio.columns, fontsize=SMALL + 0.5)
    ax.set_yticks(range(ratio.shape[0]), [cluster_label[int(c)] for c in ratio.index], fontsize=SMALL)
    ax.grid(False)
    ax.set_title(title, fontsize=SMALL + 1)
    bar = fig.colorbar(image, ax=ax, pad=0.02)
    bar.set_label("enrichment ratio (1: no preference)", fontsize=SMALL)
    ticks = [t for t in (0.25, 0.5, 1, 2, 4, 8) if 2 ** -span <= t <= 2 ** span]
    bar.set_ticks(ticks, labels=[f"{t:g}" for t in ticks])
    bar.ax.tick_params(labelsize=SMALL)
    bar.ax.minorticks_off()
    return fig


def tsne_panels(maps: Mapping[str, np.ndarray], labels: np.ndarray, cluster_label: Mapping[int, str],
                title: str) -> plt.Figure:
    """Notebook 04's exercise: several t-SNE maps of one set of regions side by side (``maps``: panel
    title -> 2-D points), coloured by cluster with one legend below."""
    colour = cluster_colours(len(cluster_label))
    fig, axes = plt.subplots(1, len(maps), figsize=(3.4 * len(maps), 3.9), layout="constrained", squeeze=False)
    for ax, (name, xy) in zip(axes[0], maps.items()):
        for c in range(len(cluster_label)):
            pts = labels == c
            ax.scatter(xy[pts, 0], xy[pts, 1], s=5, color=colour[c], label=cluster_label[c])
        ax.set_title(name, fontsize=SMALL + 1), ax.set_xticks([]), ax.set_yticks([])
        ax.set_xlabel("t-SNE 1", fontsize=SMALL), ax.set_ylabel("t-SNE 2", fontsize=SMALL)
    fig.legend(*axes[0, 0].get_legend_handles_labels(), fontsize=SMALL, markerscale=2, loc="outside lower center",
               ncol=min(3, len(cluster_label)))
    fig.suptitle(title, fontsize=SMALL + 2)
    return fig


def purity_bars(above_floor: pd.Series, arch_of: Mapping[str, str], archs: Sequence[str]) -> plt.Figure:
    """Deep dive 04b: each model's cue purity above its one-cluster floor (0: no better than putting
    every region in one cluster); colour = architecture, legend beside the axes."""
    colours = dict(zip(archs, plt.get_cmap("Dark2").colors))
    fig, ax = plt.subplots(figsize=(7.5, 3.0), layout="constrained")
    x = np.arange(len(above_floor))
    ax.bar(x, above_floor.to_numpy(), color=[colours[arch_of[n]] for n in above_floor.index])
    ax.axhline(0, color="black", lw=1)
    ax.set_xticks(x, above_floor.index, rotation=30, ha="right", fontsize=SMALL + 0.5)
    ax.set_ylabel("cue purity above\nits one-cluster floor", fontsize=SMALL + 0.5)
    ax.set_title("Do the clusters group regions by the cue they show? (0: no better than one cluster)",
                 fontsize=SMALL + 0.5)
    handles = [matplotlib.patches.Patch(color=colours[a], label=a) for a in archs]
    ax.legend(handles=handles, fontsize=SMALL, title="architecture", title_fontsize=SMALL,
              bbox_to_anchor=(1.01, 1), loc="upper left")
    return fig
