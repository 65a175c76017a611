"""Cost of notebook 03's CAM study, per setting: seconds per 100 images for every
(architecture, layer, method), and what sharing one pass saves.

    python benchmarks/bench_cam_study.py [--profile quick] [--images 240]

For each architecture of the profile (untrained weights: the speed does not
depend on them), on random uint8 images of the profile's size (240 = the quick
profile's validation split):

- per setting: :func:`cityviz_helpers.gradcam.cam_grids` with all study methods
  at one layer, which runs one forward and backward pass per batch and lets each
  method weigh the same activations and gradients; the column per method is the
  shared pass plus that method's own step;
- separately: the same methods, each with its own :func:`cam_maps` pass (what
  the study would cost without sharing).

Prints the table and the study's total (every architecture x layer, shared).
"""

import argparse
import time

import torch

from cityviz_helpers import get_settings
from cityviz_helpers.gradcam import STUDY_METHODS, cam_grids, cam_maps
from cityviz_helpers.models import CAM_LAYERS, build_model
from cityviz_helpers.train import pick_device


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default=None)
    parser.add_argument("--images", type=int, default=240)
    args = parser.parse_args()
    s = get_settings(args.profile)
    size, width, bs = s["dataset"]["image_size"], s["train"]["width"], s["gradcam"]["batch_size"]
    dev, n = pick_device(), args.images
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=gen)
    targets = torch.randint(0, 4, (n,), generator=gen)
    print(f"profile {s.profile}: {size} px, {width} width, batch {bs}, {n} images, device {dev}, "
          f"{torch.get_num_threads()} threads; seconds per 100 images")
    print(f"{'architecture':12s} {'layer':9s} {'grid':>7s} " + " ".join(f"{m:>10s}" for m in STUDY_METHODS)
          + f" {'shared, all':>12s} {'separately':>11s}")
    total = 0.0
    for arch in s["train"]["archs"]:
        torch.manual_seed(0)
        model = build_model(arch, 4, size, width).to(dev).eval()
        for layer in CAM_LAYERS:
            cam_grids(model, arch, images[:bs], targets[:bs], STUDY_METHODS, bs, layer)  # warm-up
            start = time.perf_counter()
            grids, seconds = cam_grids(model, arch, images, targets, STUDY_METHODS, bs, layer)
            shared = time.perf_counter() - start
            start = time.perf_counter()
            for method in STUDY_METHODS:
                cam_maps(model, arch, images, targets, method, bs, show_progress=False, cam_layer=layer)
            separately = time.perf_counter() - start
            total += shared
            g = grids[STUDY_METHODS[0]].shape[1:]
            print(f"{arch:12s} {layer:9s} {g[0]:>3d}x{g[1]:<3d} "
                  + " ".join(f"{100 * seconds[m] / n:10.3f}" for m in STUDY_METHODS)
                  + f" {100 * shared / n:12.3f} {100 * separately / n:11.3f}")
    print(f"the whole study on {n} images, one model per architecture, shared passes: {total:.1f} s "
          f"(x the number of seeds for the notebook's models)")


if __name__ == "__main__":
    main()
