"""Grad-CAM maps, masks and their scores against ground truth (notebook 03).

The maps come from the ``grad-cam`` package (``pytorch_grad_cam``); nothing
here re-implements a CAM method. :func:`cam_maps` runs one of the package's
methods over a batch of images, one target class per image, and returns maps
at input resolution in [0, 1] (the package upsamples each map and min-max
normalises it, as the paper does).

The rest are small array helpers: the paper's binary masks, weighted images
and "visual explanations", and two scores of a map against a ground-truth
region (pointing game, relevance mass) with baseline maps to compare with.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from .models import CAM_LAYERS, target_layer
from .train import device_of, to_numpy
from .utils import progress

#: The package's methods a user can ask for by name.
METHODS = ("gradcam", "gradcam++", "layercam", "eigencam", "scorecam", "hirescam", "xgradcam")


def _method_class(name: str):
    import pytorch_grad_cam as pgc

    classes = {"gradcam": pgc.GradCAM, "gradcam++": pgc.GradCAMPlusPlus, "layercam": pgc.LayerCAM,
               "eigencam": pgc.EigenCAM, "scorecam": pgc.ScoreCAM, "hirescam": pgc.HiResCAM,
               "xgradcam": pgc.XGradCAM}
    key = name.lower().replace("_", "").replace("-", "").replace("plusplus", "++")
    if key not in classes:
        raise ValueError(f"Unknown CAM method {name!r}; choose one of {', '.join(METHODS)}.")
    return classes[key]


def n_hooks(model: nn.Module) -> int:
    """Forward and backward hooks registered on any module of ``model``."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               + len(getattr(m, "_backward_pre_hooks", {})) for m in model.modules())


def cam_maps(model: nn.Module, layer: str | nn.Module, images: torch.Tensor, targets: Sequence[int] | torch.Tensor,
             method: str = "gradcam", batch_size: int = 50, show_progress: bool = True, *,
             cam_layer: str = "last", with_grids: bool = False):
    """Class-activation maps (N, H, W) in [0, 1], float32, one per image.

    ``images`` are uint8 (N, 3, H, W) tensors (normalised here as in training);
    ``targets`` holds the class index to explain for each image (the true city
    in the paper). ``layer`` is an architecture name (its layer named
    ``cam_layer``, ``"last"``, ``"previous"`` or ``"earlier"``, is used; see
    :func:`cityviz_helpers.models.target_layer`) or the layer itself.
    The CAM object is a context manager, so its hooks are removed even when
    something fails; the model's weights and outputs are left unchanged.

    With ``with_grids=True`` it returns ``(maps, grids)``: ``grids`` (N, h, w)
    are the raw non-negative CAMs at the layer's own resolution, before the
    package rescales each one to [0, 1] (see :func:`raw_maps`).
    """
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from .train import normalise

    targets = [int(t) for t in (targets.tolist() if torch.is_tensor(targets) else targets)]
    if len(targets) != len(images):
        raise ValueError(f"{len(images)} images but {len(targets)} targets: give one target class per image.")
    n_classes = None
    device = device_of(model)
    was_training = model.training
    module = layer if isinstance(layer, nn.Module) else target_layer(model, layer, cam_layer)
    out = np.empty((len(images), *images.shape[-2:]), np.float32)
    grids: list[np.ndarray] = []
    done = 0
    with _method_class(method)(model=model, target_layers=[module]) as cam:
        if hasattr(cam, "batch_size"):  # ScoreCAM: masked copies per forward pass
            cam.batch_size = batch_size
        for i in progress(range(0, len(images), batch_size), desc=f"{method} maps", leave=False,
                          disable=None if show_progress else True):
            x = normalise(images[i:i + batch_size], device)
            if n_classes is None:
                with torch.no_grad():
                    n_classes = model(x[:1]).shape[1]
                bad = [t for t in targets if not 0 <= t < n_classes]
                if bad:
                    raise ValueError(f"Target class {bad[0]} is out of range for a model with {n_classes} classes.")
            chosen = [ClassifierOutputTarget(t) for t in targets[i:i + batch_size]]
            chunk = cam(input_tensor=x, targets=chosen)
            out[i:i + len(chunk)] = chunk
            if with_grids:  # the same CAM, read before the package's per-image rescaling
                acts = to_numpy(cam.activations_and_grads.activations[0])
                grads = to_numpy(cam.activations_and_grads.gradients[0])
                grids.append(np.maximum(cam.get_cam_image(x, module, chosen, acts, grads, False), 0)
                             .astype(np.float32))
            done = i + len(chunk)
    # pytorch_grad_cam's __exit__ prints and swallows an IndexError; never return a half-filled array
    if done != len(images):
        raise RuntimeError(f"{method} stopped after {done} of {len(images)} images (see the message above).")
    model.zero_grad(set_to_none=True)  # free the parameter gradients the backward pass left
    model.train(was_training)
    maps = np.clip(out, 0.0, 1.0)
    if with_grids:
        return maps, np.concatenate(grids)
    return maps


def gradcam_by_hand(model: nn.Module, layer: nn.Module, x: torch.Tensor, target: int) -> np.ndarray:
    """Grad-CAM of one normalised image ``x`` (1, 3, H, W) for class ``target``, written out
    (notebook 03, section 1, shows the same lines): the twin that tests check against
    :func:`cam_maps`. Rescaled and upsampled the way the ``grad-cam`` package does it:
    min-max to [0, 1], bilinear upsampling, min-max again. Returns (H, W) float32."""
    saved = {}

    def keep(module, inputs, output):  # a forward hook: the layer's activations A and, later, dy/dA
        saved["A"] = output
        output.register_hook(lambda grad: saved.__setitem__("dA", grad))

    was_training = model.training
    model.eval()
    handle = layer.register_forward_hook(keep)
    try:
        score = model(x)[0, target]  # y^c, the score before the softmax
        score.backward()
    finally:
        handle.remove()
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    acts, grads = saved["A"].detach()[0], saved["dA"][0]  # (K, h, w) each
    alpha = grads.mean(dim=(1, 2))  # one weight per feature map: the gradient's spatial mean
    cam = torch.relu((alpha[:, None, None] * acts).sum(0))  # (h, w)
    rescale = lambda m: (m - m.min()) / (m.max() - m.min() + 1e-7)  # noqa: E731
    cam = nn.functional.interpolate(rescale(cam)[None, None], size=x.shape[-2:], mode="bilinear",
                                    align_corners=False)[0, 0]
    return to_numpy(rescale(cam)).astype(np.float32)


def cam_grids(model: nn.Module, arch: str, images: torch.Tensor, targets: Sequence[int] | torch.Tensor,
              methods: Sequence[str], batch_size: int = 50, cam_layer: str = "last") -> tuple[dict, dict]:
    """Raw CAM grids of several gradient-based methods from one forward and backward pass.

    Grad-CAM, Grad-CAM++, HiResCAM, LayerCAM and XGrad-CAM all read the same two
    things, the layer's activations and the gradients of the target score, and
    differ only in how they weigh them; so each batch is run through the network
    once (by the first method's CAM object) and every method's own
    ``get_cam_image`` turns the same activations and gradients into its map.
    Returns ``(grids, seconds)``: per method, (N, h, w) non-negative grids as
    :func:`cam_maps` gives them, and the seconds it took (the shared pass plus
    its own step). ``rescaled_maps(grids[m], size)`` equals ``cam_maps(..., m)``.
    """
    import time
    from contextlib import ExitStack

    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from .train import normalise

    unsupported = [m for m in methods if m not in STUDY_METHODS]
    if unsupported:
        raise ValueError(f"cam_grids serves the methods that weigh activations by gradients ({', '.join(STUDY_METHODS)}); "
                         f"compute {', '.join(unsupported)} with cam_maps (EigenCAM and ScoreCAM, for example).")
    targets = [int(t) for t in (targets.tolist() if torch.is_tensor(targets) else targets)]
    device = device_of(model)
    was_training = model.training
    module = target_layer(model, arch, cam_layer)
    out = {m: [] for m in methods}
    seconds = dict.fromkeys(methods, 0.0)
    with ExitStack() as stack:
        runner = stack.enter_context(_method_class(methods[0])(model=model, target_layers=[module]))
        others = {m: stack.enter_context(_method_class(m)(model=model, target_layers=[module])) for m in methods[1:]}
        for i in range(0, len(images), batch_size):
            start = time.perf_counter()
            x = normalise(images[i:i + batch_size], device)
            chosen = [ClassifierOutputTarget(t) for t in targets[i:i + batch_size]]
            runner(input_tensor=x, targets=chosen)  # the one forward and backward pass
            acts = to_numpy(runner.activations_and_grads.activations[0])
            grads = to_numpy(runner.activations_and_grads.gradients[0])
            shared = time.perf_counter() - start
            for m in methods:
                start = time.perf_counter()
                cam = runner if m == methods[0] else others[m]
                out[m].append(np.maximum(cam.get_cam_image(x, module, chosen, acts, grads, False), 0).astype(np.float32))
                seconds[m] += shared + time.perf_counter() - start
            for cam in others.values():  # their hooks recorded the same pass: drop it
                cam.activations_and_grads.activations.clear()
                cam.activations_and_grads.gradients.clear()
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return {m: np.concatenate(g) for m, g in out.items()}, seconds


def _blank_pass(model: nn.Module, side: int) -> None:
    """One blank ``side`` x ``side`` image through the model, in eval mode and without gradients, on
    the model's device; the model's train/eval mode is restored. Raises what the model raises."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, side, side, device=device_of(model)))
    finally:
        model.train(was_training)


def layer_grid(model: nn.Module, arch: str, layer: str = "last", size: int = 96) -> tuple[int, int]:
    """The grid (h, w) of a CAM layer's output for a ``size`` x ``size`` input, measured by
    running one blank image through the model (on its device) with a forward hook."""
    shapes = []
    hook = target_layer(model, arch, layer).register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape[-2:])))
    try:
        _blank_pass(model, size)
    finally:
        hook.remove()
    return int(shapes[0][0]), int(shapes[0][1])


def accepts_size(model: nn.Module, side: int) -> bool:
    """Does the model take ``side`` x ``side`` inputs? A network with a fully connected head sized for
    its training images (the paper's simple and simpler) takes no other size."""
    try:
        _blank_pass(model, side)
        return True
    except RuntimeError:
        return False


def input_size_for_grid(model: nn.Module, arch: str, grid: tuple[int, int], layer: str = "last", size: int = 96,
                        smallest: int = 16, largest: int = 640) -> int | None:
    """The input side at which ``layer`` gives ``grid``: of the sides that give it, the one nearest to
    ``size`` scaled by the ratio of the grids (what keeps the image's content at the same share of a
    cell). None when no side from ``smallest`` to ``largest`` gives that grid."""
    def rows(side: int) -> int:
        try:
            return layer_grid(model, arch, layer, side)[0]
        except RuntimeError:  # too small an input for the network's down-sampling
            return 0

    def first_side(at_least: int) -> int:  # rows() grows with the side: a binary search
        lo, hi = smallest, largest + 1
        while lo < hi:
            mid = (lo + hi) // 2
            lo, hi = (mid + 1, hi) if rows(mid) < at_least else (lo, mid)
        return lo

    start, stop = first_side(grid[0]), first_side(grid[0] + 1) - 1
    if start > largest or rows(start) != grid[0]:
        return None
    wanted = size * grid[0] / layer_grid(model, arch, layer, size)[0]
    return int(min(max(round(wanted), start), stop))


def resized_gradcam(model: nn.Module, arch: str, images: torch.Tensor, labels: torch.Tensor, side: int,
                    layer: str = "last", target: str = "true", batch_size: int = 50) -> tuple[np.ndarray, float]:
    """Grad-CAM grids of uint8 ``images`` resized (bilinear, antialiased) to ``side`` x ``side``
    before they enter the network, so that a layer's grid can be set by the input size; and the
    model's accuracy on the resized images (a network sees its cues at another scale there).
    ``target``: explain the ``"true"`` city (``labels``) or the ``"predicted"`` one at that size.
    Returns ``(grids, accuracy)``; ``rescaled_maps(grids, H)`` lays the maps over the original images."""
    from .train import predict

    grids, correct = [], 0
    labels = torch.as_tensor(labels).cpu()
    for i in range(0, len(images), 100):
        x = nn.functional.interpolate(images[i:i + 100].float(), size=(side, side), mode="bilinear",
                                      antialias=True, align_corners=False).round().clamp(0, 255).to(torch.uint8)
        predicted = predict(model, x).argmax(1)
        correct += int((predicted == labels[i:i + 100]).sum())
        g, _ = cam_grids(model, arch, x, labels[i:i + 100] if target == "true" else predicted, ["gradcam"],
                         batch_size, layer)
        grids.append(g["gradcam"])
    return np.concatenate(grids), correct / max(len(images), 1)


def raw_maps(grids: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Raw CAMs at image size: each grid upsampled bilinearly (as the package
    does) but *not* min-max rescaled, so the map keeps its own proportions.

    The package's maps subtract each map's minimum before scaling to [0, 1];
    when every cell is positive that moves mass from weak cells to strong ones,
    which flatters relevance mass. Scores of "how much of the map" use these.
    """
    import cv2

    h, w = (size, size) if isinstance(size, int) else size
    return np.stack([cv2.resize(np.float32(g), (w, h)) for g in np.asarray(grids)]) if len(grids) else \
        np.zeros((0, h, w), np.float32)


def rescaled_maps(grids: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """The package's own maps (N, H, W) in [0, 1], recomputed exactly from raw ``grids``
    with the package's functions (rescale and upsample, then rescale the layer
    average again). Stored grids thus give back the same masks bit for bit."""
    from pytorch_grad_cam.utils.image import scale_cam_image

    h, w = (size, size) if isinstance(size, int) else size
    per_layer = scale_cam_image(np.asarray(grids, np.float32), (w, h))[:, None]
    return np.clip(scale_cam_image(np.maximum(per_layer, 0).mean(1)), 0.0, 1.0)


# --------------------------------------------------------------------------
# Masks and explanations (the paper's)
# --------------------------------------------------------------------------


def binary_masks(maps: np.ndarray, threshold: float) -> np.ndarray:
    """The paper's masks: pixels whose map value is above ``threshold``."""
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold must be in [0, 1), not {threshold}")
    return np.asarray(maps) > threshold


def weighted_image(image: np.ndarray, cam: np.ndarray) -> np.ndarray:
    """The image (H, W, 3) times the map (H, W): uint8."""
    return (np.asarray(image, np.float32) * np.asarray(cam, np.float32)[..., None] + 0.5).astype(np.uint8)


#: The grey that replaces masked-out pixels (the paper used black, which looks like asphalt or shadow).
MASKED_GREY = 128


def visual_explanation(image: np.ndarray, cam: np.ndarray, threshold: float, fill: int = MASKED_GREY) -> np.ndarray:
    """The paper's visual explanation: pixels at or below ``threshold`` replaced by a
    neutral grey (``fill``; the paper blacked them out, ``fill=0``)."""
    return np.where(binary_masks(cam, threshold)[..., None], image, fill).astype(np.uint8)


def mask_area(maps: np.ndarray, threshold: float) -> np.ndarray:
    """Share of each image's pixels inside its mask: (N,)."""
    masks = binary_masks(maps, threshold)
    return masks.reshape(len(masks), -1).mean(1)


# --------------------------------------------------------------------------
# Scores against ground truth, and baselines
# --------------------------------------------------------------------------


def pointing_game(maps: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """Per image: does the map's maximum lie inside the true region? (N,) floats.

    When several pixels share the maximum, the score is the share of them that
    lie inside the region (the expected hit of a random tie-break), so a flat
    map scores the region's area. Images with an empty region give NaN.
    """
    maps = np.asarray(maps, np.float32).reshape(len(maps), -1)
    regions = np.asarray(regions, bool).reshape(len(regions), -1)
    if maps.shape != regions.shape:
        raise ValueError(f"maps {maps.shape} and regions {regions.shape} differ in shape")
    top = maps >= maps.max(1, keepdims=True)
    hits = (top & regions).sum(1) / top.sum(1)
    return np.where(regions.any(1), hits, np.nan)


def relevance_mass(maps: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """Per image: the share of the map's total inside the true region. (N,) floats.

    NaN where the region is empty or the map is all zero.
    """
    maps = np.asarray(maps, np.float64).reshape(len(maps), -1)
    regions = np.asarray(regions, bool).reshape(len(regions), -1)
    if maps.shape != regions.shape:
        raise ValueError(f"maps {maps.shape} and regions {regions.shape} differ in shape")
    total = maps.sum(1)
    inside = (maps * regions).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        score = inside / total
    return np.where(regions.any(1) & (total > 0), score, np.nan)


def centre_prior(size: int | tuple[int, int], sigma: float = 0.25) -> np.ndarray:
    """A Gaussian blob at the image centre (std ``sigma`` of the side), in [0, 1]."""
    h, w = (size, size) if isinstance(size, int) else size
    y = (np.arange(h) - (h - 1) / 2) / (sigma * h)
    x = (np.arange(w) - (w - 1) / 2) / (sigma * w)
    return np.exp(-0.5 * (y[:, None] ** 2 + x[None, :] ** 2)).astype(np.float32)


def is_flat(maps: np.ndarray) -> np.ndarray:
    """Per map: True when every pixel has the same value (Grad-CAM gives all zeros
    when no region of the layer speaks for the target class)."""
    flat = np.asarray(maps).reshape(len(maps), -1)
    return flat.max(1) == flat.min(1)


BASELINES = ("uniform", "centre", "cue_prior")


def baseline_maps(kind: str, n: int, size: int | tuple[int, int], prior: np.ndarray | None = None) -> np.ndarray:
    """``n`` copies of a map that never looks at the image: ``"uniform"``, ``"centre"``
    (a Gaussian blob at the image centre) or ``"cue_prior"`` (``prior``: where cues
    usually are, see :func:`cue_prior`)."""
    shape = (size, size) if isinstance(size, int) else tuple(size)
    if kind == "centre":
        one = centre_prior(shape)
    elif kind == "uniform":
        one = np.ones(shape, np.float32)
    elif kind == "cue_prior":
        if prior is None:
            raise ValueError("The 'cue_prior' baseline needs the prior map: pass prior=gradcam.cue_prior(data, size).")
        one = np.asarray(prior, np.float32)
        if one.shape != shape:
            raise ValueError(f"The cue prior is {one.shape}, the maps are {shape}: compute it at the maps' size.")
    else:
        raise ValueError(f"Unknown baseline {kind!r}; use one of {', '.join(BASELINES)}.")
    return np.broadcast_to(one, (n, *one.shape))


def cue_prior(cue_masks: np.ndarray) -> np.ndarray:
    """The cue-location prior: the mean of the training images' cue masks (H, W), i.e.
    how often each pixel lies on a planted cue. A map that always points where cues
    usually are, whatever the image, scores this well."""
    masks = np.asarray(cue_masks, bool)
    if not len(masks):
        raise ValueError("The cue prior needs at least one cue mask.")
    return masks.mean(0, dtype=np.float64).astype(np.float32)


def paired_bootstrap(scores: np.ndarray, baseline: np.ndarray, n_boot: int = 2000, seed: int = 0,
                     level: float = 0.95) -> dict:
    """Mean per-image gain ``scores - baseline`` with a percentile bootstrap interval
    that resamples images (both scores of an image move together). Images where
    either score is NaN are left out. Returns ``gain``, ``low``, ``high``, ``n``."""
    d = np.asarray(scores, np.float64) - np.asarray(baseline, np.float64)
    d = d[~np.isnan(d)]
    if not len(d):
        return {"gain": float("nan"), "low": float("nan"), "high": float("nan"), "n": 0}
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    for start in range(0, n_boot, 500):  # in blocks: (500, n) indices at a time
        stop = min(start + 500, n_boot)
        means[start:stop] = d[rng.integers(0, len(d), (stop - start, len(d)))].mean(1)
    alpha = (1 - level) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return {"gain": float(d.mean()), "low": float(low), "high": float(high), "n": int(len(d))}


def rank_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman rank correlation between paired maps: (N,) values (NaN for a flat map)."""
    from scipy.stats import rankdata

    a = np.asarray(a, np.float64).reshape(len(a), -1)
    b = np.asarray(b, np.float64).reshape(len(b), -1)
    ra, rb = rankdata(a, axis=1), rankdata(b, axis=1)
    ra -= ra.mean(1, keepdims=True)
    rb -= rb.mean(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (ra * rb).sum(1) / np.sqrt((ra ** 2).sum(1) * (rb ** 2).sum(1))


def randomized_copy(model: nn.Module, seed: int = 0) -> nn.Module:
    """A copy of ``model`` with every layer re-initialised (Adebayo et al., 2018).

    Each layer gets its own default initialisation again; batch-norm running
    statistics are reset too. The original model is untouched.
    """
    clone = copy.deepcopy(model)
    torch.manual_seed(seed)
    for module in clone.modules():
        if hasattr(module, "reset_parameters") and module is not clone:
            module.reset_parameters()
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
    return clone.eval()


# --------------------------------------------------------------------------
# Stored maps (artifacts for notebooks 04 and 05)
# --------------------------------------------------------------------------


def save_maps(folder: Path, grids: np.ndarray, targets: np.ndarray, predictions: np.ndarray,
              paths: Sequence[str], meta: dict) -> None:
    """Store the raw CAM grids (small: the layer's own resolution, float32); the
    maps are recomputed from them on load, exactly, so no mask moves."""
    np.savez_compressed(folder / "maps.npz", grids=np.asarray(grids, np.float32),
                        targets=np.asarray(targets, np.int16), predictions=np.asarray(predictions, np.int16))
    (folder / "images.json").write_text(json.dumps({"paths": list(map(str, paths)), **meta}, indent=1))


def load_maps(folder: Path) -> dict:
    """A stored artifact: ``maps`` (the package's [0, 1] maps), ``raw`` (the same
    CAMs before rescaling, see :func:`raw_maps`), ``grids``, ``targets``,
    ``predictions`` and the metadata (image paths, method, layer, ...)."""
    meta = json.loads((Path(folder) / "images.json").read_text())
    with np.load(Path(folder) / "maps.npz") as z:
        grids = z["grids"]
        out = {"grids": grids, "targets": z["targets"].astype(int), "predictions": z["predictions"].astype(int)}
    out["maps"] = rescaled_maps(grids, meta["image_size"])
    out["raw"] = raw_maps(grids, meta["image_size"])
    out.update(meta)
    return out


# --------------------------------------------------------------------------
# The notebook's pipeline: maps of every model, cached; scores per model
# --------------------------------------------------------------------------


def model_maps(settings, data, trained: dict, images, split: str = "test", verbose: bool = True,
               method: str | None = None, layer: str | None = None) -> dict[str, dict]:
    """CAMs of ``images`` (a :class:`~cityviz_helpers.train.SplitTensors`) for every
    trained model, computed once and cached as artifacts.

    ``method`` and ``layer`` default to the settings (``gradcam.method``,
    ``gradcam.layer``); ``method="gradcam", layer="last"`` gives the paper's maps.
    Each artifact is keyed by the model's own key, the dataset's fingerprint,
    the split, the CAM method and layer and the target rule. Returns, per model
    name, a dict with ``maps`` (N, H, W float32 in [0, 1]), ``raw`` (before the
    per-image rescaling), ``targets``, ``predictions`` and the image ``paths``.
    """
    import time

    from .artifacts import artifact
    from .train import predict

    cfg = settings["gradcam"]
    method = method or cfg["method"]
    layer = layer or cfg["layer"]
    if cfg["target"] not in ("true", "predicted"):
        raise ValueError(f"gradcam.target must be 'true' or 'predicted', not {cfg['target']!r}.")
    _method_class(method)  # an unknown method fails before any work
    if layer not in CAM_LAYERS:
        raise ValueError(f"Unknown CAM layer {layer!r}; choose one of {', '.join(CAM_LAYERS)}.")
    paths = list(data.split(split).path)
    out, computed, start = {}, [], time.perf_counter()
    for name, m in progress(trained.items(), desc="models", leave=False):
        def build(folder: Path, m=m, name=name) -> dict:
            preds = predict(m.model, images.images).argmax(1)
            targets = images.labels if cfg["target"] == "true" else preds
            _, grids = cam_maps(m.model, m.meta["arch"], images.images, targets, method, cfg["batch_size"],
                                show_progress=False, cam_layer=layer, with_grids=True)
            save_maps(folder, grids, to_numpy(targets), to_numpy(preds), paths,
                      {"model": name, "method": method, "layer": layer, "target": cfg["target"], "split": split,
                       "image_size": int(images.images.shape[-1])})
            return {"model": name, "model_key": m.meta["key"], "n_images": len(grids)}

        art = artifact(settings, f"gradcam-{name}", (), build, verbose=False, version=2,
                       extra={"model_key": m.meta["key"], "data": data.fingerprint, "split": split,
                              "method": method, "layer": layer, "target": cfg["target"]})
        if not art.loaded:
            computed.append(name)
        out[name] = load_maps(art.path)
        out[name]["artifact"] = art.path
    if verbose:
        n = len(trained)
        print(f"{method} maps ({layer} layer) of {len(paths)} {split} images: {n - len(computed)} of {n} models "
              f"loaded from the cache, {len(computed)} computed ({time.perf_counter() - start:.1f} s in all).")
    return out


def cue_regions(data, split: str, size: int) -> np.ndarray:
    """Ground truth of the built-in cities: (N, size, size) bool, True on any planted cue."""
    from .data import ground_truth

    return ground_truth(data, split, size)[1] > 0


def ground_truth_scores(maps: np.ndarray, regions: np.ndarray, raw: np.ndarray | None = None,
                        prior: np.ndarray | None = None, n_boot: int = 2000, seed: int = 0) -> dict:
    """Scores of ``maps`` against the true cue ``regions``, beside three baselines.

    - ``relevance_mass_raw``: the share of the raw map (before the per-image
      rescaling; ``raw``) inside the cues: what the issue of "how much of the map"
      really asks;
    - ``relevance_mass``: the same on the rescaled [0, 1] maps (the paper's masks);
    - ``pointing_game``: is the map's peak on a cue (the same for both maps).

    Baselines: ``uniform``, ``centre`` and, if ``prior`` is given, ``cue_prior``.
    For each, ``gain_vs_<baseline>`` is the paired bootstrap interval
    (:func:`paired_bootstrap`) of raw relevance mass minus the baseline's.
    Only images that show a cue are scored (the others are counted). A flat map
    (all zero: nothing spoke for the city) is scored as a uniform map, so it earns
    what a blind guess earns; ``n_flat_maps`` counts them.
    """
    raw = maps if raw is None else raw
    has_cue = regions.reshape(len(regions), -1).any(1)
    flat = is_flat(raw)
    if flat.any():
        maps = np.where(flat[:, None, None], np.float32(1.0), maps)
        raw = np.where(flat[:, None, None], np.float32(1.0), raw)
    size = maps.shape[1:]
    per_image = {"pointing_game": pointing_game(raw, regions), "relevance_mass_raw": relevance_mass(raw, regions),
                 "relevance_mass": relevance_mass(maps, regions)}
    kinds = [k for k in BASELINES if k != "cue_prior" or prior is not None]
    for kind in kinds:
        base = baseline_maps(kind, len(maps), size, prior)
        per_image[f"{kind}_pointing_game"] = pointing_game(base, regions)
        per_image[f"{kind}_relevance_mass"] = relevance_mass(base, regions)
    summary = {k: float(np.nanmean(v)) if has_cue.any() else float("nan") for k, v in per_image.items()}
    for kind in kinds:
        summary[f"gain_vs_{kind}"] = paired_bootstrap(per_image["relevance_mass_raw"],
                                                      per_image[f"{kind}_relevance_mass"], n_boot, seed)
    summary.update(n_scored=int(has_cue.sum()), n_without_cues=int((~has_cue).sum()),
                   n_flat_maps=int(flat[has_cue].sum()))
    return {"summary": summary, "per_image": per_image}


def randomization_check(model: nn.Module, arch: str, images, targets, maps: np.ndarray, method: str = "gradcam",
                        seed: int = 0, batch_size: int = 50, cam_layer: str = "last") -> dict:
    """Rank correlation, per image, between a model's maps and those of a
    re-initialised copy (Adebayo et al., 2018): near 0 means the maps depend on
    what the model learned; near 1 means they would look the same untrained.

    A flat map (all zeros) has no ordering of pixels to compare, so a pair with a
    flat map gets no correlation at all (NaN), not a 0 that would pass the check
    by construction. Returns ``rho`` (per image), ``mean_rho`` over the pairs where
    both maps vary, ``n_pairs`` of those, and the share of flat maps of the trained
    and of the randomised model (``flat_trained``, ``flat_random``).
    """
    random_maps = cam_maps(randomized_copy(model, seed), arch, images, targets, method, batch_size,
                           show_progress=False, cam_layer=cam_layer)
    flat_a, flat_b = is_flat(maps), is_flat(random_maps)
    rho = np.where(flat_a | flat_b, np.nan, rank_correlation(maps, random_maps))
    ok = ~np.isnan(rho)
    return {"rho": rho, "mean_rho": float(rho[ok].mean()) if ok.any() else float("nan"), "n_pairs": int(ok.sum()),
            "flat_trained": float(flat_a.mean()), "flat_random": float(flat_b.mean())}


# --------------------------------------------------------------------------
# Which CAM setting finds the cues? (notebook 03's study, on the validation split)
# --------------------------------------------------------------------------

#: The methods the study compares (all use gradients; EigenCAM and ScoreCAM stay in the explorer).
STUDY_METHODS = ("gradcam", "gradcam++", "hirescam", "layercam", "xgradcam")


def cam_study(settings, data, trained: dict, images, regions: np.ndarray, prior: np.ndarray,
              split: str = "val", methods: Sequence[str] = STUDY_METHODS,
              layers: Sequence[str] = CAM_LAYERS) -> "pd.DataFrame":
    """Score every (model, layer, method) against the planted cues of ``split``.

    One row per combination: the layer's grid, raw relevance mass, pointing game,
    the gain of raw relevance mass over the cue-location prior with its paired
    bootstrap interval, flat maps, and the seconds per 100 images the CAM took.
    Cached as one artifact (keyed by every model's key, the split, methods and
    layers), so a rerun costs nothing; the seconds are those of the run that
    computed it.
    """
    import pandas as pd

    from .artifacts import artifact

    cfg = settings["gradcam"]
    targets = images.labels if cfg["target"] == "true" else None
    if targets is None:
        raise ValueError("The study explains the true city (gradcam.target = 'true').")
    size = int(images.images.shape[-1])

    def build(folder: Path) -> dict:
        rows = []
        combos = [(name, layer) for name in trained for layer in layers]
        for name, layer in progress(combos, desc="CAM study", leave=False):
            m = trained[name]
            grids, seconds = cam_grids(m.model, m.meta["arch"], images.images, targets, methods, cfg["batch_size"],
                                       cam_layer=layer)
            for method in methods:
                g = grids[method]
                maps = rescaled_maps(g, size)
                s = ground_truth_scores(maps, regions, raw_maps(g, size), prior, n_boot=cfg["n_boot"])["summary"]
                ci = s["gain_vs_cue_prior"]
                rows.append({"model": name, "arch": m.meta["arch"], "layer": layer, "method": method,
                             "grid": f"{g.shape[1]} x {g.shape[2]}",
                             "relevance_mass_raw": s["relevance_mass_raw"], "pointing_game": s["pointing_game"],
                             "gain_vs_cue_prior": ci["gain"], "gain_low": ci["low"], "gain_high": ci["high"],
                             "n_flat_maps": s["n_flat_maps"], "seconds_per_100": 100 * seconds[method] / len(g),
                             "mask_area": float(mask_area(maps, cfg["thresholds"][0]).mean())})
        pd.DataFrame(rows).to_csv(folder / "study.csv", index=False)
        return {"n_rows": len(rows)}

    art = artifact(settings, "cam-study", (), build, verbose=False, version=2,
                   extra={"models": {n: m.meta["key"] for n, m in trained.items()}, "data": data.fingerprint,
                          "split": split, "methods": list(methods), "layers": list(layers),
                          "target": cfg["target"], "n_boot": cfg["n_boot"]})
    return pd.read_csv(art.path / "study.csv")


def choose_setting(study: "pd.DataFrame", min_mask_area: float = 0.0) -> dict:
    """The (layer, method) with the highest mean raw relevance mass over all models
    of the study (the validation split), among those whose masks at the first
    threshold keep on average at least ``min_mask_area`` of the image; and its numbers."""
    cols = ["relevance_mass_raw", "pointing_game", "seconds_per_100", "mask_area"]
    means = study.groupby(["layer", "method"])[cols].mean()
    usable = means[means.mask_area >= min_mask_area]
    if usable.empty:
        raise ValueError(f"No setting of the study keeps {min_mask_area:.3f} of the image in its masks.")
    layer, method = usable.relevance_mass_raw.idxmax()
    return {"layer": layer, "method": method, **{k: float(v) for k, v in means.loc[(layer, method)].items()}}


def wins_and_losses(gains: Sequence[dict]) -> tuple[list[bool], list[bool]]:
    """For gain intervals (:func:`paired_bootstrap`: ``low``, ``high``), which ones win (the whole 95 %
    interval above zero) and which lose (the whole interval below zero); the rest are undecided."""
    return [g["low"] > 0 for g in gains], [g["high"] < 0 for g in gains]


def paper_maps_against_baselines(record: dict, names: Sequence[str]) -> str | None:
    """One sentence, from notebook 03's ``gradcam`` record in results.json: how many models' paper
    maps (Grad-CAM at the last layer) beat each map that never looks at the image, and how many lose
    to it, on the test images (a 95 % paired interval of the gain in relevance mass above or below
    zero). None when the record holds no such scores (real images have no planted cues)."""
    counts = {}
    for kind in BASELINES:
        gains = [record.get(n, {}).get(f"paper_gain_vs_{kind}") for n in names]
        if any(g is None for g in gains):
            return None
        won, lost = wins_and_losses(gains)
        counts[kind] = (sum(won), sum(lost))
    label = {"uniform": "a uniform map", "centre": "a centre blob", "cue_prior": "the cue-location prior"}
    return ("Notebook 03 scored the paper's maps against maps that never look at the image (test images, relevance "
            "mass, 95 % intervals): " + "; ".join(f"against {label[k]}, {won} of {len(names)} models win and {lost} "
                                                  f"lose" for k, (won, lost) in counts.items()) + ".")
