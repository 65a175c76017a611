"""Real photos are messier than the fixtures: EXIF orientation, odd sizes,
panoramas, greyscale, CMYK and progressive JPEGs (all made here with Pillow),
and the quick profile's epochs on a real folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cityviz_helpers import data as cvdata
from cityviz_helpers import get_settings, train

RED, BLUE, GREEN = (220, 20, 20), (20, 20, 220), (20, 200, 20)


def halves(size: tuple[int, int], first, second, vertical: bool = True) -> Image.Image:
    """An image whose left (or top) half is ``first`` and the rest ``second``."""
    w, h = size
    arr = np.empty((h, w, 3), np.uint8)
    arr[:] = second
    if vertical:
        arr[:, : w // 2] = first
    else:
        arr[: h // 2] = first
    return Image.fromarray(arr)


def save_jpeg(img: Image.Image, path: Path, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="JPEG", quality=95, **kwargs)
    return path


def close(pixel, colour, tol=40) -> bool:
    return bool(np.all(np.abs(np.asarray(pixel, int) - np.asarray(colour, int)) <= tol))


def test_exif_orientation_is_applied(tmp_path):
    # stored 60 wide x 40 high, red on the left; orientation 6 says "turn 90 degrees clockwise to view",
    # so the photo as seen is 40 x 60 with red on top
    exif = Image.Exif()
    exif[0x0112] = 6
    path = save_jpeg(halves((60, 40), RED, BLUE), tmp_path / "phone.jpg", exif=exif)
    img, note = cvdata.open_rgb(path, with_note=True, square=False)
    assert img.size == (40, 60) and "EXIF orientation 6 applied" in note
    arr = np.asarray(img)
    assert close(arr[5, 20], RED) and close(arr[55, 20], BLUE)
    # and the square crop is taken from the upright photo: the middle 40 rows
    square = np.asarray(cvdata.open_rgb(path))
    assert square.shape == (40, 40, 3) and close(square[2, 20], RED) and close(square[37, 20], BLUE)


def test_non_square_images_are_centre_cropped_not_stretched(tmp_path):
    # 80 x 40: green outer quarters, red/blue in the middle half; the crop keeps only the middle
    arr = np.empty((40, 80, 3), np.uint8)
    arr[:] = GREEN
    arr[:, 20:40], arr[:, 40:60] = RED, BLUE
    path = tmp_path / "wide.png"
    Image.fromarray(arr).save(path)
    img, note = cvdata.open_rgb(path, with_note=True)
    out = np.asarray(img)
    assert img.size == (40, 40) and "80x40 centre-cropped to 40x40" in note
    assert close(out[:, :20].mean((0, 1)), RED, 5) and close(out[:, 20:].mean((0, 1)), BLUE, 5)
    # training sees exactly what the figures see: the same crop, resized
    loaded = train.load_images([str(path)], 20, show_progress=False)[0].permute(1, 2, 0).numpy()
    assert np.array_equal(loaded, np.asarray(img.resize((20, 20), Image.BILINEAR)))
    # a square image is untouched (the built-in cities' case)
    Image.fromarray(arr[:, :40]).save(tmp_path / "square.png")
    same, note = cvdata.open_rgb(tmp_path / "square.png", with_note=True)
    assert note == "" and np.array_equal(np.asarray(same), arr[:, :40])


def test_panoramas_wider_than_four_to_one_are_skipped_with_the_reason(tmp_path):
    save_jpeg(halves((500, 100), RED, BLUE), tmp_path / "pano.jpg")  # 5:1
    save_jpeg(halves((400, 100), RED, BLUE), tmp_path / "wide.jpg")  # exactly 4:1: kept
    save_jpeg(halves((100, 450), RED, BLUE, vertical=False), tmp_path / "tall.jpg")  # 1:4.5
    with pytest.raises(cvdata.BadImage, match=r"panorama \(500x100 pixels, more than 4:1\)"):
        cvdata.open_rgb(tmp_path / "pano.jpg")
    with pytest.raises(cvdata.BadImage, match="panorama"):
        cvdata.open_rgb(tmp_path / "tall.jpg")
    assert cvdata.open_rgb(tmp_path / "wide.jpg").size == (100, 100)


def test_greyscale_cmyk_and_progressive_jpegs(tmp_path):
    grey = save_jpeg(Image.new("L", (50, 40), 128), tmp_path / "grey.jpg")
    cmyk = save_jpeg(halves((48, 48), RED, BLUE).convert("CMYK"), tmp_path / "cmyk.jpg")
    prog = save_jpeg(halves((64, 48), RED, BLUE), tmp_path / "progressive.jpg", progressive=True)
    assert Image.open(cmyk).mode == "CMYK" and Image.open(prog).info.get("progressive")
    img, note = cvdata.open_rgb(grey, with_note=True)
    assert img.mode == "RGB" and img.size == (40, 40) and "grayscale converted to RGB" in note
    assert close(np.asarray(img)[20, 20], (128, 128, 128), 3)
    img, note = cvdata.open_rgb(cmyk, with_note=True)
    assert img.mode == "RGB" and "CMYK converted to RGB" in note
    assert close(np.asarray(img)[24, 5], RED) and close(np.asarray(img)[24, 42], BLUE)  # colours survive
    img = np.asarray(cvdata.open_rgb(prog))
    assert img.shape == (48, 48, 3) and close(img[24, 5], RED) and close(img[24, 42], BLUE)


def messy_tree(root: Path, n: int = 12) -> Path:
    """Two cities of odd-sized, rotated, greyscale, CMYK and progressive JPEGs, plus a panorama."""
    rng = np.random.default_rng(0)
    for c, (city, colour) in enumerate((("Tokyo", RED), ("Pittsburgh", BLUE))):
        for i in range(n):
            w, h = [(64, 48), (48, 64), (90, 60), (56, 56)][i % 4]
            arr = (rng.integers(0, 60, (h, w, 3)) + np.asarray(colour) * 0.7).clip(0, 255).astype(np.uint8)
            img, kwargs = Image.fromarray(arr), {}
            if i % 5 == 1:
                exif = Image.Exif()
                exif[0x0112] = 8
                kwargs["exif"] = exif
            if i % 5 == 2:
                img = img.convert("CMYK")
            if i % 5 == 3:
                kwargs["progressive"] = True
            if i % 5 == 4:
                img = img.convert("L")
            save_jpeg(img, root / city / f"{i:03d}.jpg", **kwargs)
    save_jpeg(halves((400, 60), RED, BLUE), root / "Tokyo" / "panorama.jpg")
    return root


def test_a_messy_folder_is_scanned_with_a_report(tmp_path):
    root = messy_tree(tmp_path / "photos")
    data = cvdata.scan_image_folder(root, min_side=32, verbose=False)
    assert data.cities == ["Pittsburgh", "Tokyo"] and len(data.items) == 24
    report = data.report.set_index("path")
    assert report.loc["Tokyo/panorama.jpg", "action"] == "skipped"
    assert "panorama" in report.loc["Tokyo/panorama.jpg", "reason"]
    assert "EXIF orientation 8 applied" in report.loc["Tokyo/001.jpg", "reason"]
    assert "CMYK converted to RGB" in report.loc["Tokyo/002.jpg", "reason"]
    assert "centre-cropped" in report.loc["Tokyo/000.jpg", "reason"]
    images = train.load_images(list(data.items.path), 32, show_progress=False)
    assert images.shape == (24, 3, 32, 32)


# --------------------------------------------------------------------------
# The quick profile's epochs on a real folder
# --------------------------------------------------------------------------


def test_quick_epochs_scale_to_the_built_in_number_of_batches(tmp_path):
    root = messy_tree(tmp_path / "photos")
    real = get_settings("quick", str(root))
    data = cvdata.scan_image_folder(root, min_side=32, verbose=False)
    n_train = int((data.items.split == "train").sum())
    builtin = real["dataset"]["n_per_city"]["train"] * 4  # the built-in cities' training images
    bs = real["train"]["batch_size"]
    for arch in real["train"]["archs"]:
        base = train.per_arch(real, "epochs", arch)
        epochs = train.arch_epochs(real, data, arch)
        cap = base * train.MAX_EPOCH_SCALE
        target = base * -(-builtin // bs)  # the built-in cities' batches
        assert base < epochs <= cap
        assert epochs == cap or abs(epochs * -(-n_train // bs) - target) <= -(-n_train // bs)


def test_epoch_rule_for_a_600_per_city_tree():
    # 2 cities x 600 images, 70 % for training: 840 images, 17 batches of 50 per epoch
    # (the built-in cities: 7,680 images, 154 batches); 6 epochs there are 924 batches
    assert train.scaled_epochs(6, 840, 7680, 50) == 54  # 54 x 17 = 918 batches
    assert train.scaled_epochs(10, 840, 7680, 50) == 91  # 91 x 17 = 1,547, against 1,540
    assert train.scaled_epochs(6, 7680, 7680, 50) == 6  # as many images: as many epochs
    assert train.scaled_epochs(6, 20, 7680, 50) == 6 * train.MAX_EPOCH_SCALE  # a tiny tree: capped


def test_epoch_rule_leaves_the_built_in_cities_and_explicit_epochs_alone(tmp_path):
    synthetic = get_settings("quick")
    fake = cvdata.CityData(root=tmp_path, source="synthetic", cities=["a", "b"],
                           items=pd.DataFrame({"path": [], "city": [], "split": []}),
                           report=None)
    for arch in synthetic["train"]["archs"]:
        assert train.arch_epochs(synthetic, fake, arch) == train.per_arch(synthetic, "epochs", arch)
    root = messy_tree(tmp_path / "photos")
    data = cvdata.scan_image_folder(root, min_side=32, verbose=False)
    chosen = get_settings("quick", str(root), overrides={"train": {"epochs": 3}})
    assert all(train.arch_epochs(chosen, data, a) == 3 for a in chosen["train"]["archs"])
    full = get_settings("full", str(root))
    assert all(train.arch_epochs(full, data, a) == 30 for a in full["train"]["archs"])


# --------------------------------------------------------------------------
# Offline, without pretrained weights
# --------------------------------------------------------------------------


def test_missing_imagenet_weights_are_said_with_the_two_ways_out(tmp_path, monkeypatch):
    import torch
    from torchvision.models import resnet18

    from cityviz_helpers import models

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    message = models.missing_imagenet_weights_message(["resnet18", "simple"])
    assert "resnet18 (resnet18-f37072fd.pth)" in message and str(tmp_path / "torch") in message
    assert "./data_download.sh --weights" in message and '{"train": {"pretrained": []}}' in message
    with pytest.raises(models.MissingWeightsError, match="Two ways out"):
        models.build_model("resnet18", 2, 64, "paper", pretrained=True)  # the same message where it fails
    assert models.missing_imagenet_weights_message(["simple", "simpler"]) is None  # nothing asked for
    assert models.missing_imagenet_weights_message([]) is None  # train.pretrained empty: the way out
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(resnet18(weights=None).state_dict(), cache / "resnet18-f37072fd.pth")
    assert models.missing_imagenet_weights_message(["resnet18"]) is None
    models.check_imagenet_weights(["resnet18"])  # does not raise


def test_without_an_ade20k_model_notebook_05_learns_what_it_skips(tmp_path):
    from cityviz_helpers import segmentation as seg

    segmenter, message = seg.try_ade20k_segmenter(tmp_path / "models" / "segformer-b0-ade20k")
    assert segmenter is None
    assert "No ADE20K segmentation model in" in message and "./data_download.sh --weights" in message
    assert "skips the segmentation examples" in message and "object distance" in message
    assert "mask IoU within and between architectures, its permutation test and the verdict" in message
    assert not (tmp_path / "models").exists()  # nothing was created
