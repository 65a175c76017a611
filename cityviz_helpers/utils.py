"""Small shared helpers: seeding and progress bars (used by every notebook)."""

from __future__ import annotations

import os
import random


def quiet() -> bool:
    """True under tests and CI (``CITYVIZ_QUIET=1``, ``CI``, pytest): no progress bars."""
    flag = os.environ.get("CITYVIZ_QUIET", "").strip().lower()
    if flag in ("0", "false", "no"):
        return False
    return bool(flag) or "PYTEST_CURRENT_TEST" in os.environ or bool(os.environ.get("CI"))


#: Set by the headless runners (``make tutorial``, nbval in ``make test``) for the kernels they start.
HEADLESS_ENV = "CITYVIZ_HEADLESS"


def headless() -> bool:
    """True in a run without a screen (``CITYVIZ_HEADLESS=1``): nobody can move a widget's controls, and
    building ipywidgets there can leave the executing client waiting for good (jupyter/nbclient#312:
    "when cell contains ipywidget, execute cell will sometimes blocks"; seen here with ipykernel 7.4 and
    nbclient 0.11, kernel idle, client waiting). The notebooks' explorers skip their controls then; the
    browser test moves them in a real JupyterLab."""
    return os.environ.get(HEADLESS_ENV, "").strip().lower() in ("1", "true", "yes")


def progress(iterable=None, disable: bool | None = None, **kwargs):
    """A tqdm progress bar that is silent when :func:`quiet` is true."""
    from tqdm.auto import tqdm

    return tqdm(iterable, disable=quiet() if disable is None else disable, **kwargs)


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and (if installed) PyTorch; make cuDNN, and on a GPU PyTorch, deterministic."""
    random.seed(seed)
    import numpy as np

    np.random.seed(seed)
    try:
        import torch
    except ImportError:
        return
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    if torch.cuda.is_available():
        # On a GPU, same seed, same settings, same machine give the same numbers only with PyTorch's
        # deterministic mode (cuBLAS needs its workspace fixed before its first use). warn_only: an
        # operation without a deterministic GPU kernel warns instead of stopping the notebook. The
        # CPU kernels the series uses are deterministic already, so CPU results do not change.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)


def atomic_write(path, write) -> None:
    """Call ``write(tmp_path)`` and rename the result onto ``path``.

    A reader never sees a half-written file: either the old one or the new one.
    A failed write removes its temporary file.
    """
    from pathlib import Path

    path = Path(path)
    import socket

    # host and pid: jobs on several machines may share one cache (cityviz_helpers.jobs)
    tmp = path.with_name(f".{path.name}.{socket.gethostname()}-{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def short_path(path) -> str:
    """The path relative to cityviz's home (the clone, or ``CITYVIZ_HOME``) or the working directory
    when it is inside one of them."""
    from pathlib import Path

    from .settings import home

    path = Path(path)
    for base in (home(), Path.cwd()):
        try:
            return str(path.relative_to(base))
        except ValueError:
            pass
    return str(path)
