"""Training speed per architecture: the cityviz pipeline versus a bare PyTorch loop.

    python benchmarks/bench_training.py [--profile quick] [--batches 12]

For each architecture of the profile, on random uint8 images of the profile's
size: images per second through :func:`cityviz_helpers.train.run_epoch` (uint8
tensors in memory, per-batch flips and normalisation: the whole data pipeline),
and through a bare loop over pre-normalised float tensors (forward, backward,
step, nothing else, in the same precision). The difference is the pipeline's
overhead; target under 20 %. Both use the precision training uses (bfloat16 on
a CPU with AMX, float16 on CUDA; ``--fp32`` forces float32 to compare). Also
prints the process's peak memory.
"""

import argparse
import resource
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
    args = parser.parse_args()
    s = get_settings(args.profile)
    cfg, size = s["train"], s["dataset"]["image_size"]
    bs, n = cfg["batch_size"], cfg["batch_size"] * args.batches
    dev = pick_device()
    dtype = None if args.fp32 else autocast_dtype(dev, cfg["amp"])
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, 4, (n,), generator=gen)
    data = SplitTensors(images, labels, [""] * n)
    floats = normalise(images, dev).contiguous(memory_format=torch.channels_last)
    print(f"profile {s.profile}: {size} px, batch {bs}, {n} images per measurement, device {dev}, "
          f"{torch.get_num_threads()} threads, "
          f"precision {precision_name(dtype)}")
    print(f"{'architecture':12s} {'pipeline img/s':>15s} {'bare loop img/s':>16s} {'overhead':>9s}")
    for arch in cfg["archs"]:
        rates = {}
        for mode in ("pipeline", "bare"):
            torch.manual_seed(0)
            model = channels_last(build_model(arch, 4, size, cfg["width"]).to(dev))
            opt = torch.optim.Adam(model.parameters(), lr=per_arch(s, "lr", arch))
            scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
            order, flips = torch.randperm(n, generator=gen), torch.rand(n, generator=gen) < 0.5
            run_epoch(model, opt, scaler, SplitTensors(images[:bs], labels[:bs], []), order[:bs] % bs,
                      flips[:bs], bs, dev, dtype, desc="warm-up", after_batch=None)
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
            rates[mode] = n / (time.perf_counter() - start)
        overhead = rates["bare"] / rates["pipeline"] - 1
        print(f"{arch:12s} {rates['pipeline']:15.1f} {rates['bare']:16.1f} {overhead:8.1%}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory of this process: {peak:.0f} MB")


if __name__ == "__main__":
    main()
