"""Training speed per architecture: the cityviz pipeline versus a bare PyTorch loop.

    python benchmarks/bench_training.py [--profile quick] [--batches 12] [--arch A] [--side-by-side K]

For each architecture of the profile, on random uint8 images of the profile's
size: images per second through :func:`cityviz_helpers.train.run_epoch` (uint8
tensors in memory, per-batch flips and normalisation: the whole data pipeline),
and through a bare loop over pre-normalised float tensors (forward, backward,
step, nothing else, in the same precision). The difference is the pipeline's
overhead; target under 20 %. Both use the precision training uses (bfloat16 on
a CPU with AMX, float16 on CUDA; ``--fp32`` forces float32 to compare). Also
prints the process's peak memory.

``--side-by-side K`` then also starts K copies of this script at once for each
architecture, each with one thread, and prints their summed images/s next to
the one process above: whether training K models side by side (e.g. with
``python -m cityviz_helpers.train`` in K shells, each with
``OMP_NUM_THREADS=1``) would beat one model at a time on all threads. The
copies warm up, then wait for a common start time, so that their timed parts
overlap.
"""

import argparse
import resource
import subprocess
import sys
import time

import torch

from cityviz_helpers import get_settings
from cityviz_helpers.models import build_model
from cityviz_helpers.train import (SplitTensors, autocast, autocast_dtype, channels_last, normalise, per_arch,
                                   pick_device, precision_name, run_epoch)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--profile", default=None)
    parser.add_argument("--batches", type=int, default=12)
    parser.add_argument("--fp32", action="store_true", help="train in float32 even where mixed precision is used")
    parser.add_argument("--arch", action="append", help="only this architecture (repeatable)")
    parser.add_argument("--threads", type=int, help="torch threads (default: PyTorch's, one per core)")
    parser.add_argument("--side-by-side", type=int, default=0, metavar="K",
                        help="also time K one-thread copies running at once, per architecture")
    parser.add_argument("--start-at", type=float, help=argparse.SUPPRESS)  # a copy: time from then, print the rate
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    s = get_settings(args.profile)
    cfg, size = s["train"], s["dataset"]["image_size"]
    bs, n = cfg["batch_size"], cfg["batch_size"] * args.batches
    dev = pick_device()
    dtype = None if args.fp32 else autocast_dtype(dev, cfg["amp"])
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, 4, (n,), generator=gen)
    data = SplitTensors(images, labels, [""] * n)
    archs = args.arch or cfg["archs"]
    if args.start_at is not None:  # one of the side-by-side copies
        print(_rate(archs[0], s, data, gen, dev, dtype, "pipeline", start_at=args.start_at))
        return
    floats = normalise(images, dev).contiguous(memory_format=torch.channels_last)
    print(f"profile {s.profile}: {size} px, batch {bs}, {n} images per measurement, device {dev}, "
          f"{torch.get_num_threads()} threads, "
          f"precision {precision_name(dtype)}")
    print(f"{'architecture':12s} {'pipeline img/s':>15s} {'bare loop img/s':>16s} {'overhead':>9s}")
    single = {}
    for arch in archs:
        rates = {mode: _rate(arch, s, data, gen, dev, dtype, mode, floats) for mode in ("pipeline", "bare")}
        overhead = rates["bare"] / rates["pipeline"] - 1
        single[arch] = rates["pipeline"]
        print(f"{arch:12s} {rates['pipeline']:15.1f} {rates['bare']:16.1f} {overhead:8.1%}")
    if args.side_by_side:
        k = args.side_by_side
        print(f"\n{k} one-thread copies at once against this one process ({torch.get_num_threads()} threads), "
              "pipeline img/s:")
        print(f"{'architecture':12s} {'one process':>12s} {'copies, summed':>15s} {'gain':>7s}")
        for arch in archs:
            cmd = [sys.executable, __file__, "--arch", arch, "--threads", "1", "--batches", str(args.batches),
                   "--start-at", str(time.time() + 20)]
            cmd += ["--profile", args.profile] if args.profile else []
            cmd += ["--fp32"] if args.fp32 else []
            procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(k)]
            total = sum(float(p.communicate()[0].split()[-1]) for p in procs)
            print(f"{arch:12s} {single[arch]:12.1f} {total:15.1f} {total / single[arch] - 1:6.1%}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory of this process: {peak:.0f} MB")


def _rate(arch, s, data, gen, dev, dtype, mode, floats=None, start_at=None) -> float:
    """Images/s of one timed pass over ``data`` for a fresh, warmed-up ``arch``: through
    run_epoch (``mode`` "pipeline") or a bare loop over ``floats`` (``"bare"``), timed from
    ``start_at`` (a time.time() value) when given, as the side-by-side copies do."""
    cfg, size, bs = s["train"], s["dataset"]["image_size"], s["train"]["batch_size"]
    images, labels = data.images, data.labels
    n = len(images)
    torch.manual_seed(0)
    model = channels_last(build_model(arch, 4, size, cfg["width"]).to(dev))
    opt = torch.optim.Adam(model.parameters(), lr=per_arch(s, "lr", arch))
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    order, flips = torch.randperm(n, generator=gen), torch.rand(n, generator=gen) < 0.5
    run_epoch(model, opt, scaler, SplitTensors(images[:bs], labels[:bs], []), order[:bs] % bs,
              flips[:bs], bs, dev, dtype, desc="warm-up", after_batch=None)
    if start_at is not None:
        time.sleep(max(0.0, start_at - time.time()))
    start = time.perf_counter()
    if mode == "pipeline":
        run_epoch(model, opt, scaler, data, order, flips, bs, dev, dtype, desc=arch)
    else:
        model.train()
        for i in range(0, n, bs):
            with autocast(dev, dtype):
                loss = torch.nn.functional.cross_entropy(model(floats[i:i + bs]), labels[i:i + bs].to(dev))
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - start)


if __name__ == "__main__":
    main()
