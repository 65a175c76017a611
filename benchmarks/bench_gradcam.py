"""Grad-CAM speed per architecture: the batched helper, a per-image loop, and
one plain forward plus backward pass.

    python benchmarks/bench_gradcam.py [--profile quick] [--images 200] [--method gradcam]

For each architecture of the profile (untrained weights: the speed does not
depend on them), on random uint8 images of the profile's size:

- batched: :func:`cityviz_helpers.gradcam.cam_maps` with the profile's batch size;
- per image: the same helper with batches of one image;
- forward + backward: the model's forward pass and the backward pass of the sum
  of the target logits over the same batches, nothing else: the work Grad-CAM
  cannot avoid.

Targets (issue 4): batched within 1.5x the time of forward + backward, and
faster than the per-image loop. Also prints the process's peak memory.
"""

import argparse
import resource
import time

import torch

from cityviz_helpers import get_settings
from cityviz_helpers.gradcam import cam_maps
from cityviz_helpers.models import build_model
from cityviz_helpers.train import normalise, pick_device


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default=None)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--method", default=None, help="default: the profile's gradcam.method")
    args = parser.parse_args()
    s = get_settings(args.profile)
    size, width, bs = s["dataset"]["image_size"], s["train"]["width"], s["gradcam"]["batch_size"]
    method = args.method or s["gradcam"]["method"]
    dev, n = pick_device(), args.images
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=gen)
    targets = torch.randint(0, 4, (n,), generator=gen)
    print(f"profile {s.profile}: {size} px, {width} width, batch {bs}, {n} images, {method}, device {dev}, "
          f"{torch.get_num_threads()} threads")
    print(f"{'architecture':12s} {'batched img/s':>14s} {'per-image img/s':>16s} {'fwd+bwd img/s':>14s} "
          f"{'batched / fwd+bwd':>18s}")
    for arch in s["train"]["archs"]:
        torch.manual_seed(0)
        model = build_model(arch, 4, size, width).to(dev).eval()

        def forward_backward():
            for i in range(0, n, bs):
                out = model(normalise(images[i:i + bs], dev))
                out.gather(1, targets[i:i + bs, None].to(dev)).sum().backward()
                model.zero_grad(set_to_none=True)

        cam_maps(model, arch, images[:bs], targets[:bs], method, bs, show_progress=False)  # warm-up
        t_batched = timed(lambda: cam_maps(model, arch, images, targets, method, bs, show_progress=False))
        t_fb = timed(forward_backward)
        m = min(n, 50)  # the per-image loop is slow: time a part and scale
        t_single = timed(lambda: cam_maps(model, arch, images[:m], targets[:m], method, 1,
                                          show_progress=False)) * n / m
        print(f"{arch:12s} {n / t_batched:14.1f} {n / t_single:16.1f} {n / t_fb:14.1f} {t_batched / t_fb:17.2f}x")
    print(f"peak memory (RSS): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20:.2f} GB")


if __name__ == "__main__":
    main()
