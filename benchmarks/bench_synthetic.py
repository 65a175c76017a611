"""Speed of the synthetic-city generator: images per second on one core.

    python benchmarks/bench_synthetic.py [--size 96] [--n 400]

Prints drawing speed alone and drawing plus writing the three PNGs per image
(image, label map, cue map) as generate_synthetic does. Target: at least 50
images/s at the quick profile's size on one core.
"""

import argparse
import os
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core: numpy stays single-threaded

from cityviz_helpers.data import generate_synthetic  # noqa: E402
from cityviz_helpers.settings import PROFILES  # noqa: E402
from cityviz_helpers.synthetic import DEFAULT_CITIES, image_rng, render_image  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=PROFILES["quick"]["dataset"]["image_size"])
    parser.add_argument("--n", type=int, default=400)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    n_cities = len(DEFAULT_CITIES)
    start = time.perf_counter()
    for i in range(args.n):
        render_image(DEFAULT_CITIES, i % n_cities, image_rng(0, i % n_cities, 0, i), args.size)
    draw = args.n / (time.perf_counter() - start)
    per_split = max(1, args.n // (3 * n_cities))
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        manifest = generate_synthetic(tmp, n_per_city={s: per_split for s in ("train", "val", "test")},
                                      image_size=args.size, seed=0, show_progress=False)
        write = len(manifest) / (time.perf_counter() - start)
    print(f"synthetic cities at {args.size}x{args.size} px, one core")
    print(f"  draw only            {draw:7.1f} images/s  ({args.n} images)")
    print(f"  draw + write 3 PNGs  {write:7.1f} images/s  ({len(manifest)} images)")
    print(f"  target >= 50 images/s: {'met' if write >= 50 else 'NOT met'}")


if __name__ == "__main__":
    main()
