"""Segmentation models and object statistics inside the Grad-CAM masks (notebook 05).

Label values follow ADE20K everywhere: 0 is "unlabelled", 1..150 are the
classes of ``cityviz_helpers/data/ade20k_object150_info.csv`` in order, and
:data:`OUTSIDE` (151) marks pixels outside a mask, as in the paper.

Three segmenters share one interface, :class:`Segmenter` (uint8 image batch in,
label map at the classifier's input size out, plus the class names):

- :class:`SmpSegmenter` wraps a ``segmentation-models-pytorch`` model: on the
  built-in cities a small one trained here (:func:`train_synthetic_segmenter`,
  encoder weights ``None``: nothing is downloaded); on real images an
  ADE20K-trained model loaded offline from a local folder
  (:func:`load_ade20k_segmenter`).
- :class:`OracleSegmenter` returns the built-in cities' ground-truth label maps,
  to show how much segmentation errors change the statistics.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from .ade20k import class_names
from .utils import progress

N_LABELS = 151  # 0 = unlabelled, 1..150 = ADE20K classes
OUTSIDE = 151  # the paper's extra label for pixels outside a mask


class Segmenter:
    """Image batch (uint8, N x 3 x H x W) in, label maps (N x H x W, ADE20K values) out."""

    name = "segmenter"

    @property
    def class_names(self) -> list[str]:
        return class_names()

    def __call__(self, images: torch.Tensor, indices: Sequence[int] | None = None) -> np.ndarray:
        raise NotImplementedError


class OracleSegmenter(Segmenter):
    """The ground truth of the built-in cities: perfect segmentation.

    It cannot look at pixels, so it needs the ``indices`` of the images in the
    split it was made for.
    """

    name = "oracle"

    def __init__(self, label_maps: np.ndarray):
        self.label_maps = np.asarray(label_maps)

    def __call__(self, images, indices=None):
        if indices is None:
            raise ValueError("The oracle segmenter needs the images' indices in its split (indices=...).")
        return self.label_maps[np.asarray(indices)]


class SmpSegmenter(Segmenter):
    """A ``segmentation-models-pytorch`` model; output channel k means label ``labels[k]``."""

    def __init__(self, model: nn.Module, labels: Sequence[int], name: str = "trained", input_size: int | None = None,
                 batch_size: int = 32, meta: dict | None = None):
        self.model = model.eval()
        self.meta = meta or {}  # what training recorded (train_seconds, ...), for a trained segmenter
        self.labels = torch.as_tensor(list(labels), dtype=torch.uint8)
        self.name = name
        self.input_size = input_size  # resize to this before the model (None: as given)
        self.batch_size = batch_size

    @torch.no_grad()
    def __call__(self, images, indices=None):
        from .train import device_of, normalise, to_numpy

        device = device_of(self.model)
        size = images.shape[-2:]
        out = []
        for i in range(0, len(images), self.batch_size):
            x = normalise(images[i:i + self.batch_size], device)
            if self.input_size and tuple(size) != (self.input_size, self.input_size):
                x = nn.functional.interpolate(x, size=(self.input_size,) * 2, mode="bilinear", align_corners=False)
            logits = self.model(x)
            if logits.shape[-2:] != size:  # back to the classifier's input size
                logits = nn.functional.interpolate(logits, size=size, mode="bilinear", align_corners=False)
            out.append(self.labels[logits.argmax(1).cpu()])
        return to_numpy(torch.cat(out))


# --------------------------------------------------------------------------
# The built-in cities: a small model trained on their label maps
# --------------------------------------------------------------------------


def build_smp(cfg: dict, n_classes: int) -> nn.Module:
    import segmentation_models_pytorch as smp

    arch = getattr(smp, cfg["architecture"], None)
    if arch is None:
        raise ValueError(f"segmentation-models-pytorch has no architecture {cfg['architecture']!r}.")
    kwargs = dict(encoder_name=cfg["encoder"], encoder_weights=None, classes=n_classes)
    if cfg.get("encoder_depth"):
        kwargs["encoder_depth"] = cfg["encoder_depth"]
    if cfg.get("decoder_channels"):
        kwargs["decoder_channels"] = tuple(cfg["decoder_channels"])
    return arch(**kwargs)


def _label_lookup(labels: Sequence[int]) -> torch.Tensor:
    lut = torch.full((256,), -100, dtype=torch.long)  # unknown values are ignored by the loss
    lut[torch.as_tensor(list(labels))] = torch.arange(len(labels))
    return lut


#: The settings of the ``segmentation`` section that decide the trained segmenter (its cache key).
SEGMENTER_RECIPE = ("architecture", "encoder", "encoder_depth", "decoder_channels", "epochs", "dice_weight",
                    "batch_size", "lr", "seed", "train_images")


def train_synthetic_segmenter(settings, data, verbose: bool = True) -> SmpSegmenter:
    """Train (or load from the cache) the segmentation model of the built-in cities."""
    import segmentation_models_pytorch as smp

    from .artifacts import artifact
    from .data import ground_truth
    from .train import autocast, autocast_dtype, channels_last, load_images, normalise, pick_device, precision_name

    cfg, size = settings["segmentation"], settings["dataset"]["image_size"]
    if not data.has_ground_truth:
        raise ValueError("Training a segmenter needs label maps: only the built-in cities have them. "
                         "On real images use load_ade20k_segmenter (see docs/real-data.md).")

    def build(folder: Path) -> dict:
        torch.manual_seed(cfg["seed"])
        gen = torch.Generator().manual_seed(cfg["seed"])
        images = load_images(list(data.split("train").path), size, show_progress=False)
        labels = torch.from_numpy(ground_truth(data, "train", size)[0].astype(np.int64))
        if cfg.get("train_images") and cfg["train_images"] < len(images):  # a seeded random subset, every city
            order = torch.randperm(len(images), generator=torch.Generator().manual_seed(cfg["seed"]))
            keep = order[:cfg["train_images"]].sort().values
            images, labels = images[keep], labels[keep]
        present = sorted(int(v) for v in torch.unique(labels) if v != 0)
        lut = _label_lookup(present)
        target_all = lut[labels]
        device = pick_device()
        model = channels_last(build_smp(cfg, len(present)).to(device))  # as the classifiers: faster convolutions
        opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
        steps = cfg["epochs"] * ((len(images) + cfg["batch_size"] - 1) // cfg["batch_size"])
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg["lr"], total_steps=steps)
        # small objects (signs, flags, traffic lights) cover few pixels: weigh classes by the inverse
        # square root of their pixel frequency, so the loss does not ignore them; the Dice loss (smp's)
        # scores each class by its overlap whatever its size, which is what mIoU measures
        freq = torch.bincount(target_all[target_all >= 0].ravel(), minlength=len(present)).double()
        weight = (freq.sum() / len(present) / freq.clamp_min(1)).sqrt().float()
        cross_entropy = nn.CrossEntropyLoss(weight=(weight / weight.mean()).to(device), ignore_index=-100)
        dice = smp.losses.DiceLoss("multiclass", ignore_index=-100)

        def loss_fn(logits, target):
            loss = cross_entropy(logits, target)
            return loss + cfg["dice_weight"] * dice(logits, target) if cfg["dice_weight"] else loss

        amp_dtype = autocast_dtype(device)  # mixed precision as for the classifiers
        scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
        start = time.perf_counter()
        model.train()
        for epoch in progress(range(cfg["epochs"]), desc="segmenter", leave=False):
            order = torch.randperm(len(images), generator=gen)
            flips = torch.rand(len(images), generator=gen) < 0.5
            for i in range(0, len(images), cfg["batch_size"]):
                idx = order[i:i + cfg["batch_size"]]
                x, y = images[idx].clone(), target_all[idx].clone()
                f = flips[idx]
                x[f], y[f] = x[f].flip(-1), y[f].flip(-1)
                with autocast(device, amp_dtype):
                    logits = model(normalise(x, device).contiguous(memory_format=torch.channels_last))
                loss = loss_fn(logits.float(), y.to(device))
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                sched.step()
        torch.save({k: v.cpu() for k, v in model.state_dict().items()}, folder / "weights.pt")
        meta = {"labels": present, "train_seconds": round(time.perf_counter() - start, 1),
                "precision": precision_name(amp_dtype),
                "n_train_images": len(images), "model_config": cfg}
        (folder / "segmenter.json").write_text(json.dumps(meta, indent=1))
        return meta

    # keyed by the training recipe only, so that changing a statistics setting of the same
    # section (n_boot, n_perm, top_k, ...) never retrains the segmenter
    recipe = {k: cfg[k] for k in SEGMENTER_RECIPE}
    art = artifact(settings, "segmenter", (), build, verbose=False,
                   extra={"data": data.fingerprint, "image_size": size, "recipe": recipe})
    meta = json.loads((art.path / "segmenter.json").read_text())
    model = build_smp(cfg, len(meta["labels"]))
    model.load_state_dict(torch.load(art.path / "weights.pt", map_location="cpu", weights_only=True))
    if verbose:
        how = "loaded from the cache" if art.loaded else f"trained in {meta['train_seconds']:.0f} s"
        print(f"segmenter: {cfg['architecture']} with a {cfg['encoder']} encoder (no pretrained weights), "
              f"{len(meta['labels'])} classes, {how} ({art.path.name}).")
    return SmpSegmenter(model.to(pick_device()), meta["labels"], name="trained", batch_size=cfg["batch_size"], meta=meta)


# --------------------------------------------------------------------------
# Real images: an ADE20K-trained model from a local folder
# --------------------------------------------------------------------------


#: The ADE20K Segformers of the smp-hub organisation: variant -> (repository, input size in px it was
#: trained at, from the model cards: b0-b4 "512x512", b5 "640x640"). ``data_download.sh --weights
#: --segformer <variant>`` fetches one.
SEGFORMER_VARIANTS = {
    "b0": ("smp-hub/segformer-b0-512x512-ade-160k", 512),
    "b1": ("smp-hub/segformer-b1-512x512-ade-160k", 512),
    "b2": ("smp-hub/segformer-b2-512x512-ade-160k", 512),
    "b3": ("smp-hub/segformer-b3-512x512-ade-160k", 512),
    "b4": ("smp-hub/segformer-b4-512x512-ade-160k", 512),
    "b5": ("smp-hub/segformer-b5-640x640-ade-160k", 640),
}


def segformer_variant(folder: str | Path) -> str | None:
    """Which :data:`SEGFORMER_VARIANTS` entry ``folder`` holds: from the record
    ``data_download.sh`` leaves there, else from a folder name such as
    ``segformer-b2-ade20k``; None when neither says."""
    import re

    folder = Path(folder)
    marker = folder / ".cityviz-download.json"
    if marker.exists():
        try:
            repo = json.loads(marker.read_text()).get("source")
        except (OSError, ValueError):
            repo = None
        for variant, (name, _) in SEGFORMER_VARIANTS.items():
            if repo == name:
                return variant
    match = re.search(r"segformer-(b[0-5])\b", folder.name)
    return match.group(1) if match else None


def load_ade20k_segmenter(folder: str | Path, input_size: int | None = 256, verbose: bool = True) -> SmpSegmenter:
    """An ADE20K-trained smp model (150 classes) saved with ``save_pretrained``
    in ``folder`` (``data_download.sh --weights`` puts one in ``models/``).

    Loaded offline; output channel k is ADE20K label k + 1. Images are resized
    to ``input_size`` before the model (``segmentation.ade20k_input_size``);
    None means the size the variant was trained at (:data:`SEGFORMER_VARIANTS`).
    A smaller size saves time and is said, with the model's own size.
    """
    import segmentation_models_pytorch as smp
    from .train import pick_device

    folder = Path(folder)
    if not (folder / "config.json").exists():
        raise FileNotFoundError(
            f"No segmentation model in {folder} (config.json is missing). Fetch the ADE20K Segformer once "
            "with `./data_download.sh --weights` (needs internet); it is saved there for offline use.")
    variant = segformer_variant(folder)
    native = SEGFORMER_VARIANTS[variant][1] if variant else None
    if input_size is None:
        input_size = native
    if verbose and native and input_size and input_size < native:
        print(f"Segformer {variant}: images go in at {input_size} px, below the {native} px it was trained at "
              f"(segmentation.ade20k_input_size = {input_size}, chosen to save time; set it to {native} or None "
              "for the model's own resolution, which labels small objects better).")
    model = smp.from_pretrained(str(folder))
    n = model.segmentation_head[0].out_channels if hasattr(model, "segmentation_head") else None
    if n is not None and n != 150:
        raise ValueError(f"The model in {folder} predicts {n} classes, not ADE20K's 150.")
    return SmpSegmenter(model.to(pick_device()), range(1, 151), name=f"ade20k:{folder.name}", input_size=input_size)


#: What notebook 05 cannot compute without a segmentation model (said when it is missing).
NEEDS_SEGMENTER = ("the segmentation examples", "the objects inside the masks (pixel counts, shares, attention "
                   "beyond area, dominant objects, top objects per city)", "the object distance between models "
                   "and its permutation test")


def try_ade20k_segmenter(folder: str | Path, input_size: int | None = 256) -> tuple[SmpSegmenter | None, str]:
    """:func:`load_ade20k_segmenter`, or ``(None, message)`` when ``folder`` holds
    no model: what is skipped, why, and how to get the model. Notebook 05 then
    still computes what needs no segmenter (mask IoU within and between
    architectures, its permutation test and verdict)."""
    folder = Path(folder)
    if (folder / "config.json").exists():
        return load_ade20k_segmenter(folder, input_size), f"ADE20K segmentation model loaded from {folder}."
    message = (f"No ADE20K segmentation model in {folder}, so this notebook skips "
               + "; ".join(NEEDS_SEGMENTER) + ". It still computes what needs no segmenter: the mask IoU "
               "within and between architectures, its permutation test and the verdict. To get the rest, fetch "
               "the model once with `./data_download.sh --weights` (needs internet, 15 MB) and rerun; or point "
               "segmentation.ade20k_folder at a folder holding one.")
    return None, message


def skipped(what: str) -> str:
    """The one line a cell of notebook 05 prints instead of its result when no
    segmentation model was loaded (:func:`try_ade20k_segmenter` says why, once)."""
    return f"Skipped (no segmentation model): {what}."


def arch_vs_init_record(object_test: dict | None, mask_test: dict, verdict: str, per_arch: dict, rows: Sequence[dict],
                        skipped_because: str | None = None, **extra) -> dict:
    """The ``arch_vs_init`` section of results.json (notebook 05).

    ``object_test`` and ``mask_test`` are :func:`permutation_test` results on the
    object distance and on 1 - mask IoU. Without a segmentation model
    ``object_test`` is None: its numbers are left out, never filled in, the record
    says so (``skipped``, with ``skipped_because``) and ``verdict_measure`` says
    that the verdict is the mask IoU's. ``per_arch`` maps a measure to its
    :func:`per_architecture` table; ``extra`` (threshold, maps, ...) is stored as it is.
    """
    record = {"within_arch_mask_iou": round(1 - mask_test["within"], 4),
              "between_arch_mask_iou": round(1 - mask_test["between"], 4),
              "mask_iou_p_value": round(mask_test["p_value"], 4)}
    groupings_of = object_test if object_test is not None else mask_test  # the same groupings for both tests
    record.update({"p_floor": round(groupings_of["p_floor"], 6), "n_groupings": groupings_of["n_groupings"],
                   "exact": groupings_of["exact"], "verdict": verdict})
    if object_test is not None:
        record.update({"within_arch_distance": round(object_test["within"], 4),
                       "between_arch_distance": round(object_test["between"], 4),
                       "p_value": round(object_test["p_value"], 4)})
    else:
        if not skipped_because:
            raise ValueError("Without the object-distance test, say why it was skipped (skipped_because).")
        record.update({"verdict_measure": "mask IoU", "skipped": {
            "object distance, its permutation test and the per-architecture object distances": skipped_because}})
    record["per_architecture"] = {m: p.round(4).to_dict("index") for m, p in per_arch.items()}
    record["rows"] = [{k: (round(v, 6) if isinstance(v, float) else v) for k, v in r.items()} for r in rows]
    return {**record, **extra}


# --------------------------------------------------------------------------
# Quality against ground truth
# --------------------------------------------------------------------------


def confusion(pred: np.ndarray, truth: np.ndarray, n: int = N_LABELS) -> np.ndarray:
    """(n, n) pixel counts: rows true label, columns predicted."""
    pred, truth = np.asarray(pred, np.int64).ravel(), np.asarray(truth, np.int64).ravel()
    return np.bincount(truth * n + pred, minlength=n * n).reshape(n, n)


def iou_per_class(conf: np.ndarray) -> np.ndarray:
    """IoU of each label (NaN for labels absent from both truth and prediction)."""
    tp = np.diag(conf).astype(float)
    union = conf.sum(0) + conf.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def mean_iou(conf: np.ndarray, ignore: Sequence[int] = (0,)) -> float:
    """Mean IoU over the labels present in the ground truth (``ignore`` excluded)."""
    iou = iou_per_class(conf)
    present = conf.sum(1) > 0
    present[list(ignore)] = False
    return float(np.nanmean(iou[present]))


# --------------------------------------------------------------------------
# Object statistics inside the masks
# --------------------------------------------------------------------------


def pixel_counts(labels: np.ndarray, masks: np.ndarray | None = None) -> np.ndarray:
    """Per-image pixel counts of each label, (N, 151), with one bincount for the batch.

    With ``masks`` (N, H, W bool), pixels outside the mask get the label
    :data:`OUTSIDE` and are not counted (the paper's rule).
    """
    labels = np.asarray(labels)
    n = len(labels)
    flat = labels.reshape(n, -1).astype(np.int32) + (np.arange(n, dtype=np.int32) * N_LABELS)[:, None]
    if masks is not None:  # the OUTSIDE pixels would be dropped anyway: count only the inside ones
        flat = flat[np.asarray(masks, bool).reshape(n, -1)]
    return np.bincount(flat.ravel(), minlength=n * N_LABELS).reshape(n, N_LABELS)


def city_shares(counts: np.ndarray, cities: np.ndarray, names: Sequence[str],
                ignore: Sequence[int] = (0,)) -> dict[str, dict]:
    """Per city, only the pooled in-mask shares (``{city: {"share_in_mask": ...}}``):
    what :func:`model_distance` reads, without the bootstrap of :func:`city_statistics`."""
    cities = np.asarray(cities)
    return {c: {"share_in_mask": shares(counts[cities == c], ignore)} for c in names}


def dominant_objects(counts: np.ndarray, ignore: Sequence[int] = (0,)) -> tuple[np.ndarray, np.ndarray]:
    """The dominant class of each image's mask and the second one, kept (else -1)
    when its count is more than half the first's (the original code's rule).
    An empty mask gives -1 for both."""
    c = np.asarray(counts, float).copy()
    c[:, list(ignore)] = 0
    order = np.argsort(-c, axis=1, kind="stable")
    first, second = order[:, 0], order[:, 1]
    rows = np.arange(len(c))
    top, runner = c[rows, first], c[rows, second]
    first = np.where(top > 0, first, -1)
    second = np.where((runner > 0.5 * top) & (top > 0), second, -1)
    return first, second


def shares(counts: np.ndarray, ignore: Sequence[int] = (0,)) -> np.ndarray:
    """Pooled class shares (151,) of summed counts (``ignore`` labels left out)."""
    total = np.asarray(counts, float).sum(0)
    total[list(ignore)] = 0
    s = total.sum()
    return total / s if s else np.full(len(total), np.nan)


def bootstrap_shares(counts: np.ndarray, n_boot: int = 500, seed: int = 0, ignore: Sequence[int] = (0,)) -> np.ndarray:
    """(n_boot, 151) pooled shares over images resampled with replacement:
    one matrix product for all resamples, no Python loop over images."""
    return _resampled_shares(resample_weights(len(counts), n_boot, seed), counts, ignore)


def resample_weights(n: int, n_boot: int, seed: int = 0) -> np.ndarray:
    """(n_boot, n): how often each of ``n`` images is drawn in each bootstrap resample."""
    if n == 0:
        return np.zeros((n_boot, 0))
    return np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(float)


def _resampled_shares(weights: np.ndarray, counts: np.ndarray, ignore: Sequence[int]) -> np.ndarray:
    """Pooled shares of each resample; ``weights`` (B, n) says how often each image is drawn."""
    counts = np.asarray(counts, float).copy()
    counts[:, list(ignore)] = 0
    totals = weights @ counts  # (B, 151)
    with np.errstate(invalid="ignore", divide="ignore"):
        return totals / totals.sum(1, keepdims=True)


def city_statistics(mask_counts: np.ndarray, image_counts: np.ndarray, n_boot: int = 500, seed: int = 0,
                    ignore: Sequence[int] = (0,)) -> dict[str, np.ndarray]:
    """For one city's images: share of each class inside the masks and in the whole
    images, their ratio, how often each class is dominant, each with a 95 %
    bootstrap interval (``*_low``, ``*_high``) over images."""
    inside, whole = shares(mask_counts, ignore), shares(image_counts, ignore)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = inside / whole
    first, second = dominant_objects(mask_counts, ignore)
    dom = np.zeros((len(first), N_LABELS))
    has = first >= 0
    dom[np.flatnonzero(has), first[has]] = 1
    two = second >= 0
    dom[np.flatnonzero(two), second[two]] = 1
    # one set of resamples of the city's images serves every statistic
    n = len(dom)
    weights = resample_weights(n, n_boot, seed)
    b_in, b_whole = _resampled_shares(weights, mask_counts, ignore), _resampled_shares(weights, image_counts, ignore)
    with np.errstate(invalid="ignore", divide="ignore"):
        b_ratio = b_in / b_whole
    b_dom = weights @ dom / max(n, 1)
    out = {"share_in_mask": inside, "share_in_image": whole, "ratio": ratio,
           "dominant": dom.mean(0) if n else np.zeros(N_LABELS)}
    for key, boot in (("share_in_mask", b_in), ("share_in_image", b_whole), ("ratio", b_ratio), ("dominant", b_dom)):
        out[f"{key}_low"], out[f"{key}_high"] = nan_quantiles(boot, (0.025, 0.975))
    return out


def nan_quantiles(samples: np.ndarray, qs: Sequence[float]) -> list[np.ndarray]:
    """Per column, the quantiles ``qs`` of the non-NaN values (linear
    interpolation, as ``np.nanquantile``), vectorised: one sort for all columns.
    A column with no value gives NaN."""
    samples = np.asarray(samples, float)
    ordered = np.sort(samples, axis=0)  # NaN sorts last
    n = (~np.isnan(samples)).sum(0)
    cols = np.arange(samples.shape[1])
    out = []
    for q in qs:
        pos = np.maximum(n - 1, 0) * q
        lo = np.floor(pos).astype(int)
        hi = np.minimum(lo + 1, np.maximum(n - 1, 0))
        with np.errstate(invalid="ignore"):
            value = ordered[lo, cols] + (ordered[hi, cols] - ordered[lo, cols]) * (pos - lo)
        out.append(np.where(n > 0, value, np.nan))
    return out


def top_classes(stats: dict, k: int = 3, min_share: float = 0.01, above: float | None = 1.0) -> list[int]:
    """The ``k`` classes with the highest attention-beyond-area ratio among those
    that make up at least ``min_share`` of the pixels inside the masks and whose
    95 % interval of the ratio lies above ``above`` (``ratio_low > above``): a
    class looked at no more than its area explains is never a top class.
    ``above=None`` drops the interval rule (any ratio above 0 qualifies)."""
    ratio = np.nan_to_num(np.asarray(stats["ratio"], float), nan=-1.0)
    ok = np.asarray(stats["share_in_mask"]) >= min_share
    if above is None:
        ok &= ratio > 0
    else:
        ok &= np.nan_to_num(np.asarray(stats["ratio_low"], float), nan=-np.inf) > above
    ratio = np.where(ok, ratio, -np.inf)
    order = np.argsort(-ratio, kind="stable")
    return [int(c) for c in order[:k] if ok[c]]


def cue_recall(stats: dict[str, dict], cue_classes: dict[str, Sequence[int]], k: int = 3,
               min_share: float = 0.01, above: float | None = 1.0) -> float:
    """Mean over cities of the share of a city's cue classes among its top ``k`` classes."""
    return float(np.mean([len(set(top_classes(stats[c], k, min_share, above)) & set(cue_classes[c]))
                          / len(cue_classes[c]) for c in cue_classes]))


def top_fraction_masks(maps: np.ndarray, fraction: float) -> np.ndarray:
    """Area-matched masks: in each map, its ``fraction`` of pixels with the highest
    values, so every mask of every model has the same area,
    ``round(fraction * H * W)`` pixels (pixels tied at the cut are picked in a
    fixed but arbitrary order). A flat map (all values equal, e.g. Grad-CAM's
    all-zero map) ranks no pixel above another: its mask is empty."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], not {fraction}")
    maps = np.asarray(maps)
    flat = maps.reshape(len(maps), -1)
    n_top = int(round(fraction * flat.shape[1]))
    if n_top == 0:
        return np.zeros(maps.shape, bool)
    order = np.argpartition(-flat, n_top - 1, axis=1)[:, :n_top]  # linear time, unlike a full sort
    masks = np.zeros(flat.shape, bool)
    np.put_along_axis(masks, order, True, axis=1)
    masks[flat.max(1) == flat.min(1)] = False
    return masks.reshape(maps.shape)


def chance_masks(masks: np.ndarray, groups: Sequence, seed: int = 0) -> np.ndarray:
    """The masks of other images: each image gets the mask of another image of
    its own group (city), drawn as a random derangement within the group. The
    masks keep their areas, shapes and positions (any spatial habit of the
    network, such as looking at the bottom centre) but lose their link to the
    image's content: what they catch is what a mask of that size and place
    catches by chance. A group of one image keeps its own mask."""
    masks, groups = np.asarray(masks), np.asarray(groups)
    rng = np.random.default_rng(seed)
    source = np.arange(len(masks))
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        if len(idx) > 1:
            shift = rng.permutation(idx)
            # a random cyclic order: each member takes the mask of the next, never its own
            source[shift] = np.roll(shift, -1)
    return masks[source]


# --------------------------------------------------------------------------
# Architecture versus initialization
# --------------------------------------------------------------------------


def js_distance(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon distance (base 2, in [0, 1]) between two distributions."""
    from scipy.spatial.distance import jensenshannon

    p, q = np.nan_to_num(np.asarray(p, float)), np.nan_to_num(np.asarray(q, float))
    if p.sum() == 0 or q.sum() == 0:
        return float("nan")
    return float(jensenshannon(p, q, base=2))


def model_distance(stats_a: dict[str, dict], stats_b: dict[str, dict]) -> float:
    """Mean over cities of the JS distance between two models' in-mask class distributions."""
    return float(np.nanmean([js_distance(stats_a[c]["share_in_mask"], stats_b[c]["share_in_mask"])
                             for c in stats_a]))


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over images of the IoU of two models' masks (images where both are empty skipped)."""
    a, b = np.asarray(a, bool).reshape(len(a), -1), np.asarray(b, bool).reshape(len(b), -1)
    union = (a | b).sum(1)
    inter = (a & b).sum(1)
    ok = union > 0
    return float((inter[ok] / union[ok]).mean()) if ok.any() else float("nan")


def within_between(distance: np.ndarray, groups: Sequence) -> tuple[float, float]:
    """Mean distance over pairs in the same group and over pairs in different groups."""
    w, b = _within_between(np.asarray(distance, float), _codes(groups)[None])
    return float(w[0]), float(b[0])


def _codes(groups: Sequence) -> np.ndarray:
    return np.unique(np.asarray(groups), return_inverse=True)[1].ravel()


def _within_between(distance: np.ndarray, labellings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Within- and between-group mean distance for each row of ``labellings`` (G, n), vectorised
    over the rows; pairs with a NaN distance are left out. ``distance`` is one (n, n) matrix, or a
    stack (B, n, n) with one labelling (1, n) (the bootstrap of :func:`bootstrap_gap`)."""
    iu = np.triu_indices(labellings.shape[1], 1)
    d = distance[..., iu[0], iu[1]]  # (P,) for one matrix, (B, P) for a stack of B
    ok = ~np.isnan(d)
    d = np.where(ok, d, 0.0)
    same = labellings[:, iu[0]] == labellings[:, iu[1]]
    with np.errstate(invalid="ignore", divide="ignore"):
        within = (same * d).sum(1) / (same & ok).sum(1)
        between = (~same * d).sum(1) / (~same & ok).sum(1)
    return within, between


def n_groupings(group_sizes: Sequence[int]) -> int:
    """How many distinct ways there are to split ``sum(group_sizes)`` models into
    unlabelled groups of these sizes: n! / (prod size! * prod (groups of equal
    size)!). 4 architectures x 2 seeds: 105; 4 x 3: 15,400."""
    from collections import Counter
    from math import factorial, prod

    sizes = [int(s) for s in group_sizes]
    return factorial(sum(sizes)) // (prod(factorial(s) for s in sizes)
                                     * prod(factorial(m) for m in Counter(sizes).values()))


def groupings(group_sizes: Sequence[int]) -> np.ndarray:
    """Every distinct grouping (see :func:`n_groupings`), one row each: (G, n) group
    numbers. Each grouping appears once: the group holding the lowest unplaced
    model is filled first, and groups of equal size are not told apart."""
    from itertools import combinations

    sizes = sorted(int(s) for s in group_sizes)
    n = sum(sizes)
    rows: list[list[int]] = []
    label = [0] * n

    def fill(free: tuple[int, ...], left: list[int], g: int) -> None:
        if not free:
            rows.append(label.copy())
            return
        first, rest = free[0], free[1:]
        for s in sorted(set(left)):
            remaining = left.copy()
            remaining.remove(s)
            for others in combinations(rest, s - 1):
                for i in (first, *others):
                    label[i] = g
                fill(tuple(i for i in rest if i not in others), remaining, g + 1)

    fill(tuple(range(n)), sizes, 0)
    return np.array(rows, dtype=np.int16).reshape(len(rows), n)


def permutation_test(distance: np.ndarray, groups: Sequence, n_perm: int = 5000, seed: int = 0,
                     max_exact: int = 200_000) -> dict:
    """Is the mean distance between groups larger than within them, more than a
    random regrouping of the models would give?

    The statistic is between minus within. It depends only on which models share
    a group, so the test compares it with its value under every distinct grouping
    into groups of the same sizes (:func:`groupings`) when there are at most
    ``max_exact`` of them: the exact p-value is the share of groupings (the
    observed one included) whose statistic is at least the observed one, and the
    smallest p-value the data can give, ``p_floor``, is 1 / (number of groupings).
    With more groupings it draws ``n_perm`` random relabellings instead
    (p = (hits + 1) / (n_perm + 1), floor 1 / (n_perm + 1)).
    """
    distance = np.asarray(distance, float)
    codes = _codes(groups)
    sizes = np.bincount(codes)
    within, between = _within_between(distance, codes[None])
    observed = between[0] - within[0]
    total = n_groupings(sizes)
    exact = total <= max_exact
    if exact:
        labellings = groupings(sizes)
        w, b = _within_between(distance, labellings)  # every partition of the models 0..n-1
        hits, n = int(((b - w) >= observed - 1e-12).sum()), len(labellings)
        p, floor = hits / n, 1 / n
    else:
        rng = np.random.default_rng(seed)
        labellings = rng.permuted(np.broadcast_to(codes, (n_perm, len(codes))), axis=1)
        w, b = _within_between(distance, labellings)
        hits, n = int(((b - w) >= observed - 1e-12).sum()), n_perm
        p, floor = (hits + 1) / (n + 1), 1 / (n + 1)
    return {"within": float(within[0]), "between": float(between[0]), "statistic": float(observed),
            "p_value": float(p), "p_floor": float(floor), "at_floor": bool(p <= floor * (1 + 1e-9)),
            "exact": bool(exact), "n_groupings": int(total), "n_perm": int(n)}


def per_architecture(distance: np.ndarray, groups: Sequence) -> "pd.DataFrame":
    """For each group (architecture): the mean distance between its own models
    (its seeds) and the mean distance from its models to every other group's.
    ``gap`` = between - within; a negative gap means two seeds of this
    architecture differ more than it differs from the others."""
    import pandas as pd

    distance, g = np.asarray(distance, float), np.asarray(groups)
    rows = {}
    for a in dict.fromkeys(g.tolist()):
        own = np.flatnonzero(g == a)
        other = np.flatnonzero(g != a)
        pairs = distance[np.ix_(own, own)][np.triu_indices(len(own), 1)]
        within = float(np.nanmean(pairs)) if len(pairs) else float("nan")
        between = float(np.nanmean(distance[np.ix_(own, other)])) if len(other) else float("nan")
        rows[a] = {"within": within, "between": between, "gap": between - within}
    return pd.DataFrame(rows).T


ROW_KINDS = ("primary", "variant", "control")


def verdict_row(name: str, result: dict, alpha: float = 0.05, kind: str = "variant", grid: str | None = None,
                gap_ci95: Sequence[float] | None = None, recipe: str | None = None) -> dict:
    """One row of the robustness table: the test's numbers and its verdict.

    ``kind``: ``primary`` (the one analysis named before the others are read), ``variant`` (a
    dependent check of it: other thresholds, segmenters, masks, grids) or ``control`` (maps that
    carry no information about the image: a control that finds "architecture" shows what the test
    measures besides what the networks look at, see :func:`conclude`). ``grid``: the map grid(s) of
    the row, e.g. ``"2 x 2"`` or ``"vgg11 6 x 6, ..."``. ``gap`` is between minus within, with
    its bootstrap interval over images (:func:`bootstrap_gap`) when given. ``recipe``: how the row's
    models were trained (:func:`train.recipe_text`), ``"one for all: ..."`` or ``"per architecture: ..."``.

    The verdict is ``"architecture"`` (p below ``alpha`` and between above within), ``"no
    evidence"``, or ``"too few models"`` when even the smallest p the groupings allow is not below
    ``alpha``: such a row cannot decide, and only its gap and interval speak."""
    if kind not in ROW_KINDS:
        raise ValueError(f"kind must be one of {ROW_KINDS}, not {kind!r}")
    holds = result["p_value"] < alpha and result["between"] > result["within"]
    interval = None if gap_ci95 is None else [round(float(x), 6) for x in gap_ci95]
    if result["p_floor"] >= alpha:  # e.g. 2 architectures x 2 seeds: 3 groupings, p never below 1/3
        verdict = "too few models"
    else:
        verdict = "architecture" if holds else "no evidence"
    return {"name": name, "kind": kind, "grid": grid, "recipe": recipe,
            "within": result["within"], "between": result["between"],
            "gap": result["between"] - result["within"], "gap_ci95": interval, "p": result["p_value"],
            "p_floor": result["p_floor"], "at_floor": result["at_floor"], "verdict": verdict}


def conclude(rows: Sequence[dict]) -> dict:
    """The conclusion of a robustness table (rows from :func:`verdict_row`).

    The status comes from the primary row and its variants, counted by their ``kind``:
    ``robust`` when every one finds that architecture matters more than initialization,
    ``absent`` when none does, ``mixed`` otherwise. Controls are reported apart: a control
    that finds "architecture" (``fires``) shows that maps which never look at the image, kept
    on each model's grid and at its area, already separate the architectures, so the verdict
    cannot be read as being about what the networks look at (``readable`` is then False). Rows
    whose p cannot fall below alpha (verdict ``"too few models"``) are counted in neither: they
    are listed in ``undecided`` with their gaps and intervals. ``shared_recipe`` counts the rows
    (controls included) whose models all trained with one recipe (``recipe`` starting with
    ``train.ONE_RECIPE``, as :func:`train.recipe_text` writes it): on those rows the recipe
    cannot make the gap."""
    from .train import ONE_RECIPE

    kinds = [r.get("kind", "variant") for r in rows]
    if kinds.count("primary") > 1:
        raise ValueError("A robustness table names one primary analysis, not several.")
    undecided = [{"name": r["name"], "gap": r.get("gap"), "gap_ci95": r.get("gap_ci95"), "p_floor": r["p_floor"]}
                 for r, k in zip(rows, kinds) if k != "control" and r["verdict"] == "too few models"]
    tested = [r for r, k in zip(rows, kinds) if k != "control" and r["verdict"] != "too few models"]
    holds = [r["name"] for r in tested if r["verdict"] == "architecture"]
    fails = [r["name"] for r in tested if r["verdict"] != "architecture"]
    status = "robust" if holds and not fails else "absent" if not holds else "mixed"
    controls = [{"name": r["name"], "outcome": "fires" if r["verdict"] == "architecture" else "quiet",
                 "gap": r.get("gap"), "gap_ci95": r.get("gap_ci95"), "p": r["p"]}
                for r, k in zip(rows, kinds) if k == "control"]
    primary = next((r["name"] for r, k in zip(rows, kinds) if k == "primary"), None)
    return {"status": status, "primary": primary, "n_rows": len(tested), "n_hold": len(holds), "hold": holds,
            "do_not_hold": fails, "n_at_floor": sum(bool(r["at_floor"]) for r in tested),
            "undecided": undecided,
            "controls": controls, "n_controls_firing": sum(c["outcome"] == "fires" for c in controls),
            "readable": not any(c["outcome"] == "fires" for c in controls),
            "shared_recipe": sum(str(r.get("recipe") or "").startswith(ONE_RECIPE) for r in rows),
            "recipes": sorted({r["recipe"] for r in rows if r.get("recipe")})}


# --------------------------------------------------------------------------
# Controls, common grids and effect sizes
# --------------------------------------------------------------------------


def grid_text(grids: dict[str, tuple[int, int]]) -> str:
    """``"2 x 2"`` when every model's maps share one grid, else each architecture's (``"vgg11 6 x 6, ..."``)."""
    shapes = {tuple(g) for g in grids.values()}
    if len(shapes) == 1:
        h, w = shapes.pop()
        return f"{h} x {w}"
    per_arch = {}
    for name, (h, w) in grids.items():
        per_arch.setdefault(name.rsplit("-s", 1)[0], f"{h} x {w}")
    return ", ".join(f"{a} {g}" for a, g in per_arch.items())


def coinciding_layers(layer_grids: dict[str, dict[str, tuple[int, int]]]) -> list[dict]:
    """Layers of different architectures whose grids coincide, e.g. VGG-11's previous layer and
    ResNet-18's earlier one, both 12 x 12 at 96 px. ``layer_grids``: per architecture, per layer,
    its grid (h, w). Returns one entry per grid that at least two architectures reach:
    ``{"grid": (h, w), "layers": {arch: layer}}``, finest grid first; an architecture that reaches
    the grid at two layers keeps the first listed."""
    by_grid: dict[tuple[int, int], dict[str, str]] = {}
    for arch, layers in layer_grids.items():
        for layer, grid in layers.items():
            by_grid.setdefault(tuple(int(x) for x in grid), {}).setdefault(arch, layer)
    found = [{"grid": g, "layers": layers} for g, layers in by_grid.items() if len(layers) >= 2]
    return sorted(found, key=lambda m: -m["grid"][0] * m["grid"][1])


def pool_grids(grids: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Raw CAM grids (N, h, w) averaged onto a coarser ``grid`` (N, gh, gw): what a layer of that
    resolution would have given for the same evidence (PyTorch's adaptive average pooling)."""
    t = torch.from_numpy(np.ascontiguousarray(grids, np.float32))[:, None]
    return nn.functional.adaptive_avg_pool2d(t, tuple(grid))[:, 0].numpy()


def common_grid_maps(grids: np.ndarray, grid: tuple[int, int], size: int) -> np.ndarray:
    """A model's maps made on a common ``grid``: its raw grids pooled onto it (:func:`pool_grids`),
    then rescaled and upsampled exactly as the ``grad-cam`` package makes its maps."""
    from .gradcam import rescaled_maps

    return rescaled_maps(pool_grids(grids, grid), size)


def blind_grid_maps(prior: np.ndarray, grid: tuple[int, int], n: int, size: int) -> np.ndarray:
    """``n`` copies of a map that never looks at the image, on a model's own ``grid``: ``prior``
    (H, W; e.g. where cues usually are, or a centre blob) averaged onto the grid and upsampled as
    Grad-CAM's maps are. Thresholded at a model's own mask area, these keep the model's grid and
    area and nothing of what it saw: the maps of a null control."""
    one = common_grid_maps(np.asarray(prior, np.float32)[None], grid, size)[0]
    return np.broadcast_to(one, (n, *one.shape))


def _js_rows(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """:func:`js_distance` of matching rows of two (B, K) count or share arrays (scipy's, along axis 1)."""
    from scipy.spatial.distance import jensenshannon

    p, q = np.nan_to_num(p), np.nan_to_num(q)
    ok = (p.sum(1) > 0) & (q.sum(1) > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ok, jensenshannon(p, q, base=2, axis=1), np.nan)


def bootstrap_gap(order: Sequence[str], groups: Sequence, *, counts: dict | None = None,
                  masks: dict | None = None, cities: np.ndarray | None = None, city_names: Sequence[str] = (),
                  n_boot: int = 500, seed: int = 0, ignore: Sequence[int] = (0,)) -> tuple[float, float]:
    """95 % interval of the gap (between minus within) when the test images are resampled with
    replacement, the same images for every model: how much the gap owes to which images were drawn.
    Give either ``counts`` (per model, per-image class counts inside its masks: the object distance,
    pooled per city as :func:`model_distance` does) or ``masks`` (per model, (N, H, W): 1 - mask IoU).
    It does not cover training variation (other seeds, another CPU's arithmetic): the models are fixed."""
    first = (counts if counts is not None else masks)[order[0]]
    weights = resample_weights(len(first), n_boot, seed)  # (B, N)
    n = len(order)
    dist = np.zeros((n_boot, n, n))
    if counts is not None:
        cities = np.asarray(cities)
        pooled = {}
        for name in order:
            c = np.asarray(counts[name], float).copy()
            c[:, list(ignore)] = 0
            pooled[name] = {city: weights[:, cities == city] @ c[cities == city] for city in city_names}
        for a, b in zip(*np.triu_indices(n, 1)):
            per_city = [_js_rows(pooled[order[a]][city], pooled[order[b]][city]) for city in city_names]
            with np.errstate(invalid="ignore"):
                dist[:, a, b] = dist[:, b, a] = np.nanmean(np.stack(per_city), 0)
    else:
        flat = {name: np.asarray(masks[name], bool).reshape(len(first), -1) for name in order}
        for a, b in zip(*np.triu_indices(n, 1)):
            inter = (flat[order[a]] & flat[order[b]]).sum(1)
            union = (flat[order[a]] | flat[order[b]]).sum(1)
            ok = union > 0
            iou = np.where(ok, inter / np.where(ok, union, 1), 0.0)
            with np.errstate(invalid="ignore"):
                dist[:, a, b] = dist[:, b, a] = 1 - (weights @ iou) / (weights @ ok)
    within, between = _within_between(dist, _codes(groups)[None])
    lo, hi = np.nanquantile(between - within, [0.025, 0.975])
    return float(lo), float(hi)


def p_text(result: dict) -> str:
    """A p-value with its floor: 'p = 0.0095, the smallest these groupings allow'."""
    how = (f"exact over all {result['n_groupings']:,} groupings" if result["exact"]
           else f"{result['n_perm']:,} random relabellings")
    floor = ", the smallest p-value this test can give" if result["at_floor"] else f"; floor {result['p_floor']:.4f}"
    return f"p = {result['p_value']:.4f} ({how}{floor})"
