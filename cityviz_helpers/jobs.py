"""Training outside the notebook, at the paper's scale: ``python -m cityviz_helpers.train``.

Notebook 02 trains every (architecture, seed) model one after another on one
device. A reviewer at the paper's scale (12 models at 224 px on tens of thousands
of images) trains them as independent jobs instead, a SLURM array or several
shells, each writing into the same artifact cache the notebooks read
(``artifacts/<profile>/<dataset>/models/<arch>-s<seed>-<hash>/``, see
:mod:`cityviz_helpers.train`). Three things make that safe:

- **Atomic writes.** Every file of a model is written under a temporary name and
  renamed; ``model.json`` comes last, so a folder without it is unfinished.
- **A claim per model.** Before training, a job creates ``claim.json`` in the
  model's folder with ``O_CREAT | O_EXCL`` (only one creator can succeed, also
  on NFS v3 and later), holding its pid, host and start time, and touches it
  every :data:`HEARTBEAT_S` seconds while it trains. Another job that finds a
  live claim skips the model (the notebook raises :class:`ModelBusy`). A claim
  is *stale*, and is taken over with a message, when its process no longer runs
  on this host, or (another host) when it has had no heartbeat for
  ``stale_after`` seconds (default :data:`STALE_AFTER_S`).
- **Resume.** An interrupted job leaves ``last.pt`` (the state after its last
  finished epoch); the next job that claims the model resumes from there, with
  exactly the images, flips and shifts an uninterrupted run would have seen.

Under ``torchrun`` the same command trains each chosen model with PyTorch
DistributedDataParallel: every rank takes its contiguous share of each batch
(the single-process run's batch, split in ``world_size`` parts), the loss is
scaled so that the averaged gradient is the whole batch's mean gradient, and
rank 0 alone claims, evaluates and writes the model, which loads like any other.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from . import train as T
from .claims import (CLAIM, HEARTBEAT_S, STALE_AFTER_S, Claim, ModelBusy, claim_is_stale,  # noqa: F401
                     claim_model, read_claim)

# --------------------------------------------------------------------------
# DistributedDataParallel
# --------------------------------------------------------------------------


def ddp_epoch(ddp: nn.Module, optimizer, scaler, train, order: torch.Tensor, flips: torch.Tensor,
              batch_size: int, device: torch.device, amp_dtype, rank: int, world: int,
              after_batch=None, shifts: torch.Tensor | None = None) -> tuple[float, int]:
    """One pass of :func:`cityviz_helpers.train.run_epoch` under DDP: rank ``r`` takes the ``r``-th of
    ``world`` contiguous parts of each batch. Each rank's summed loss is scaled by ``world / batch``, so
    DDP's gradient average equals the mean gradient of the whole batch (also for a short last batch). A
    rank whose part is empty (a last batch smaller than ``world``) runs one image at weight 0, so that
    every rank joins every gradient all-reduce. Returns this rank's summed loss and correct predictions."""
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    ddp.train()
    n, total_loss, correct = len(order), 0.0, 0
    for b, i in enumerate(range(0, n, batch_size)):
        idx = order[i:i + batch_size]
        share = torch.tensor_split(idx, world)[rank]
        weight = world / len(idx)
        if len(share) == 0:
            share, weight = idx[:1], 0.0
        x, y = T.training_batch(train, share, flips, shifts, device)
        with T.autocast(device, amp_dtype):
            logits = ddp(x)
            summed = loss_fn(logits, y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(summed * weight).backward()
        scaler.step(optimizer)
        scaler.update()
        if weight:
            total_loss += float(summed.detach())
            correct += int((logits.argmax(1) == y).sum())
        if after_batch is not None:
            after_batch(b)
    return total_loss, correct


def sync_batchnorm(model: nn.Module, device: torch.device, verbose: bool = False, name: str = "") -> nn.Module:
    """BatchNorm under DDP (ResNet-18 has it; VGG-11 and the paper's plain networks do not).

    Each rank sees its own part of every batch. On GPUs the BatchNorm layers become
    ``SyncBatchNorm``, whose statistics are computed over the whole batch across the ranks, as in a
    single-process run, so the recipe does not change with the number of GPUs (its weights and
    buffers keep their names: the saved model loads into the plain network). PyTorch's
    ``SyncBatchNorm`` runs on GPUs only, so on CPUs (gloo) each rank keeps plain BatchNorm over its
    own ``batch / world_size`` images, which is said once."""
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return model
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if verbose:
        print(f"{name}: BatchNorm statistics per process on the CPU (SyncBatchNorm needs GPUs): each process "
              "normalises its own share of every batch.")
    return model


def train_model_ddp(settings, data, arch: str, seed: int, train, val, device: torch.device,
                    verbose: bool = True, stale_after: float | None = None):
    """Train one model with DistributedDataParallel (the process group is set up), or load it when
    finished. Rank 0 claims the model, evaluates it and writes every file; the others only train.
    Returns the :class:`~cityviz_helpers.train.TrainedModel` on every rank, or None when another job
    holds the claim (then every rank skips it)."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from .models import IMAGENET_MEAN, IMAGENET_STD, build_model, count_params, set_dropout

    rank, world = dist.get_rank(), dist.get_world_size()
    cfg, size = settings["train"], settings["dataset"]["image_size"]
    folder = T.model_dir(settings, data, arch, seed)
    key = folder.name.rsplit("-", 1)[1]
    name = f"{arch}-s{seed}"
    claim, status = None, ["train"]
    if rank == 0:
        if (folder / "model.json").exists():
            status = ["finished"]
        else:
            folder.mkdir(parents=True, exist_ok=True)
            try:
                claim = Claim(folder, name, stale_after or float(os.environ.get("CITYVIZ_CLAIM_STALE_S")
                                                                  or STALE_AFTER_S), verbose=verbose).acquire()
                if (folder / "model.json").exists():  # finished while we looked
                    status = ["finished"]
            except ModelBusy as err:
                status = [f"busy: {err}"]
    dist.broadcast_object_list(status, src=0)
    if status[0] == "finished":
        if claim is not None:
            claim.release()
        result = T.load_checkpoint(folder, arch, data.cities, key, size, device=device)
        if verbose:
            print(f"{name}: loaded the finished model from {folder.name}.")
        return result
    if status[0].startswith("busy"):
        if verbose:
            print(status[0][len("busy: "):])
        return None
    try:
        amp_dtype = T.autocast_dtype(device, cfg["amp"])
        amp = amp_dtype == torch.float16
        width, pretrained = T.arch_setup(settings, arch)
        lr, max_shift = T._arch_lr(settings, arch), T.per_arch(settings, "max_shift", arch)
        epochs = T.arch_epochs(settings, data, arch)
        n = len(train.images)
        batches = (n + cfg["batch_size"] - 1) // cfg["batch_size"]
        torch.manual_seed(seed)
        model = build_model(arch, len(data.cities), size, width, pretrained=pretrained)
        if cfg["dropout"] is not None:
            set_dropout(model, cfg["dropout"])
        model = T.channels_last(model.to(device))
        optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=cfg["weight_decay"])
        scheduler = T.make_scheduler(optimizer, cfg, lr, batches, epochs)
        per_batch = cfg["schedule"] == "onecycle"
        scaler = torch.amp.GradScaler("cuda", enabled=amp)
        history = {"epoch": [], "train_loss": [], "train_accuracy": [], "val_accuracy": [], "lr": []}
        start_epoch, best, seconds = 0, {"val_accuracy": -1.0, "epoch": -1}, 0.0
        last = folder / "last.pt"
        if last.exists():  # every rank reads the same resume point (rank 0 writes only from the first epoch on)
            try:
                history, best, seconds, start_epoch = T.load_resume_point(last, key, model, optimizer, scheduler,
                                                                          scaler if amp else None)
                if verbose:
                    print(f"{name}: resuming after epoch {start_epoch} of {epochs} from {last.name}.")
            except Exception as err:
                raise RuntimeError(f"{name}: {last} cannot be resumed under DDP ({type(err).__name__}: {err}); "
                                   "run once without torchrun (it starts over) or move the file away.") from None
        dist.barrier()  # every rank has read last.pt before rank 0 overwrites it
        model = sync_batchnorm(model, device, verbose and rank == 0, name)
        ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        for epoch in range(start_epoch, epochs):
            t0 = time.perf_counter()
            gen = T._epoch_generator(seed, epoch)
            # dropout: the epoch's seed, plus the rank so that the ranks' parts get their own masks
            torch.manual_seed(int(torch.randint(0, 2 ** 62, (1,), generator=gen)) + rank)
            order = torch.randperm(n, generator=gen)
            flips = torch.rand(n, generator=gen) < 0.5
            shifts = torch.randint(-max_shift, max_shift + 1, (n, 2), generator=gen) if max_shift else None
            total_loss, correct = ddp_epoch(ddp, optimizer, scaler, train, order, flips, cfg["batch_size"],
                                            device, amp_dtype, rank, world,
                                            after_batch=(lambda b: scheduler.step()) if per_batch else None,
                                            shifts=shifts)
            sums = torch.tensor([total_loss, float(correct)], dtype=torch.float64, device=device)
            dist.all_reduce(sums)
            total_loss, correct = float(sums[0]), int(sums[1])
            if not per_batch:
                scheduler.step()
            if rank == 0:
                val_acc = T.accuracy(model, val, device)
                seconds += time.perf_counter() - t0
                for k, v in (("epoch", epoch + 1), ("train_loss", total_loss / n), ("train_accuracy", correct / n),
                             ("val_accuracy", val_acc), ("lr", optimizer.param_groups[0]["lr"])):
                    history[k].append(v)
                if val_acc > best["val_accuracy"]:
                    best = {"val_accuracy": val_acc, "epoch": epoch + 1}
                    T._atomic_save({k: v.detach().cpu() for k, v in model.state_dict().items()},
                                   folder / "weights.pt")
                T._atomic_save({"key": key, "epoch": epoch, "model": model.state_dict(),
                                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                                "scaler": scaler.state_dict() if amp else {}, "history": history, "best": best,
                                "seconds": seconds}, last)
                if verbose:
                    print(f"{name} epoch {epoch + 1}/{epochs}: train loss {total_loss / n:.3f}, "
                          f"val accuracy {val_acc:.3f} ({world} processes).", flush=True)
        if rank == 0:
            meta = {"arch": arch, "seed": seed, "classes": list(data.cities), "image_size": size,
                    "width": width, "pretrained": pretrained, "precision": T.precision_name(amp_dtype),
                    "normalisation": {"mean": IMAGENET_MEAN, "std": IMAGENET_STD},
                    "key": key, "settings": {"dataset": settings["dataset"], "train": settings["train"]},
                    "best_epoch": best["epoch"], "val_accuracy": best["val_accuracy"],
                    "train_seconds": round(seconds, 1), "n_params": count_params(model),
                    "device": f"{device.type} x{world} (DistributedDataParallel, {dist.get_backend()})",
                    "history": history}
            T._atomic_json(meta, folder / "model.json")
            if verbose:
                print(f"{name}: trained {epochs} epochs on {world} processes in {seconds:.0f} s; best val "
                      f"accuracy {best['val_accuracy']:.3f} at epoch {best['epoch']}.")
    finally:
        if claim is not None:
            claim.release()
    dist.barrier()  # model.json is written before any rank loads it
    result = T.load_checkpoint(folder, arch, data.cities, key, size, device=device)
    result.loaded = False
    return result


# --------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m cityviz_helpers.train",
        description="Train (architecture, seed) models into the artifact cache the notebooks read. Jobs may "
                    "run at the same time on one shared cache: each model is claimed by one job, the others "
                    "skip it; an interrupted model resumes from its last epoch. Under torchrun, each model "
                    "trains with DistributedDataParallel on all the processes.",
        epilog="Examples: `--list`; `--arch vgg11 --seed 0`; a SLURM array over the 12 models of the full "
               "profile: `sbatch --array=0-11 --wrap 'python -m cityviz_helpers.train --profile full --data "
               "osv5m'` (each task takes the pair of its $SLURM_ARRAY_TASK_ID); one model on 4 GPUs: "
               "`torchrun --standalone --nproc_per_node 4 -m cityviz_helpers.train --profile full --arch "
               "resnet18 --seed 0`.")
    p.add_argument("--profile", help="quick or full (default: $CITYVIZ_PROFILE, else quick)")
    p.add_argument("--data", help="synthetic, osv5m, gsv-cities or a folder of city images "
                                  "(default: $CITYVIZ_DATA, else synthetic)")
    p.add_argument("--arch", action="append", help="architecture (repeatable; default: the profile's train.archs)")
    p.add_argument("--seed", action="append", type=int, help="seed (repeatable; default: the profile's train.seeds)")
    p.add_argument("--overrides", help='settings as JSON or a JSON file, e.g. \'{"train": {"epochs": 3}}\' '
                                       "(on top of $CITYVIZ_OVERRIDES)")
    p.add_argument("--index", type=int, default=None,
                   help="train only the N-th (arch, seed) pair of --list (0-based; default: "
                        "$SLURM_ARRAY_TASK_ID when set, else all pairs)")
    p.add_argument("--list", action="store_true", help="list the pairs, their index and state, and exit")
    p.add_argument("--device", default="auto", help="auto (CUDA, else MPS, else CPU), cpu, cuda, ... "
                                                    "(under torchrun: cuda:<local rank> or cpu)")
    p.add_argument("--stale-after", type=float, default=None,
                   help=f"seconds without heartbeat after which another host's claim is stale "
                        f"(default: $CITYVIZ_CLAIM_STALE_S, else {STALE_AFTER_S:.0f})")
    return p


def model_state(folder: Path) -> str:
    """``finished``, ``claimed by ...``, ``interrupted after epoch k`` or ``not started``."""
    if (folder / "model.json").exists():
        return "finished"
    claim = read_claim(folder / CLAIM)
    if claim is not None:
        stale, why = claim_is_stale(claim, folder / CLAIM)
        return f"claim (stale: {why})" if stale else f"being trained ({why})"
    if (folder / "last.pt").exists():
        try:
            epoch = torch.load(folder / "last.pt", map_location="cpu", weights_only=True)["epoch"] + 1
            return f"interrupted after epoch {epoch} (resumes)"
        except Exception:
            return "interrupted (unreadable last.pt: starts over)"
    return "not started"


def main(argv: Sequence[str] | None = None) -> int:
    from .models import ARCHITECTURES
    from .settings import _read_overrides, get_settings

    args = _parser().parse_args(argv)
    overrides = _read_overrides(args.overrides) if args.overrides else None
    settings = get_settings(args.profile, args.data, overrides=overrides)
    archs = args.arch or list(settings["train"]["archs"])
    unknown = [a for a in archs if a not in ARCHITECTURES]
    if unknown:
        print(f"error: unknown architecture {', '.join(unknown)}; choose from {', '.join(ARCHITECTURES)}.",
              file=sys.stderr)
        return 2
    seeds = args.seed if args.seed is not None else list(settings["train"]["seeds"])
    pairs = [(a, s) for a in archs for s in seeds]
    index = args.index
    if index is None and os.environ.get("SLURM_ARRAY_TASK_ID", "").strip():
        index = int(os.environ["SLURM_ARRAY_TASK_ID"])
    if index is not None and not args.list and not 0 <= index < len(pairs):
        print(f"error: index {index} but there are {len(pairs)} (arch, seed) pairs, 0 to {len(pairs) - 1} "
              f"(a SLURM array over them: --array=0-{len(pairs) - 1}; `--list` shows them).", file=sys.stderr)
        return 2

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        return _main_ddp(args, settings, pairs if index is None else [pairs[index]], rank, world)

    from . import data as cvdata

    data = cvdata.load_dataset(settings)
    if args.list:
        print(f"{len(pairs)} (arch, seed) pairs of profile {settings.profile} on {settings.data}, cache "
              f"{settings.artifacts_dir / 'models'}:")
        for i, (a, s) in enumerate(pairs):
            folder = T.model_dir(settings, data, a, s)
            print(f"{i:3d}  {a}-s{s}  {model_state(folder)}  {folder.name}")
        return 0
    chosen = pairs if index is None else [pairs[index]]
    if args.stale_after is not None:
        os.environ["CITYVIZ_CLAIM_STALE_S"] = str(args.stale_after)
    size = settings["dataset"]["image_size"]
    pending = [(a, s) for a, s in chosen if not (T.model_dir(settings, data, a, s) / "model.json").exists()]
    train = val = None
    if pending:
        train = T.split_tensors(data, "train", size)
        val = T.split_tensors(data, "val", size)
    outcome = {}
    for a, s in chosen:
        try:
            result = T.train_model(settings, data, a, s, train, val, device=args.device)
            outcome[f"{a}-s{s}"] = "loaded (finished earlier)" if result.loaded else "trained here"
        except ModelBusy as err:
            print(err)
            outcome[f"{a}-s{s}"] = "skipped (another job trains it)"
    print("summary: " + "; ".join(f"{k}: {v}" for k, v in outcome.items()))
    return 0


def _main_ddp(args, settings, pairs, rank: int, world: int) -> int:
    import torch.distributed as dist

    from . import data as cvdata

    if args.list:
        print("error: --list needs no torchrun; run it as a plain command.", file=sys.stderr)
        return 2
    local = int(os.environ.get("LOCAL_RANK", rank))
    if args.device in ("auto", "cuda") and torch.cuda.is_available():
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
        backend = "nccl"
    elif args.device in ("auto", "cpu"):
        device, backend = torch.device("cpu"), "gloo"
    else:
        print(f"error: --device {args.device} under torchrun; use auto, cuda or cpu.", file=sys.stderr)
        return 2
    dist.init_process_group(backend)
    verbose = rank == 0
    try:
        if rank == 0:  # one process draws (or scans) the dataset; the others then read the cache
            data = cvdata.load_dataset(settings, verbose=verbose)
        dist.barrier()
        if rank != 0:
            data = cvdata.load_dataset(settings, verbose=False)
        size = settings["dataset"]["image_size"]
        train = T.split_tensors(data, "train", size, show_progress=verbose)
        val = T.split_tensors(data, "val", size, show_progress=False)
        outcome = {}
        for a, s in pairs:
            result = train_model_ddp(settings, data, a, s, train, val, device, verbose=verbose,
                                     stale_after=args.stale_after)
            outcome[f"{a}-s{s}"] = ("skipped (another job trains it)" if result is None else
                                    "loaded (finished earlier)" if result.loaded else "trained here")
        if verbose:
            print(f"summary ({world} processes): " + "; ".join(f"{k}: {v}" for k, v in outcome.items()))
    finally:
        dist.destroy_process_group()
    return 0
