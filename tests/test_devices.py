"""Device mistakes, caught without a GPU.

A GPU run fails where a tensor meets a model on another device, or where NumPy is
asked for a tensor that lives on the GPU. No GPU is needed to see those mistakes:
PyTorch's ``meta`` device stands in for it. A model moved to ``meta`` computes shapes
but no values, and it refuses exactly what a CUDA device refuses:

- a CPU tensor fed to it: "Tensor on device meta is not on the expected device cpu!"
  (CUDA: "Expected all tensors to be on the same device");
- ``.numpy()`` on one of its outputs: "can't convert meta device type tensor to numpy.
  Use Tensor.cpu() ..." (CUDA says the same with "cuda").

Code that does the right thing (inputs moved to the model's device, results copied to
the CPU before NumPy) gets further: it stops at the first place that needs a *value*,
the copy to the CPU ("Cannot copy out of meta tensor") or a Python number
(``.item()``, ``if tensor:``, ``f"{tensor:.3f}"``). Those two are the only endings these tests accept.

What this catches: every helper that feeds images to a model or turns its outputs
into arrays, and the notebook cells that do so by hand (notebook 03), up to their
first value; plus, by reading the code, every notebook cell (a rule list below).
What it cannot catch: a mistake after a cell's first value is read, float16
numerics and loss scaling, CUDA-only kernels, nondeterminism, and speed. Those need
the GPU run of ``benchmarks/bench_gpu.py``.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from cityviz_helpers import clustering, gradcam, models, segmentation, train

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]*_*.ipynb"))
#: How code that respected the device stops on ``meta``: at the first value it needs.
NEEDS_A_VALUE = ("Cannot copy out of meta tensor", "cannot be called on meta tensors",
                 "unsupported format string passed to Tensor.__format__")  # f"{scalar:.3f}" reads the value


def reaches_a_value(run) -> str:
    """Run ``run()``; return how it ended, or fail when it made a device mistake."""
    try:
        run()
    except (NotImplementedError, RuntimeError, TypeError) as err:
        text = str(err)
        if any(ok in text for ok in NEEDS_A_VALUE):
            return "stopped at its first value"
        pytest.fail(f"device mistake: {type(err).__name__}: {text[:300]}")
    return "finished"


@pytest.fixture(scope="module")
def images():
    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (4, 3, 96, 96), dtype=torch.uint8, generator=gen)


def on_meta(arch: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return models.build_model(arch, 3, 96, "narrow").to("meta").eval()


def test_the_stand_in_device_fails_the_mistakes_it_is_meant_to_catch(images):
    """The check can fail: a CPU input, and NumPy on a device tensor, are both reported."""
    m = on_meta("simple")
    with pytest.raises(pytest.fail.Exception, match="device mistake"):
        reaches_a_value(lambda: m(train.normalise(images, "cpu")))
    with pytest.raises(pytest.fail.Exception, match="device mistake"):
        reaches_a_value(lambda: m(train.model_input(m, images)).detach().numpy())
    assert reaches_a_value(lambda: train.to_numpy(m(train.model_input(m, images)))) == "stopped at its first value"


@pytest.mark.parametrize("arch", ["vgg11", "resnet18", "simple", "simpler"])
def test_helpers_put_inputs_on_the_models_device(arch, images):
    m = on_meta(arch)
    layer = models.target_layer(m, arch, "last")
    assert train.device_of(m) == torch.device("meta")
    reaches_a_value(lambda: train.predict(m, images))
    reaches_a_value(lambda: gradcam.gradcam_by_hand(m, layer, train.model_input(m, images[:1]), 0))
    reaches_a_value(lambda: gradcam.cam_maps(m, arch, images, [0, 1, 2, 0], show_progress=False))
    reaches_a_value(lambda: clustering.layer_activations(m, layer, images))


def test_the_segmenter_puts_inputs_on_its_device(images):
    import segmentation_models_pytorch as smp

    net = smp.Unet("resnet18", encoder_weights=None, encoder_depth=3, decoder_channels=[16, 8, 4], classes=3)
    seg = segmentation.SmpSegmenter(net.to("meta").eval(), [0, 1, 2], name="meta")
    reaches_a_value(lambda: seg(images))


def test_to_numpy_takes_any_device_and_dtype():
    x = torch.arange(6, dtype=torch.float32).reshape(2, 3).requires_grad_()
    assert train.to_numpy(x * 2).tolist() == [[0, 2, 4], [6, 8, 10]]
    assert train.to_numpy(x.to(torch.bfloat16)).dtype.name == "float32"  # NumPy has no bfloat16
    assert train.device_of(torch.nn.ReLU()) == torch.device("cpu")  # no parameters: the CPU


# --------------------------------------------------------------------------
# Notebook 03's hand-written Grad-CAM cells, run on the stand-in device
# --------------------------------------------------------------------------


def _cells(path: Path) -> list[str]:
    nb = json.loads(path.read_text())
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]


def _cell(cells: list[str], marker: str) -> str:
    found = [c for c in cells if marker in c]
    assert len(found) == 1, f"{len(found)} cells of notebooks 03 and 03b contain {marker!r}"
    return found[0]


def test_notebook_03_hand_written_cells_respect_the_device(images, capsys):
    cells = _cells(ROOT / "notebooks" / "03_gradcam_masks.ipynb") + \
        _cells(ROOT / "notebooks" / "03b_deep_dive_maps.ipynb")  # the grid table lives in the deep dive
    m = on_meta("resnet18")
    demo = SimpleNamespace(model=m, meta={"arch": "resnet18"}, name="resnet18-s0")
    ns = {"torch": torch, "np": __import__("numpy"), "pd": pd, "train": train, "models": models,
          "gradcam": gradcam, "demo": demo, "demo_layer": models.target_layer(m, "resnet18"),
          "test": SimpleNamespace(images=images, labels=torch.tensor([0, 1, 2, 0])),
          "data": SimpleNamespace(cities=["A", "B", "C"]), "size": 96,
          "archs": ["resnet18"], "first": {"resnet18": "resnet18-s0"}, "trained": {"resnet18-s0": demo},
          "rescale": lambda t: (t - t.min()) / (t.max() - t.min() + 1e-7)}
    ended = {}
    for marker in ("def keep(module, inputs, output)",  # section 1: A, dA and L by hand
                   "by_hand = ",  # the upsampled map against the package's
                   "for layer in models.CAM_LAYERS",  # each layer's grid, measured with a blank image
                   "def signed_cam"):  # exercise 2's solution
            ended[marker] = reaches_a_value(lambda: exec(_cell(cells, marker), ns))
    assert ended["for layer in models.CAM_LAYERS"] == "finished"  # shapes only: it runs to the end on meta
    assert {k: v for k, v in ended.items() if v != "finished"}, "no cell needed a value: nothing was checked"


# --------------------------------------------------------------------------
# Every notebook cell, read: rules that make a cell device-correct
# --------------------------------------------------------------------------

FACTORIES = {"zeros", "ones", "rand", "randn", "empty", "full", "arange", "randint", "linspace", "tensor"}


def device_rule_breaks(source: str) -> list[str]:
    """What in a cell's code would fail on a GPU:
    1. ``.numpy()``: a tensor may live on the GPU; ``train.to_numpy`` copies it to the CPU first;
    2. a device named in the code (``"cpu"``, ``"cuda"``, ``"mps"``) as a call's argument: the model's
       device is chosen at run time (``train.model_input``, ``train.device_of``);
    3. a new tensor built inside a model call without ``device=``: it is made on the CPU."""
    code = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))
    found = []
    for node in ast.walk(ast.parse(code)):
        if not isinstance(node, ast.Call):
            continue
        if isinstance(node.func, ast.Attribute) and node.func.attr == "numpy" and not node.args:
            found.append(f"line {node.lineno}: .numpy() (use train.to_numpy)")
        for arg in [*node.args, *(k.value for k in node.keywords)]:
            if isinstance(arg, ast.Constant) and arg.value in ("cpu", "cuda", "mps"):
                found.append(f"line {node.lineno}: device {arg.value!r} named in the code")
        callee = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        if callee == "model" or callee == "m" or callee.endswith("_model"):
            for arg in node.args:
                if isinstance(arg, ast.Call) and isinstance(arg.func, ast.Attribute) and \
                        arg.func.attr in FACTORIES and not any(k.arg == "device" for k in arg.keywords):
                    found.append(f"line {node.lineno}: torch.{arg.func.attr}(...) fed to a model without device=")
    return found


def test_the_rules_catch_what_notebook_03_did_before():
    before = ('x = train.normalise(test.images[i:i + 1], "cpu")\nby_hand = rescale(big).numpy()\n'
              "m(torch.zeros(1, 3, size, size))\n")
    assert len(device_rule_breaks(before)) == 3
    after = ("x = train.model_input(demo.model, test.images[i:i + 1])\nby_hand = train.to_numpy(rescale(big))\n"
             "m(torch.zeros(1, 3, size, size, device=train.device_of(m)))\n")
    assert device_rule_breaks(after) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_every_notebook_cell_keeps_the_device_rules(path):
    broken = {i: b for i, cell in enumerate(_cells(path)) if (b := device_rule_breaks(cell))}
    assert not broken, f"{path.name}: code cells breaking a device rule: {broken}"
