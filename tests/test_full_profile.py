"""The full profile's code path end to end on the CPU, shrunk to a few images (issue 19, item 2).

The full profile (224 px, the paper's widths, the paper's step schedule) is what a
reviewer runs on a GPU; this test runs the same steps here with a tiny override, so
that the path cannot silently break: drawing the built-in cities at 224 px, training
all four architectures at the paper's widths (one batch, one epoch), loading them
back, Grad-CAM maps of every model (the paper's and the notebooks' settings),
clustering one model's regions and training the full profile's segmenter (ResNet-34
encoder, 5 levels) for one pass, on whichever device pick_device() finds: the CPU here,
where CUDA (float16 autocast with loss scaling) never ran (README, "Training at the
paper's scale"); on a GPU machine the same assertions expect CUDA and float16.
"""

import numpy as np
import torch

import cityviz_helpers as cv
from cityviz_helpers import clustering, data as cvdata, gradcam, models, train
from cityviz_helpers import segmentation as seg

# 4 cities x 2 training images = 8 images: one batch of the full profile's 50
FULL_TINY = {"dataset": {"n_per_city": {"train": 2, "val": 1, "test": 1}},
             "train": {"epochs": 1, "seeds": [0]},
             "gradcam": {"batch_size": 4},
             "segmentation": {"epochs": 1, "batch_size": 8}}


def test_full_profile_end_to_end_on_the_cpu(capsys):
    torch.set_num_threads(2)
    s = cv.get_settings("full", "synthetic", overrides=FULL_TINY)
    full = cv.PROFILES["full"]
    # the override shrinks only counts: everything else is the full profile's
    assert s["dataset"]["image_size"] == 224 == full["dataset"]["image_size"]
    assert s["train"]["width"] == "paper" and s["train"]["schedule"] == "step"
    assert s["train"]["archs"] == full["train"]["archs"] == ["vgg11", "resnet18", "simple", "simpler"]

    d = cvdata.load_dataset(s, verbose=False)
    assert d.n_images() == {"train": 8, "val": 4, "test": 4}
    device = train.pick_device()  # the CPU here; CUDA (float16) on a GPU machine
    precision = train.precision_name(train.autocast_dtype(device, s["train"]["amp"]))

    trained = train.train_all(s, d, verbose=False)
    assert list(trained) == [f"{a}-s0" for a in full["train"]["archs"]]
    test = train.split_tensors(d, "test", 224, show_progress=False)
    assert test.images.shape == (4, 3, 224, 224)
    for name, m in trained.items():
        meta = m.meta
        assert not m.loaded and meta["width"] == "paper" and meta["image_size"] == 224
        assert torch.device(meta["device"]).type == device.type and meta["precision"] == precision
        assert meta["history"]["epoch"] == [1]
        # the paper's step schedule: the rate stays at lr until lr_step epochs have passed
        assert meta["history"]["lr"] == [full["train"]["lr"]]
        assert np.isfinite(meta["history"]["train_loss"][0])
        # the paper's widths: the same parameter count as a model built directly at paper width
        with torch.device("meta"):  # shapes only: no time spent drawing the initial weights
            assert meta["n_params"] == models.count_params(models.build_model(meta["arch"], 4, 224, "paper")), name
        probs = train.predict(m.model, test.images)
        assert probs.shape == (4, 4) and torch.allclose(probs.sum(1), torch.ones(4), atol=1e-4)

    # a second run loads the models from the cache (what notebooks 03-05 do; one here, for time)
    assert train.train_all(s, d, archs=["simple"], verbose=False)["simple-s0"].loaded
    again = trained

    # Grad-CAM: the paper's maps (notebooks 04 and 05) and the profile's settings, cached
    cams = gradcam.model_maps(s, d, again, test, method="gradcam", layer="last", verbose=False)
    for name, c in cams.items():
        assert c["maps"].shape == (4, 224, 224) and c["maps"].dtype == np.float32, name
        assert float(c["maps"].min()) >= 0.0 and float(c["maps"].max()) <= 1.0
        assert np.array_equal(c["targets"], train.to_numpy(test.labels))
    assert gradcam.model_maps(s, d, again, test, verbose=False).keys() == cams.keys()
    area = gradcam.mask_area(cams["vgg11-s0"]["maps"], s["gradcam"]["thresholds"][0])
    assert area.shape == (4,) and np.all((area >= 0) & (area <= 1))

    # notebook 04's step on one model, with the full profile's region and patch sizes
    m = again["resnet18-s0"]
    labels, cue_maps = cvdata.ground_truth(d, "test", 224)
    cfg = {**s["clustering"], "n_perm": 99, "n_boot": 50, "k_range": [2, 3], "pca_dim": 4, "min_area": 1}
    cities = np.array([d.cities[i] for i in test.labels.numpy()])
    result = clustering.analyse_model("resnet18-s0", m.model, models.target_layer(m.model, "resnet18"),
                                      test.images, cams["resnet18-s0"]["maps"], cities, cfg, labels, cue_maps)
    if len(result.regions.table) >= 3:  # one epoch of training may highlight little: then nothing to cluster
        assert result.clustering.labels.shape == (len(result.regions.table),)

    # notebook 05's segmenter: the full profile's ResNet-34 encoder at 5 levels, one pass
    assert s["segmentation"]["encoder"] == "resnet34" and s["segmentation"]["encoder_depth"] == 5
    segmenter = seg.train_synthetic_segmenter(s, d, verbose=False)
    predicted = segmenter(test.images)
    assert predicted.shape == (4, 224, 224)
    assert set(np.unique(predicted)) <= set(segmenter.labels.tolist())
    counts = seg.pixel_counts(predicted, gradcam.binary_masks(cams["simple-s0"]["maps"], 0.5))
    assert counts.shape[0] == 4 and counts.sum() == int((cams["simple-s0"]["maps"] > 0.5).sum())
