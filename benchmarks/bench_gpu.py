"""The series on a GPU, timed: one prepared script for a machine with CUDA.

    python benchmarks/bench_gpu.py                 # both parts, on the GPU
    python benchmarks/bench_gpu.py --part series   # only the quick series, cold
    python benchmarks/bench_gpu.py --part full --images-per-city 1000

Part ``series``: the five notebooks of the quick profile, cold (an empty artifact
cache and outputs folder in a temporary directory, so nothing is loaded), through
``python -m cityviz_helpers.tutorial``: the seconds per notebook and in all.

Part ``full``: the full profile (224 px, the paper's widths and recipe), one
training epoch per architecture at seed 0 on the built-in cities, drawn first
(``--images-per-city`` training images per city, default the profile's 4,000):
the seconds to draw, and per architecture the epoch's seconds (the training pass
and the validation pass, as the training records them) and images per second.

Each line is printed as it is measured, and a last line holds everything as JSON
(``--json FILE`` writes it too). Without CUDA it stops with a message; ``--allow-cpu``
runs it anyway (a smoke test of the script: CPU figures are not the point).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def series(work: Path, timeout: int) -> dict:
    env = {**os.environ, "CITYVIZ_ARTIFACTS": str(work / "artifacts"), "CITYVIZ_OUTPUTS": str(work / "outputs"),
           "CITYVIZ_QUIET": "1"}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "cityviz_helpers.tutorial", "--profile", "quick",
                           "--timeout", str(timeout)], cwd=ROOT, env=env, text=True, capture_output=True)
    total = time.perf_counter() - start
    if done.returncode != 0:
        print(done.stdout[-4000:], done.stderr[-4000:], sep="\n", file=sys.stderr)
        raise SystemExit("The quick series failed on this machine (output above).")
    timings = json.loads((work / "outputs" / "quick" / "results.json").read_text())["timings"]
    for name, seconds in timings.items():
        print(f"  series  {name}: {seconds:.0f} s", flush=True)
    print(f"  series  cold, all five notebooks: {total:.0f} s ({total / 60:.1f} min, kernel starts included)",
          flush=True)
    return {"notebooks_s": timings, "total_s": round(total, 1)}


def full_epochs(work: Path, per_city: int | None, val_per_city: int | None, device: str) -> dict:
    os.environ["CITYVIZ_ARTIFACTS"] = str(work / "artifacts")
    os.environ["CITYVIZ_OUTPUTS"] = str(work / "outputs")
    from cityviz_helpers import data as cvdata, train
    from cityviz_helpers.settings import PROFILES, get_settings

    counts = dict(PROFILES["full"]["dataset"]["n_per_city"])
    if per_city:
        counts["train"] = per_city
    if val_per_city:
        counts["val"] = counts["test"] = val_per_city
    s = get_settings("full", "synthetic", overrides={"dataset": {"n_per_city": counts}, "train": {"epochs": 1}})
    start = time.perf_counter()
    data = cvdata.load_dataset(s, verbose=False)
    drawn = time.perf_counter() - start
    print(f"  full    drawing {data.n_images()} images at 224 px on {os.cpu_count()} cores: {drawn:.0f} s",
          flush=True)
    size = s["dataset"]["image_size"]
    tr, va = train.split_tensors(data, "train", size, False), train.split_tensors(data, "val", size, False)
    out = {"draw_s": round(drawn, 1), "train_images": len(tr.images), "val_images": len(va.images), "archs": {}}
    for arch in s["train"]["archs"]:
        m = train.train_model(s, data, arch, 0, tr, va, device=device, verbose=False)
        seconds = m.meta["train_seconds"]
        rate = len(tr.images) / seconds
        out["archs"][arch] = {"epoch_s": seconds, "images_per_s": round(rate), "precision": m.meta["precision"],
                              "val_accuracy": round(m.meta["val_accuracy"], 3)}
        print(f"  full    {arch}: one epoch {seconds:.0f} s ({rate:.0f} training images/s, "
              f"{m.meta['precision']}, validation pass included)", flush=True)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--part", choices=["series", "full", "both"], default="both")
    p.add_argument("--images-per-city", type=int, default=None,
                   help="training images per city for the full-profile epoch (default: the profile's)")
    p.add_argument("--val-per-city", type=int, default=None,
                   help="validation (and test) images per city for it (default: the profile's)")
    p.add_argument("--timeout", type=int, default=3600, help="seconds allowed per notebook cell")
    p.add_argument("--allow-cpu", action="store_true", help="run without CUDA (a smoke test of this script)")
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args(argv)
    if not torch.cuda.is_available() and not args.allow_cpu:
        print("No CUDA GPU here: this benchmark times the GPU path. Run it on a machine with one "
              "(or pass --allow-cpu to check the script itself).", file=sys.stderr)
        return 2
    device = "cuda" if torch.cuda.is_available() else "cpu"
    gpu = torch.cuda.get_device_name(0) if device == "cuda" else None
    print(f"cityviz on {gpu or 'the CPU'}: torch {torch.__version__}, CUDA {torch.version.cuda}, "
          f"{os.cpu_count()} CPU cores, Python {platform.python_version()}", flush=True)
    figures = {"gpu": gpu, "torch": torch.__version__, "cpu_cores": os.cpu_count(),
               "date": time.strftime("%Y-%m-%d")}
    with tempfile.TemporaryDirectory(prefix="cityviz-bench-gpu-") as tmp:
        if args.part in ("series", "both"):
            figures["quick_series_cold"] = series(Path(tmp) / "series", args.timeout)
        if args.part in ("full", "both"):
            figures["full_profile_epoch"] = full_epochs(Path(tmp) / "full", args.images_per_city,
                                                     args.val_per_city, device)
    line = json.dumps(figures)
    print(line)
    if args.json:
        Path(args.json).write_text(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
