"""benchmarks/bench_recipes.py: bad input is refused with a message; a tiny candidate runs end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SCRIPT = REPO_ROOT / "benchmarks" / "bench_recipes.py"


def _run(args, tmp_path, timeout=300):
    env = {**os.environ, "CITYVIZ_QUIET": "1", "CITYVIZ_OUTPUTS": str(tmp_path / "outputs")}
    env.pop("CITYVIZ_ARTIFACTS", None)
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_refuses_the_notebooks_cache_an_unknown_candidate_and_an_unreadable_file(tmp_path):
    cands = tmp_path / "c.json"
    cands.write_text(json.dumps({"a": {"over": {}}}))
    done = _run([str(cands), "--artifacts", str(REPO_ROOT / "artifacts")], tmp_path)
    assert done.returncode == 2 and "must not be the notebooks' own cache" in done.stderr
    done = _run([str(cands), "--only", "b", "--artifacts", str(tmp_path / "cache")], tmp_path)
    assert done.returncode == 2 and "no candidate named b" in done.stderr and "it has: a" in done.stderr
    done = _run([str(tmp_path / "missing.json"), "--artifacts", str(tmp_path / "cache")], tmp_path)
    assert done.returncode == 2 and "cannot read the candidates file" in done.stderr
    assert not (tmp_path / "cache").exists()


def test_a_tiny_candidate_reports_validation_accuracy_and_reuses_its_cache(tmp_path):
    tiny = {"dataset": {"n_per_city": {"train": 6, "val": 3, "test": 2}},
            "train": {"epochs": {"vgg11": 1, "resnet18": 1, "simple": 1, "simpler": 1}},
            "segmentation": {"epochs": 1}}
    cands = tmp_path / "c.json"
    cands.write_text(json.dumps({"tiny": {"over": tiny, "archs": ["simple"], "segmenter": True},
                                 "too_small": {"over": {**tiny, "dataset": {**tiny["dataset"], "image_size": 64}},
                                               "archs": ["simple"]}}))
    cache = tmp_path / "cache"
    done = _run([str(cands), "--artifacts", str(cache)], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    model = next(r for r in lines if r.get("model") == "simple-s0" and r.get("candidate") == "tiny")
    assert 0.0 <= model["val_accuracy"] <= 1.0 and model["best_epoch"] == 1 and model["cached"] is False
    segmenter = next(r for r in lines if r.get("model") == "segmenter")
    assert 0.0 <= segmenter["val_miou"] <= 1.0
    # an architecture that cannot run at the candidate's image size is reported, and the run goes on
    error = next(r for r in lines if r.get("candidate") == "too_small" and r.get("model") == "simple-s0")
    assert "too small" in error["error"]
    assert (cache / "quick" / "synthetic").is_dir()
    # a rerun trains nothing: the same numbers, from the candidates' cache
    again = _run([str(cands), "--artifacts", str(cache), "--only", "tiny"], tmp_path)
    rerun = next(json.loads(line) for line in again.stdout.splitlines() if '"simple-s0"' in line)
    assert rerun["cached"] is True and rerun["val_accuracy"] == model["val_accuracy"]
