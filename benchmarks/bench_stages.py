"""Where the series' time goes: seconds per notebook section, cold or cached.

    python benchmarks/bench_stages.py                      # cold: a new, empty artifact cache
    python benchmarks/bench_stages.py --artifacts artifacts  # cached: the repository's own cache
    python benchmarks/bench_stages.py --only 01 02 --json outputs/bench/stages.json

Executes the notebooks in order, exactly as ``make tutorial`` does (same
kernel, same profile), into a temporary folder (the committed notebooks are
never touched), and adds up each cell's execution time under the notebook's
``## `` section it belongs to, so that a stage (drawing the cities, training,
the CAM study, the segmenter, the statistics, ...) can be compared before and
after a change. Also prints each model's own training time and the segmenter's,
as recorded in their cached metadata.

By default the artifact cache is a new temporary folder, so everything is
computed (a cold run: about as long as a cold ``make tutorial``); outputs
(figures, results.json) always go to a temporary folder too.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def cell_seconds(cell) -> float:
    """Seconds a cell took, from the timing nbclient records in its metadata (0 when absent)."""
    timing = cell.get("metadata", {}).get("execution", {})
    start, end = timing.get("iopub.execute_input"), timing.get("shell.execute_reply")
    if not start or not end:
        return 0.0
    parse = lambda s: dt.datetime.fromisoformat(s.replace("Z", "+00:00"))  # noqa: E731
    return (parse(end) - parse(start)).total_seconds()


def sections(nb) -> list[tuple[str, float]]:
    """(section title, seconds) in notebook order; cells before the first ``## `` count as "setup"."""
    out: list[list] = [["setup (imports, loading)", 0.0]]
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            first = cell.source.lstrip().splitlines()[0] if cell.source.strip() else ""
            if first.startswith("## "):
                out.append([first[3:].strip(), 0.0])
        elif cell.cell_type == "code":
            out[-1][1] += cell_seconds(cell)
    return [(title, seconds) for title, seconds in out]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--artifacts", default=None,
                        help="artifact cache to use (default: a new temporary one, i.e. a cold run)")
    parser.add_argument("--only", nargs="*", help="notebooks whose names start with these, e.g. 01 02")
    parser.add_argument("--json", default=None, help="also write the timings to this JSON file")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds allowed per cell")
    args = parser.parse_args(argv)

    import nbformat
    from nbclient import NotebookClient

    from cityviz_helpers.tutorial import KERNEL_ARGS, notebooks

    work = Path(tempfile.mkdtemp(prefix="cityviz-bench-"))
    artifacts = Path(args.artifacts).resolve() if args.artifacts else work / "artifacts"
    os.environ.update(CITYVIZ_PROFILE=args.profile, CITYVIZ_ARTIFACTS=str(artifacts),
                      CITYVIZ_OUTPUTS=str(work / "outputs"), CITYVIZ_QUIET="1", MPLBACKEND="Agg")
    import torch

    print(f"profile {args.profile}; artifacts {artifacts} ({'given' if args.artifacts else 'new: cold run'}); "
          f"{os.cpu_count()} cores, torch {torch.__version__} with {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}")
    report = {"profile": args.profile, "cold": not args.artifacts, "notebooks": {}}
    grand = 0.0
    for path in notebooks(args.only):
        nb = nbformat.read(path, as_version=4)
        start = time.perf_counter()
        NotebookClient(nb, timeout=args.timeout, kernel_name="python3", extra_arguments=KERNEL_ARGS, record_timing=True,
                       resources={"metadata": {"path": str(path.parent)}}).execute()
        wall = time.perf_counter() - start
        grand += wall
        parts = sections(nb)
        report["notebooks"][path.stem] = {"wall_s": round(wall, 1), "sections": {t: round(s, 1) for t, s in parts}}
        print(f"\n{path.name}: {wall:.0f} s (kernel start-up and the cells)")
        for title, seconds in parts:
            print(f"  {seconds:7.1f} s  {title[:90]}")
        nbformat.write(nb, work / path.name)
    print(f"\nall notebooks: {grand:.0f} s ({grand / 60:.1f} min)")

    models = sorted((artifacts / args.profile).glob("*/models/*/model.json"))
    if models:
        print("\ntraining time recorded by each model (s):")
        for meta_path in models:
            meta = json.loads(meta_path.read_text())
            print(f"  {meta['arch']}-s{meta['seed']}: {meta.get('train_seconds', float('nan')):.0f}")
        report["train_seconds"] = {f"{m['arch']}-s{m['seed']}": m.get("train_seconds")
                                   for m in (json.loads(p.read_text()) for p in models)}
    for seg_meta in sorted((artifacts / args.profile).glob("*/segmenter-*/segmenter.json")):
        seconds = json.loads(seg_meta.read_text()).get("train_seconds")
        print(f"segmenter ({seg_meta.parent.name}): {seconds} s of training")
        report.setdefault("segmenter_seconds", {})[seg_meta.parent.name] = seconds
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1))
        print(f"timings written to {args.json}")
    print(f"executed notebooks (for a closer look): {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
