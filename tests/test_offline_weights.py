"""Offline with your own folder and no ImageNet weights on the machine: notebook
02 stops *before* training and says the two ways out (fetch the weights, or set
``train.pretrained`` empty), and no model file is written. The folder is a tiny
tree of real-photo-like images made with Pillow (EXIF rotation, odd sizes,
greyscale, CMYK, progressive JPEGs, a panorama)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from test_real_photos import messy_tree

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_without_weights_notebook_02_stops_before_training_and_says_the_two_ways_out(tmp_path):
    tree = messy_tree(tmp_path / "photos", n=20)
    overrides = {"dataset": {"max_per_city": None, "min_side": 16}, "train": {"epochs": 2, "lr_step": 1}}
    (tmp_path / "overrides.json").write_text(json.dumps(overrides))
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "torch"), "CITYVIZ_QUIET": "1",
           "CITYVIZ_OVERRIDES": str(tmp_path / "overrides.json"),
           "CITYVIZ_ARTIFACTS": str(tmp_path / "artifacts"), "CITYVIZ_OUTPUTS": str(tmp_path / "outputs")}
    env.pop("CITYVIZ_DATA", None)
    done = subprocess.run([sys.executable, "-m", "cityviz_helpers.tutorial", "--data", str(tree), "--only", "01", "02"],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 1 and "02_classifier_training.ipynb failed" in done.stderr, done.stderr[-2000:]
    [out] = [p for p in (tmp_path / "outputs").iterdir() if p.name.startswith("quick-photos-")]
    nb02 = (out / "notebooks" / "02_classifier_training.ipynb").read_text()
    assert "ImageNet weights for resnet18" in nb02 and "./data_download.sh --weights" in nb02
    assert '\\"pretrained\\": []' in nb02  # the second way out, as an override to copy
    assert not list((tmp_path / "artifacts").rglob("model.json")) and not list((tmp_path / "artifacts").rglob("last.pt"))
