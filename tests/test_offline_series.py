"""Offline on a user's own folder with no weights at all: the whole series.

What this covers: the whole series (chapters and deep dives), run as ``make tutorial`` runs them
(``python -m cityviz_helpers.tutorial``), on a tiny tree of real-photo-like
images made with Pillow (:func:`test_real_photos.messy_tree`: EXIF rotation,
odd sizes, greyscale, CMYK, progressive JPEGs, a panorama), with no ImageNet
weights (``train.pretrained`` empty, an empty torch cache) and no ADE20K
segmentation model. Chapter 05 and its deep dive must then each say once what
they skip and why, skip each cell that needs the segmenter with a short line, and
still give the mask-IoU test and its verdict (the chapter) and the robustness
table's conclusion (the deep dive); the record in results.json says what was
skipped and holds no object numbers. Nothing may be written inside the repository: artifacts,
outputs, caches and HOME all point into the test's temporary folder.

Tiny settings (20 photos per city, 1 epoch, few bootstrap resamples and
permutations) keep it small; the numbers it produces mean nothing. Measured:
267 s wall, 109 s of CPU time, on a 2-core machine shared with four other jobs
(load about 10); not timed on an idle machine.
The unit tests of notebook 05's helpers for this path come first.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cityviz_helpers import segmentation as seg

from test_real_photos import messy_tree

REPO_ROOT = Path(__file__).resolve().parent.parent
# the whole series as make tutorial runs it: the five chapters and their deep dives
NOTEBOOKS = sorted(p.stem for p in (REPO_ROOT / "notebooks").glob("[0-9][0-9]*_*.ipynb"))


# --------------------------------------------------------------------------
# The helpers notebook 05 uses without a segmenter
# --------------------------------------------------------------------------


def _tests():
    # 4 models in 2 architectures (3 groupings): the objects separate the architectures, the masks do not
    objects = np.array([[0, .1, .9, .9], [.1, 0, .9, .9], [.9, .9, 0, .1], [.9, .9, .1, 0]])
    masks = np.array([[0, .5, .5, .5], [.5, 0, .5, .5], [.5, .5, 0, .5], [.5, .5, .5, 0]])
    groups = ["a", "a", "b", "b"]
    return seg.permutation_test(objects, groups), seg.permutation_test(masks, groups), objects, masks, groups


def test_skip_line_names_what_is_skipped():
    assert seg.skipped("the segmentation examples") == "Skipped (no segmentation model): the segmentation examples."


def test_arch_vs_init_record_with_a_segmenter_keeps_every_number():
    objects_test, masks_test, objects, masks, groups = _tests()
    per_arch = {"objects": seg.per_architecture(objects, groups),
                "masks (1 − IoU)": seg.per_architecture(masks, groups)}
    rows = [seg.verdict_row("objects", objects_test), seg.verdict_row("masks", masks_test)]
    record = seg.arch_vs_init_record(objects_test, masks_test, "some verdict", per_arch, rows, threshold=0.5,
                                     maps=["m"])
    assert set(record) == {"within_arch_distance", "between_arch_distance", "p_value", "p_floor", "n_groupings",
                           "exact", "verdict", "within_arch_mask_iou", "between_arch_mask_iou", "mask_iou_p_value",
                           "per_architecture", "rows", "threshold", "maps"}
    assert record["within_arch_distance"] == 0.1 and record["between_arch_distance"] == 0.9
    assert record["p_value"] == round(1 / 3, 4) and record["n_groupings"] == 3 and record["exact"]
    assert record["within_arch_mask_iou"] == 0.5 and record["mask_iou_p_value"] == 1.0
    assert record["verdict"] == "some verdict" and record["threshold"] == 0.5
    assert record["per_architecture"]["objects"]["a"] == {"within": 0.1, "between": 0.9, "gap": 0.8}
    assert [r["verdict"] for r in record["rows"]] == ["too few models"] * 2  # 1/3 is the floor: p never < 0.05


def test_arch_vs_init_record_without_a_segmenter_says_what_it_skipped_and_fills_in_nothing():
    _, masks_test, _, masks, groups = _tests()
    per_arch = {"masks (1 − IoU)": seg.per_architecture(masks, groups)}
    rows = [seg.verdict_row("masks", masks_test)]
    record = seg.arch_vs_init_record(None, masks_test, "mask verdict", per_arch, rows, "no model in x", threshold=0.5)
    assert not {"within_arch_distance", "between_arch_distance", "p_value"} & set(record)
    assert record["verdict_measure"] == "mask IoU" and record["verdict"] == "mask verdict"
    assert list(record["skipped"].values()) == ["no model in x"] and "object distance" in next(iter(record["skipped"]))
    assert record["n_groupings"] == 3 and record["p_floor"] == round(1 / 3, 6)  # the groupings of the mask test
    assert list(record["per_architecture"]) == ["masks (1 − IoU)"]
    with pytest.raises(ValueError, match="say why"):
        seg.arch_vs_init_record(None, masks_test, "mask verdict", per_arch, rows)


# --------------------------------------------------------------------------
# The five notebooks, offline, without weights
# --------------------------------------------------------------------------


def _files(root: Path, skip=(".git", ".venv")) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` (but ``skip``) with its modification time and size."""
    found = {}
    for folder, dirs, files in os.walk(root):
        if Path(folder) == root:
            dirs[:] = [d for d in dirs if d not in skip]
        for name in files:
            path = Path(folder, name)
            try:
                st = path.lstat()
            except FileNotFoundError:
                continue
            found[str(path.relative_to(root))] = (st.st_mtime_ns, st.st_size)
    return found


def _printed(notebook: Path) -> list[str]:
    """The text each code cell printed (stream outputs), one string per cell."""
    cells = json.loads(notebook.read_text())["cells"]
    return ["".join("".join(o.get("text", "")) for o in c.get("outputs", []) if o.get("output_type") == "stream")
            for c in cells if c["cell_type"] == "code"]


def test_all_five_notebooks_run_offline_on_photos_without_any_weights(tmp_path):
    tree = messy_tree(tmp_path / "photos", n=20)
    no_model = tmp_path / "models" / "segformer-b0-ade20k"  # never created
    overrides = {"dataset": {"max_per_city": None, "min_side": 16},
                 "train": {"epochs": 1, "lr_step": 1, "pretrained": []},
                 "gradcam": {"n_boot": 20, "randomization_images": 8},
                 "clustering": {"min_area": 8, "k_range": [2, 4], "tsne_perplexity": 5, "n_perm": 19, "n_boot": 20},
                 "segmentation": {"ade20k_folder": str(no_model), "n_boot": 20, "n_perm": 200}}
    (tmp_path / "overrides.json").write_text(json.dumps(overrides))
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "CITYVIZ_QUIET": "1", "CITYVIZ_OVERRIDES": str(tmp_path / "overrides.json"),
           "CITYVIZ_ARTIFACTS": str(tmp_path / "artifacts"), "CITYVIZ_OUTPUTS": str(tmp_path / "outputs"),
           "TORCH_HOME": str(tmp_path / "torch"), "HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache"),
           "MPLCONFIGDIR": str(home / "mpl"), "IPYTHONDIR": str(home / "ipython"),
           "JUPYTER_RUNTIME_DIR": str(home / "jupyter"), "HF_HOME": str(home / "hf"), "HF_HUB_OFFLINE": "1",
           "PYTHONDONTWRITEBYTECODE": "1", "MPLBACKEND": "Agg"}
    env.pop("CITYVIZ_DATA", None)
    env.pop("CITYVIZ_PROFILE", None)
    before = _files(REPO_ROOT)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "cityviz_helpers.tutorial", "--data", str(tree)],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    seconds = time.perf_counter() - start
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    print(f"five notebooks offline in {seconds:.0f} s")

    # every notebook finished (the timings are written only when the last one has)
    [out] = [p for p in (tmp_path / "outputs").iterdir() if p.name.startswith("quick-photos-")]
    results = json.loads((out / "results.json").read_text())
    assert sorted(set(results["timings"]) - {"settings_hash"}) == NOTEBOOKS
    assert sorted(p.stem for p in (out / "notebooks").glob("*.ipynb")) == NOTEBOOKS

    # chapter 05 said once what it skips, skipped the cells that need the segmenter, and gave the mask-IoU verdict;
    # its deep dive said once what it skips too, and wrote the conclusion of the robustness table
    printed = _printed(out / "notebooks" / "05_segmentation_statistics.ipynb")
    deep_printed = _printed(out / "notebooks" / "05b_deep_dive_verdict.ipynb")
    text = " ".join(" ".join(printed).split())  # textwrap may break a line anywhere
    deep_text = " ".join(" ".join(deep_printed).split())
    for said in (text, deep_text):
        assert said.count("No ADE20K segmentation model in") == 1
        note = said[said.index("No ADE20K segmentation model in"):]
        assert "skips the segmentation examples" in note and "./data_download.sh --weights" in note
    assert sum("Skipped (no segmentation model)" in p for p in printed) >= 8
    assert sum("Skipped (no segmentation model)" in p for p in deep_printed) >= 3  # dominance, heatmap, diagnostics
    for what in ("the segmentation examples", "the top objects per city", "the object distance test"):
        assert f"Skipped (no segmentation model): {what}" in text
    assert ("verdict at threshold 0.5, mask IoU (no segmenter needed): architecture matters more" in text
            or "verdict at threshold 0.5, mask IoU (no segmenter needed): no evidence that" in text)
    assert "mask IoU within an architecture:" in text and "Verdict (" in deep_text  # the test and the conclusion
    assert "this check needs the built-in cities" in text  # no planted cues in photos

    # the record: what was computed, and what was skipped with the reason; no object numbers
    arch = results["arch_vs_init"]
    assert arch["verdict_measure"] == "mask IoU" and arch["verdict"] and arch["n_groupings"] == 105
    assert "within_arch_distance" not in arch and "No ADE20K segmentation model" in next(iter(arch["skipped"].values()))
    # without a segmenter every row, controls included, is a mask-overlap row; no object row is made
    assert arch["rows"] and all("masks (1 − IoU)" in r["name"] and "objects" not in r["name"] for r in arch["rows"])
    assert [r["kind"] for r in arch["rows"]].count("primary") == 1 and arch["rows"][0]["kind"] == "primary"
    assert {r["kind"] for r in arch["rows"]} == {"primary", "variant", "control"}
    assert len(arch["conclusion"]["controls"]) == 2 and all(r["gap_ci95"] for r in arch["rows"])
    assert 0 <= arch["within_arch_mask_iou"] <= 1 and 0 <= arch["between_arch_mask_iou"] <= 1
    segmentation = results["segmentation"]
    assert segmentation["val_seg_miou"] is None and "thresholds" not in segmentation
    assert "No ADE20K segmentation model" in segmentation["skipped"]

    # offline without weights: nothing fetched, no model folder made, every model trained from scratch
    assert not no_model.parent.exists() and not list((tmp_path / "torch").rglob("*.pth"))
    sidecars = [json.loads(p.read_text()) for p in (tmp_path / "artifacts").rglob("model.json")]
    assert len(sidecars) == 8 and not any(s["pretrained"] for s in sidecars)

    # nothing written inside the repository
    after = _files(REPO_ROOT)
    changed = sorted(p for p in after if before.get(p) != after[p])
    assert not changed, f"written inside the repository: {changed[:10]}"
