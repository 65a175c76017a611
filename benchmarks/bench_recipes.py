"""What a cheaper recipe costs: validation accuracy (and segmenter mIoU) against training time.

    python benchmarks/bench_recipes.py benchmarks/recipes_2026-11-25.json
    python benchmarks/bench_recipes.py benchmarks/recipes_2026-11-25.json --only epochs_cut --seeds 0 1

The JSON file maps a candidate's name to ``{"over": <settings overrides>}``
(the same form as ``CITYVIZ_OVERRIDES``), optionally with ``"archs"`` (which
classifiers to train; default the profile's four, ``[]`` for none) and
``"segmenter": true`` (also train the built-in cities' segmentation model).
Each candidate is trained on the quick profile's built-in cities and scored on
the **validation** split only: a recipe is chosen on validation, never on test.

Everything goes into a separate artifact cache (``--artifacts``, default
``outputs/bench/recipes-cache``), so the notebooks' own cache is never touched;
a dataset the repository's cache already holds is linked there instead of drawn
again. A rerun reuses what that cache already trained, and says so. Prints one
JSON line per model: validation accuracy, best epoch, training seconds (the
loop alone) and wall seconds (with loading), and the same for the segmenter.

Run it on a quiet machine: two CPU-heavy jobs on 2 cores slow each other far
more than twice.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("candidates", help="JSON file: name -> {over, archs?, segmenter?}")
    parser.add_argument("--only", nargs="*", help="run only these candidates")
    parser.add_argument("--seeds", nargs="*", type=int, default=[0], help="classifier seeds (default: 0)")
    parser.add_argument("--artifacts", default=str(REPO / "outputs" / "bench" / "recipes-cache"),
                        help="artifact cache for the candidates (never the notebooks' own)")
    args = parser.parse_args(argv)

    cache = Path(args.artifacts).resolve()
    if cache == (REPO / "artifacts").resolve():
        parser.error("--artifacts must not be the notebooks' own cache (artifacts/): the candidates would mix "
                     "with the series' models.")
    try:
        cands = json.loads(Path(args.candidates).read_text())
    except (OSError, ValueError) as err:
        parser.error(f"cannot read the candidates file {args.candidates}: {err}")
    unknown = sorted(set(args.only or []) - set(cands))
    if unknown:
        parser.error(f"no candidate named {', '.join(unknown)} in {args.candidates} (it has: {', '.join(cands)})")
    os.environ["CITYVIZ_ARTIFACTS"] = str(cache)
    os.environ.setdefault("CITYVIZ_QUIET", "1")

    import torch

    import cityviz_helpers as cv
    from cityviz_helpers import data as cvdata
    from cityviz_helpers import segmentation as seg
    from cityviz_helpers import train

    print(json.dumps({"machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                      "torch": torch.__version__, "cache": str(cache)}), flush=True)
    # a dataset the notebooks' cache already drew: link it (read-only use) rather than draw it again
    target = cv.get_settings("quick", "synthetic").artifacts_dir
    target.mkdir(parents=True, exist_ok=True)
    for folder in (REPO / "artifacts" / "quick" / "synthetic").glob("dataset-*"):
        if not (target / folder.name).exists():
            (target / folder.name).symlink_to(folder, target_is_directory=True)
    for name, spec in cands.items():
        if args.only and name not in args.only:
            continue
        settings = cv.get_settings("quick", "synthetic", overrides=spec.get("over") or {})
        t = time.perf_counter()
        data = cvdata.load_dataset(settings, verbose=False)
        print(json.dumps({"candidate": name, "over": spec.get("over"),
                          "dataset_s": round(time.perf_counter() - t, 1)}), flush=True)
        for arch in spec.get("archs", settings["train"]["archs"]):
            for seed in args.seeds:
                t = time.perf_counter()
                try:
                    m = train.train_all(settings, data, archs=[arch], seeds=[seed], verbose=False)[f"{arch}-s{seed}"]
                except ValueError as err:  # e.g. an image size too small for the architecture's kernels
                    print(json.dumps({"candidate": name, "model": f"{arch}-s{seed}", "error": str(err)}), flush=True)
                    continue
                print(json.dumps({"candidate": name, "model": f"{arch}-s{seed}",
                                  "val_accuracy": round(m.meta["val_accuracy"], 4), "best_epoch": m.meta["best_epoch"],
                                  "train_s": m.meta["train_seconds"], "wall_s": round(time.perf_counter() - t, 1),
                                  "cached": bool(m.loaded)}), flush=True)
        if spec.get("segmenter"):
            size = settings["dataset"]["image_size"]
            t = time.perf_counter()
            segmenter = seg.train_synthetic_segmenter(settings, data, verbose=False)
            wall = time.perf_counter() - t
            val = train.split_tensors(data, "val", size, show_progress=False)
            conf = seg.confusion(segmenter(val.images), cvdata.ground_truth(data, "val", size)[0])
            print(json.dumps({"candidate": name, "model": "segmenter", "val_miou": round(seg.mean_iou(conf), 4),
                              "train_s": segmenter.meta["train_seconds"], "wall_s": round(wall, 1)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
