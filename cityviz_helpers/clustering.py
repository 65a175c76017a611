"""Unsupervised clustering of the regions that Grad-CAM highlights (notebook 04).

The paper's first way to name what a network looks at, without object labels:

1. **regions**: connected components of each thresholded Grad-CAM mask, at
   least ``min_area`` pixels (``scipy.ndimage.label``);
2. **features**: the classifier's own view of a region: its Grad-CAM layer's
   activations averaged inside the region (each cell of the layer's grid
   weighted by how much of it the region covers); or, for comparison, a
   generic view: the region's pixels, masked and resized to a small patch;
3. standardise, reduce with PCA, cluster with K-means (K chosen by the
   silhouette score over a range, or fixed), and a 2-D t-SNE map to look at;
4. per cluster: its composition by city, and which clusters are **enriched**
   in a city: the city's share in the cluster divided by its share among all
   regions, with a 95 % interval from resampling images and a one-sided
   permutation test that shuffles the city labels over the images (the regions
   of one image move together), Benjamini-Hochberg corrected over all
   cluster-city pairs.

On the built-in cities each region also gets its majority ground-truth class
and the planted cue it shows (if any), so purity and NMI can be measured
against the truth: above all *cue purity*, against the cue a region shows
("none" a class of its own), read against its one-cluster floor.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from scipy import ndimage
from torch import nn

from .utils import progress


# --------------------------------------------------------------------------
# Regions
# --------------------------------------------------------------------------


def connected_regions(mask: np.ndarray, min_area: int = 1, connectivity: int = 8) -> list[np.ndarray]:
    """Connected components (bool masks) of a 2-D mask with at least ``min_area`` pixels.

    ``connectivity`` 8 joins diagonal neighbours, 4 does not. Largest first.
    """
    mask = np.asarray(mask, bool)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D, not {mask.shape}")
    structure = np.ones((3, 3), bool) if connectivity == 8 else None
    labels, n = ndimage.label(mask, structure=structure)
    if n == 0:
        return []
    areas = np.bincount(labels.ravel(), minlength=n + 1)
    keep = [k for k in np.argsort(-areas[1:], kind="stable") + 1 if areas[k] >= min_area]
    return [labels == k for k in keep]


@dataclass
class Regions:
    """All regions of one model's masks, one row each, plus their pixels."""

    table: pd.DataFrame  # image, city, area, bbox (y0, y1, x0, x1), and on synthetic data gt_class, cue
    masks: list[np.ndarray] = field(repr=False)  # full-image bool mask of each region

    def __len__(self) -> int:
        return len(self.table)


def extract_regions(maps: np.ndarray, threshold: float, min_area: int, cities: np.ndarray,
                    labels: np.ndarray | None = None, cue_maps: np.ndarray | None = None,
                    cue_names: dict[int, str] | None = None, max_per_image: int | None = None) -> Regions:
    """Regions of every image's mask, with their city (and ground truth if given).

    ``labels`` (N, H, W) are class label maps and ``cue_maps`` (N, H, W) the
    cue maps of the built-in cities (value 16 * cue number + instance); a
    region's ``gt_class`` is its most frequent label, its ``cue`` the planted
    cue it shows: one whose instance lies at least half inside it (else
    ``"none"``). A mask region is usually larger than the object it found, so
    "shows the cue" asks whether the object is in it, not whether it fills it.
    """
    rows, masks = [], []
    for i, cam in enumerate(maps):
        comps = connected_regions(cam > threshold, min_area)
        for comp in comps[:max_per_image]:
            ys, xs = np.nonzero(comp)
            row = {"image": i, "city": cities[i], "area": int(comp.sum()),
                   "y0": int(ys.min()), "y1": int(ys.max()) + 1, "x0": int(xs.min()), "x1": int(xs.max()) + 1}
            if labels is not None:
                row["gt_class"] = int(np.bincount(labels[i][comp]).argmax())
            if cue_maps is not None:
                row["cue"] = _region_cue(cue_maps[i], comp, cue_names)
            rows.append(row)
            masks.append(comp)
    cols = ["image", "city", "area", "y0", "y1", "x0", "x1"]
    return Regions(pd.DataFrame(rows, columns=cols + [c for c in ("gt_class", "cue") if rows and c in rows[0]]),
                   masks)


def _region_cue(cue_map: np.ndarray, region: np.ndarray, cue_names: dict[int, str] | None) -> str:
    """The planted cue a region shows: among the cue instances that lie at least
    half inside the region, the one with the most pixels in it ("none" if none)."""
    inside = np.bincount(cue_map[region].ravel(), minlength=256)
    whole = np.bincount(cue_map.ravel(), minlength=256)
    shown = [(inside[v], v) for v in np.flatnonzero(inside) if v and 2 * inside[v] >= whole[v]]
    if not shown:
        return "none"
    number = int(max(shown)[1]) >> 4
    return (cue_names or {}).get(number, str(number))


# --------------------------------------------------------------------------
# Features
# --------------------------------------------------------------------------


def layer_activations(model: nn.Module, layer: nn.Module, images: torch.Tensor, batch_size: int = 100) -> torch.Tensor:
    """The layer's output (N, C, h, w) for uint8 images, in float32 on the CPU."""
    from .train import model_input

    grabbed: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda m, i, o: grabbed.append(o.detach().float().cpu()))
    try:
        model.eval()
        with torch.no_grad():
            for i in range(0, len(images), batch_size):
                model(model_input(model, images[i:i + batch_size]))
    finally:
        handle.remove()
    return torch.cat(grabbed)


def classifier_features(activations: torch.Tensor, regions: Regions) -> np.ndarray:
    """Each region's mean activation vector (n_regions, C), cells weighted by the
    share of each cell of the layer's grid that the region covers."""
    if not len(regions):
        return np.zeros((0, activations.shape[1]), np.float32)
    h, w = activations.shape[-2:]
    masks = torch.from_numpy(np.stack(regions.masks)).float()[:, None]
    cover = nn.functional.adaptive_avg_pool2d(masks, (h, w))[:, 0]  # (R, h, w) share of each cell covered
    acts = activations[torch.tensor(regions.table.image.to_numpy(), dtype=torch.long)]  # (R, C, h, w)
    weighted = (acts * cover[:, None]).sum((2, 3)) / cover.sum((1, 2)).clamp_min(1e-8)[:, None]
    return weighted.numpy().astype(np.float32)


def region_patches(images: np.ndarray, regions: Regions, size: int = 32, pad: int = 2) -> np.ndarray:
    """Each region's bounding box cut from its image (outside the region greyed), resized
    to ``size`` x ``size``: (n_regions, size, size, 3) uint8 for galleries and thumbnails."""
    from PIL import Image

    out = np.empty((len(regions), size, size, 3), np.uint8)
    for r, (row, mask) in enumerate(zip(regions.table.itertuples(), regions.masks)):
        img = np.asarray(images[row.image])
        y0, y1 = max(0, row.y0 - pad), min(img.shape[0], row.y1 + pad)
        x0, x1 = max(0, row.x0 - pad), min(img.shape[1], row.x1 + pad)
        crop = np.where(mask[y0:y1, x0:x1, None], img[y0:y1, x0:x1], 128).astype(np.uint8)
        out[r] = np.asarray(Image.fromarray(crop).resize((size, size), Image.BILINEAR))
    return out


def display_patches(images: np.ndarray, regions: Regions, size: int = 64, pad: int = 3,
                    dim: float = 0.6) -> np.ndarray:
    """Thumbnails for looking at (not features): each region's bounding box, padded to a
    square so nothing is stretched, cut from the full-resolution image, pixels outside
    the region dimmed towards grey by ``dim``, and scaled to ``size`` x ``size`` with
    nearest-neighbour sampling (no smoothing). (n_regions, size, size, 3) uint8."""
    from PIL import Image

    out = np.empty((len(regions), size, size, 3), np.uint8)
    for r, (row, mask) in enumerate(zip(regions.table.itertuples(), regions.masks)):
        img = np.asarray(images[row.image])
        h, w = img.shape[:2]
        side = min(max(row.y1 - row.y0, row.x1 - row.x0) + 2 * pad, h, w)
        cy, cx = (row.y0 + row.y1) // 2, (row.x0 + row.x1) // 2
        y0, x0 = int(np.clip(cy - side // 2, 0, h - side)), int(np.clip(cx - side // 2, 0, w - side))
        crop = img[y0:y0 + side, x0:x0 + side].astype(np.float32)
        inside = mask[y0:y0 + side, x0:x0 + side, None]
        crop = np.where(inside, crop, (1 - dim) * crop + dim * 128).astype(np.uint8)
        out[r] = np.asarray(Image.fromarray(crop).resize((size, size), Image.NEAREST))
    return out


def spread_points(xy: np.ndarray, cells: int = 8) -> list[tuple[int, tuple[float, float]]]:
    """Points to show as thumbnails on a 2-D map without overlap: the map's bounding box
    cut into ``cells`` x ``cells`` squares, and in each square that holds points the one
    nearest its centre. Returns ``(index, (x, y) of the square's centre)`` pairs."""
    xy = np.asarray(xy, float)
    if not len(xy):
        return []
    lo, hi = xy.min(0), xy.max(0)
    step = np.where(hi > lo, (hi - lo) / cells, 1.0)
    cell = np.minimum(((xy - lo) / step).astype(int), cells - 1)
    out = []
    for gx, gy in sorted({(int(a), int(b)) for a, b in cell}):
        members = np.flatnonzero((cell[:, 0] == gx) & (cell[:, 1] == gy))
        centre = lo + (np.array([gx, gy]) + 0.5) * step
        best = members[np.argmin(np.linalg.norm(xy[members] - centre, axis=1))]
        out.append((int(best), (float(centre[0]), float(centre[1]))))
    return out


def cluster_names(result: "ModelClusters") -> dict[int, str]:
    """A label per cluster that says what it is made of: its number, its size and the
    city most of its regions come from, e.g. "cluster 2: 55 regions, 100 % Amberton"."""
    table, labels = result.regions.table, result.clustering.labels
    names = {}
    for c in range(result.clustering.k):
        cities = table.city[labels == c].value_counts()
        names[c] = (f"cluster {c}: {int(cities.sum())} regions, {cities.iloc[0] / cities.sum():.0%} {cities.index[0]}"
                    if len(cities) else f"cluster {c}: empty")
    return names


def pixel_features(patches: np.ndarray, size: int = 12) -> np.ndarray:
    """A generic view for comparison: each patch's pixels at ``size`` x ``size``, flattened."""
    t = torch.from_numpy(patches).permute(0, 3, 1, 2).float() / 255
    return nn.functional.adaptive_avg_pool2d(t, size).flatten(1).numpy()


# --------------------------------------------------------------------------
# Clustering
# --------------------------------------------------------------------------


@dataclass
class Clustering:
    labels: np.ndarray  # cluster of each region
    k: int
    silhouette: float
    silhouettes: dict[int, float]  # K -> score over the tried range
    reduced: np.ndarray  # standardised, PCA-reduced features
    centres: np.ndarray  # K-means centres in the reduced space


def cluster(features: np.ndarray, k: int | None = None, k_range: tuple[int, int] = (2, 12), pca_dim: int = 20,
            seed: int = 0, silhouette_sample: int = 2000) -> Clustering:
    """Standardise, PCA, K-means; K by the best silhouette over ``k_range`` unless fixed."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.metrics import silhouette_score
    from sklearn.preprocessing import StandardScaler

    n = len(features)
    if n < 3:
        raise ValueError(f"Only {n} regions to cluster: lower clustering.min_area or the mask threshold.")
    x = StandardScaler().fit_transform(features)
    dim = min(pca_dim, x.shape[1], n - 1)
    x = PCA(dim, random_state=seed).fit_transform(x)
    ks = [k] if k else list(range(k_range[0], min(k_range[1], n - 1) + 1))
    if not ks or ks[0] >= n:
        raise ValueError(f"K={ks} needs more than {n} regions.")
    scores, fits = {}, {}
    sample = min(silhouette_sample, n)
    for kk in ks:
        km = KMeans(kk, n_init=4, random_state=seed).fit(x)
        fits[kk] = km
        scores[kk] = float(silhouette_score(x, km.labels_, sample_size=sample, random_state=seed))
    best = max(scores, key=scores.get)
    return Clustering(fits[best].labels_, best, scores[best], scores, x, fits[best].cluster_centers_)


def tsne_map(reduced: np.ndarray, seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """A 2-D t-SNE embedding of the reduced features (for viewing only)."""
    from sklearn.manifold import TSNE

    perplexity = min(perplexity, max(2.0, (len(reduced) - 1) / 3))
    return TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(reduced)


def nearest_to_centre(clustering: Clustering, n: int = 8) -> dict[int, np.ndarray]:
    """Indices of the ``n`` regions closest to each cluster's centre."""
    out = {}
    for c in range(clustering.k):
        members = np.flatnonzero(clustering.labels == c)
        d = np.linalg.norm(clustering.reduced[members] - clustering.centres[c], axis=1)
        out[c] = members[np.argsort(d, kind="stable")[:n]]
    return out


# --------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------


def enrichment(clusters: np.ndarray, cities: np.ndarray, images: np.ndarray | None = None, alpha: float = 0.05,
               n_perm: int = 1999, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """One row per (cluster, city): count, cluster size, the city's share in the
    cluster and overall, their ratio with a 95 % interval, a one-sided
    permutation p-value (more of this city than chance), the Benjamini-Hochberg
    q-value, and ``enriched`` (q < alpha and ratio > 1).

    Regions of one image share its city and often its cluster, so they are not
    independent draws: ``images`` (the image of each region) makes every step
    move an image's regions together. The p-value permutes the city labels over
    the images ``n_perm`` times (p = (hits + 1) / (n_perm + 1), so it is never
    below ``p_floor`` = 1 / (n_perm + 1)); the interval resamples images with
    replacement ``n_boot`` times. Without ``images`` each region is its own image.
    """
    from .segmentation import nan_quantiles, resample_weights

    clusters, cities = np.asarray(clusters), np.asarray(cities)
    images = np.arange(len(clusters)) if images is None else np.asarray(images)
    ks, k_of = np.unique(clusters, return_inverse=True)
    names, j_of = np.unique(cities, return_inverse=True)
    ids, i_of = np.unique(images, return_inverse=True)
    n, K, J = len(ids), len(ks), len(names)
    city = np.full(n, -1)
    city[i_of] = j_of
    if (city[i_of] != j_of).any():
        raise ValueError("The regions of one image must all carry that image's city.")
    per_image = np.zeros((n, K))  # regions of each image in each cluster
    np.add.at(per_image, (i_of, k_of.ravel()), 1)
    onehot = np.eye(J)[city]  # (n, J)
    count = per_image.T @ onehot  # (K, J)
    size = per_image.sum(0)  # (K,)
    overall = per_image.sum(1) @ onehot / len(clusters)  # (J,)

    rng = np.random.default_rng(seed)
    shuffled = rng.permuted(np.broadcast_to(city, (n_perm, n)), axis=1)
    hits = np.zeros((K, J))
    for chunk in np.array_split(shuffled, max(1, n_perm // 500)):
        perm_count = np.eye(J, dtype=np.float32)[chunk].transpose(0, 2, 1) @ per_image.astype(np.float32)  # (P, J, K)
        hits += (perm_count.transpose(0, 2, 1) >= count - 1e-9).sum(0)
    p = (hits + 1) / (n_perm + 1)

    w = resample_weights(n, n_boot, seed)  # (B, n) images drawn
    b_count = (w @ (per_image[:, :, None] * onehot[:, None, :]).reshape(n, K * J)).reshape(-1, K, J)
    b_size = w @ per_image  # (B, K)
    regions = per_image.sum(1)
    b_overall = (w @ (regions[:, None] * onehot)) / (w @ regions)[:, None]  # (B, J)
    with np.errstate(invalid="ignore", divide="ignore"):
        b_ratio = b_count / b_size[:, :, None] / b_overall[:, None, :]
    low, high = nan_quantiles(b_ratio.reshape(n_boot, K * J), (0.025, 0.975))
    rows = []
    for a, c in enumerate(ks):
        for j, name in enumerate(names):
            share = count[a, j] / size[a]
            rows.append({"cluster": int(c), "city": name, "count": int(count[a, j]), "cluster_size": int(size[a]),
                         "share": share, "overall_share": overall[j], "ratio": share / overall[j],
                         "ratio_low": low[a * J + j], "ratio_high": high[a * J + j], "p_value": p[a, j]})
    table = pd.DataFrame(rows)
    table["q_value"] = _benjamini_hochberg(table.p_value.to_numpy())
    table["p_floor"] = 1 / (n_perm + 1)
    table["enriched"] = (table.q_value < alpha) & (table.ratio > 1)
    return table


def resolution(p_floor: float) -> float:
    """The coarsest power of ten at or above ``p_floor``: p- and q-values below it
    are shown as "< resolution" (a permutation test cannot say how much smaller)."""
    return float(10.0 ** np.ceil(np.log10(p_floor) - 1e-9))


def format_p(p: float, p_floor: float) -> str:
    """A p- or q-value as text with the test's resolution: "< 0.001" or "0.012"."""
    res = resolution(p_floor)
    return f"< {res:g}" if p < res else f"{p:.3f}"


def _benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    from scipy.stats import false_discovery_control

    return false_discovery_control(p, method="bh") if len(p) else p


def purity(clusters: np.ndarray, truth: np.ndarray) -> float:
    """Share of regions whose ground-truth class is their cluster's majority class."""
    clusters, truth = np.asarray(clusters), np.asarray(truth)
    if not len(clusters):
        return float("nan")
    hits = sum(pd.Series(truth[clusters == c]).value_counts().iloc[0] for c in np.unique(clusters))
    return float(hits / len(clusters))


def majority_share(truth: np.ndarray) -> float:
    """Purity of one cluster that holds every region: the share of the most common
    class. A clustering's purity is informative only above this floor."""
    return purity(np.zeros(len(truth), int), truth)


def nmi(clusters: np.ndarray, truth: np.ndarray) -> float:
    """Normalised mutual information between clusters and ground-truth classes."""
    from sklearn.metrics import normalized_mutual_info_score

    return float(normalized_mutual_info_score(truth, clusters))


# --------------------------------------------------------------------------
# One model, end to end (notebook 04)
# --------------------------------------------------------------------------


@dataclass
class ModelClusters:
    name: str
    regions: Regions
    features: np.ndarray
    clustering: Clustering
    enrichment: pd.DataFrame
    seconds: dict  # time of each step

    def summary(self) -> dict:
        """The numbers notebook 04 records in results.json for this model."""
        t, c = self.regions.table, self.clustering
        out = {"n_regions": len(t), "k": c.k, "silhouette": round(c.silhouette, 4),
               "enriched_clusters": [{"cluster": int(r.cluster), "city": r.city, "ratio": round(r.ratio, 3),
                                      "ratio_ci95": [round(r.ratio_low, 3), round(r.ratio_high, 3)],
                                      "q_value": float(f"{r.q_value:.3g}"), "q": format_p(r.q_value, r.p_floor)}
                                     for r in self.enrichment[self.enrichment.enriched].itertuples()]}
        if "cue" in t:
            cues = t.cue.to_numpy()
            out["cue_purity"] = round(purity(c.labels, cues), 4)
            out["cue_purity_floor"] = round(majority_share(cues), 4)
            out["no_cue_share"] = round(float((cues == "none").mean()), 4) if len(cues) else None
            out["cue_nmi"] = round(nmi(c.labels, cues), 4)
        if "gt_class" in t:
            truth = t.gt_class.to_numpy()
            out["purity"] = round(purity(c.labels, truth), 4)
            out["purity_one_cluster"] = round(majority_share(truth), 4)
            out["nmi"] = round(nmi(c.labels, truth), 4)
        return out

    def top_enriched(self) -> pd.DataFrame:
        """Each city's most enriched cluster (highest ratio among the enriched ones),
        with, on the built-in cities, the planted cue that makes up most of it."""
        rows = []
        e = self.enrichment[self.enrichment.enriched]
        for city, group in e.groupby("city", sort=True):
            best = group.sort_values("ratio", ascending=False).iloc[0]
            row = {"city": city, "cluster": int(best.cluster), "ratio": best.ratio, "ratio_low": best.ratio_low,
                   "ratio_high": best.ratio_high, "regions": int(best.cluster_size)}
            if "cue" in self.regions.table:
                cues = self.regions.table.cue[self.clustering.labels == best.cluster].value_counts(normalize=True)
                cues = cues.drop("none", errors="ignore")
                row["main_cue"] = cues.index[0] if len(cues) else "none"
                row["main_cue_share"] = float(cues.iloc[0]) if len(cues) else 0.0
            rows.append(row)
        return pd.DataFrame(rows)


def analyse_model(name: str, model: nn.Module, layer: nn.Module, images: torch.Tensor, maps: np.ndarray,
                  cities: np.ndarray, cfg: dict, labels: np.ndarray | None = None, cue_maps: np.ndarray | None = None,
                  cue_names: dict[int, str] | None = None) -> ModelClusters:
    """Regions, features, clusters and enrichment of one model's masks, with
    ``cfg`` the ``clustering`` settings section."""
    import time

    seconds = {}
    t0 = time.perf_counter()
    regions = extract_regions(maps, cfg["threshold"], cfg["min_area"], cities, labels, cue_maps, cue_names,
                              cfg["max_per_image"])
    seconds["regions"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if cfg["features"] == "classifier":
        features = classifier_features(layer_activations(model, layer, images), regions)
    elif cfg["features"] == "pixels":
        hwc = images.permute(0, 2, 3, 1).numpy()
        features = pixel_features(region_patches(hwc, regions, cfg["patch_size"]))
    else:
        raise ValueError(f"clustering.features must be 'classifier' or 'pixels', not {cfg['features']!r}.")
    seconds["features"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = cluster(features, cfg["k"], tuple(cfg["k_range"]), cfg["pca_dim"], cfg["seed"])
    seconds["clustering"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    table = enrichment(result.labels, regions.table.city.to_numpy(), regions.table.image.to_numpy(),
                       n_perm=cfg["n_perm"], n_boot=cfg["n_boot"], seed=cfg["seed"])
    seconds["enrichment"] = time.perf_counter() - t0
    return ModelClusters(name, regions, features, result, table, seconds)
