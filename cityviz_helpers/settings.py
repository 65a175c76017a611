"""Profiles, settings and the settings hash (explained in notebook 01).

One place defines every knob of the series. A *profile* is a named set of
settings: ``quick`` for a laptop CPU, CI and a course lab; ``full`` for the
paper's scale on a GPU. The profile is chosen by, in this order:

1. the ``profile`` argument (the parameters cell at the top of each notebook),
2. the environment variable ``CITYVIZ_PROFILE``,
3. the default, ``quick``.

The data world is chosen the same way, by the ``data`` argument or
``CITYVIZ_DATA``: ``synthetic`` (the built-in cities, the default), ``osv5m``
or ``gsv-cities`` (the trees ``data_download.sh`` writes under ``data/``), or
the path of any ImageFolder tree of city images.

Single settings can be changed without editing this file: the ``overrides``
argument, or ``CITYVIZ_OVERRIDES`` holding JSON (or the path of a JSON file),
e.g. ``{"train": {"epochs": 3}}``. An unknown name is an error.

Settings are grouped in sections (``dataset``, ...). Each cached artifact is
keyed by a hash of the sections it depends on, so a changed setting never
reuses a stale result (see :mod:`cityviz_helpers.artifacts`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

#: The folder above the package: the repository root in a clone, ``site-packages`` after a pip install.
REPO_ROOT = Path(__file__).resolve().parent.parent


def in_clone(root: Path | None = None) -> bool:
    """True when the package runs from a clone of the repository (its ``pyproject.toml`` and
    ``notebooks/`` beside it), not from an installed wheel in ``site-packages``."""
    root = REPO_ROOT if root is None else root
    return (root / "pyproject.toml").is_file() and (root / "notebooks").is_dir() and \
        (root / "cityviz_helpers" / "__init__.py").is_file()


def home() -> Path:
    """The one folder that holds ``data/``, ``models/``, ``artifacts/`` and ``outputs/``.

    ``CITYVIZ_HOME`` when set; else the clone's own folder when the package runs from a clone
    (``make``, ``pip install -e .``); else the user's data folder that ``platformdirs`` names
    (``~/.local/share/cityviz`` on Linux, so ``/root/.local/share/cityviz`` in Colab and Kaggle).
    Never ``site-packages``: an installed package writes nothing into its own folder.
    """
    chosen = _env("CITYVIZ_HOME")
    if chosen:
        return Path(chosen).expanduser().resolve()
    if in_clone():
        return REPO_ROOT
    from platformdirs import user_data_path

    return user_data_path("cityviz", appauthor=False)

DEFAULT_PROFILE = "quick"
DEFAULT_DATA = "synthetic"
#: Names of the trees data_download.sh writes (``data/<name>/``).
DOWNLOADED = ("osv5m", "gsv-cities")

#: Every setting of every profile. Each top-level key is a section; a step's
#: artifact hash covers only the sections that step reads.
PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "quick": {
        "dataset": {
            # Built-in cities: images per city and split, and their size.
            # 1,920 training images per city: with 480 the plain networks memorised them (train accuracy
            # 0.95-0.97, validation 0.75-0.79); 4x the images in a quarter of the epochs costs the same
            # training time and gained up to 0.05 validation accuracy (notebook 02 says more)
            "n_per_city": {"train": 1920, "val": 60, "test": 100},
            "image_size": 96,
            "seed": 0,
            # Real ImageFolder trees: split fractions when the tree has no
            # split folders, and a cap on images per city (None: all).
            "val_fraction": 0.15,
            "test_fraction": 0.15,
            "max_per_city": 600,
            "min_side": 32,
        },
        "train": {
            "archs": ["vgg11", "resnet18", "simple", "simpler"],
            "seeds": [0, 1],
            # Shortened recipe for a CPU (notebook 02 says why): narrow networks, a one-cycle
            # schedule with a larger peak learning rate, light dropout.
            "width": "narrow",
            # One recipe for all four architectures, so that nothing in training moves with the architecture
            # label that notebook 05's test compares. Chosen on the validation split (mean validation accuracy
            # of the 8 models, bfloat16, 2-core Xeon, 2026-12-03; benchmarks/recipes_shared_2026-12-03.json
            # and its .log.jsonl): 10 passes at 2e-3 with shifts up to 2 px 0.866 (training 613 s); 8 passes
            # at 2e-3 with shifts 0.860 (484 s); 10 passes at 1e-3 without shifts 0.856 (680 s); the earlier
            # per-architecture recipes (6/6/10/10 passes, 1e-3/2e-3/2e-3/1e-3, shifts for ResNet-18 only)
            # 0.853 (479 s). Each of epochs, lr and max_shift also takes a mapping with one value per architecture.
            "epochs": 10,  # passes over the 7,680 training images
            "batch_size": 50,
            "lr": 2e-3,  # the one-cycle schedule's peak
            "weight_decay": 1e-5,
            "schedule": "onecycle",  # or "step": times lr_gamma every lr_step epochs (the paper)
            "warmup": 0.25,  # onecycle: share of the batches spent warming up to the peak rate
            "lr_step": 10,
            "lr_gamma": 0.1,
            "dropout": 0.1,  # drop probability of the fully connected layers (None: as built, the paper's 0.5)
            "max_shift": 2,  # random shifts of up to this many pixels (augmentation beyond the paper's flips)
            "pretrained": ["resnet18"],  # used on real data only; the built-in cities train from scratch
            "pretrained_lr": 1e-4,  # the paper's rate, for fine-tuning ImageNet weights (at paper width)
            "amp": True,  # mixed precision: float16 on CUDA, bfloat16 on CPUs with AMX (train.autocast_dtype)
        },
        "gradcam": {
            # the maps notebooks 04 and 05 read: the paper's Grad-CAM at the last layer. Notebook 03's study
            # (validation split) finds that finer layers and HiResCAM put more of the map on the cues, but
            # their masks at the paper's thresholds keep about 1 % of the image, too little for the regions
            # and object counts of notebooks 04 and 05 (the notebook prints the numbers)
            "method": "gradcam",  # or gradcam++, layercam, hirescam, xgradcam, eigencam, scorecam
            "layer": "last",  # "last" (the paper's), "previous" (one down-sampling earlier) or "earlier" (two)
            "target": "true",  # explain the true city (the paper) or the "predicted" one
            "thresholds": [0.5, 0.6],  # the paper's two mask thresholds
            "batch_size": 50,
            "n_boot": 2000,  # bootstrap resamples of the images for each score's interval
            "randomization_images": 100,  # test images for the weight-randomisation sanity check
        },
        "clustering": {
            "threshold": 0.5,  # mask threshold whose regions are clustered
            "min_area": 24,  # pixels: smaller connected components are ignored
            "max_per_image": 4,  # largest regions kept per image
            "features": "classifier",  # the classifier's own view, or "pixels" (a generic view)
            "patch_size": 32,  # pixels of the thumbnails (and of the "pixels" features)
            "pca_dim": 20,
            "k": None,  # None: chosen by silhouette over k_range
            "k_range": [2, 12],  # from 2 upward, so that a small K is never forced by the range's edge
            "tsne_perplexity": 30,
            "seed": 0,
            # enrichment: city labels permuted over images (p never below 1 / (n_perm + 1)), images resampled
            "n_perm": 1999,
            "n_boot": 1000,
        },
        "segmentation": {
            # built-in cities: a small smp model trained on the label maps (no pretrained weights)
            "architecture": "Unet",
            # a ResNet-18 encoder used to its second stage (depth 3) and a narrow decoder: chosen on the validation
            # mIoU (notebook 05) among cheaper recipes, 2026-11-25 on the 2-core AMD EPYC: this one 0.708 against
            # 0.710 for the earlier depth-4 recipe with a [128, 64, 32, 16] decoder, and 11 % less time per pass
            # (129 s against 144 s for one pass, image loading included); depth 4 with a [64, 32, 16, 8] decoder
            # fell to 0.630 (0.562 with 2 passes), and this recipe on half the label maps to 0.617. Retrained in the
            # channels-last layout for the committed notebooks: 0.701 on validation, 321 s
            "encoder": "resnet18",
            "encoder_depth": 3,
            "decoder_channels": [64, 32, 16],
            "epochs": 3,  # passes over the 7,680 training label maps
            "train_images": None,  # a seeded random subset of the training label maps (None: all)
            "dice_weight": 1.0,  # loss: class-weighted cross-entropy + this times smp's Dice loss
            "batch_size": 32,
            "lr": 0.003,
            "seed": 0,
            # real images: the ADE20K Segformer saved by data_download.sh --weights
            "ade20k_folder": "models/segformer-b0-ade20k",
            "ade20k_input_size": 256,
            # statistics
            "n_boot": 500,  # bootstrap resamples per interval
            # architecture versus initialization: every distinct grouping of the models is tried when there
            # are at most max_groupings of them (105 for 4 architectures x 2 seeds), else n_perm random ones
            "n_perm": 5000,
            "max_groupings": 200_000,
            "area_fraction": None,  # area-matched masks: top share of each map (None: median mask area at 0.5)
            "n_chance": 20,  # draws of other images' masks for the chance level of cue recall
            "top_k": 3,
            "min_share": 0.01,  # a top class makes up at least this share of the masked pixels
        },
    },
    "full": {
        "dataset": {
            "n_per_city": {"train": 4000, "val": 500, "test": 500},
            "image_size": 224,
            "seed": 0,
            "val_fraction": 0.1,
            "test_fraction": 0.1,
            "max_per_city": None,
            "min_side": 64,
        },
        "train": {  # the paper's recipe
            "archs": ["vgg11", "resnet18", "simple", "simpler"],
            "seeds": [0, 1, 2],
            "width": "paper",
            "epochs": 30,
            "batch_size": 50,
            "lr": 1e-4,
            "weight_decay": 1e-5,
            "schedule": "step",
            "warmup": 0.25,
            "lr_step": 10,
            "lr_gamma": 0.1,
            "dropout": None,  # the paper's 0.5
            "max_shift": 0,  # the paper: horizontal flips only
            "pretrained": ["resnet18"],
            "pretrained_lr": 1e-4,
            "amp": True,
        },
    },
}

# The full profile's later steps differ from the quick profile's only where the
# larger images or a GPU call for it.
_QUICK = PROFILES["quick"]
PROFILES["full"].update({
    "gradcam": {**_QUICK["gradcam"], "randomization_images": 200},
    "clustering": {**_QUICK["clustering"], "min_area": 130, "patch_size": 48},
    "segmentation": {**_QUICK["segmentation"], "encoder": "resnet34", "encoder_depth": 5,
                     "decoder_channels": [256, 128, 64, 32, 16], "epochs": 20, "ade20k_input_size": 512},
})


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or default


@dataclass(frozen=True)
class Settings:
    """The settings of one run: a profile, a data world and their sections."""

    profile: str
    data: str
    sections: Mapping[str, Mapping[str, Any]] = field(repr=False)

    def __getitem__(self, section: str) -> Mapping[str, Any]:
        return self.sections[section]

    @property
    def dataset_name(self) -> str:
        """Short name of the data world, used in artifact paths."""
        if self.data == "synthetic":
            return "synthetic"
        path = Path(self.data).expanduser().resolve()
        digest = hashlib.sha256(str(path).encode()).hexdigest()[:8]
        return f"{path.name or 'data'}-{digest}"

    @property
    def artifacts_dir(self) -> Path:
        """``<home>/artifacts/<profile>/<dataset>/`` (:func:`home`; ``CITYVIZ_ARTIFACTS`` moves the root)."""
        root = Path(_env("CITYVIZ_ARTIFACTS", str(home() / "artifacts")))
        return root / self.profile / self.dataset_name

    @property
    def outputs_dir(self) -> Path:
        """``outputs/<profile>/`` for the built-in cities, ``outputs/<profile>-<dataset>/``
        for real images, so their numbers never mix (``CITYVIZ_OUTPUTS`` moves the root)."""
        root = Path(_env("CITYVIZ_OUTPUTS", str(home() / "outputs")))
        return root / (self.profile if self.data == "synthetic" else f"{self.profile}-{self.dataset_name}")

    @property
    def figures_dir(self) -> Path:
        return self.outputs_dir / "figures"

    def hash(self, *section_names: str, extra: Mapping[str, Any] | None = None) -> str:
        """Hash of the named sections (plus ``extra``): the key of an artifact."""
        payload = {name: self.sections[name] for name in section_names}
        payload["data"] = self.data if self.data == "synthetic" else str(Path(self.data).resolve())
        if extra:
            payload["extra"] = dict(extra)
        return settings_hash(payload)

    def describe(self) -> str:
        """A few lines saying which profile and data this run uses."""
        lines = [f"profile: {self.profile}   data: {self.data}"]
        for name, values in self.sections.items():
            lines.append(f"  {name}: " + ", ".join(f"{k}={v}" for k, v in values.items()))
        return "\n".join(lines)


def settings_hash(payload: Mapping[str, Any], length: int = 12) -> str:
    """A stable hex digest of a JSON-able mapping (key order does not matter)."""
    text = json.dumps(payload, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def _merge(base: dict, overrides: Mapping[str, Any], where: str) -> dict:
    for key, value in overrides.items():
        if key not in base:
            known = ", ".join(sorted(base))
            raise KeyError(f"Unknown setting '{where}{key}'. Known settings here: {known}.")
        if isinstance(base[key], dict) and isinstance(value, Mapping):
            _merge(base[key], value, f"{where}{key}.")
        else:
            base[key] = value
    return base


def _read_overrides(text: str) -> Mapping[str, Any]:
    """``CITYVIZ_OVERRIDES``: JSON text, or the path of a JSON file."""
    source = "CITYVIZ_OVERRIDES"
    if not text.lstrip().startswith("{"):
        path = Path(text).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"CITYVIZ_OVERRIDES names {text!r}, which is neither JSON nor a file.")
        text, source = path.read_text(), str(path)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{source} is not valid JSON ({err}); write e.g. "
                         '{"train": {"epochs": 3}}.') from None
    if not isinstance(value, dict):
        raise ValueError(f"{source} must be a JSON object of sections, e.g. {{\"train\": {{\"epochs\": 3}}}}.")
    return value


def get_settings(
    profile: str | None = None,
    data: str | os.PathLike | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Settings:
    """Settings for a profile and data world.

    ``profile``/``data`` of ``None`` fall back to ``CITYVIZ_PROFILE`` /
    ``CITYVIZ_DATA`` and then to ``quick`` / ``synthetic``. ``overrides`` changes
    single settings, e.g. ``{"dataset": {"image_size": 64}}``; an unknown name
    is an error rather than silently ignored.
    """
    profile = profile or _env("CITYVIZ_PROFILE", DEFAULT_PROFILE)
    if profile not in PROFILES:
        raise ValueError(
            f"Unknown profile {profile!r}. Use one of {sorted(PROFILES)} "
            "(set CITYVIZ_PROFILE or the PROFILE parameter of the notebook)."
        )
    data = str(data) if data is not None else _env("CITYVIZ_DATA", DEFAULT_DATA)
    if data in DOWNLOADED:
        folder = home() / "data" / data
        if not folder.exists():
            option = "" if data == "osv5m" else " --source gsv-cities"
            raise FileNotFoundError(
                f"CITYVIZ_DATA={data} reads {folder}, which does not exist yet. Fetch the images once with "
                f"`./data_download.sh{option}` (needs internet; see docs/real-data.md), "
                "or use 'synthetic' for the built-in cities.")
        data = str(folder)
    if data != "synthetic" and not Path(data).expanduser().exists():
        raise FileNotFoundError(
            f"CITYVIZ_DATA / data points to {data!r}, which does not exist. Use "
            "'synthetic' for the built-in cities, or the path of a folder with one "
            "sub-folder of images per city (see docs/settings.md)."
        )
    sections = copy.deepcopy(PROFILES[profile])
    env_overrides = _env("CITYVIZ_OVERRIDES")
    if env_overrides:
        _merge(sections, _read_overrides(env_overrides), "")
    if overrides:
        _merge(sections, overrides, "")
    return Settings(profile=profile, data=data, sections=sections)
