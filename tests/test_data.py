import hashlib

import numpy as np
import pytest
from PIL import Image

from cityviz_helpers import data as cvdata
from cityviz_helpers.demo import EXPECTED, SCAN_LIMITS, make_messy_folder


def _snapshot(root):
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()}


def test_every_bad_file_kind_is_reported_and_nothing_is_modified(tmp_path):
    root = make_messy_folder(tmp_path / "messy")
    before = _snapshot(root)
    data = cvdata.scan_image_folder(root, **SCAN_LIMITS, verbose=False)
    assert _snapshot(root) == before  # never modified, never deleted
    report = {row.path.split("/")[-1]: (row.action, row.reason) for row in data.report.itertuples()}
    for name, (action, reason) in EXPECTED.items():
        assert name in report, name
        assert report[name][0] == action and reason.lower() in report[name][1].lower(), (name, report[name])
    assert report["Lisbon"] == ("skipped", "folder without usable images")
    usable = {p.split("/")[-1] for p in data.items.path}
    assert usable == {f"good_{i}.jpg" for i in range(6)} | {n for n, (a, _) in EXPECTED.items() if a == "converted"}
    assert data.cities == ["Pittsburgh", "Tokyo"]


@pytest.mark.parametrize("name", [n for n, (a, _) in EXPECTED.items() if a == "converted"])
def test_converted_images_open_as_8bit_rgb(tmp_path, name):
    root = make_messy_folder(tmp_path / "messy")
    img = cvdata.open_rgb(root / "Tokyo" / name)
    arr = np.asarray(img)
    assert img.mode == "RGB" and arr.dtype == np.uint8 and arr.shape == (64, 64, 3)
    if name == "sixteen_bit.png":  # 40000 of 65535 -> about 156 of 255, not clipped to 255
        assert abs(int(arr[0, 0, 0]) - round(40000 / 65535 * 255)) <= 1
    if name == "rgba.png":  # blue at alpha 100 over white
        assert arr[0, 0, 2] == 255 and 140 < arr[0, 0, 0] < 170


@pytest.mark.parametrize("name", [n for n, (a, _) in EXPECTED.items() if a == "skipped" and n != ".hidden.png"])
def test_unusable_files_raise_a_clear_bad_image(tmp_path, name):
    root = make_messy_folder(tmp_path / "messy")
    with pytest.raises(cvdata.BadImage, match=EXPECTED[name][1]):
        cvdata.open_rgb(root / "Tokyo" / name, **SCAN_LIMITS)


def test_stratified_split_is_seeded_and_keeps_proportions(tmp_path):
    for city in ("A", "B", "C"):
        (tmp_path / city).mkdir()
        for i in range(40):
            Image.new("RGB", (40, 40), (i, 0, 0)).save(tmp_path / city / f"{i}.png")
    a = cvdata.scan_image_folder(tmp_path, seed=1, val_fraction=0.25, test_fraction=0.25, verbose=False)
    b = cvdata.scan_image_folder(tmp_path, seed=1, val_fraction=0.25, test_fraction=0.25, verbose=False)
    c = cvdata.scan_image_folder(tmp_path, seed=2, val_fraction=0.25, test_fraction=0.25, verbose=False)
    assert a.items.equals(b.items) and not a.items.split.equals(c.items.split)
    balance = a.balance()
    assert (balance["train"] == 20).all() and (balance["val"] == 10).all() and (balance["test"] == 10).all()
    capped = cvdata.scan_image_folder(tmp_path, max_per_city=8, verbose=False)
    assert (capped.balance()["total"] == 8).all()


def test_split_folders_are_used_as_given(tmp_path):
    for split, n in (("train", 5), ("valid", 2), ("test", 3)):
        for city in ("X", "Y"):
            (tmp_path / split / city).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (40, 40)).save(tmp_path / split / city / f"{i}.png")
    data = cvdata.scan_image_folder(tmp_path, verbose=False)
    assert data.n_images() == {"train": 10, "val": 4, "test": 6}
    assert data.meta["layout"] == "split folders"


def test_too_few_cities_and_missing_paths_say_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="one sub-folder of images per city"):
        cvdata.scan_image_folder(tmp_path / "nope")
    (tmp_path / "Solo").mkdir()
    Image.new("RGB", (40, 40)).save(tmp_path / "Solo" / "a.png")
    (tmp_path / "Ghost").mkdir()
    with pytest.raises(ValueError, match="needs at least two") as err:
        cvdata.scan_image_folder(tmp_path)
    assert "Ghost" in str(err.value)
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(NotADirectoryError):
        cvdata.scan_image_folder(tmp_path / "file.txt")
