"""Segmentation statistics speed: counting and bootstrap versus segmenting.

    python benchmarks/bench_segmentation.py [--profile quick] [--images 400] [--models 8]

Segments random images with the profile's segmentation model (untrained: the
speed does not depend on its weights), then, for each of ``--models`` random
mask sets and each mask threshold, counts the classes inside the masks and in
the whole images (one bincount per batch) and computes every per-city
statistic with its bootstrap intervals, as notebook 05 does. Target (issue 6):
the statistics add under 10 % to the time of segmenting the same images.
"""

import argparse
import resource
import time

import numpy as np
import torch

from cityviz_helpers import get_settings
from cityviz_helpers import segmentation as seg


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default=None)
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--models", type=int, default=8)
    args = parser.parse_args()
    s = get_settings(args.profile)
    cfg, size, n = s["segmentation"], s["dataset"]["image_size"], args.images
    thresholds = s["gradcam"]["thresholds"]
    torch.manual_seed(0)
    labels = list(range(1, 21))
    segmenter = seg.SmpSegmenter(seg.build_smp(cfg, len(labels)), labels, batch_size=cfg["batch_size"])
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    segmenter(images[:cfg["batch_size"]])  # warm-up
    t0 = time.perf_counter()
    label_maps = segmenter(images)
    t_seg = time.perf_counter() - t0

    rng = np.random.default_rng(0)
    cities = rng.choice(["A", "B", "C", "D"], n)
    maps = rng.random((args.models, n, size, size), dtype=np.float32)
    t0 = time.perf_counter()
    image_counts = seg.pixel_counts(label_maps)
    for m in range(args.models):
        for t in thresholds:
            mask_counts = seg.pixel_counts(label_maps, maps[m] > t)
            for c in np.unique(cities):
                seg.city_statistics(mask_counts[cities == c], image_counts[cities == c], cfg["n_boot"])
    t_stats = (time.perf_counter() - t0) / args.models  # per model: what it adds to segmenting
    print(f"profile {s.profile}: {n} images of {size} px, {cfg['architecture']}/{cfg['encoder']}, "
          f"{len(thresholds)} thresholds, {cfg['n_boot']} bootstrap resamples, {torch.get_num_threads()} threads")
    print(f"segmenting:                      {t_seg:6.2f} s ({n / t_seg:.0f} images/s)")
    print(f"counting + bootstrap, per model: {t_stats:6.2f} s ({100 * t_stats / t_seg:.1f} % of segmenting)")
    print(f"counting + bootstrap, {args.models} models: {t_stats * args.models:6.2f} s "
          f"({100 * t_stats * args.models / t_seg:.1f} % of segmenting)")
    print(f"peak memory (RSS): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20:.2f} GB")


if __name__ == "__main__":
    main()
