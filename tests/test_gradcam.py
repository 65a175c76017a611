import gc

import numpy as np
import pytest
import torch
from torch import nn

from cityviz_helpers import gradcam as gc_
from cityviz_helpers.models import ARCHITECTURES, build_model


# ---------------------------------------------------------------- mask helpers


def test_binary_mask_keeps_only_pixels_above_the_threshold():
    cam = np.array([[0.2, 0.5], [0.6, 0.9]])
    assert gc_.binary_masks(cam, 0.5).tolist() == [[False, False], [True, True]]
    assert gc_.binary_masks(cam, 0.6).tolist() == [[False, False], [False, True]]
    assert gc_.mask_area(cam[None], 0.5).tolist() == [0.5]
    with pytest.raises(ValueError, match="threshold"):
        gc_.binary_masks(cam, 1.0)


def test_visual_explanation_greys_out_pixels_at_or_below_the_threshold():
    image = np.full((2, 2, 3), 200, np.uint8)
    cam = np.array([[0.5, 0.51], [0.0, 1.0]])
    out = gc_.visual_explanation(image, cam, 0.5)
    assert out[..., 0].tolist() == [[128, 200], [128, 200]]
    assert gc_.visual_explanation(image, cam, 0.5, fill=0)[..., 0].tolist() == [[0, 200], [0, 200]]  # the paper's
    assert gc_.weighted_image(image, cam)[..., 1].tolist() == [[100, 102], [0, 200]]


def test_pointing_game_on_hand_made_maps():
    region = np.zeros((3, 4, 4), bool)
    region[:, :2, :2] = True  # top-left quarter
    maps = np.zeros((3, 4, 4))
    maps[0, 0, 1] = 1.0  # maximum inside
    maps[1, 3, 3] = 1.0  # maximum outside
    # image 2: a flat map: every pixel ties, expected hit = region's share
    assert gc_.pointing_game(maps, region).tolist() == [1.0, 0.0, 0.25]


def test_relevance_mass_on_hand_made_maps():
    region = np.zeros((2, 2, 2), bool)
    region[:, 0, 0] = True
    maps = np.array([[[0.6, 0.2], [0.2, 0.0]], [[0.0, 0.0], [0.0, 0.0]]])
    score = gc_.relevance_mass(maps, region)
    assert score[0] == pytest.approx(0.6)
    assert np.isnan(score[1])  # an all-zero map has no mass to share


def test_empty_region_gives_nan_not_a_crash():
    maps = np.random.default_rng(0).random((2, 5, 5))
    empty = np.zeros((2, 5, 5), bool)
    assert np.isnan(gc_.pointing_game(maps, empty)).all()
    assert np.isnan(gc_.relevance_mass(maps, empty)).all()
    assert np.isnan(gc_.mask_area(np.zeros((1, 5, 5)), 0.5)).sum() == 0  # an empty mask has area 0


def test_baselines():
    centre = gc_.centre_prior(9)
    assert centre.argmax() == 4 * 9 + 4 and centre.max() == pytest.approx(1.0)
    uniform = gc_.baseline_maps("uniform", 2, 4)
    region = np.zeros((2, 4, 4), bool)
    region[:, 0, :] = True
    assert gc_.relevance_mass(uniform, region).tolist() == [0.25, 0.25]  # uniform: the region's area
    with pytest.raises(ValueError, match="baseline"):
        gc_.baseline_maps("edges", 1, 4)
    assert set(gc_.BASELINES) == {"uniform", "centre", "cue_prior"}


def test_rank_correlation():
    a = np.arange(16.0).reshape(1, 4, 4)
    assert gc_.rank_correlation(a, a * 3 + 1)[0] == pytest.approx(1.0)
    assert gc_.rank_correlation(a, -a)[0] == pytest.approx(-1.0)


def test_raw_relevance_mass_is_not_moved_by_the_rescaling():
    # the example: a 2 x 2 map whose every cell is positive; the cue is the top-left cell
    grid = np.array([[[1.0, 0.9], [0.9, 0.95]]], np.float32)
    region = np.zeros((1, 2, 2), bool)
    region[0, 0, 0] = True
    raw = gc_.raw_maps(grid, 2)
    rescaled = gc_.rescaled_maps(grid, 2)
    assert gc_.relevance_mass(raw, region)[0] == pytest.approx(1.0 / 3.75)  # 0.267
    # rescaling subtracts the minimum (0.9): 1 / (1 + 0 + 0 + 0.5) = 0.667
    assert gc_.relevance_mass(rescaled, region)[0] == pytest.approx(1.0 / 1.5, abs=1e-5)
    # upsampled raw maps keep the grid's proportions: a uniform grid stays uniform at any size
    assert np.allclose(gc_.raw_maps(np.full((1, 3, 3), 2.0), 12), 2.0)


def test_stored_grids_give_back_the_packages_maps_exactly():
    torch.manual_seed(0)
    model = build_model("simpler", 4, 96, "narrow").eval()
    images = torch.randint(0, 255, (6, 3, 96, 96), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    for layer in ("last", "previous", "earlier"):
        maps, grids = gc_.cam_maps(model, "simpler", images, [0, 1, 2, 3, 0, 1], show_progress=False,
                                   cam_layer=layer, with_grids=True)
        assert grids.shape[1] == {"last": 10, "previous": 36, "earlier": 88}[layer]
        assert (grids >= 0).all()
        assert np.array_equal(gc_.rescaled_maps(grids, 96), maps)  # bit for bit: every mask is the same


@pytest.mark.parametrize("layer", ["last", "previous", "earlier"])
def test_one_pass_for_several_methods_gives_each_methods_own_maps(layer):
    torch.manual_seed(1)
    model = build_model("resnet18", 4, 96, "narrow").eval()
    images = torch.randint(0, 255, (5, 3, 96, 96), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    targets = [0, 1, 2, 3, 1]
    grids, seconds = gc_.cam_grids(model, "resnet18", images, targets, gc_.STUDY_METHODS, batch_size=2,
                                   cam_layer=layer)
    for method in gc_.STUDY_METHODS:
        own = gc_.cam_maps(model, "resnet18", images, targets, method, batch_size=2, show_progress=False,
                           cam_layer=layer)
        assert np.array_equal(gc_.rescaled_maps(grids[method], 96), own), method
        assert seconds[method] > 0
    assert gc_.n_hooks(model) == 0
    with pytest.raises(ValueError, match="scorecam"):
        gc_.cam_grids(model, "resnet18", images, targets, ["gradcam", "scorecam"])


def test_cue_prior_is_the_mean_cue_mask_and_a_baseline():
    masks = np.zeros((4, 2, 2), bool)
    masks[:, 1, :] = True  # cues always in the bottom row ...
    masks[0, 0, 0] = True  # ... and once top-left
    prior = gc_.cue_prior(masks)
    assert prior.tolist() == [[0.25, 0.0], [1.0, 1.0]]
    base = gc_.baseline_maps("cue_prior", 3, 2, prior)
    assert base.shape == (3, 2, 2)
    region = np.zeros((3, 2, 2), bool)
    region[:, 1, 0] = True
    assert gc_.relevance_mass(base, region) == pytest.approx([1 / 2.25] * 3)
    with pytest.raises(ValueError, match="prior"):
        gc_.baseline_maps("cue_prior", 1, 2)
    with pytest.raises(ValueError, match="size"):
        gc_.baseline_maps("cue_prior", 1, 3, prior)


def test_paired_bootstrap_interval_covers_a_known_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    covered = 0
    for trial in range(200):
        base = rng.random(80)
        scores = base + rng.normal(0.1, 0.3, 80)  # true mean gain 0.1, paired with the baseline
        ci = gc_.paired_bootstrap(scores, base, n_boot=1000, seed=trial)
        assert ci["low"] <= ci["gain"] <= ci["high"] and ci["n"] == 80
        covered += ci["low"] <= 0.1 <= ci["high"]
    assert 0.90 <= covered / 200 <= 0.99
    # NaN images are left out, not counted as zeros
    ci = gc_.paired_bootstrap(np.array([1.0, np.nan, 1.0]), np.zeros(3), n_boot=100)
    assert ci["n"] == 2 and ci["gain"] == 1.0 and ci["low"] == ci["high"] == 1.0


# ---------------------------------------------------------------- the CAM helper


class TwoChannelNet(nn.Module):
    """Class 0 looks at channel 0 (red), class 1 at channel 1 (green), globally pooled."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 2, 1, bias=False), nn.ReLU())
        with torch.no_grad():
            self.features[0].weight.zero_()
            self.features[0].weight[0, 0] = 1.0
            self.features[0].weight[1, 1] = 1.0
        self.head = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.head.weight.copy_(torch.eye(2))

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


def _two_patch_images(n=4, size=32):
    """Bright red top-left, bright green bottom-right, on grey."""
    img = torch.full((n, 3, size, size), 110, dtype=torch.uint8)
    img[:, 0, :8, :8] = 255
    img[:, 1, -8:, -8:] = 255
    return img


def test_gradcam_points_at_the_evidence_of_the_target_class():
    model = TwoChannelNet()
    images = _two_patch_images()
    maps = gc_.cam_maps(model, model.features, images, [0, 0, 1, 1], show_progress=False)
    assert maps.shape == (4, 32, 32) and maps.min() >= 0 and maps.max() <= 1
    red, green = np.zeros((4, 32, 32), bool), np.zeros((4, 32, 32), bool)
    red[:, :8, :8], green[:, -8:, -8:] = True, True
    truth = np.where(np.array([0, 0, 1, 1])[:, None, None] == 0, red, green)
    assert gc_.pointing_game(maps, truth).tolist() == [1, 1, 1, 1]
    assert (gc_.relevance_mass(maps, truth) > 0.5).all()


@pytest.mark.parametrize("method", gc_.METHODS)
def test_every_method_runs_by_name(method):
    model = build_model("simple", 3, 96, "narrow").eval()
    images = torch.randint(0, 255, (3, 3, 96, 96), dtype=torch.uint8)
    maps = gc_.cam_maps(model, "simple", images, [0, 1, 2], method=method, batch_size=2, show_progress=False)
    assert maps.shape == (3, 96, 96) and np.isfinite(maps).all()
    assert 0 <= maps.min() and maps.max() <= 1


def test_unknown_method_and_bad_targets_are_clear_errors():
    model = TwoChannelNet()
    images = _two_patch_images(2)
    with pytest.raises(ValueError, match="Unknown CAM method"):
        gc_.cam_maps(model, model.features, images, [0, 1], method="magic")
    with pytest.raises(ValueError, match="one target class per image"):
        gc_.cam_maps(model, model.features, images, [0])
    with pytest.raises(ValueError, match="out of range"):
        gc_.cam_maps(model, model.features, images, [0, 5], show_progress=False)
    assert gc_.n_hooks(model) == 0  # a failure inside the helper releases the hooks too


def _live_tensors() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if issubclass(type(o), torch.Tensor))


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_many_batches_leave_no_hooks_no_tensors_and_the_same_outputs(arch):
    torch.manual_seed(0)
    model = build_model(arch, 4, 96, "narrow").eval()
    images = torch.randint(0, 255, (40, 3, 96, 96), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    x = images[:4].float() / 255
    with torch.no_grad():
        before = model(x)
    hooks = gc_.n_hooks(model)
    gc_.cam_maps(model, arch, images[:8], [0] * 8, batch_size=4, show_progress=False)  # warm up
    tensors = _live_tensors()
    for _ in range(3):
        gc_.cam_maps(model, arch, images, np.arange(40) % 4, batch_size=8, show_progress=False)
    assert gc_.n_hooks(model) == hooks == 0
    assert _live_tensors() <= tensors  # nothing accumulates across calls
    assert all(p.grad is None for p in model.parameters())
    with torch.no_grad():
        assert torch.equal(model(x), before)


def test_randomized_copy_differs_and_leaves_the_original_alone():
    model = build_model("resnet18", 4, 96, "narrow").eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    clone = gc_.randomized_copy(model, seed=1)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert not torch.equal(clone.fc.weight, model.fc.weight)


def test_flat_maps_are_scored_as_uniform_and_counted():
    regions = np.zeros((2, 4, 4), bool)
    regions[:, 0, :] = True  # a quarter of the image
    maps = np.zeros((2, 4, 4), np.float32)
    maps[1, 0, 0] = 1.0  # image 1: all mass on the cue; image 0: flat
    prior = np.full((4, 4), 0.1, np.float32)
    prior[0] = 0.7  # the prior also puts most of its mass on the top row
    s = gc_.ground_truth_scores(maps, regions, prior=prior, n_boot=200)["summary"]
    assert s["n_flat_maps"] == 1
    assert s["relevance_mass_raw"] == pytest.approx((0.25 + 1.0) / 2)
    assert s["uniform_relevance_mass"] == pytest.approx(0.25)
    assert s["cue_prior_relevance_mass"] == pytest.approx(2.8 / 4.0)
    assert s["gain_vs_uniform"]["gain"] == pytest.approx(0.375)
    assert s["gain_vs_cue_prior"]["gain"] == pytest.approx(0.625 - 0.7)
    assert s["pointing_game"] == pytest.approx((0.25 + 1.0) / 2)


def test_randomization_check_leaves_flat_pairs_out_instead_of_scoring_them_zero():
    torch.manual_seed(0)
    model = build_model("simpler", 4, 96, "narrow").eval()
    images = torch.randint(0, 255, (4, 3, 96, 96), dtype=torch.uint8, generator=torch.Generator().manual_seed(5))
    maps = gc_.cam_maps(model, "simpler", images, [0, 1, 2, 3], show_progress=False)
    maps[0] = 0.0  # pretend the trained model gave a flat map for image 0
    out = gc_.randomization_check(model, "simpler", images, [0, 1, 2, 3], maps, seed=3)
    assert np.isnan(out["rho"][0])  # no correlation for a flat pair, rather than a 0 that passes
    assert out["flat_trained"] == 0.25
    assert out["n_pairs"] == int(np.isfinite(out["rho"]).sum()) <= 3
    if out["n_pairs"]:
        assert out["mean_rho"] == pytest.approx(np.nanmean(out["rho"]))


@pytest.mark.parametrize("arch, layer", [("vgg11", "last"), ("resnet18", "last"), ("resnet18", "previous"),
                                         ("simpler", "last")])
def test_gradcam_written_out_by_hand_matches_the_package(arch, layer):
    """Notebook 03 computes one Grad-CAM by hand (spatial mean of the gradients, ReLU of the
    weighted sum, upsample and rescale); its twin gives the package's map to 1e-4."""
    from cityviz_helpers.train import normalise

    torch.manual_seed(4)
    model = build_model(arch, 4, 96, "narrow").eval()
    images = torch.randint(0, 255, (3, 3, 96, 96), dtype=torch.uint8, generator=torch.Generator().manual_seed(5))
    targets = [0, 2, 3]
    module = gc_.target_layer(model, arch, layer)
    package = gc_.cam_maps(model, arch, images, targets, show_progress=False, cam_layer=layer)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for i, t in enumerate(targets):
        hand = gc_.gradcam_by_hand(model, module, normalise(images[i:i + 1], "cpu"), t)
        assert hand.shape == (96, 96) and hand.dtype == np.float32
        assert hand.max() > 0.99  # not a flat map: the comparison means something
        assert np.abs(hand - package[i]).max() < 1e-4, (arch, layer, i)
    assert gc_.n_hooks(model) == 0 and not model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_the_tolerance_tells_maps_apart():
    """The 1e-4 agreement is not automatic: the map of another class differs by far more."""
    from cityviz_helpers.train import normalise

    torch.manual_seed(6)
    model = build_model("resnet18", 4, 96, "narrow").eval()
    images = torch.randint(0, 255, (1, 3, 96, 96), dtype=torch.uint8, generator=torch.Generator().manual_seed(7))
    package = gc_.cam_maps(model, "resnet18", images, [1], show_progress=False)[0]
    other = gc_.cam_maps(model, "resnet18", images, [2], show_progress=False)[0]
    hand = gc_.gradcam_by_hand(model, gc_.target_layer(model, "resnet18"), normalise(images, "cpu"), 1)
    assert np.abs(hand - package).max() < 1e-4
    assert np.abs(hand - other).max() > 1e-2  # another class's map is told apart at this tolerance


def test_layer_grids_and_the_input_size_that_gives_a_grid():
    """A network with global pooling takes any size, and its last grid grows with it; one with a
    fully connected head sized for 96 px takes no other size."""
    resnet = build_model("resnet18", 4, 96)
    assert gc_.layer_grid(resnet, "resnet18", "last", 96) == (3, 3)
    assert gc_.layer_grid(resnet, "resnet18", "earlier", 96) == (12, 12)
    assert gc_.accepts_size(resnet, 192)
    side = gc_.input_size_for_grid(resnet, "resnet18", (6, 6), "last", 96)
    assert side == 192 and gc_.layer_grid(resnet, "resnet18", "last", side) == (6, 6)
    simple = build_model("simple", 4, 96)
    assert gc_.accepts_size(simple, 96) and not gc_.accepts_size(simple, 192)
    assert gc_.input_size_for_grid(simple, "simple", (6, 6), "last", 96) is None


def test_resized_gradcam_gives_the_grid_of_the_input_size():
    torch.manual_seed(0)
    resnet = build_model("resnet18", 4, 96)
    images = torch.randint(0, 256, (3, 3, 96, 96), dtype=torch.uint8)
    labels = torch.tensor([0, 1, 2])
    grids, accuracy = gc_.resized_gradcam(resnet, "resnet18", images, labels, 192)
    assert grids.shape == (3, 6, 6) and (grids >= 0).all() and 0 <= accuracy <= 1
    assert gc_.rescaled_maps(grids, 96).shape == (3, 96, 96)


def test_the_paper_maps_sentence_counts_wins_and_losses():
    def gain(low, high):
        return {"gain": (low + high) / 2, "low": low, "high": high, "n": 10}
    record = {n: {"paper_gain_vs_uniform": gain(0.01, 0.05), "paper_gain_vs_centre": gain(-0.01, 0.02),
                  "paper_gain_vs_cue_prior": gain(-0.05, -0.01) if n != "m2" else gain(0.01, 0.02)}
              for n in ("m1", "m2", "m3")}
    text = gc_.paper_maps_against_baselines(record, ["m1", "m2", "m3"])
    assert "against a uniform map, 3 of 3 models win and 0 lose" in text
    assert "against a centre blob, 0 of 3 models win and 0 lose" in text
    assert "against the cue-location prior, 1 of 3 models win and 2 lose" in text
    assert gc_.paper_maps_against_baselines({"m1": {}}, ["m1"]) is None
