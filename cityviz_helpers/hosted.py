"""Running outside a clone: Colab, Kaggle, a plain ``pip install`` (every notebook's setup cell).

Each notebook opens with the same small setup cell. Where the package is missing
(a hosted notebook), the cell installs it with pip from ``CITYVIZ_INSTALL``
(default: the repository's public address, pinned to this release), upgrading
nothing the host already has; in a clone or where the package is installed it
installs nothing. It then calls :func:`setup`, which says where cityviz keeps
its files (:func:`cityviz_helpers.settings.home`), which device the models use
and how to get a GPU on a hosted runtime, and, when ``CITYVIZ_PACK`` names a
teacher's pack (a file or an ``https://`` address), installs it once so that
nothing has to be trained (:func:`cityviz_helpers.labkit.ensure_pack`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

#: The source the setup cell installs from when ``CITYVIZ_INSTALL`` is not set (a pip requirement).
DEFAULT_INSTALL = "cityviz @ git+https://github.com/cityviz/cityviz@v0.1.0"


def hosted_runtime() -> str | None:
    """``"colab"``, ``"kaggle"`` or None, from the markers those hosts set."""
    if "google.colab" in sys.modules or os.environ.get("COLAB_RELEASE_TAG"):
        return "colab"
    if os.environ.get("KAGGLE_KERNEL_RUN_TYPE") or Path("/kaggle/working").is_dir():
        return "kaggle"
    return None


GPU_HINT = {"colab": "Runtime > Change runtime type > T4 GPU, then run the notebook again",
            "kaggle": "Settings > Accelerator > GPU (a phone-verified account), then run the notebook again"}


def setup(pack: str | os.PathLike | None = None, verbose: bool = True) -> Path:
    """Say where cityviz keeps data, models, artifacts and outputs, and which device it uses; install
    the teacher's pack named by ``pack`` or ``CITYVIZ_PACK`` once. Returns the home folder."""
    from . import __version__
    from .settings import _env, home, in_clone
    from .train import pick_device

    where = home()
    device = pick_device()
    if verbose:
        kind = "CITYVIZ_HOME" if _env("CITYVIZ_HOME") else "this clone" if in_clone() else \
            "the user's data folder; set CITYVIZ_HOME to move it"  # the order home() decides in
        print(f"cityviz {__version__}: data, models, artifacts and outputs in {where} ({kind}).")
        name = device.type
        if device.type == "cuda":
            import torch

            name = f"{device} ({torch.cuda.get_device_name(device)})"
        print(f"device: {name}")
        host = hosted_runtime()
        if host and device.type == "cpu":
            print(f"No GPU in this {host} session: the notebooks run on the CPU (slow to train). For a GPU: "
                  f"{GPU_HINT[host]}; or load a teacher's pack (CITYVIZ_PACK) and train nothing.")
    pack = pack or _env("CITYVIZ_PACK")
    if pack:
        from .labkit import ensure_pack

        ensure_pack(pack, verbose=verbose)
    return where


#: The first code cell of every notebook (a test checks that each notebook has exactly this).
SETUP_CELL = f'''# Setup, the same in every notebook. Where cityviz is missing (Colab, Kaggle, a fresh Jupyter), pip installs it
# once, upgrading nothing the host already has; in a clone or where it is installed, nothing is installed.
# CITYVIZ_INSTALL names another source, CITYVIZ_HOME where files go, CITYVIZ_PACK a teacher's pack to load.
import importlib, importlib.util, os, subprocess, sys
if importlib.util.find_spec("cityviz_helpers") is None:
    if os.path.isfile("../cityviz_helpers/__init__.py"):  # a clone opened without `make lab`
        sys.path.insert(0, os.path.abspath(".."))
    else:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                        os.environ.get("CITYVIZ_INSTALL", "{DEFAULT_INSTALL}")], check=True)
        importlib.invalidate_caches()
import cityviz_helpers as cv
cv.setup();'''
