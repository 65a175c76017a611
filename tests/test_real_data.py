"""The real-data path end to end, offline: the downloader fetches a miniature
OpenStreetView-5M from a loopback server, and all five notebooks run on the
result (papermill, as `make tutorial` runs them) with ImageNet-format ResNet-18
weights in a temporary torch cache and an ADE20K-format Segformer folder, both
with random weights made here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path



REPO_ROOT = Path(__file__).resolve().parent.parent


def test_every_notebook_runs_on_downloaded_real_format_images(real_world):
    env = {**os.environ, "TORCH_HOME": str(real_world / "torch"), "CITYVIZ_QUIET": "1",
           "CITYVIZ_OVERRIDES": str(real_world / "overrides.json"),
           "CITYVIZ_ARTIFACTS": str(real_world / "artifacts"), "CITYVIZ_OUTPUTS": str(real_world / "outputs")}
    env.pop("CITYVIZ_DATA", None)
    done = subprocess.run([sys.executable, "-m", "cityviz_helpers.tutorial", "--data", str(real_world / "osv5m")],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [out] = [p for p in (real_world / "outputs").iterdir() if p.name.startswith("quick-osv5m-")]
    results = json.loads((out / "results.json").read_text())
    assert {"dataset", "models", "gradcam", "clustering", "segmentation", "arch_vs_init", "timings"} <= set(results)
    series = sorted(p.name for p in (REPO_ROOT / "notebooks").glob("[0-9][0-9]*_*.ipynb"))  # chapters, deep dives
    assert len(series) >= 5 and sorted(p.name for p in (out / "notebooks").glob("*.ipynb")) == series
    # ResNet-18 started from the (ImageNet-format) weights at the paper's width; the others from scratch
    sidecars = {json.loads(p.read_text())["arch"]: json.loads(p.read_text())
                for p in (real_world / "artifacts").rglob("model.json")}
    assert sidecars["resnet18"]["pretrained"] is True and sidecars["resnet18"]["width"] == "paper"
    assert sidecars["simple"]["pretrained"] is False and sidecars["simple"]["width"] == "narrow"
    # ground-truth parts were skipped with a note, and the segmenter was the ADE20K one
    nb05 = (out / "notebooks" / "05_segmentation_statistics.ipynb").read_text()
    assert "this check needs the built-in cities" in nb05 and results["segmentation"]["val_seg_miou"] is None
    assert results["arch_vs_init"]["verdict"]
