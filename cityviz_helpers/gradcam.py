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

from .models import target_layer
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
             method: str = "gradcam", batch_size: int = 50, show_progress: bool = True) -> np.ndarray:
    """Class-activation maps (N, H, W) in [0, 1], float32, one per image.

    ``images`` are uint8 (N, 3, H, W) tensors (normalised here as in training);
    ``targets`` holds the class index to explain for each image (the true city
    in the paper). ``layer`` is an architecture name (its registered Grad-CAM
    layer is used) or the layer itself.
    The CAM object is a context manager, so its hooks are removed even when
    something fails; the model's weights and outputs are left unchanged.
    """
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from .train import normalise

    targets = [int(t) for t in (targets.tolist() if torch.is_tensor(targets) else targets)]
    if len(targets) != len(images):
        raise ValueError(f"{len(images)} images but {len(targets)} targets: give one target class per image.")
    n_classes = None
    device = next(model.parameters()).device
    was_training = model.training
    out = np.empty((len(images), *images.shape[-2:]), np.float32)
    done = 0
    with _method_class(method)(model=model, target_layers=[layer if isinstance(layer, nn.Module) else target_layer(model, layer)]) as cam:
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
            chunk = cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets[i:i + batch_size]])
            out[i:i + len(chunk)] = chunk
            done = i + len(chunk)
    # pytorch_grad_cam's __exit__ prints and swallows an IndexError; never return a half-filled array
    if done != len(images):
        raise RuntimeError(f"{method} stopped after {done} of {len(images)} images (see the message above).")
    model.zero_grad(set_to_none=True)  # free the parameter gradients the backward pass left
    model.train(was_training)
    return np.clip(out, 0.0, 1.0)


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


def visual_explanation(image: np.ndarray, cam: np.ndarray, threshold: float) -> np.ndarray:
    """The paper's visual explanation: pixels at or below ``threshold`` blacked out."""
    return np.where(binary_masks(cam, threshold)[..., None], image, 0).astype(np.uint8)


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


def baseline_maps(kind: str, n: int, size: int | tuple[int, int]) -> np.ndarray:
    """``n`` copies of a baseline map: ``"centre"`` (Gaussian prior) or ``"uniform"``."""
    if kind == "centre":
        one = centre_prior(size)
    elif kind == "uniform":
        one = np.ones((size, size) if isinstance(size, int) else size, np.float32)
    else:
        raise ValueError(f"Unknown baseline {kind!r}; use 'centre' or 'uniform'.")
    return np.broadcast_to(one, (n, *one.shape))


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


def to_uint8(maps: np.ndarray) -> np.ndarray:
    """Maps in [0, 1] stored compactly: 0..255 (a 1/255 quantisation step)."""
    return (np.clip(maps, 0, 1) * 255 + 0.5).astype(np.uint8)


def from_uint8(stored: np.ndarray) -> np.ndarray:
    return stored.astype(np.float32) / 255.0


def save_maps(folder: Path, maps: np.ndarray, targets: np.ndarray, predictions: np.ndarray,
              paths: Sequence[str], meta: dict) -> None:
    np.savez_compressed(folder / "maps.npz", maps=to_uint8(maps), targets=np.asarray(targets, np.int16),
                        predictions=np.asarray(predictions, np.int16))
    (folder / "images.json").write_text(json.dumps({"paths": list(map(str, paths)), **meta}, indent=1))


def load_maps(folder: Path) -> dict:
    with np.load(Path(folder) / "maps.npz") as z:
        out = {"maps": from_uint8(z["maps"]), "targets": z["targets"].astype(int),
               "predictions": z["predictions"].astype(int)}
    out.update(json.loads((Path(folder) / "images.json").read_text()))
    return out


# --------------------------------------------------------------------------
# The notebook's pipeline: maps of every model, cached; scores per model
# --------------------------------------------------------------------------


def model_maps(settings, data, trained: dict, images, split: str = "test", verbose: bool = True) -> dict[str, dict]:
    """Grad-CAM maps of ``images`` (a :class:`~cityviz_helpers.train.SplitTensors`)
    for every trained model, computed once and cached as artifacts.

    Each artifact is keyed by the model's own key, the dataset's fingerprint,
    the split, the CAM method and the target rule. Returns, per model name, a
    dict with ``maps`` (N, H, W float32 in [0, 1]), ``targets``,
    ``predictions`` and the image ``paths``.
    """
    import time

    from .artifacts import artifact
    from .train import predict

    cfg = settings["gradcam"]
    if cfg["target"] not in ("true", "predicted"):
        raise ValueError(f"gradcam.target must be 'true' or 'predicted', not {cfg['target']!r}.")
    _method_class(cfg["method"])  # an unknown method fails before any work
    paths = list(data.split(split).path)
    out, computed, start = {}, [], time.perf_counter()
    for name, m in progress(trained.items(), desc="models", leave=False):
        def build(folder: Path, m=m, name=name) -> dict:
            preds = predict(m.model, images.images).argmax(1)
            targets = images.labels if cfg["target"] == "true" else preds
            maps = cam_maps(m.model, m.meta["arch"], images.images, targets, cfg["method"], cfg["batch_size"],
                            show_progress=False)
            save_maps(folder, maps, targets.numpy(), preds.numpy(), paths,
                      {"model": name, "method": cfg["method"], "target": cfg["target"], "split": split})
            return {"model": name, "model_key": m.meta["key"], "n_images": len(maps)}

        art = artifact(settings, f"gradcam-{name}", (), build, verbose=False,
                       extra={"model_key": m.meta["key"], "data": data.fingerprint, "split": split,
                              "method": cfg["method"], "target": cfg["target"]})
        if not art.loaded:
            computed.append(name)
        out[name] = load_maps(art.path)
        out[name]["artifact"] = art.path
    if verbose:
        n = len(trained)
        print(f"{cfg['method']} maps of {len(paths)} {split} images: {n - len(computed)} of {n} models loaded "
              f"from the cache, {len(computed)} computed ({time.perf_counter() - start:.1f} s in all).")
    return out


def cue_regions(data, split: str, size: int) -> np.ndarray:
    """Ground truth of the built-in cities: (N, size, size) bool, True on any planted cue."""
    from .data import ground_truth

    return ground_truth(data, split, size)[1] > 0


def ground_truth_scores(maps: np.ndarray, regions: np.ndarray, baseline: str = "centre") -> dict:
    """Pointing game and relevance mass of ``maps`` and of a baseline map, over the
    images that contain a cue (the others are counted and excluded)."""
    has_cue = regions.reshape(len(regions), -1).any(1)
    flat = is_flat(maps)
    if flat.any():  # an all-zero map points nowhere: score it as a uniform map (no information)
        maps = np.where(flat[:, None, None], np.float32(1.0), maps)
    base = baseline_maps(baseline, len(maps), maps.shape[1:])
    per_image = {"pointing_game": pointing_game(maps, regions), "relevance_mass": relevance_mass(maps, regions),
                 "baseline_pointing_game": pointing_game(base, regions),
                 "baseline_relevance_mass": relevance_mass(base, regions)}
    summary = {k: float(np.nanmean(v)) if has_cue.any() else float("nan") for k, v in per_image.items()}
    summary.update(n_scored=int(has_cue.sum()), n_without_cues=int((~has_cue).sum()),
                   n_flat_maps=int(flat[has_cue].sum()))
    return {"summary": summary, "per_image": per_image}


def randomization_check(model: nn.Module, arch: str, images, targets, maps: np.ndarray, method: str = "gradcam",
                        seed: int = 0, batch_size: int = 50) -> np.ndarray:
    """Rank correlation, per image, between a model's maps and those of a
    re-initialised copy (Adebayo et al., 2018): near 0 means the maps depend on
    what the model learned; near 1 means they would look the same untrained.
    Where either map is flat (all zeros) the correlation is 0."""
    random_maps = cam_maps(randomized_copy(model, seed), arch, images, targets, method, batch_size,
                           show_progress=False)
    rho = rank_correlation(maps, random_maps)
    # a flat map (all zeros) shares no ordering of pixels with any other map: correlation 0
    return np.where(is_flat(maps) | is_flat(random_maps), 0.0, rho)
