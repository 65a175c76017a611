"""Training city classifiers reproducibly, with resumable checkpoints (notebook 02).

One seed fixes everything random in a run: the initial weights, the order of
the training images and the horizontal flips (each epoch draws from its own
generator seeded by ``(seed, epoch)``, so a resumed run sees exactly what an
uninterrupted one would have seen).

Each model lives in ``artifacts/<profile>/<dataset>/models/<arch>-s<seed>-<hash>/``:

- ``last.pt``: the state after the last finished epoch (resume point),
- ``weights.pt``: the weights of the epoch with the best validation accuracy,
- ``model.json``: the sidecar (architecture, seed, classes, input size,
  normalisation, settings hash, best epoch, accuracies, training seconds,
  learning curves). It is written last: a folder without it is unfinished.

Every file is written to a temporary name and renamed, so a killed process
never leaves a half-written checkpoint that a later run would trust.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from .claims import claim_model
from .data import CityData, open_rgb
from .models import IMAGENET_MEAN, IMAGENET_STD, build_model, count_params, set_dropout
from .settings import Settings, settings_hash
from .utils import atomic_write, progress

CHECKPOINT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that is malformed or does not match what was asked for."""


def pick_device(preference: str = "auto") -> torch.device:
    """CUDA if present, else Apple MPS, else CPU (or the given device, e.g. ``"cuda:1"``).

    On a machine with several GPUs, a job started by ``torchrun`` (or any launcher that sets
    ``LOCAL_RANK``) takes GPU ``LOCAL_RANK``, so independent jobs do not all land on GPU 0;
    without it, ``CUDA_VISIBLE_DEVICES`` or an explicit ``"cuda:<n>"`` chooses."""
    if preference != "auto":
        return torch.device(preference)
    if torch.cuda.is_available():
        local = os.environ.get("LOCAL_RANK", "").strip()
        if local.isdigit() and int(local) < torch.cuda.device_count():
            return torch.device("cuda", int(local))
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def device_of(model: nn.Module) -> torch.device:
    """The device a model lives on (that of its first parameter or buffer; the CPU for none)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def model_input(model: nn.Module, images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 images (N, 3, H, W), as ``model`` takes them: float, normalised, on the model's device.
    Use it wherever a cell or helper feeds images to a model, so that the same code runs on a CPU,
    a CUDA GPU or Apple's MPS."""
    return normalise(images_uint8, device_of(model))


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A tensor as a NumPy array, wherever it lives: detached from autograd, copied to the CPU
    (a GPU tensor has no NumPy view), and bfloat16/float16 widened to float32 (NumPy has no bfloat16)."""
    tensor = tensor.detach()
    if tensor.dtype in (torch.bfloat16, torch.float16):
        tensor = tensor.float()
    return tensor.cpu().numpy()


# --------------------------------------------------------------------------
# Images as tensors
# --------------------------------------------------------------------------


def load_images(paths: Sequence[str], image_size: int, show_progress: bool = True) -> torch.Tensor:
    """Images as one uint8 tensor (N, 3, S, S), resized to S x S (aspect ratio not kept, as in the paper)."""
    from PIL import Image

    out = torch.empty((len(paths), 3, image_size, image_size), dtype=torch.uint8)
    for i, path in enumerate(progress(paths, desc="loading images", disable=None if show_progress else True)):
        img = open_rgb(path)
        if img.size != (image_size, image_size):
            img = img.resize((image_size, image_size), Image.BILINEAR)
        out[i] = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)
    return out


def autocast_dtype(device: torch.device, amp: bool = True) -> torch.dtype | None:
    """The reduced precision that training uses on ``device``, or None for plain float32.

    Mixed precision (``train.amp``) runs the convolutions in 16 bits and keeps
    the weights in 32: float16 on CUDA; bfloat16 on a CPU with native bfloat16
    instructions (Intel AMX, or AVX-512 BF16 as on AMD Zen 4 and later Intel
    Xeons), where it trained 1.4-2.2x faster (AMX) and 1.5-1.9x faster (AVX-512
    BF16, AMD EPYC) on this project's 2-core machines. Elsewhere (Apple MPS, CPUs
    without those instructions, where bfloat16 is emulated and slower) it stays
    float32.
    """
    if not amp:
        return None
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu" and _cpu_has_bf16():
        return torch.bfloat16
    return None


def _cpu_has_bf16() -> bool:
    """True when the CPU runs bfloat16 natively (AMX tiles or AVX-512 BF16)."""
    checks = [getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    return any(check is not None and check() for check in checks)


def autocast(device: torch.device, dtype: torch.dtype | None):
    """The forward pass's context for :func:`autocast_dtype`'s answer: mixed precision in
    ``dtype``, or plain float32 for None."""
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def precision_name(dtype: torch.dtype | None) -> str:
    """``"bfloat16"``, ``"float16"`` or ``"float32"`` (None), as sidecars record it."""
    return str(dtype or torch.float32).removeprefix("torch.")


def normalise(batch_uint8: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float, ImageNet mean/std normalised, on ``device``."""
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    return (batch_uint8.to(device, non_blocking=True).float() / 255.0 - mean) / std


def channels_last(model: nn.Module) -> nn.Module:
    """Train in the channels-last memory layout: convolutions run 1.3-1.5x faster
    on a CPU with oneDNN (measured on this project's 2-core machine; on a GPU it
    helps mixed precision too). Only the layout changes, not the model."""
    return model.to(memory_format=torch.channels_last)


@dataclass
class SplitTensors:
    images: torch.Tensor  # uint8 (N, 3, S, S)
    labels: torch.Tensor  # int64 (N,)
    paths: list[str]


def split_tensors(data: CityData, split: str, image_size: int, show_progress: bool = True) -> SplitTensors:
    items = data.split(split)
    labels = torch.tensor([data.cities.index(c) for c in items.city], dtype=torch.int64)
    return SplitTensors(load_images(list(items.path), image_size, show_progress), labels, list(items.path))


# --------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------


def _atomic_save(obj, path: Path) -> None:
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def _atomic_json(obj, path: Path) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=2)))


def model_key(settings: Settings, data: CityData, arch: str, seed: int) -> str:
    """Hash of everything that determines a trained model: the dataset's
    fingerprint, the training settings (less the lists of archs and seeds, and
    with only this architecture's learning rate, epochs, shift and pretraining switch, so
    that changing one architecture's never retrains the others), the architecture
    and the seed."""
    train = {k: v for k, v in settings["train"].items()
             if k not in ("archs", "seeds", "lr", "pretrained", "pretrained_lr", "max_shift", "epochs")}
    width, pretrained = arch_setup(settings, arch)
    train["lr"] = _arch_lr(settings, arch)
    train["max_shift"] = per_arch(settings, "max_shift", arch)
    train["epochs"] = arch_epochs(settings, data, arch)
    train["pretrained"] = arch in settings["train"]["pretrained"]
    if pretrained:  # real data: ImageNet weights at the paper's width, fine-tuned at their own rate
        train.update(width=width, imagenet=True)
    return settings_hash({"data": data.fingerprint, "classes": list(data.cities), "train": train,
                          "image_size": settings["dataset"]["image_size"], "arch": arch, "seed": seed,
                          "version": CHECKPOINT_VERSION})


def arch_setup(settings: Settings, arch: str) -> tuple[str, bool]:
    """Width and ImageNet pretraining of ``arch`` under these settings. On real
    images the architectures in ``train.pretrained`` start from ImageNet weights
    as in the paper, which exist only at the paper's width; the built-in cities
    always train from scratch at the profile's width."""
    cfg = settings["train"]
    pretrained = arch in cfg["pretrained"] and settings.data != "synthetic"
    return ("paper" if pretrained else cfg["width"]), pretrained


def _arch_lr(settings: Settings, arch: str) -> float:
    """The learning rate of ``arch``: one rate for all, or one per architecture
    (``train.pretrained_lr`` when it starts from ImageNet weights)."""
    if arch_setup(settings, arch)[1]:
        return settings["train"]["pretrained_lr"]
    return per_arch(settings, "lr", arch)


def per_arch(settings: Settings, name: str, arch: str):
    """``train.<name>`` for ``arch``: one value for all, or a mapping with one per architecture."""
    value = settings["train"][name]
    if isinstance(value, dict):
        if arch not in value:
            raise KeyError(f"train.{name} has no value for {arch!r}; give one (it has {', '.join(value)}).")
        return value[arch]
    return value


#: The quick profile on a real folder trains at most this many times its own epochs (see :func:`arch_epochs`).
MAX_EPOCH_SCALE = 10


def scaled_epochs(epochs: int, n_train: int, n_builtin: int, batch_size: int) -> int:
    """Epochs over ``n_train`` images that make about as many batches as
    ``epochs`` over ``n_builtin`` images: at least ``epochs``, at most
    :data:`MAX_EPOCH_SCALE` times it."""
    per_epoch = max(1, -(-n_train // batch_size))
    target = epochs * -(-n_builtin // batch_size)
    return int(min(max(epochs, round(target / per_epoch)), epochs * MAX_EPOCH_SCALE))


def arch_epochs(settings: Settings, data: CityData, arch: str) -> int:
    """The epochs ``arch`` trains for. The quick profile's epochs are sized for the
    built-in cities (1,920 training images per city, 4 cities); a real folder has
    far fewer (at most ``dataset.max_per_city`` per city), so on a real folder the
    quick profile scales them to give about the same number of batches
    (:func:`scaled_epochs`, at most :data:`MAX_EPOCH_SCALE` times as many). The
    built-in cities, the full profile and epochs set explicitly (``train.epochs``
    differing from the profile's) are used as they are."""
    from .settings import PROFILES
    from .synthetic import DEFAULT_CITIES

    epochs = per_arch(settings, "epochs", arch)
    if (settings.profile != "quick" or settings.data == "synthetic" or data.has_ground_truth
            or settings["train"]["epochs"] != PROFILES["quick"]["train"]["epochs"]):
        return epochs
    n_builtin = settings["dataset"]["n_per_city"]["train"] * len(DEFAULT_CITIES)
    n_train = int((data.items.split == "train").sum())
    return scaled_epochs(epochs, n_train, n_builtin, settings["train"]["batch_size"])


def arch_recipe(settings: Settings, data: CityData, arch: str) -> dict:
    """What ``arch`` trains with here: epochs, peak learning rate, largest shift, width and
    its start (random or ImageNet weights), as :func:`_train_model` uses them."""
    width, from_imagenet = arch_setup(settings, arch)
    return {"epochs": arch_epochs(settings, data, arch), "lr": _arch_lr(settings, arch),
            "max_shift": per_arch(settings, "max_shift", arch), "width": width,
            "start": "ImageNet" if from_imagenet else "random"}


#: How :func:`recipe_text` begins when every architecture trains alike (``segmentation.conclude`` counts such rows).
ONE_RECIPE = "one for all: "


def recipe_text(settings: Settings, data: CityData, archs: Sequence[str] | None = None) -> str:
    """The recipe of ``archs`` (default the settings') in words: ``"one for all: 8 epochs, peak
    rate 0.002, shifts up to 2 px, random start"`` when every architecture trains alike, else
    ``"per architecture: vgg11 6 epochs, ...; resnet18 ..."``. Notebook 05b records it with
    every row of its table: a recipe that differs by architecture moves with the label the test
    compares, as the architecture does."""
    archs = list(archs or settings["train"]["archs"])
    recipes = {a: arch_recipe(settings, data, a) for a in archs}

    def words(r: dict) -> str:
        return f"{r['epochs']} epochs, peak rate {r['lr']:g}, shifts up to {r['max_shift']} px, {r['start']} start"

    if len({tuple(r.values()) for r in recipes.values()}) == 1:
        return ONE_RECIPE + words(recipes[archs[0]])
    return "per architecture: " + "; ".join(f"{a} {words(r)}" for a, r in recipes.items())


def make_scheduler(optimizer, cfg, lr: float, batches: int, epochs: int):
    """The learning-rate schedule of ``train.schedule``: ``"step"`` (the paper: times
    ``lr_gamma`` every ``lr_step`` epochs, stepped once per epoch) or ``"onecycle"``
    (warm up to ``lr`` over the first ``warmup`` share of the ``epochs * batches``
    batches, then anneal to almost zero along a cosine, stepped once per batch).
    ``lr`` and ``epochs`` are the architecture's own (:func:`per_arch`)."""
    if cfg["schedule"] == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg["lr_step"], gamma=cfg["lr_gamma"])
    if cfg["schedule"] == "onecycle":
        total = epochs * batches
        if total < 4:  # too short for two phases (a smoke test): keep the rate constant
            return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
        warmup = min(max(cfg["warmup"], 2 / total), 1 - 2 / total)  # at least two batches per phase
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=total, pct_start=warmup)
    raise ValueError(f"train.schedule must be 'step' or 'onecycle', not {cfg['schedule']!r}.")


def model_dir(settings: Settings, data: CityData, arch: str, seed: int) -> Path:
    return settings.artifacts_dir / "models" / f"{arch}-s{seed}-{model_key(settings, data, arch, seed)}"


@dataclass
class TrainedModel:
    model: nn.Module
    meta: dict  # the sidecar
    path: Path
    loaded: bool  # True: loaded from a finished checkpoint; False: trained (or resumed) now

    @property
    def name(self) -> str:
        return f"{self.meta['arch']}-s{self.meta['seed']}"


def load_checkpoint(folder: str | os.PathLike, arch: str | None = None, classes: Sequence[str] | None = None,
                    key: str | None = None, image_size: int | None = None,
                    device: str | torch.device = "cpu") -> TrainedModel:
    """Load a finished model, refusing one that is malformed or does not match.

    Every given expectation (architecture, classes, settings hash ``key``,
    input size) is compared with the sidecar; a mismatch raises
    :class:`CheckpointError` naming the field.
    """
    folder = Path(folder)
    sidecar, weights = folder / "model.json", folder / "weights.pt"
    if not sidecar.exists() or not weights.exists():
        raise CheckpointError(f"{folder} is not a finished checkpoint (model.json and weights.pt are needed); "
                              "train the model again to finish it.")
    try:
        meta = json.loads(sidecar.read_text())
    except ValueError as err:
        raise CheckpointError(f"{sidecar} is not valid JSON ({err}); delete the folder to retrain.") from None
    required = ("arch", "seed", "classes", "image_size", "width", "key")
    missing = [k for k in required if k not in meta]
    if missing:
        raise CheckpointError(f"{sidecar} lacks {', '.join(missing)}; it was not written by cityviz.")
    for field_name, wanted in (("arch", arch), ("classes", list(classes) if classes is not None else None),
                               ("key", key), ("image_size", image_size)):
        if wanted is not None and meta[field_name] != wanted:
            label = "settings hash" if field_name == "key" else field_name
            raise CheckpointError(f"Checkpoint {folder.name} has {label} {meta[field_name]!r} but "
                                  f"{wanted!r} was asked for; it belongs to other settings.")
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated file, not a torch file, pickled code
        raise CheckpointError(f"{weights} cannot be read safely ({type(err).__name__}: {str(err)[:200]}); "
                              "delete the folder to retrain.") from None
    model = build_model(meta["arch"], len(meta["classes"]), meta["image_size"], meta["width"])
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as err:
        raise CheckpointError(f"{weights} does not fit a {meta['arch']} ({str(err)[:300]}).") from None
    model.to(device).eval()
    return TrainedModel(model, meta, folder, loaded=True)


# --------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(settings_hash({"seed": seed, "epoch": epoch}), 16) % (2 ** 62))


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 200,
            device: torch.device | None = None) -> torch.Tensor:
    """Class probabilities (N, n_classes) for uint8 images."""
    device = device or device_of(model)
    model.eval()
    out = [torch.softmax(model(normalise(images[i:i + batch_size], device)).float(), 1).cpu()
           for i in range(0, len(images), batch_size)]
    return torch.cat(out)


def accuracy(model: nn.Module, split: SplitTensors, device=None) -> float:
    return float((predict(model, split.images, device=device).argmax(1) == split.labels).float().mean())


def run_epoch(model: nn.Module, optimizer, scaler, train: SplitTensors, order: torch.Tensor, flips: torch.Tensor,
              batch_size: int, device: torch.device, amp_dtype: torch.dtype | None = None, desc: str = "epoch",
              after_batch: Callable[[int], None] | None = None,
              shifts: torch.Tensor | None = None) -> tuple[float, int]:
    """One pass over ``train`` in ``order``, flipping the images marked in ``flips``
    and, with ``shifts`` (n, 2), moving each image by its (dy, dx) pixels (edges
    repeated). ``amp_dtype`` (see :func:`autocast_dtype`) runs the forward pass
    in mixed precision; ``after_batch(b)`` is called after each optimiser step
    (a per-batch learning-rate schedule steps there).

    Returns the summed loss and the number of correct predictions. This is the
    whole data pipeline: images stay as uint8 tensors in memory and are
    flipped and normalised batch by batch.
    """
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    n, total_loss, correct = len(order), 0.0, 0
    bar = progress(range(0, n, batch_size), desc=desc, leave=False)
    for b, i in enumerate(bar):
        idx = order[i:i + batch_size]
        x, y = training_batch(train, idx, flips, shifts, device)
        with autocast(device, amp_dtype):
            logits = model(x)
            loss = loss_fn(logits, y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        total_loss += float(loss.detach()) * len(idx)
        correct += int((logits.argmax(1) == y).sum())
        seen = min(i + batch_size, n)
        bar.set_postfix(loss=f"{total_loss / seen:.3f}", acc=f"{correct / seen:.3f}")
        if after_batch is not None:
            after_batch(b)
    return total_loss, correct


def load_resume_point(path: Path, key: str, model: nn.Module, optimizer, scheduler, scaler=None) -> tuple:
    """Restore model, optimizer, scheduler (and ``scaler``, if given and saved) from the
    resume point ``path`` written for the model ``key``; returns ``(history, best,
    seconds, start_epoch)``. Raises if the file is unreadable or belongs to other settings."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("key") != key:
        raise CheckpointError("settings hash differs")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    return state["history"], state["best"], state["seconds"], state["epoch"] + 1


def training_batch(train: SplitTensors, idx: torch.Tensor, flips: torch.Tensor, shifts: torch.Tensor | None,
                   device) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``idx`` of ``train`` as the network sees them in training (flipped where
    ``flips`` says, normalised, shifted, channels-last) and their labels."""
    x = train.images[idx]
    f = flips[idx]
    x[f] = x[f].flip(-1)
    x = normalise(x, device)
    if shifts is not None:
        x = _shift(x, shifts[idx])
    return x.contiguous(memory_format=torch.channels_last), train.labels[idx].to(device)


def _shift(x: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Move each image of ``x`` by its (dy, dx), repeating the edge pixels."""
    h, w = x.shape[-2:]
    pad = int(shifts.abs().max())
    padded = nn.functional.pad(x, (pad, pad, pad, pad), mode="replicate")
    return torch.stack([padded[j, :, pad + dy:pad + dy + h, pad + dx:pad + dx + w]
                        for j, (dy, dx) in enumerate(shifts.tolist())])


def train_model(settings: Settings, data: CityData, arch: str, seed: int, train: SplitTensors | None,
                val: SplitTensors | None, device: str | torch.device = "auto", verbose: bool = True,
                _after_batch: Callable[[int, int], None] | None = None) -> TrainedModel:
    """Train one model (or load it if finished, or resume it if interrupted).

    While it trains, the model is claimed (``claim.json`` in its folder, see
    :mod:`cityviz_helpers.claims`), so that two jobs sharing one cache never train
    it twice: a model another live job is training raises
    :class:`~cityviz_helpers.claims.ModelBusy`. ``_after_batch(epoch, batch)`` is a
    test hook that may raise to simulate a kill.
    """
    folder = model_dir(settings, data, arch, seed)
    if not (folder / "model.json").exists():
        folder.mkdir(parents=True, exist_ok=True)
        with claim_model(folder, f"{arch}-s{seed}", verbose=verbose):
            return _train_model(settings, data, arch, seed, train, val, device, verbose, _after_batch)
    return _train_model(settings, data, arch, seed, train, val, device, verbose, _after_batch)


def _train_model(settings: Settings, data: CityData, arch: str, seed: int, train: SplitTensors | None,
                 val: SplitTensors | None, device: str | torch.device = "auto", verbose: bool = True,
                 _after_batch: Callable[[int, int], None] | None = None) -> TrainedModel:
    """:func:`train_model` once the model is claimed (or finished: then it is loaded)."""
    cfg, size = settings["train"], settings["dataset"]["image_size"]
    folder = model_dir(settings, data, arch, seed)
    key = folder.name.rsplit("-", 1)[1]
    if (folder / "model.json").exists():  # finished earlier: load it (train/val may be None then)
        result = load_checkpoint(folder, arch, data.cities, key, size, device=pick_device(device))
        if verbose:
            print(f"{result.name}: loaded the finished model from {folder.name} "
                  f"(val accuracy {result.meta['val_accuracy']:.3f}).")
        return result
    folder.mkdir(parents=True, exist_ok=True)
    dev = pick_device(device)
    amp_dtype = autocast_dtype(dev, cfg["amp"])
    amp = amp_dtype == torch.float16  # float16 needs loss scaling; bfloat16 does not
    width, pretrained = arch_setup(settings, arch)
    lr, max_shift = _arch_lr(settings, arch), per_arch(settings, "max_shift", arch)
    epochs = arch_epochs(settings, data, arch)
    n = len(train.images)
    batches = (n + cfg["batch_size"] - 1) // cfg["batch_size"]

    def fresh_start():
        torch.manual_seed(seed)  # the seed fixes the initial weights
        model = build_model(arch, len(data.cities), size, width, pretrained=pretrained)
        if cfg["dropout"] is not None:
            set_dropout(model, cfg["dropout"])
        model = channels_last(model.to(dev))
        optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=cfg["weight_decay"])
        return model, optimizer, make_scheduler(optimizer, cfg, lr, batches, epochs)

    model, optimizer, scheduler = fresh_start()
    per_batch = cfg["schedule"] == "onecycle"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    history = {"epoch": [], "train_loss": [], "train_accuracy": [], "val_accuracy": [], "lr": []}
    start_epoch, best, seconds = 0, {"val_accuracy": -1.0, "epoch": -1}, 0.0

    last = folder / "last.pt"
    if last.exists():
        try:
            history, best, seconds, start_epoch = load_resume_point(last, key, model, optimizer, scheduler,
                                                                    scaler if amp else None)
            if verbose:
                print(f"{arch}-s{seed}: resuming after epoch {start_epoch} of {epochs} from {last.name}.")
        except Exception as err:  # an unreadable resume point is ignored, never trusted
            if verbose:
                print(f"{arch}-s{seed}: ignoring unusable {last.name} ({type(err).__name__}); starting over.")
            model, optimizer, scheduler = fresh_start()
            history = {k: [] for k in history}
            start_epoch, best, seconds = 0, {"val_accuracy": -1.0, "epoch": -1}, 0.0

    for epoch in range(start_epoch, epochs):
        t0 = time.perf_counter()
        gen = _epoch_generator(seed, epoch)
        torch.manual_seed(int(torch.randint(0, 2 ** 62, (1,), generator=gen)))  # dropout of this epoch
        order = torch.randperm(n, generator=gen)
        flips = torch.rand(n, generator=gen) < 0.5
        shifts = torch.randint(-max_shift, max_shift + 1, (n, 2), generator=gen) if max_shift else None

        def after_batch(b, e=epoch):
            if per_batch:
                scheduler.step()
            if _after_batch is not None:
                _after_batch(e, b)

        total_loss, correct = run_epoch(model, optimizer, scaler, train, order, flips, cfg["batch_size"], dev,
                                        amp_dtype, desc=f"{arch}-s{seed} epoch {epoch + 1}/{epochs}",
                                        after_batch=after_batch, shifts=shifts)
        if not per_batch:
            scheduler.step()
        val_acc = accuracy(model, val, dev)
        seconds += time.perf_counter() - t0
        for k, v in (("epoch", epoch + 1), ("train_loss", total_loss / n), ("train_accuracy", correct / n),
                     ("val_accuracy", val_acc), ("lr", optimizer.param_groups[0]["lr"])):
            history[k].append(v)
        if val_acc > best["val_accuracy"]:
            best = {"val_accuracy": val_acc, "epoch": epoch + 1}
            _atomic_save({k: v.detach().cpu() for k, v in model.state_dict().items()}, folder / "weights.pt")
        _atomic_save({"key": key, "epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                      "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if amp else {},
                      "history": history, "best": best, "seconds": seconds}, last)

    meta = {"arch": arch, "seed": seed, "classes": list(data.cities), "image_size": size,
            "width": width, "pretrained": pretrained, "precision": precision_name(amp_dtype),
            "normalisation": {"mean": IMAGENET_MEAN, "std": IMAGENET_STD},
            "key": key, "settings": {"dataset": settings["dataset"], "train": settings["train"]},
            "best_epoch": best["epoch"], "val_accuracy": best["val_accuracy"], "train_seconds": round(seconds, 1),
            "n_params": count_params(model), "device": str(dev), "history": history}
    _atomic_json(meta, folder / "model.json")
    result = load_checkpoint(folder, arch, data.cities, key, size, device=dev)
    result.loaded = False
    if verbose:
        print(f"{arch}-s{seed}: trained {epochs} epochs in {seconds:.0f} s; best val accuracy "
              f"{best['val_accuracy']:.3f} at epoch {best['epoch']}.")
    return result


def train_all(settings: Settings, data: CityData, archs: Sequence[str] | None = None,
              seeds: Sequence[int] | None = None, device: str = "auto",
              verbose: bool = True) -> dict[str, TrainedModel]:
    """Every (architecture, seed) model of the settings, trained or loaded; keyed ``"<arch>-s<seed>"``.

    The training and validation images are loaded once and shared by all models.
    """
    cfg, size = settings["train"], settings["dataset"]["image_size"]
    archs, seeds = list(archs or cfg["archs"]), list(seeds if seeds is not None else cfg["seeds"])
    todo = [(a, s) for a in archs for s in seeds]
    pending = [(a, s) for a, s in todo if not (model_dir(settings, data, a, s) / "model.json").exists()]
    train = val = None
    if pending:  # images are only needed when something is left to train
        train = split_tensors(data, "train", size)
        val = split_tensors(data, "val", size)
        if verbose:
            print(f"{len(pending)} of {len(todo)} models to train; the others are loaded from the cache.")
            scaled = {a: arch_epochs(settings, data, a) for a in archs}
            if any(scaled[a] != per_arch(settings, "epochs", a) for a in archs):
                from .synthetic import DEFAULT_CITIES

                builtin = settings["dataset"]["n_per_city"]["train"] * len(DEFAULT_CITIES)
                print(f"This folder has {len(train.images)} training images, the built-in cities {builtin:,}: "
                      "the quick profile's epochs are scaled "
                      "to about the same number of batches: " + ", ".join(f"{a} {e}" for a, e in scaled.items())
                      + " (set train.epochs to choose them yourself).")
    return {f"{a}-s{s}": train_model(settings, data, a, s, train, val, device=device, verbose=verbose)
            for a, s in todo}


if __name__ == "__main__":  # python -m cityviz_helpers.train: see cityviz_helpers.jobs
    import sys

    from cityviz_helpers.jobs import main

    sys.exit(main())
