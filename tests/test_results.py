import json

import numpy as np
import pytest

import cityviz_helpers as cv
from cityviz_helpers.results import HASH_KEY, load_results, merge_results, run_hash, update_results


def test_a_section_is_replaced_whole_and_the_others_are_kept():
    s = cv.get_settings()
    merge_results(s, "dataset", {"n": 1, "old": 2})
    merge_results(s, "timings", {"01": 3.5})
    merge_results(s, "dataset", {"m": float("nan"), "x": np.float32(0.5), "a": np.arange(2)})
    data = load_results(s)
    # nothing of the first 'dataset' survives; 'timings' is untouched
    assert data["dataset"] == {"m": None, "x": 0.5, "a": [0, 1], HASH_KEY: run_hash(s)}
    assert data["timings"] == {"01": 3.5, HASH_KEY: run_hash(s)}
    assert json.loads((s.outputs_dir / "results.json").read_text()) == data


def test_each_section_carries_the_hash_of_the_settings_that_wrote_it():
    a = cv.get_settings()
    b = cv.get_settings(overrides={"clustering": {"min_area": 99}})
    assert run_hash(a) != run_hash(b) and run_hash(a) == run_hash(cv.get_settings())
    merge_results(a, "clustering", {"k": 4})
    merge_results(b, "segmentation", {"k": 5})
    data = load_results(a)
    assert data["clustering"][HASH_KEY] == run_hash(a)
    assert data["segmentation"][HASH_KEY] == run_hash(b)


def test_a_section_must_be_a_mapping_and_not_forge_the_hash():
    s = cv.get_settings()
    with pytest.raises(TypeError, match="mapping"):
        merge_results(s, "dataset", [1, 2])
    with pytest.raises(ValueError, match=HASH_KEY):
        merge_results(s, "dataset", {HASH_KEY: "abc"})


def test_a_deep_dive_adds_keys_to_its_chapters_section_of_the_same_run_only():
    s = cv.get_settings()
    merge_results(s, "gradcam", {"chapter": 1, "shared": "old"})
    update_results(s, "gradcam", {"deep_dive": np.float64(2.5), "shared": "new"})
    assert load_results(s)["gradcam"] == {"chapter": 1, "deep_dive": 2.5, "shared": "new", HASH_KEY: run_hash(s)}
    # a section written by a run under other settings is not kept: it is replaced whole
    path = s.outputs_dir / "results.json"
    data = json.loads(path.read_text())
    data["gradcam"][HASH_KEY] = "another-run"
    path.write_text(json.dumps(data))
    update_results(s, "gradcam", {"deep_dive": 3})
    assert load_results(s)["gradcam"] == {"deep_dive": 3, HASH_KEY: run_hash(s)}
