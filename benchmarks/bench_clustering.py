"""Clustering speed: regions per second for region extraction, feature
extraction and clustering (notebook 04's pipeline).

    python benchmarks/bench_clustering.py [--profile quick] [--images 400] [--arch resnet18]

Runs on random images with smooth random maps (a few Gaussian blobs each), an
untrained network of the profile's width, and the profile's clustering
settings: the speed does not depend on what the network learned. The
notebook's clustering and t-SNE together should take under 60 s in the quick
profile on a 2-core CPU; the notebook prints its own time too.
"""

import argparse
import resource
import time

import numpy as np
import torch

from cityviz_helpers import clustering, get_settings
from cityviz_helpers.models import build_model, target_layer


def blob_maps(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] / size
    maps = np.zeros((n, size, size), np.float32)
    for i in range(n):
        for _ in range(rng.integers(1, 4)):
            cy, cx, s = rng.random(), rng.random(), rng.uniform(0.05, 0.2)
            maps[i] += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
        maps[i] /= maps[i].max()
    return maps


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default=None)
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--arch", default="resnet18")
    args = parser.parse_args()
    s = get_settings(args.profile)
    cfg, size = s["clustering"], s["dataset"]["image_size"]
    rng = np.random.default_rng(0)
    images = torch.randint(0, 256, (args.images, 3, size, size), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    maps = blob_maps(args.images, size, rng)
    cities = rng.choice(["A", "B", "C", "D"], args.images)
    torch.manual_seed(0)
    model = build_model(args.arch, 4, size, s["train"]["width"]).eval()

    t0 = time.perf_counter()
    regions = clustering.extract_regions(maps, cfg["threshold"], cfg["min_area"], cities,
                                         max_per_image=cfg["max_per_image"])
    t_regions = time.perf_counter() - t0
    t0 = time.perf_counter()
    feats = clustering.classifier_features(
        clustering.layer_activations(model, target_layer(model, args.arch), images), regions)
    t_features = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = clustering.cluster(feats, cfg["k"], tuple(cfg["k_range"]), cfg["pca_dim"], cfg["seed"])
    t_cluster = time.perf_counter() - t0
    t0 = time.perf_counter()
    clustering.tsne_map(result.reduced, cfg["seed"], cfg["tsne_perplexity"])
    t_tsne = time.perf_counter() - t0
    n = len(regions)
    print(f"profile {s.profile}: {args.images} images of {size} px, {n} regions, {args.arch}, "
          f"{torch.get_num_threads()} threads")
    for name, t in (("region extraction", t_regions), ("feature extraction", t_features),
                    (f"clustering (K in {cfg['k_range']})", t_cluster), ("t-SNE", t_tsne)):
        print(f"{name:28s} {t:7.2f} s {n / t:10.0f} regions/s")
    print(f"clustering + t-SNE for one model: {t_cluster + t_tsne:.1f} s; four models' clustering plus one "
          f"t-SNE map (as notebook 04 does): {4 * (t_regions + t_features + t_cluster) + t_tsne:.1f} s")
    print(f"peak memory (RSS): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20:.2f} GB")


if __name__ == "__main__":
    main()
