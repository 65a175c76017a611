"""Where a training step of the built-in cities' segmenter goes: network against loss.

    python benchmarks/bench_segmenter_step.py [--profile quick] [--classes 17] [--steps 10]

On random images of the profile's size, in the precision training uses, with
the profile's segmentation recipe (untrained: the speed does not depend on its
weights): seconds per training step (one batch: forward, loss, backward, Adam)
with the loss :func:`cityviz_helpers.segmentation.train_synthetic_segmenter`
uses (class-weighted cross-entropy plus smp's Dice loss) and with a trivial
loss (the mean of the logits), so the difference is the loss's share; then each
of the two losses alone (forward and backward on fixed logits), on logits in
the channels-last layout the model returns and on a contiguous copy. The
built-in cities' label maps have 17 classes.
"""

import argparse
import time

import torch
import torch.nn as nn

from cityviz_helpers import get_settings
from cityviz_helpers import segmentation as seg
from cityviz_helpers import train


def per_call(fn, steps: int) -> float:
    for _ in range(2):
        fn()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - start) / steps


def main():
    import segmentation_models_pytorch as smp

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default=None)
    parser.add_argument("--classes", type=int, default=17)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    s = get_settings(args.profile)
    cfg, size, c = s["segmentation"], s["dataset"]["image_size"], args.classes
    dev = train.pick_device()
    dtype = train.autocast_dtype(dev)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(cfg["batch_size"], 3, size, size, generator=gen).to(dev)
    x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, c, (cfg["batch_size"], size, size), generator=gen).to(dev)
    torch.manual_seed(0)
    model = train.channels_last(seg.build_smp(cfg, c).to(dev))
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    cross_entropy = nn.CrossEntropyLoss(weight=torch.rand(c, generator=gen).to(dev) + 0.5, ignore_index=-100)
    dice = smp.losses.DiceLoss("multiclass", ignore_index=-100)

    def step(loss_of):
        with train.autocast(dev, dtype):
            logits = model(x)
        loss = loss_of(logits.float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    full = per_call(lambda: step(lambda z: cross_entropy(z, y) + cfg["dice_weight"] * dice(z, y)), args.steps)
    bare = per_call(lambda: step(lambda z: z.mean()), args.steps)
    print(f"profile {s.profile}: {cfg['architecture']} {cfg['encoder']} depth {cfg['encoder_depth']}, "
          f"{size} px, batch {cfg['batch_size']}, {c} classes, device {dev}, {torch.get_num_threads()} threads, "
          f"precision {train.precision_name(dtype)}")
    print(f"training step with the segmenter's loss: {full:.3f} s; with a trivial loss: {bare:.3f} s "
          f"(the loss: {(full - bare) / full:.0%} of the step)")
    with torch.no_grad(), train.autocast(dev, dtype):
        logits = model(x).float()
    for layout, z in (("channels-last", logits), ("contiguous", logits.contiguous())):
        z = z.detach().requires_grad_()
        ce_s = per_call(lambda: cross_entropy(z, y).backward(), args.steps)
        dice_s = per_call(lambda: dice(z, y).backward(), args.steps)
        print(f"  logits {layout:13s}: cross-entropy {ce_s:.3f} s, Dice {dice_s:.3f} s (forward and backward)")


if __name__ == "__main__":
    main()
