"""The paper's four city classifiers and their Grad-CAM target layers (notebook 02).

:data:`ARCHITECTURES` is the one registry: each entry names a builder and the
layer whose output Grad-CAM explains (the last convolutional block's output), so
later notebooks never hard-code layers.

Each builder takes a ``width``: ``"paper"`` builds the network exactly as in the
paper (VGG-11 and ResNet-18 from torchvision, "simple" and "simpler" as
published); ``"narrow"`` keeps depth and layer types but uses fewer channels
and a smaller fully connected head, so that the quick profile trains on a
laptop CPU. The flattened size before the first fully connected layer is
computed from a dummy forward pass, so every builder works for any input size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torchvision.models import resnet as tv_resnet
from torchvision.models import vgg as tv_vgg

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Architecture:
    name: str
    build: Callable[..., nn.Module]  # (n_classes, image_size, width, pretrained) -> model
    target_layer: Callable[[nn.Module], nn.Module]  # the Grad-CAM layer of a built model (the paper's)
    description: str
    #: the last block of the stage before: a grid twice as fine (one down-sampling less)
    previous_layer: Callable[[nn.Module], nn.Module] | None = None
    #: one stage earlier still: four times as fine as the paper's layer
    earlier_layer: Callable[[nn.Module], nn.Module] | None = None


def _flat_size(features: nn.Module, image_size: int) -> int:
    """Number of features after ``features`` for one image of ``image_size`` pixels."""
    try:
        with torch.no_grad():
            return int(features(torch.zeros(1, 3, image_size, image_size)).numel())
    except RuntimeError as err:
        raise ValueError(f"Input size {image_size} px is too small for this network's kernels and "
                         f"poolings ({str(err)[:120]}); use a larger image_size.") from None


def _fc_head(in_features: int, hidden: tuple[int, ...], n_classes: int, dropout: float = 0.5) -> nn.Sequential:
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(in_features, h), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        in_features = h
    layers.append(nn.Linear(in_features, n_classes))
    return nn.Sequential(*layers)


class ConvNet(nn.Module):
    """A plain conv/ReLU/max-pool stack and a fully connected head ("simple", "simpler")."""

    def __init__(self, convs: list[tuple[int, int]], hidden: tuple[int, ...], n_classes: int, image_size: int):
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for out, kernel in convs:
            layers += [nn.Conv2d(channels, out, kernel), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            channels = out
        self.features = nn.Sequential(*layers)
        flat = _flat_size(self.features, image_size)
        self.classifier = _fc_head(flat, hidden, n_classes)
        for m in self.modules():  # He initialisation, as torchvision does for VGG: without batch
            if isinstance(m, nn.Conv2d):  # norm, PyTorch's default leaves these nets stuck at chance
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


def _check_no_weights(name: str, pretrained: bool) -> None:
    if pretrained:
        raise ValueError(f"The paper trains {name!r} from scratch: there are no pretrained weights for it.")


def build_simple(n_classes: int, image_size: int, width: str = "paper", pretrained: bool = False) -> nn.Module:
    _check_no_weights("simple", pretrained)
    if width == "paper":
        return ConvNet([(20, 5), (64, 7), (96, 5), (128, 7)], (4096, 100), n_classes, image_size)
    return ConvNet([(10, 5), (32, 7), (48, 5), (64, 7)], (512, 100), n_classes, image_size)  # half the channels


def build_simpler(n_classes: int, image_size: int, width: str = "paper", pretrained: bool = False) -> nn.Module:
    _check_no_weights("simpler", pretrained)
    if width == "paper":
        return ConvNet([(20, 9), (64, 9), (96, 9)], (4096, 100), n_classes, image_size)
    return ConvNet([(10, 9), (32, 9), (48, 9)], (512, 100), n_classes, image_size)  # half the channels


def _imagenet_weights_file(arch: str):
    """Where torchvision keeps ``arch``'s ImageNet weights in the local torch cache."""
    from pathlib import Path

    enum = {"resnet18": tv_resnet.ResNet18_Weights, "vgg11": tv_vgg.VGG11_Weights}[arch].IMAGENET1K_V1
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(enum.url).name


def missing_imagenet_weights_message(archs) -> str | None:
    """None when every architecture in ``archs`` (those that start from ImageNet
    weights, e.g. ``train.pretrained`` on real images) finds its weights in the
    local torch cache; else what is missing and the two ways out. Notebook 02
    prints it before training, so an offline run stops with it rather than
    failing after the images are loaded."""
    missing = [(a, _imagenet_weights_file(a)) for a in archs if a in ("resnet18", "vgg11")
               and not _imagenet_weights_file(a).exists()]
    if not missing:
        return None
    what = ", ".join(f"{a} ({path.name})" for a, path in missing)
    return (f"ImageNet weights for {what} are not in the local torch cache ({missing[0][1].parent}; TORCH_HOME "
            "moves it). On real images these architectures start from them, as in the paper. Two ways out:\n"
            "  1. fetch them once (needs internet): ./data_download.sh --weights   then rerun;\n"
            "  2. train every architecture from scratch, offline: set train.pretrained to an empty list, e.g. "
            "CITYVIZ_OVERRIDES='{\"train\": {\"pretrained\": []}}' make tutorial, or "
            "cv.get_settings(PROFILE, DATA, overrides={\"train\": {\"pretrained\": []}}) in the notebooks "
            "(ResNet-18 then trains at the profile's width, like the other three).")


class MissingWeightsError(FileNotFoundError):
    """ImageNet weights that a setting asks for are not on this machine; the message says what to do."""


def check_imagenet_weights(archs) -> None:
    """Raise :class:`MissingWeightsError` with :func:`missing_imagenet_weights_message` when weights are missing."""
    message = missing_imagenet_weights_message(archs)
    if message:
        raise MissingWeightsError(message)


def _load_torchvision_weights(model: nn.Module, arch: str) -> None:
    """Load ImageNet weights from the local torch cache only; never download here."""
    check_imagenet_weights([arch])
    state = torch.load(_imagenet_weights_file(arch), map_location="cpu", weights_only=True)
    model.load_state_dict(state)


def build_vgg11(n_classes: int, image_size: int, width: str = "paper", pretrained: bool = False) -> nn.Module:
    if width == "paper":
        model = tv_vgg.vgg11(weights=None)
        if pretrained:
            _load_torchvision_weights(model, "vgg11")
        model.classifier[-1] = nn.Linear(model.classifier[-1].in_features, n_classes)
        return model
    # narrow: VGG-11's 8 convolutions with a quarter of the channels, a 256-wide head
    cfg = [c if c == "M" else c // 4 for c in tv_vgg.cfgs["A"]]
    model = tv_vgg.VGG(tv_vgg.make_layers(cfg), num_classes=n_classes, init_weights=True)
    model.avgpool = nn.Identity()
    model.classifier = _fc_head(_flat_size(model.features, image_size), (256, 256), n_classes)
    _check_no_weights("vgg11 (narrow)", pretrained)
    return model


def build_resnet18(n_classes: int, image_size: int, width: str = "paper", pretrained: bool = False) -> nn.Module:
    model = tv_resnet.resnet18(weights=None)
    if pretrained:
        if width != "paper":
            raise ValueError("ImageNet weights exist only for the paper-width ResNet-18 (width='paper').")
        _load_torchvision_weights(model, "resnet18")
    if width != "paper":
        # narrow: the same 4 stages of 2 basic blocks, a quarter of the channels
        w = (16, 32, 64, 128)
        model.inplanes = w[0]
        model.conv1 = nn.Conv2d(3, w[0], 7, 2, 3, bias=False)
        model.bn1 = nn.BatchNorm2d(w[0])
        model.layer1 = model._make_layer(tv_resnet.BasicBlock, w[0], 2)
        model.layer2 = model._make_layer(tv_resnet.BasicBlock, w[1], 2, stride=2)
        model.layer3 = model._make_layer(tv_resnet.BasicBlock, w[2], 2, stride=2)
        model.layer4 = model._make_layer(tv_resnet.BasicBlock, w[3], 2, stride=2)
        for m in model.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    model.fc = nn.Linear(model.layer4[-1].conv2.out_channels, n_classes)
    return model


ARCHITECTURES: dict[str, Architecture] = {
    "vgg11": Architecture("vgg11", build_vgg11, lambda m: m.features[-2],
                          "VGG-11: 8 conv layers (3x3) in 5 stages, 3 fully connected layers",
                          lambda m: _before_last_pool(m.features, 2), lambda m: _before_last_pool(m.features, 3)),
    "resnet18": Architecture("resnet18", build_resnet18, lambda m: m.layer4,
                             "ResNet-18: 4 stages of 2 residual blocks with batch norm, global pooling, 1 fc",
                             lambda m: m.layer3, lambda m: m.layer2),
    "simple": Architecture("simple", build_simple, lambda m: m.features[-2],
                           "the paper's 'simple' net: 4 conv layers (5, 7, 5, 7), 3 fully connected layers",
                           lambda m: _before_last_pool(m.features, 2), lambda m: _before_last_pool(m.features, 3)),
    "simpler": Architecture("simpler", build_simpler, lambda m: m.features[-2],
                            "the paper's 'simpler' net: 3 conv layers (9x9), 3 fully connected layers",
                            lambda m: _before_last_pool(m.features, 2), lambda m: _before_last_pool(m.features, 3)),
}

#: Names of the layers a CAM can explain: the paper's last convolutional block, or the block
#: before the last down-sampling step in front of it (a grid twice as fine, less abstract).
CAM_LAYERS = ("last", "previous", "earlier")


def _before_last_pool(features: nn.Sequential, k: int) -> nn.Module:
    """The layer just before the ``k``-th max-pooling counted from the end of ``features``."""
    pools = [i for i, m in enumerate(features) if isinstance(m, nn.MaxPool2d)]
    return features[pools[-k] - 1]


def get_architecture(name: str) -> Architecture:
    if name not in ARCHITECTURES:
        raise KeyError(f"Unknown architecture {name!r}; the registry has {', '.join(ARCHITECTURES)}.")
    return ARCHITECTURES[name]


def build_model(arch: str, n_classes: int, image_size: int, width: str = "paper",
                pretrained: bool = False) -> nn.Module:
    if width not in ("paper", "narrow"):
        raise ValueError(f"width must be 'paper' or 'narrow', not {width!r}")
    return get_architecture(arch).build(n_classes, image_size, width=width, pretrained=pretrained)


def set_dropout(model: nn.Module, p: float) -> nn.Module:
    """Set the drop probability of every dropout layer of ``model`` (the paper: 0.5)."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"A dropout probability must be in [0, 1), not {p}.")
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = p
    return model


def target_layer(model: nn.Module, arch: str, layer: str = "last") -> nn.Module:
    """The layer whose output a CAM explains: ``"last"``, the last convolutional block's
    output (the paper's choice), or ``"previous"``, the block before the last
    down-sampling in front of it (twice the grid resolution)."""
    spec = get_architecture(arch)
    if layer == "last":
        return spec.target_layer(model)
    if layer == "previous" and spec.previous_layer is not None:
        return spec.previous_layer(model)
    if layer == "earlier" and spec.earlier_layer is not None:
        return spec.earlier_layer(model)
    raise ValueError(f"Unknown CAM layer {layer!r} for {arch}; choose one of {', '.join(CAM_LAYERS)}.")


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def receptive_field(model: nn.Module, arch: str) -> int:
    """Theoretical receptive field (pixels) of one unit of the target layer.

    Walks the convolutions and poolings on the main path up to the target
    layer (residual 1x1 shortcuts do not widen it).
    """
    last = list(target_layer(model, arch).modules())[-1]
    rf, jump = 1, 1
    for name, m in model.named_modules():
        if "downsample" in name:
            continue
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d)):
            k = m.kernel_size if isinstance(m.kernel_size, int) else m.kernel_size[0]
            s = m.stride if isinstance(m.stride, int) else m.stride[0]
            d = m.dilation if isinstance(m.dilation, int) else m.dilation[0]
            rf += (k - 1) * d * jump
            jump *= s
        if m is last:
            break
    return rf
