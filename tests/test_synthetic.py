import hashlib

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import cityviz_helpers as cv
from cityviz_helpers import data as cvdata
from cityviz_helpers.ade20k import class_index
from cityviz_helpers.synthetic import (CUE_STYLES, DEFAULT_CITIES, City, Cue, cue_table, image_rng,
                                       render_image)

SMALL = {"train": 3, "val": 1, "test": 1}


def _digest(root):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_files(tmp_path):
    a = cvdata.generate_synthetic(tmp_path / "a", n_per_city=SMALL, image_size=64, seed=3, show_progress=False)
    # drawn by two processes: the same bytes as in one
    cvdata.generate_synthetic(tmp_path / "b", n_per_city=SMALL, image_size=64, seed=3, show_progress=False, workers=2)
    cvdata.generate_synthetic(tmp_path / "c", n_per_city=SMALL, image_size=64, seed=4, show_progress=False)
    da, db, dc = _digest(tmp_path / "a"), _digest(tmp_path / "b"), _digest(tmp_path / "c")
    assert len(da) == 3 * 4 * 5 + 2 and da == db
    images = [k for k in da if k.startswith(("train/", "val/", "test/"))]
    assert all(da[k] != dc[k] for k in images)
    assert set(a.columns) >= {"id", "split", "city", "image", "label", "cues", "cues_present", "seed"}
    b = pd.read_csv(tmp_path / "b" / "manifest.csv")
    assert b.id.tolist() == a.id.tolist()  # the manifest keeps the drawing order too


def test_image_depends_only_on_its_own_seed_tuple():
    one = render_image(DEFAULT_CITIES, 2, image_rng(0, 2, 0, 7), 64)
    again = render_image(DEFAULT_CITIES, 2, image_rng(0, 2, 0, 7), 64)
    other = render_image(DEFAULT_CITIES, 2, image_rng(0, 2, 0, 8), 64)
    assert np.array_equal(one.image, again.image) and np.array_equal(one.label, again.label)
    assert not np.array_equal(one.image, other.image)


def test_label_maps_and_cue_maps_agree():
    table = cue_table(DEFAULT_CITIES)
    by_number = {row["cue_number"]: row for row in table}
    seen = set()
    for city in range(len(DEFAULT_CITIES)):
        for i in range(25):
            out = render_image(DEFAULT_CITIES, city, image_rng(1, city, 0, i), 96)
            assert out.image.shape == (96, 96, 3) and out.label.shape == (96, 96)
            assert out.label.max() <= 150 and (out.label > 0).all()  # every pixel is labelled
            numbers = np.unique(out.cue_map[out.cue_map > 0] >> 4)
            for n in numbers:
                row = by_number[int(n)]
                assert row["city"] == DEFAULT_CITIES[city].name  # only the image's own city's cues
                pixels = (out.cue_map >> 4) == n
                # every cue pixel carries the label of the cue's class
                assert (out.label[pixels] == class_index(row["class_name"])).all()
                seen.add(row["cue"])
            assert sorted(out.cues_present) == sorted(by_number[int(n)]["cue"] for n in numbers)
            assert sum(out.n_instances.values()) == len(np.unique(out.cue_map[out.cue_map > 0]))
    assert seen == {row["cue"] for row in table}  # every cue shows up somewhere


def test_cues_are_absent_from_a_fair_share_of_images():
    for city_index, city in enumerate(DEFAULT_CITIES):
        present = {c.style: 0 for c in city.cues}
        for i in range(60):
            for style in render_image(DEFAULT_CITIES, city_index, image_rng(2, city_index, 0, i), 64).cues_present:
                present[style] += 1
        for style, n in present.items():
            assert 0.3 * 60 <= n <= 0.9 * 60, (city.name, style, n)


def test_no_colour_shortcut_but_objects_differ():
    images, labels, outside, cities = [], [], [], []
    for city_index, city in enumerate(DEFAULT_CITIES):
        for i in range(200):  # enough images for a stable probe estimate
            out = render_image(DEFAULT_CITIES, city_index, image_rng(5, city_index, 0, i), 96)
            images.append(out.image), labels.append(out.label), cities.append(city.name)
            outside.append(out.cue_map == 0)
    cue_classes = [class_index(CUE_STYLES[c.style].class_name) for city in DEFAULT_CITIES for c in city.cues]
    shared = cvdata.shared_classes(labels, cue_classes)
    assert class_index("sky") in shared and class_index("road") in shared
    assert not set(shared) & set(cue_classes)
    # the colour of the scene every city shares (sky, road, ...), outside the cues: chance lies in the interval
    scene = cvdata.probe(cvdata.class_colour_features(images, labels, shared, keep=outside), cities)
    assert scene["chance_inside"], scene
    objects = cvdata.probe(cvdata.label_features(labels), cities)
    assert objects["low"] > 0.6, objects  # the positive control: the cities do differ, in their objects


def test_probe_interval_finds_a_planted_signal_and_not_noise():
    rng = np.random.default_rng(0)
    cities = np.repeat(["a", "b", "c", "d"], 100)
    noise = cvdata.probe(rng.normal(size=(400, 5)), cities)
    assert noise["chance"] == 0.25 and noise["n"] == 400
    assert noise["low"] <= noise["accuracy"] <= noise["high"] and noise["chance_inside"]
    signal = rng.normal(size=(400, 5))
    signal[:, 0] += 0.8 * (np.arange(400) // 100)  # one feature shifts with the city
    found = cvdata.probe(signal, cities)
    assert not found["chance_inside"] and found["low"] > 0.25
    # the interval is the exact binomial one of the pooled hits
    assert found["high"] - found["low"] < 0.2


def test_class_colour_features_ignore_which_classes_are_visible():
    image = np.zeros((2, 2, 3), np.uint8)
    image[0] = (255, 0, 0)  # top row red (class 3), bottom row black (class 7)
    labels = np.array([[3, 3], [7, 7]])
    keep = np.array([[True, False], [True, True]])
    f = cvdata.class_colour_features([image], [labels], [3, 7, 9], keep=[keep])
    assert np.allclose(f[0], [1, 0, 0, 0, 0, 0, 0.5, 0.5, 0.5])  # class 9 absent: mid-grey, not zero


def test_colour_features_of_chosen_pixels():
    image = np.zeros((2, 2, 3), np.uint8)
    image[0, 0] = (255, 0, 0)  # one red pixel, three black
    keep = np.array([[True, False], [False, True]])  # the red one and a black one
    whole, chosen = cvdata.colour_features([image, image], bins=2, keep=[np.ones((2, 2), bool), keep])
    assert np.allclose(whole[:3], [0.25, 0, 0]) and np.allclose(chosen[:3], [0.5, 0, 0])
    # histogram bin (r, g, b) = r * 4 + g * 2 + b: black is bin 0, red bin 4
    assert np.isclose(whole[3 + 0], 0.75) and np.isclose(whole[3 + 4], 0.25)
    assert np.isclose(chosen[3 + 0], 0.5) and np.isclose(chosen[3 + 4], 0.5)
    assert not cvdata.colour_features([image], bins=2, keep=[np.zeros((2, 2), bool)]).any()


def test_user_declared_cities():
    mine = (City("Northtown", (Cue("flags", 1.0, (3, 3)),)), City("Southtown", (Cue("buses", 1.0, (1, 1)),)))
    out = render_image(mine, 0, image_rng(0, 0, 0, 0), 96)
    assert out.cues_present == ["flags"]
    with pytest.raises(ValueError, match="Unknown cue style 'spires'"):
        Cue("spires")
    with pytest.raises(ValueError, match="presence"):
        Cue("flags", presence=1.5)
    with pytest.raises(ValueError, match="at least two cities"):
        cvdata.generate_synthetic("/nonexistent", mine[:1], n_per_city=SMALL, image_size=32)
    with pytest.raises(KeyError, match="not an ADE20K"):
        from cityviz_helpers.synthetic import register_cue_style
        register_cue_style("x", "spaceship", "small", "nope")


def test_load_dataset_caches_and_adds_ground_truth(capsys):
    s = cv.get_settings(overrides={"dataset": {"n_per_city": {"train": 4, "val": 2, "test": 2}, "image_size": 48}})
    data = cvdata.load_dataset(s)
    assert data.has_ground_truth and data.cities == [c.name for c in DEFAULT_CITIES]
    assert data.n_images() == {"train": 16, "val": 8, "test": 8}
    assert data.items.label_path.map(lambda p: Image.open(p).size == (48, 48)).all()
    again = cvdata.load_dataset(s)
    out = capsys.readouterr().out
    assert "computed it" in out and "loaded the cached artifact" in out
    pd.testing.assert_frame_equal(data.items, again.items)
